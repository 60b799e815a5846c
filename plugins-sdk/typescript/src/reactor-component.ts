// The component glue of a reactor: the imports of the `reactor` world
// (`refract:reactor@0.1.0`, which includes the projector world of
// `refract:projector@0.1.0`) behind the `Backend` and `EffectsBackend` seams,
// and the four exports built from a reactor. `refract-build --reactor` bundles
// it with the reactor; nothing else imports these contract modules.

/// <reference path="./contract.d.ts" />

import { write } from "refract:projector/log@0.1.0";
import * as sql from "refract:projector/sql@0.1.0";
import * as emitImport from "refract:reactor/emit@0.1.0";
import * as timers from "refract:reactor/timers@0.1.0";

import { BatchWriteError } from "./backend.ts";
import { type HandleResult, type InitResult, runHandle, runInit } from "./batch.ts";
import { Db } from "./db.ts";
import type { EventBatch } from "./event.ts";
import { ImportsBackend, payloadOf } from "./glue.ts";
import { setLogSink } from "./log.ts";
import { unpackWrites, type WriteBatch } from "./packed.ts";
import {
  asProjector,
  EffectRefused,
  Effects,
  type EffectsBackend,
  type NewEvent,
  type Reactor,
  reactorProblem,
} from "./reactor.ts";

/** The contract's `projector-info` of `refract:projector@0.1.0`, which has no `reads`: the host sends every field. */
export interface ProjectorInfoV1 {
  name: string;
  description: string;
  subscriptions: { eventTypes: string[]; streamPrefixes: string[] };
}

/** The contract's `reactor-info`. */
export interface ReactorInfo {
  emits: string[];
}

/** The exports of the `reactor` world. */
export interface ReactorExports {
  metadata(): ProjectorInfoV1;
  init(): InitResult;
  handle(batch: EventBatch): HandleResult;
  reactorInfo(): ReactorInfo;
}

/**
 * The component's exports for `r`. The build's entry module is
 * `export const { metadata, init, handle, reactorInfo } = exportReactor(reactor)`.
 */
export function exportReactor(r: Reactor): ReactorExports {
  const problem = reactorProblem(r);
  if (problem !== undefined) {
    const projector = typeof (r as { handle?: unknown } | undefined)?.handle === "function";
    throw new TypeError(
      projector
        ? `${JSON.stringify(r?.name)} is a projector (it has \`handle\`): build it with \`refract-build\`, without --reactor`
        : `the default export is not a reactor: ${problem}`,
    );
  }
  const backend = new ImportsBackend(sql, sendAsList, write);
  setLogSink((level, message) => backend.log(level, message));
  const db = new Db(backend);
  const p = asProjector(r, new Effects(new ComponentEffects()));
  const metadata: ProjectorInfoV1 = {
    name: r.name,
    description: r.description,
    subscriptions: { eventTypes: [...(r.eventTypes ?? [])], streamPrefixes: [...(r.streamPrefixes ?? [])] },
  };
  const reactorInfo: ReactorInfo = { emits: [...r.emits] };
  return {
    metadata: () => metadata,
    init: () => runInit(p, db),
    handle: (batch) => runHandle(p, db, batch),
    reactorInfo: () => reactorInfo,
  };
}

/**
 * Sends a packed batch of deferred writes as the 0.1.0 `execute-batch` takes
 * them: one record per write. The packed buffer is decoded by the same code the
 * native harness checks against the layout; a write that broke it (an SDK bug)
 * fails at its index after the writes before it ran, as `execute-batch` would.
 */
function sendAsList(writes: WriteBatch): void {
  const unpacked = unpackWrites(writes);
  const broken = unpacked.findIndex((w) => w.error !== undefined);
  const valid = broken === -1 ? unpacked : unpacked.slice(0, broken);
  if (valid.length > 0) {
    sql.executeBatch(valid.map(({ statement, params }) => ({ statement, params })));
  }
  if (broken !== -1) {
    throw new BatchWriteError(broken, "invalid", `the Refract SDK packed a malformed write: ${unpacked[broken]?.error}`);
  }
}

/** The host's `emit` and `timers` imports; a refusal (`effect-error`) becomes an {@link EffectRefused}. */
class ComponentEffects implements EffectsBackend {
  emit(cause: bigint, event: NewEvent): void {
    refusable(() => emitImport.emit(cause, event));
  }

  schedule(cause: bigint, key: string, delayMs: bigint, payload: string): void {
    refusable(() => timers.schedule(cause, key, delayMs, payload));
  }

  cancel(key: string): void {
    refusable(() => timers.cancel(key));
  }
}

function refusable(f: () => void): void {
  try {
    f();
  } catch (e) {
    const payload = payloadOf(e) as { message?: unknown } | undefined;
    if (payload !== undefined && typeof payload.message === "string") throw new EffectRefused(payload.message);
    throw e;
  }
}
