// The loop behind the `init` and `handle` exports, shared by the component glue
// and the native test harness so both run the same code. This is the one place
// where anything a projector throws becomes the contract's error value.

import type { Db, WriteFailure } from "./db.ts";
import { describe } from "./errors.ts";
import { Event, type EventBatch, FIELDS } from "./event.ts";
import { type Projector, readsOf } from "./projector.ts";

/** The contract's `result<_, string>` for `init`, as the component bindings take it. */
export type InitResult = { tag: "ok"; val: undefined } | { tag: "err"; val: string };

/** The contract's `handle-error`. */
export interface HandleError {
  /** The log offset of the event that failed. */
  offset: bigint;
  /** What went wrong, for the operator. */
  message: string;
}

/** The contract's `result<_, handle-error>` for `handle`. */
export type HandleResult = { tag: "ok"; val: undefined } | { tag: "err"; val: HandleError };

const OK = Object.freeze({ tag: "ok", val: undefined }) as { tag: "ok"; val: undefined };

/** Runs `p.init` and sends its deferred writes. Never throws. */
export function runInit(p: Projector, db: Db): InitResult {
  db.reset();
  let outcome: InitResult;
  try {
    mustBeSynchronous(p.init(db), "init");
    db.flush();
    outcome = OK;
  } catch (e) {
    const failure = db.takeFailure();
    outcome = { tag: "err", val: failure ? describeWrite(failure) : describe(e) };
  }
  db.reset();
  return outcome;
}

/** Runs `p.handle` on each event of the batch, then sends the deferred writes. Never throws. */
export function runHandle(p: Projector, db: Db, batch: EventBatch): HandleResult {
  db.reset();
  let outcome: HandleResult;
  try {
    outcome = handleAll(p, db, batch);
  } catch (e) {
    // Only a bug in the SDK gets here; still a value, never a trap.
    outcome = err(batch.offsets[0] ?? 0n, `the Refract SDK failed: ${describe(e)}`);
  }
  db.reset();
  return outcome;
}

function handleAll(p: Projector, db: Db, batch: EventBatch): HandleResult {
  const n = batch.offsets.length;
  if (
    batch.streamVersions.length !== n ||
    batch.recordedAt.length !== n ||
    batch.ends.length !== n * FIELDS
  ) {
    return err(
      batch.offsets[0] ?? 0n,
      `malformed event batch from the host: ${n} offsets, ${batch.streamVersions.length} stream versions, ` +
        `${batch.recordedAt.length} timestamps and ${batch.ends.length} text ends`,
    );
  }
  const reads = readsOf(p);
  for (let i = 0; i < n; i++) {
    const offset = batch.offsets[i] as bigint;
    db.setOffset(offset);
    let thrown: unknown;
    let failed = false;
    try {
      mustBeSynchronous(p.handle(new Event(batch, i, reads), db), "handle");
    } catch (e) {
      thrown = e;
      failed = true;
    }
    // A failed deferred write outranks whatever the projector made of it: the
    // batch is lost either way, and the write names the event that caused it.
    const failure = db.takeFailure();
    if (failure !== undefined) return err(failure.offset ?? offset, describeWrite(failure));
    if (failed) return err(offset, describe(thrown));
  }
  const last = n === 0 ? 0n : (batch.offsets[n - 1] as bigint);
  try {
    db.flush();
  } catch (e) {
    const failure = db.takeFailure();
    return err(failure?.offset ?? last, failure ? describeWrite(failure) : describe(e));
  }
  return OK;
}

function err(offset: bigint, message: string): HandleResult {
  return { tag: "err", val: { offset, message } };
}

function describeWrite(failure: WriteFailure): string {
  return `deferred write failed: ${failure.error.message} (statement: ${failure.sql})`;
}

/** Refuses a Promise: the host calls `init` and `handle` (and a reactor's `react`) synchronously, and SQL calls are synchronous. */
export function mustBeSynchronous(returned: unknown, what: string): void {
  if (
    returned !== null &&
    (typeof returned === "object" || typeof returned === "function") &&
    typeof (returned as { then?: unknown }).then === "function"
  ) {
    // Keep a rejection from surfacing later as an unhandled one.
    (returned as Promise<unknown>).then(undefined, () => undefined);
    throw new TypeError(
      `${what} returned a Promise; it must be synchronous (every Db call is), so drop \`async\``,
    );
  }
}
