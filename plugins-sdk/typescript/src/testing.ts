// Native tests for projectors: run a projector's real `init` and `handle`
// against an in-memory SQLite (the official SQLite WebAssembly build, so no
// native addon and nothing downloaded at install), with no component build.
//
// ```ts
// import { test } from "node:test";
// import assert from "node:assert/strict";
// import { TestProjector, event } from "refract-sdk/testing";
// import balances from "../src/index.ts";
//
// test("a deposit moves the balance", async () => {
//   const t = await TestProjector.create(balances);
//   t.apply([event("money.deposited", { stream: "acc-1", data: { account: "acc-1", amount: 250 } })]);
//   assert.deepEqual(t.rows("SELECT account, balance FROM balances"), [["acc-1", 250n]]);
// });
// ```
//
// It approximates the host's SQL sandbox with an authorizer (no ATTACH, no
// transaction control, no writing PRAGMAs, no `_refract_` tables, no
// `load_extension`), so a statement the host would deny fails here too. The
// host's rules, and its size limits, are the authority.

import sqlite3InitModule from "@sqlite.org/sqlite-wasm";

import { type Backend, BatchWriteError, type Level } from "./backend.ts";
import { runHandle, runInit } from "./batch.ts";
import { Db } from "./db.ts";
import { SqlError, type SqlErrorKind } from "./errors.ts";
import { type EventBatch, FIELDS } from "./event.ts";
import { stringifyJson } from "./json.ts";
import { KIND_BLOB, KIND_INTEGER, KIND_NULL, KIND_REAL, KIND_TEXT, type WriteBatch } from "./packed.ts";
import { accepts, type EventFields, type Projector, readsOf, validateName } from "./projector.ts";
import { Rows } from "./rows.ts";
import { decodeUtf8, encodeUtf8 } from "./utf8.ts";
import { fromWire, type SqlValue, type WireValue } from "./values.ts";

/** The default `recordedAt` of the event at offset 0: 2024-01-01T00:00:00Z. Each later offset adds one second, so timestamps are deterministic. */
export const DEFAULT_EPOCH_MICROS = 1_704_067_200_000_000n;

// The host's sandbox rules (`host/src/runtime/sql.rs`), mirrored.

/** PRAGMAs a projector may run with any argument. */
const PRAGMAS_ANY_ARGUMENT = new Set([
  "table_info",
  "table_xinfo",
  "table_list",
  "index_list",
  "index_info",
  "index_xinfo",
  "foreign_key_list",
]);

/** PRAGMAs a projector may read but not set (no `= value`, no argument). */
const PRAGMAS_READ_ONLY = new Set([
  "user_version",
  "data_version",
  "schema_version",
  "page_count",
  "page_size",
  "freelist_count",
]);

/** SQL functions a projector may not call: their results differ from run to run, or they reach outside the database. */
const DENIED_FUNCTIONS = new Set([
  "random",
  "randomblob",
  "current_timestamp",
  "current_date",
  "current_time",
  "total_changes",
  "load_extension",
  "fts3_tokenizer",
]);

/** Virtual-table modules a projector may use. */
const VIRTUAL_TABLE_MODULES = new Set(["fts3", "fts4", "fts5", "rtree"]);

/** The prefix of host-owned tables. */
const HOST_TABLE_PREFIX = "_refract_";

/** An event for a test. Unset fields get deterministic defaults when applied. */
export interface TestEvent {
  /** The event type, for example `money.deposited`. */
  type: string;
  /** The stream; `test` when unset. */
  stream?: string;
  /** The payload, serialized to JSON (`bigint`s as exact integers); `{}` when unset. */
  data?: unknown;
  /** The payload as JSON text, taken as is, even if it is not valid JSON. Wins over `data`. */
  dataJson?: string;
  /** The metadata, serialized to JSON; none when unset. */
  metadata?: unknown;
  /** The event id; derived from the offset when unset. */
  id?: string;
  /** The log offset; the next one when unset. It must be greater than every offset applied before. */
  offset?: bigint | number;
  /** The version within the stream; the stream's next one when unset. */
  streamVersion?: bigint | number;
  /** When the log recorded the event, in microseconds since the Unix epoch. */
  recordedAtMicros?: bigint | number;
}

/** An event of `type`, with any other fields: `event("money.deposited", { stream: "acc-1", data: {...} })`. */
export function event(type: string, fields: Omit<TestEvent, "type"> = {}): TestEvent {
  return { ...fields, type };
}

