// The read model: prepared statements, deferred writes, immediate writes, queries.

import { type Backend, BatchWriteError } from "./backend.ts";
import { SqlError } from "./errors.ts";
import { PackedWrites } from "./packed.ts";
import { Rows } from "./rows.ts";
import { type Param, fromWire, toWire, type WireValue } from "./values.ts";

/**
 * One SQL statement, compiled by the host the first time it is used and then
 * named by a small handle, so the hot path never sends SQL text. Declare
 * statements once, at the top level of the module:
 *
 * ```ts
 * const DEPOSIT = new Statement(
 *   `INSERT INTO balances (account, balance) VALUES (?1, ?2)
 *    ON CONFLICT (account) DO UPDATE SET balance = balance + excluded.balance`,
 * );
 * ```
 */
export class Statement {
  /** The backend that prepared it; a handle is only valid for its own instance. */
  #owner: Backend | undefined;
  #handle = 0;

  /** A statement with this SQL text. Parameters are `?1`, `?2`, and so on. */
  constructor(readonly sql: string) {
    if (typeof sql !== "string" || sql.trim() === "") {
      throw new TypeError("a Statement needs SQL text");
    }
  }

  /** The handle for `backend`, preparing the statement on first use. */
  handleFor(backend: Backend): number {
    if (this.#owner !== backend) {
      this.#handle = backend.prepare(this.sql);
      this.#owner = backend;
    }
    return this.#handle;
  }
}

function wireParam(value: Param, index: number): WireValue {
  return toWire(value, index + 1);
}

/** A deferred write that failed, with the event that issued it. */
export interface WriteFailure {
  /** The offset of the event that issued the write; `undefined` during `init`. */
  offset: bigint | undefined;
  /** What the host or SQLite said. */
  error: SqlError;
  /** The statement's SQL, for the operator. */
  sql: string;
}

/**
 * The projector's read model: its own SQLite database, inside the transaction
 * the host opened for the current `init` or `handle` call.
 *
 * - {@link execute} is **deferred**: the write joins a packed buffer that the SDK
 *   sends in one host call at the end of the batch, and before any query or
 *   immediate write, so reads always see earlier writes. If a deferred write
 *   fails, the batch fails and names the event that issued it; later SQL calls
 *   in the same batch throw the same error.
 * - {@link executeNow} runs at once and throws its {@link SqlError}, for a
 *   projector that wants to react to, say, a constraint failure.
 * - {@link query} reads rows; {@link executeScript} runs parameterless SQL, such
 *   as the schema in `init`.
 */
export class Db {
  /** Buffered writes that make the SDK flush before the batch ends, keeping each `execute-packed` call and the guest memory it uses bounded. */
  static readonly FLUSH_WRITES = 4096;
  /** Buffered parameter bytes (UTF-8 text and blobs) that make the SDK flush early. */
  static readonly FLUSH_BYTES = 4 << 20;
  /** Buffered parameters that make the SDK flush early, for writes with many parameters each. */
  static readonly FLUSH_VALUES = 64 << 10;

  readonly #backend: Backend;
  /** The deferred writes, already in the contract's packed layout. */
  readonly #pending = new PackedWrites();
  /** The offset of the event that issued each pending write. */
  #pendingOffsets: (bigint | undefined)[] = [];
  /** The statement of each pending write, for error messages. */
  #pendingStatements: Statement[] = [];
  #offset: bigint | undefined;
  #failure: WriteFailure | undefined;

  /** @internal The SDK creates the `Db`; projectors receive it. */
  constructor(backend: Backend) {
    this.#backend = backend;
  }

  /**
   * Queues a write; the SDK sends it with the rest of the batch. Throws only if
   * the statement does not compile, a parameter cannot be bound, or an earlier
   * deferred write failed.
   */
  execute(statement: Statement, ...params: Param[]): void {
    this.#check();
    const handle = statement.handleFor(this.#backend);
    const pending = this.#pending;
    pending.push(handle, params);
    this.#pendingOffsets.push(this.#offset);
    this.#pendingStatements.push(statement);
    if (
      pending.writes >= Db.FLUSH_WRITES ||
      pending.params >= Db.FLUSH_VALUES ||
      pending.byteLength >= Db.FLUSH_BYTES
    ) {
      this.flush();
    }
  }

  /**
   * Runs a write now, after any deferred writes, and returns how many rows it
   * changed. Its error is thrown as a {@link SqlError} the projector can catch.
   */
  executeNow(statement: Statement, ...params: Param[]): bigint {
    this.flush();
    const handle = statement.handleFor(this.#backend);
    return this.#backend.execute(handle, params.map(wireParam));
  }

  /** Runs a query, after any deferred writes, and returns its rows. The host caps how many rows and bytes come back. */
  query(statement: Statement, ...params: Param[]): Rows {
    this.flush();
    const handle = statement.handleFor(this.#backend);
    const result = this.#backend.query(handle, params.map(wireParam));
    return new Rows(
      result.columns,
      result.rows.map((row) => row.map(fromWire)),
    );
  }

  /**
   * Runs SQL text without parameters, possibly several statements, after any
   * deferred writes. Meant for the schema in `init`: the text crosses to the
   * host on every call.
   */
  executeScript(sql: string): void {
    this.flush();
    this.#backend.executeScript(sql);
  }

  /** Sends the deferred writes now. The SDK does this by itself at the end of each batch and before every read, so a projector rarely needs to. */
  flush(): void {
    this.#check();
    if (this.#pending.writes === 0) return;
    try {
      this.#backend.executePacked(this.#pending.batch());
    } catch (e) {
      if (!(e instanceof BatchWriteError)) {
        this.#clear();
        throw e;
      }
      const failure: WriteFailure = {
        offset: this.#pendingOffsets[e.index] ?? this.#offset,
        error: new SqlError(e.kind, e.detail),
        sql: this.#pendingStatements[e.index]?.sql ?? "",
      };
      this.#failure = failure;
      this.#clear();
      throw failure.error;
    }
    this.#clear();
  }

  /** @internal Starts an `init` or `handle` call: nothing pending, no failure. */
  reset(): void {
    this.#clear();
    this.#offset = undefined;
    this.#failure = undefined;
  }

  /** @internal Names the event whose writes follow. */
  setOffset(offset: bigint | undefined): void {
    this.#offset = offset;
  }

  /** @internal The first deferred write that failed in this call, if any; forgets it. */
  takeFailure(): WriteFailure | undefined {
    const failure = this.#failure;
    this.#failure = undefined;
    return failure;
  }

  /** @internal The backend, for the batch loop's logging. */
  get backend(): Backend {
    return this.#backend;
  }

  /** Fails fast once a deferred write has failed: the batch is lost anyway, and the first error is the one that matters. */
  #check(): void {
    if (this.#failure !== undefined) throw this.#failure.error;
  }

  #clear(): void {
    // The packed buffers are kept (the bindings copied them during the call); the
    // bookkeeping arrays are fresh, which is one array each per flush.
    this.#pending.clear();
    this.#pendingOffsets = [];
    this.#pendingStatements = [];
  }
}
