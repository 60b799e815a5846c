// The component glue: the contract's imports behind the `Backend` seam, and the
// three exports built from a projector. `refract-build` bundles it with the
// projector; nothing else imports the contract's modules.

/// <reference path="./contract.d.ts" />

import { write } from "refract:projector/log@0.2.0";
import * as sql from "refract:projector/sql@0.2.0";

import { type Backend, BatchWriteError, type Level } from "./backend.ts";
import { type HandleResult, type InitResult, runHandle, runInit } from "./batch.ts";
import { Db } from "./db.ts";
import { SqlError, type SqlErrorKind } from "./errors.ts";
import type { EventBatch } from "./event.ts";
import { setLogSink } from "./log.ts";
import type { WriteBatch } from "./packed.ts";
import { info, type Projector, type ProjectorInfo } from "./projector.ts";
import type { WireValue } from "./values.ts";

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
  const backend = new ComponentBackend();
  setLogSink((level, message) => backend.log(level, message));
  const db = new Db(backend);
  const metadata = info(p);
  return {
    metadata: () => metadata,
    init: () => runInit(p, db),
    handle: (batch) => runHandle(p, db, batch),
  };
}

/** What the bindings throw for an `err`: the error value is its `payload`. */
interface SqlErrorPayload {
  kind: SqlErrorKind;
  message: string;
}

class ComponentBackend implements Backend {
  prepare(text: string): number {
    return call(() => sql.prepare(text));
  }

  executePacked(writes: WriteBatch): void {
    try {
      sql.executePacked(writes);
    } catch (e) {
      const payload = payloadOf(e) as { index?: number; error?: SqlErrorPayload } | undefined;
      if (payload?.error !== undefined && typeof payload.index === "number") {
        throw new BatchWriteError(payload.index, payload.error.kind, payload.error.message);
      }
      throw e;
    }
  }

  execute(statement: number, params: WireValue[]): bigint {
    return call(() => sql.execute(statement, params));
  }

  query(statement: number, params: WireValue[]): { columns: string[]; rows: WireValue[][] } {
    return call(() => sql.query(statement, params));
  }

  executeScript(text: string): void {
    call(() => sql.executeScript(text));
  }

  log(level: Level, message: string): void {
    write(level, message);
  }
}

/** Runs an import, turning its `sql-error` into a thrown `SqlError`. */
function call<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    const payload = payloadOf(e) as SqlErrorPayload | undefined;
    if (payload !== undefined && typeof payload.kind === "string") {
      throw new SqlError(payload.kind, payload.message);
    }
    throw e;
  }
}

function payloadOf(e: unknown): unknown {
  return e !== null && typeof e === "object" && "payload" in e ? (e as { payload: unknown }).payload : undefined;
}
