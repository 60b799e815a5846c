// The one seam between the SDK and where SQL runs: the component's imports on
// wasm (`component.ts`), an in-memory SQLite natively (`testing.ts`). Both
// implement it, so `Db` and the batch loop are the same code in both places.

import type { SqlErrorKind } from "./errors.ts";
import type { WriteBatch } from "./packed.ts";
import type { WireValue } from "./values.ts";

/** The log levels of the contract's `log` interface. */
export type Level = "trace" | "debug" | "info" | "warn" | "error";

/**
 * The contract's `sql` and `log` imports. Every SQL method returns its result
 * or throws a {@link SqlError}; `executePacked` throws a {@link BatchWriteError}.
 */
export interface Backend {
  prepare(sql: string): number;
  executePacked(writes: WriteBatch): void;
  execute(statement: number, params: WireValue[]): bigint;
  query(statement: number, params: WireValue[]): { columns: string[]; rows: WireValue[][] };
  executeScript(sql: string): void;
  log(level: Level, message: string): void;
}

/** A write in `executePacked` failed: the index of the write, and why. */
export class BatchWriteError extends Error {
  constructor(
    readonly index: number,
    readonly kind: SqlErrorKind,
    readonly detail: string,
  ) {
    super(`${kind}: ${detail}`);
    this.name = "BatchWriteError";
  }
}
