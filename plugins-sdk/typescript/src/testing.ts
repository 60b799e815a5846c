// Native tests for projectors and reactors: run a projector's real `init` and `handle`
// (a reactor's `init` and `react`, its effects recorded by `TestReactor`)
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
import { parseJson, stringifyJson } from "./json.ts";
import { type UnpackedWrite, unpackWrites, type WriteBatch } from "./packed.ts";
import { accepts, type EventFields, type Projector, readsOf, validateName } from "./projector.ts";
import {
  asProjector,
  EffectRefused,
  Effects,
  type EffectsBackend,
  isReactor,
  type NewEvent,
  type Reactor,
  reactorProblem,
  TIMER_EVENT_TYPE,
  timerStream,
} from "./reactor.ts";
import { Rows } from "./rows.ts";
import { encodeUtf8 } from "./utf8.ts";
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
 * The host's side of one projector or reactor, natively: a fresh in-memory
 * database after `init`, then batches of the delivered events, each in one
 * transaction that rolls back if the batch fails.
 */
class Harness {
  readonly #projector: Projector;
  readonly #backend: SqliteBackend;
  readonly #db: Db;
  readonly #delivers: (type: string, stream: string) => boolean;
  #lastOffset = 0n;
  readonly #versions = new Map<string, bigint>();

  private constructor(projector: Projector, backend: SqliteBackend, delivers: (type: string, stream: string) => boolean) {
    this.#projector = projector;
    this.#backend = backend;
    this.#db = new Db(backend);
    this.#delivers = delivers;
  }

