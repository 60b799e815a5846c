// The component glue of a projector: the `refract:projector@0.2.0` imports
// behind the `Backend` seam, and the three exports built from a projector.
// `refract-build` bundles it with the projector; nothing else imports the
// contract's modules (a reactor's glue is `reactor-component.ts`).

/// <reference path="./contract.d.ts" />

import { write } from "refract:projector/log@0.2.0";
import * as sql from "refract:projector/sql@0.2.0";

import { type HandleResult, type InitResult, runHandle, runInit } from "./batch.ts";
import { Db } from "./db.ts";
import type { EventBatch } from "./event.ts";
import { ImportsBackend } from "./glue.ts";
import { setLogSink } from "./log.ts";
import { info, type Projector, type ProjectorInfo } from "./projector.ts";
import { isReactor } from "./reactor.ts";

/** The exports of the `projector` world. */
export interface Exports {
  metadata(): ProjectorInfo;
  init(): InitResult;
  handle(batch: EventBatch): HandleResult;
}

/**
 * The component's exports for `p`. The build's entry module is
 * `export const { metadata, init, handle } = exportProjector(projector)`.
 */
export function exportProjector(p: Projector): Exports {
  if (isReactor(p)) {
    throw new TypeError(
      `${JSON.stringify(p?.name)} is a reactor (it has \`react\`, not \`handle\`): build it with \`refract-build --reactor\``,
    );
  }
  const backend = contractBackend();
  setLogSink((level, message) => backend.log(level, message));
  const db = new Db(backend);
  const metadata = info(p);
  return {
    metadata: () => metadata,
    init: () => runInit(p, db),
    handle: (batch) => runHandle(p, db, batch),
  };
}

/** The `refract:projector@0.2.0` imports: deferred writes go packed, as they are queued. */
function contractBackend(): ImportsBackend {
  return new ImportsBackend(sql, (writes) => sql.executePacked(writes), write);
}