/** A batch that failed: the event that failed it, and why. It is what the host would log and retry. */
export class BatchError extends Error {
  constructor(
    /** The offset of the event that failed. */
    readonly offset: bigint,
    /** What the projector or SQLite said. */
    readonly detail: string,
  ) {
    super(`event at offset ${offset} failed: ${detail}`);
    this.name = "BatchError";
  }
}

/**
 * A projector running natively, as the host would run it: `init` once, then
 * batches of events, each in one transaction that rolls back if the batch
 * fails. Only subscribed events are delivered.
 */
export class TestProjector {
  readonly #projector: Projector;
  readonly #backend: SqliteBackend;
  readonly #db: Db;
  #lastOffset = 0n;
  readonly #versions = new Map<string, bigint>();

  private constructor(projector: Projector, backend: SqliteBackend) {
    this.#projector = projector;
    this.#backend = backend;
    this.#db = new Db(backend);
  }

  /** A fresh in-memory read model after the projector's `init`. Fails if its name breaks the host's rule or `init` fails. */
  static async create(projector: Projector): Promise<TestProjector> {
    const invalid = validateName(projector.name);
    if (invalid !== undefined) throw new Error(invalid);
    const t = new TestProjector(projector, await SqliteBackend.open());
    t.#backend.trusted("BEGIN");
    const result = runInit(projector, t.#db);
    if (result.tag === "err") {
      t.#backend.trusted("ROLLBACK");
      throw new Error(`init of projector ${JSON.stringify(projector.name)} failed: ${result.val}`);
    }
    t.#backend.trusted("COMMIT");
    return t;
  }

  /** The offset of the last event applied so far, delivered or not; 0 before any. */
  get lastOffset(): bigint {
    return this.#lastOffset;
  }

  /**
   * Appends `events` to the test's log and delivers the subscribed ones as one
   * batch, in one transaction. Returns how many were delivered. On failure the
   * transaction rolls back and a {@link BatchError} names the event.
   */
  apply(events: Iterable<TestEvent>): number {
    const packer = new Packer(readsOf(this.#projector));
    for (const e of events) {
      const offset = e.offset === undefined ? this.#lastOffset + 1n : BigInt(e.offset);
      if (offset <= this.#lastOffset) {
        throw new BatchError(offset, `offsets must grow: ${offset} follows ${this.#lastOffset}`);
      }
      this.#lastOffset = offset;
      const stream = e.stream ?? "test";
      const version = e.streamVersion === undefined ? (this.#versions.get(stream) ?? 0n) + 1n : BigInt(e.streamVersion);
      this.#versions.set(stream, version);
      if (accepts(this.#projector, e.type, stream)) packer.push(e, stream, offset, version);
    }
    if (packer.count === 0) return 0;
    const batch = packer.batch();
    this.#backend.trusted("BEGIN");
    const result = runHandle(this.#projector, this.#db, batch);
    if (result.tag === "err") {
      this.#backend.trusted("ROLLBACK");
      throw new BatchError(result.val.offset, result.val.message);
    }
    this.#backend.trusted("COMMIT");
    return packer.count;
  }

  /** Runs any SQL query against the read model, outside the sandbox. */
  query(sql: string): Rows {
    return this.#backend.trustedQuery(sql);
  }

  /** Runs a query and returns its rows as arrays of values (integers as `bigint`), for `assert.deepEqual`. */
  rows(sql: string): SqlValue[][] {
    return this.query(sql).values.map((row) => [...row]);
  }
}

/**
 * A batch in the host's packed layout, so native tests exercise the same
 * unpacking as the component. Like the host, it leaves the fields the projector
 * does not read empty.
 */
class Packer {
  readonly #reads: EventFields;
  #offsets: bigint[] = [];
  #versions: bigint[] = [];
  #recordedAt: bigint[] = [];
  #ends: number[] = [];
  #chunks: Uint8Array[] = [];
  #length = 0;

  constructor(reads: EventFields) {
    this.#reads = reads;
  }

  get count(): number {
    return this.#offsets.length;
  }

  push(e: TestEvent, stream: string, offset: bigint, version: bigint): void {
    this.#offsets.push(offset);
    this.#versions.push(version);
    this.#recordedAt.push(
      e.recordedAtMicros === undefined ? DEFAULT_EPOCH_MICROS + offset * 1_000_000n : BigInt(e.recordedAtMicros),
    );
    const fields = [
      this.#reads.id ? (e.id ?? `00000000-0000-7000-8000-${offset.toString(16).padStart(12, "0")}`) : "",
      stream,
      e.type,
      e.dataJson ?? stringifyJson(e.data ?? {}),
      e.metadata === undefined || !this.#reads.metadata ? "" : stringifyJson(e.metadata),
    ];
    for (const field of fields) {
      const bytes = encodeUtf8(field);
      this.#chunks.push(bytes);
      this.#length += bytes.length;
      this.#ends.push(this.#length);
    }
  }

  batch(): EventBatch {
    const text = new Uint8Array(this.#length);
    let at = 0;
    for (const chunk of this.#chunks) {
      text.set(chunk, at);
      at += chunk.length;
    }
    const ends = Uint32Array.from(this.#ends);
    if (ends.length !== this.count * FIELDS) throw new Error("packer bug: wrong number of text ends");
    return {
      offsets: BigUint64Array.from(this.#offsets),
      streamVersions: BigUint64Array.from(this.#versions),
      recordedAt: BigInt64Array.from(this.#recordedAt),
      ends,
      text,
    };
  }
}

type Sqlite3 = Awaited<ReturnType<typeof sqlite3InitModule>>;
type OoDb = InstanceType<Sqlite3["oo1"]["DB"]>;
type OoStmt = ReturnType<OoDb["prepare"]>;

let sqlite3: Promise<Sqlite3> | undefined;

/** SQLite's primary result codes that the host maps to a kind of its own. */
const SQLITE_ERROR = 1;
const SQLITE_INTERRUPT = 9;
const SQLITE_FULL = 13;
const SQLITE_TOOBIG = 18;
const SQLITE_CONSTRAINT = 19;
const SQLITE_MISMATCH = 20;
const SQLITE_AUTH = 23;
const SQLITE_RANGE = 25;

/** The native stand-in for the host: the contract's `sql` calls on an in-memory SQLite. */
class SqliteBackend implements Backend {
  readonly #sqlite3: Sqlite3;
  readonly #db: OoDb;
  readonly #statements: OoStmt[] = [];
  readonly #handles = new Map<string, number>();
  #trusted = false;

  private constructor(sqlite: Sqlite3) {
    this.#sqlite3 = sqlite;
    this.#db = new sqlite.oo1.DB(":memory:", "c");
    const capi = sqlite.capi;
    const rc = capi.sqlite3_set_authorizer(
      this.#db,
      (_user: number, action: number, a: string | 0, b: string | 0) =>
        this.#trusted || !denied(capi, action, a || null, b || null) ? capi.SQLITE_OK : capi.SQLITE_DENY,
      0,
    );
    if (rc !== 0) throw new Error(`cannot install the sandbox authorizer (SQLite code ${rc})`);
  }

  static async open(): Promise<SqliteBackend> {
    sqlite3 ??= sqlite3InitModule();
    return new SqliteBackend(await sqlite3);
  }

  /** Runs host SQL (the harness's BEGIN and COMMIT) with the sandbox lifted. */
  trusted(sql: string): void {
    this.#trusted = true;
    try {
      this.#db.exec(sql);
    } finally {
      this.#trusted = false;
    }
  }

  trustedQuery(sql: string): Rows {
    this.#trusted = true;
    const stmt = this.#db.prepare(sql);
    try {
      const { columns, rows } = this.#collect(stmt);
      return new Rows(columns, rows.map((row) => row.map(fromWire)));
    } finally {
      stmt.finalize();
      this.#trusted = false;
    }
  }

  prepare(sql: string): number {
    const known = this.#handles.get(sql);
    if (known !== undefined) return known;
    const stmt = this.#run(() => this.#db.prepare(sql));
    const handle = this.#statements.push(stmt);
    this.#handles.set(sql, handle);
    return handle;
  }

  executePacked(writes: WriteBatch): void {
    const unpacked = unpackWrites(writes);
    for (let index = 0; index < unpacked.length; index++) {
      const write = unpacked[index] as UnpackedWrite;
      try {
        if (write.error !== undefined) throw new SqlError("invalid", write.error);
        this.execute(write.statement, write.params);
      } catch (e) {
        if (e instanceof SqlError) throw new BatchWriteError(index, e.kind, e.message.slice(e.kind.length + 2));
        throw e;
      }
    }
  }

  execute(statement: number, params: WireValue[]): bigint {
    const stmt = this.#bound(statement, params);
    try {
      this.#run(() => {
        while (stmt.step()) {
          // A write with RETURNING yields rows; run it to completion.
        }
      });
      return BigInt(this.#sqlite3.capi.sqlite3_changes(this.#db));
    } finally {
      this.#rewind(stmt);
    }
  }

  query(statement: number, params: WireValue[]): { columns: string[]; rows: WireValue[][] } {
    const stmt = this.#bound(statement, params);
    try {
      return this.#run(() => this.#collect(stmt));
    } finally {
      this.#rewind(stmt);
    }
  }

  executeScript(sql: string): void {
    this.#run(() => this.#db.exec(sql));
  }

  log(level: Level, message: string): void {
    console.error(`[projector ${level}] ${message}`);
  }

  #bound(statement: number, params: WireValue[]): OoStmt {
    const stmt = this.#statements[statement - 1];
    if (stmt === undefined) {
      throw new SqlError("unknown-statement", `no statement has handle ${statement}`);
    }
    const expected = stmt.parameterCount;
    if (params.length !== expected) {
      throw new SqlError("invalid", `the statement takes ${expected} parameters, but ${params.length} were given`);
    }
    const capi = this.#sqlite3.capi;
    const ptr = stmt.pointer as number;
    params.forEach((value, i) => {
      let rc: number;
      switch (value.tag) {
        case "integer":
          rc = capi.sqlite3_bind_int64(ptr, i + 1, value.val);
          break;
        case "real":
          rc = capi.sqlite3_bind_double(ptr, i + 1, value.val);
          break;
        default:
          stmt.bind(i + 1, value.tag === "null" ? null : value.val);
          rc = 0;
      }
      if (rc !== 0) throw this.#error(rc, capi.sqlite3_errmsg(this.#db) ?? "cannot bind");
    });
    return stmt;
  }

  /** Resets a statement for its next use; the error of its last step was already reported. */
  #rewind(stmt: OoStmt): void {
    this.#sqlite3.capi.sqlite3_reset(stmt.pointer as number);
    this.#sqlite3.capi.sqlite3_clear_bindings(stmt.pointer as number);
  }

  #collect(stmt: OoStmt): { columns: string[]; rows: WireValue[][] } {
    const capi = this.#sqlite3.capi;
    const ptr = stmt.pointer as number;
    const columns = stmt.getColumnNames();
    const rows: WireValue[][] = [];
    while (stmt.step()) {
      const row: WireValue[] = [];
      for (let i = 0; i < columns.length; i++) {
        switch (capi.sqlite3_column_type(ptr, i)) {
          case capi.SQLITE_INTEGER:
            row.push({ tag: "integer", val: BigInt(capi.sqlite3_column_int64(ptr, i)) });
            break;
          case capi.SQLITE_FLOAT:
            row.push({ tag: "real", val: capi.sqlite3_column_double(ptr, i) });
            break;
          case capi.SQLITE_TEXT:
            row.push({ tag: "text", val: capi.sqlite3_column_text(ptr, i) ?? "" });
            break;
          case capi.SQLITE_BLOB:
            row.push({ tag: "blob", val: stmt.getBlob(i) ?? new Uint8Array() });
            break;
          default:
            row.push({ tag: "null" });
        }
      }
      rows.push(row);
    }
    return { columns, rows };
  }

  /** Runs `f`, turning SQLite's exceptions into `SqlError`s with the host's kinds. */
  #run<T>(f: () => T): T {
    try {
      return f();
    } catch (e) {
      if (e instanceof SqlError) throw e;
      const code = (e as { resultCode?: number }).resultCode;
      if (typeof code === "number") throw this.#error(code, (e as Error).message);
      throw e;
    }
  }

  #error(code: number, message: string): SqlError {
    return new SqlError(kindOf(code), message);
  }
}

/** One write of a `write-batch`, decoded; `error` says why it breaks the layout, if it does. */
export interface UnpackedWrite {
  statement: number;
  params: WireValue[];
  error?: string;
}

/**
 * @internal Decodes a `write-batch` as the host does, following the layout in
 * the contract's doc comment: the native harness runs the SDK's packed writes
 * through it, so the encoder is checked against the specification, not
 * against itself. Decoding stops at the first write that breaks the layout,
 * which carries the error.
 */
export function unpackWrites(batch: WriteBatch): UnpackedWrite[] {
  const { statements, paramEnds, kinds, numbers, bytes } = batch;
  const writes: UnpackedWrite[] = [];
  if (paramEnds.length !== statements.length || numbers.length !== kinds.length) {
    writes.push({
      statement: statements[0] ?? 0,
      params: [],
      error: `mismatched lists: ${statements.length} statements, ${paramEnds.length} parameter ends, ${kinds.length} kinds, ${numbers.length} numbers`,
    });
    return writes;
  }
  const reals = new Float64Array(1);
  const bits = new BigInt64Array(reals.buffer);
  let param = 0;
  let byteStart = 0;
  for (let i = 0; i < statements.length; i++) {
    const statement = statements[i] as number;
    const end = paramEnds[i] as number;
    const params: WireValue[] = [];
    const fail = (error: string): UnpackedWrite[] => {
      writes.push({ statement, params, error });
      return writes;
    };
    if (end < param || end > kinds.length) return fail(`parameters ${param}..${end} of ${kinds.length}`);
    for (; param < end; param++) {
      const number = numbers[param] as bigint;
      switch (kinds[param]) {
        case KIND_NULL:
          params.push({ tag: "null" });
          break;
        case KIND_INTEGER:
          params.push({ tag: "integer", val: number });
          break;
        case KIND_REAL:
          bits[0] = number;
          params.push({ tag: "real", val: reals[0] as number });
          break;
        case KIND_TEXT:
        case KIND_BLOB: {
          if (number < BigInt(byteStart) || number > BigInt(bytes.length)) {
            return fail(`parameter ${param} spans bytes ${byteStart}..${number} of ${bytes.length}`);
          }
          const byteEnd = Number(number);
          if (kinds[param] === KIND_BLOB) {
            params.push({ tag: "blob", val: bytes.slice(byteStart, byteEnd) });
          } else {
            try {
              params.push({ tag: "text", val: decodeUtf8(bytes, byteStart, byteEnd) });
            } catch {
              return fail(`parameter ${param} is not UTF-8`);
            }
          }
          byteStart = byteEnd;
          break;
        }
        default:
          return fail(`parameter ${param} has kind ${kinds[param]}`);
      }
    }
    writes.push({ statement, params });
  }
  return writes;
}

function kindOf(code: number): SqlErrorKind {
  switch (code & 0xff) {
    case SQLITE_CONSTRAINT:
      return "constraint";
    case SQLITE_TOOBIG:
    case SQLITE_FULL:
      return "limit";
    case SQLITE_INTERRUPT:
      return "interrupted";
    case SQLITE_AUTH:
      return "denied";
    case SQLITE_ERROR:
    case SQLITE_MISMATCH:
    case SQLITE_RANGE:
      return "invalid";
    default:
      return "other";
  }
}

/** Whether the host's sandbox would deny this action (`a` and `b` are the authorizer's first two strings). */
function denied(capi: Sqlite3["capi"], action: number, a: string | null, b: string | null): boolean {
  switch (action) {
    case capi.SQLITE_ATTACH:
    case capi.SQLITE_DETACH:
    case capi.SQLITE_TRANSACTION:
    case capi.SQLITE_SAVEPOINT:
    case capi.SQLITE_CREATE_TEMP_INDEX:
    case capi.SQLITE_CREATE_TEMP_TABLE:
    case capi.SQLITE_CREATE_TEMP_TRIGGER:
    case capi.SQLITE_CREATE_TEMP_VIEW:
      return true;
    case capi.SQLITE_PRAGMA: {
      const name = (a ?? "").toLowerCase();
      return !(PRAGMAS_ANY_ARGUMENT.has(name) || (b === null && PRAGMAS_READ_ONLY.has(name)));
    }
    case capi.SQLITE_FUNCTION:
      return DENIED_FUNCTIONS.has((b ?? "").toLowerCase());
    case capi.SQLITE_CREATE_VTABLE:
      return isHostTable(a) || !VIRTUAL_TABLE_MODULES.has((b ?? "").toLowerCase());
    case capi.SQLITE_CREATE_INDEX:
    case capi.SQLITE_DROP_INDEX:
    case capi.SQLITE_DROP_TEMP_INDEX:
    case capi.SQLITE_CREATE_TRIGGER:
    case capi.SQLITE_DROP_TRIGGER:
    case capi.SQLITE_DROP_TEMP_TRIGGER:
      return isHostTable(a) || isHostTable(b);
    case capi.SQLITE_ALTER_TABLE:
      return isHostTable(b);
    case capi.SQLITE_SELECT:
    case capi.SQLITE_RECURSIVE:
      return false;
    default:
      // Tables, views and indexes named by the first string.
      return isHostTable(a);
  }
}

function isHostTable(table: string | null): boolean {
  return table !== null && table.slice(0, HOST_TABLE_PREFIX.length).toLowerCase() === HOST_TABLE_PREFIX;
}
