// What both component glues share (`component.ts` for projectors,
// `reactor-component.ts` for reactors): the contract's `sql` and `log`
// imports behind the `Backend` seam, with the contract's error values turned
// into thrown errors in one place. It imports no contract module itself, so
// each glue bundles only the imports of its own world.

import { type Backend, BatchWriteError, type Level } from "./backend.ts";
import { SqlError, type SqlErrorKind } from "./errors.ts";
import type { WriteBatch } from "./packed.ts";
import type { WireValue } from "./values.ts";

/** The calls that `refract:projector/sql` has in both versions, as the bindings present them. */
export interface SqlImports {
  prepare(sql: string): number;
  execute(statement: number, params: WireValue[]): bigint;
  query(statement: number, params: WireValue[]): { columns: string[]; rows: WireValue[][] };
  executeScript(sql: string): void;
}

/** What the bindings throw for a `sql-error`: the error value is its `payload`. */
interface SqlErrorPayload {
  kind: SqlErrorKind;
  message: string;
}

/**
 * A `Backend` over one contract version's imports. `sendWrites` sends a packed
 * batch of deferred writes the way that version takes them, and throws what
 * the bindings throw; a `write-error` becomes a {@link BatchWriteError} here.
 */
export class ImportsBackend implements Backend {
  constructor(
    readonly sql: SqlImports,
    readonly sendWrites: (writes: WriteBatch) => void,
    readonly writeLog: (level: Level, message: string) => void,
  ) {}

  prepare(text: string): number {
    return call(() => this.sql.prepare(text));
  }

  executePacked(writes: WriteBatch): void {
    try {
      this.sendWrites(writes);
    } catch (e) {
      if (e instanceof BatchWriteError) throw e;
      const payload = payloadOf(e) as { index?: number; error?: SqlErrorPayload } | undefined;
      if (payload?.error !== undefined && typeof payload.index === "number") {
        throw new BatchWriteError(payload.index, payload.error.kind, payload.error.message);
      }
      throw e;
    }
  }

  execute(statement: number, params: WireValue[]): bigint {
    return call(() => this.sql.execute(statement, params));
  }

  query(statement: number, params: WireValue[]): { columns: string[]; rows: WireValue[][] } {
    return call(() => this.sql.query(statement, params));
  }

  executeScript(text: string): void {
    call(() => this.sql.executeScript(text));
  }

  log(level: Level, message: string): void {
    this.writeLog(level, message);
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

/** The error value of a contract `result` the bindings threw, if `e` is one. */
export function payloadOf(e: unknown): unknown {
  return e !== null && typeof e === "object" && "payload" in e ? (e as { payload: unknown }).payload : undefined;
}