  /** Opens the database and runs `init`; `what` names the component in errors (`projector "x"`). */
  static async open(
    projector: Projector,
    what: string,
    delivers: (type: string, stream: string) => boolean,
  ): Promise<Harness> {
    const invalid = validateName(projector.name);
    if (invalid !== undefined) throw new Error(invalid);
    const h = new Harness(projector, await SqliteBackend.open(), delivers);
    h.#backend.trusted("BEGIN");
    const result = runInit(projector, h.#db);
    if (result.tag === "err") {
      h.#backend.trusted("ROLLBACK");
      throw new Error(`init of ${what} ${JSON.stringify(projector.name)} failed: ${result.val}`);
    }
    h.#backend.trusted("COMMIT");
    return h;
  }

  get lastOffset(): bigint {
    return this.#lastOffset;
  }

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
      if (this.#delivers(e.type, stream)) packer.push(e, stream, offset, version);
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

  query(sql: string): Rows {
    return this.#backend.trustedQuery(sql);
  }
}

/**
 * A projector running natively, as the host would run it: `init` once, then
 * batches of events, each in one transaction that rolls back if the batch
 * fails. Only subscribed events are delivered.
 */
export class TestProjector {
  readonly #harness: Harness;

  private constructor(harness: Harness) {
    this.#harness = harness;
  }

  /** A fresh in-memory read model after the projector's `init`. Fails if its name breaks the host's rule or `init` fails. */
  static async create(projector: Projector): Promise<TestProjector> {
    if (isReactor(projector)) {
      throw new TypeError(`${JSON.stringify(projector.name)} is a reactor (it has \`react\`): test it with \`TestReactor\``);
    }
    return new TestProjector(
      await Harness.open(projector, "projector", (type, stream) => accepts(projector, type, stream)),
    );
  }

  /** The offset of the last event applied so far, delivered or not; 0 before any. */
  get lastOffset(): bigint {
    return this.#harness.lastOffset;
  }

  /**
   * Appends `events` to the test's log and delivers the subscribed ones as one
   * batch, in one transaction. Returns how many were delivered. On failure the
   * transaction rolls back and a {@link BatchError} names the event.
   */
  apply(events: Iterable<TestEvent>): number {
    return this.#harness.apply(events);
  }

  /** Runs any SQL query against the read model, outside the sandbox. */
  query(sql: string): Rows {
    return this.#harness.query(sql);
  }

  /** Runs a query and returns its rows as arrays of values (integers as `bigint`), for `assert.deepEqual`. */
  rows(sql: string): SqlValue[][] {
    return this.query(sql).values.map((row) => [...row]);
  }
}

/**
 * An effect a reactor requested, as {@link TestReactor} records it. Data,
 * metadata and payloads are parsed back from the JSON the host would receive
 * (integers beyond 2^53 as `bigint`s); `cause` is the offset of the event being
 * handled. Optional fields are present only when the reactor set them, so a
 * test can `assert.deepEqual` against plain literals.
 */
export type RecordedEffect =
  | {
      kind: "emit";
      cause: bigint;
      stream: string;
      type: string;
      data: unknown;
      metadata?: unknown;
      expectedVersion?: bigint;
    }
  | { kind: "schedule"; cause: bigint; key: string; delayMs: bigint; payload: unknown }
  | { kind: "cancel"; key: string };

/** The longest timer key the host accepts, in UTF-8 bytes (`refract::reactors::MAX_TIMER_KEY_BYTES`). */
export const MAX_TIMER_KEY_BYTES = 256;

/** The longest timer delay the host accepts: about ten years (`refract::reactors::MAX_TIMER_DELAY_MS`). */
export const MAX_TIMER_DELAY_MS = 10n * 366n * 24n * 3600n * 1000n;

/**
 * A native stand-in for the host's `emit` and `timers` imports: it records each
 * request and refuses, with the host's message, what the host refuses as a
 * value (an undeclared event type, a bad timer key, a delay too long).
 */
class RecordingEffects implements EffectsBackend {
  readonly recorded: RecordedEffect[] = [];

  constructor(readonly emits: readonly string[]) {}

  emit(cause: bigint, event: NewEvent): void {
    if (!this.emits.includes(event.eventType)) {
      throw new EffectRefused(
        `the type \`${[...event.eventType].slice(0, 80).join("")}\` is not among the types this reactor declares in \`reactor-info\` (${this.emits.join(", ")})`,
      );
    }
    this.recorded.push({
      kind: "emit",
      cause,
      stream: event.stream,
      type: event.eventType,
      data: parseJson(event.data),
      ...(event.metadata === undefined ? {} : { metadata: parseJson(event.metadata) }),
      ...(event.expectedVersion === undefined ? {} : { expectedVersion: event.expectedVersion }),
    });
  }

  schedule(cause: bigint, key: string, delayMs: bigint, payload: string): void {
    checkTimerKey(key);
    if (delayMs > MAX_TIMER_DELAY_MS) {
      throw new EffectRefused(`a delay of ${delayMs} ms is longer than ${MAX_TIMER_DELAY_MS} ms`);
    }
    this.recorded.push({ kind: "schedule", cause, key, delayMs, payload: parseJson(payload) });
  }

  cancel(key: string): void {
    checkTimerKey(key);
    this.recorded.push({ kind: "cancel", key });
  }
}

function checkTimerKey(key: string): void {
  // Control characters as Rust's `char::is_control` sees them: C0, DEL and C1.
  if (key === "" || encodeUtf8(key).length > MAX_TIMER_KEY_BYTES || /[\u0000-\u001f\u007f-\u009f]/.test(key)) {
    throw new EffectRefused(`a timer key must be 1 to ${MAX_TIMER_KEY_BYTES} bytes without control characters`);
  }
}

/**
 * A reactor running natively, as {@link TestProjector} runs a projector, with
 * its effects recorded in {@link effects} instead of applied. A failed batch's
 * effects are dropped, as the host drops them. The reactor's own timer events
 * ({@link timerEvent}) are delivered whatever its subscriptions.
 *
 * ```ts
 * const saga = await TestReactor.create(orderSaga);
 * saga.apply([event("order.placed", { stream: "order-1", data: { customer: "ann", total: 1200 } })]);
 * assert.deepEqual(saga.effects[0], { kind: "emit", cause: 1n, stream: "payment-order-1", … });
 * saga.apply([saga.timerEvent("payment-timeout:order-1", { order_id: "order-1" })]);
 * ```
 */
export class TestReactor {
  readonly #harness: Harness;
  readonly #recorder: RecordingEffects;
  readonly #name: string;

  private constructor(harness: Harness, recorder: RecordingEffects, name: string) {
    this.#harness = harness;
    this.#recorder = recorder;
    this.#name = name;
  }

  /** A fresh in-memory state database after the reactor's `init`. Fails if it is not a reactor, its name breaks the host's rule, or `init` fails. */
  static async create(r: Reactor): Promise<TestReactor> {
    const problem = reactorProblem(r);
    if (problem !== undefined) throw new TypeError(problem);
    const recorder = new RecordingEffects([...r.emits]);
    const p = asProjector(r, new Effects(recorder));
    const timers = timerStream(r.name);
    const harness = await Harness.open(
      p,
      "reactor",
      (type, stream) => (type === TIMER_EVENT_TYPE && stream === timers) || accepts(p, type, stream),
    );
    return new TestReactor(harness, recorder, r.name);
  }

  /** Every effect requested by the batches that succeeded, in order. Clear it with `effects.length = 0`. */
  get effects(): RecordedEffect[] {
    return this.#recorder.recorded;
  }

  /** The offset of the last event applied so far, delivered or not; 0 before any. */
  get lastOffset(): bigint {
    return this.#harness.lastOffset;
  }

  /**
   * Appends `events` and delivers the subscribed ones (and the reactor's own
   * timer events) as one batch. Returns how many were delivered. On failure the
   * state rolls back, the batch's effects are dropped, and a
   * {@link BatchError} names the event.
   */
  apply(events: Iterable<TestEvent>): number {
    const recorded = this.#recorder.recorded.length;
    try {
      return this.#harness.apply(events);
    } catch (e) {
      this.#recorder.recorded.length = recorded;
      throw e;
    }
  }

  /**
   * The `refract.timer` event the host appends when timer `key` is due, on the
   * reactor's timer stream, with the payload given to `schedule`.
   */
  timerEvent(key: string, payload: unknown = null, dueAtMicros: bigint | number = 0n): TestEvent {
    return event(TIMER_EVENT_TYPE, {
      stream: timerStream(this.#name),
      data: { key, due_at: BigInt(dueAtMicros), payload },
    });
  }

  /** Runs any SQL query against the reactor's state, outside the sandbox. */
  query(sql: string): Rows {
    return this.#harness.query(sql);
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
