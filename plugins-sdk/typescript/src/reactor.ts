// Reactors: sagas and process managers that react to events by emitting events,
// exactly once (the `refract:reactor@0.1.0` world, `wit/reactor/`).
//
// A reactor is a projector with effects: it keeps its state in its own SQLite
// database, like a read model, and for each event it may emit events and
// schedule or cancel timers through `Effects`. The host buffers a batch's
// effects and applies them only after the batch succeeds, under deterministic
// ids, so a replayed batch re-emits nothing twice. A reactor never reads a
// clock: a timer is due a delay after its cause's `recordedAt`, and the host
// then delivers a `refract.timer` event (read it with `Timer.of`).

import { mustBeSynchronous } from "./batch.ts";
import type { Db } from "./db.ts";
import type { Event } from "./event.ts";
import { stringifyJson } from "./json.ts";
import type { Projector } from "./projector.ts";

/** The type of the event the host appends when a timer is due. */
export const TIMER_EVENT_TYPE = "refract.timer";

/** The stream the host appends reactor `name`'s timer events to; the reactor receives it whatever its subscriptions. */
export function timerStream(name: string): string {
  return `${TIMER_EVENT_TYPE}/${name}`;
}

/** The largest value of the contract's `u64`: expected versions and timer delays. */
const U64_MAX = 2n ** 64n - 1n;

/**
 * The host refused an emit or a timer request: an event type the reactor does
 * not declare in `emits`, a bad timer key, a delay too long. Thrown by
 * {@link Effects}; left uncaught, it fails the batch at the event being handled,
 * and the handle error carries the host's message.
 */
export class EffectRefused extends Error {
  constructor(message: string) {
    super(message);
    this.name = "EffectRefused";
  }
}

/** The options of {@link Effects.emit}. */
export interface EmitOptions {
  /**
   * Extra metadata, a JSON object. The host adds `causation_id` (the source
   * event's id), `correlation_id` (the source event's `correlation_id`, else
   * its id) and `reactor`.
   */
  readonly metadata?: Readonly<Record<string, unknown>>;
  /**
   * Optimistic concurrency: the version the stream must be at just before this
   * event (0: the stream must not exist yet). A conflict fails the batch at the
   * event being handled, like a thrown error.
   */
  readonly expectedVersion?: bigint | number;
}

/** The contract's `new-event`, as the component bindings take it. */
export interface NewEvent {
  stream: string;
  eventType: string;
  /** JSON text. */
  data: string;
  /** A JSON object's text, or `undefined` for none. */
  metadata: string | undefined;
  expectedVersion: bigint | undefined;
}

/**
 * @internal Where effects go: the host's `emit` and `timers` imports in a
 * component, a recorder in the native harness. Each method throws an
 * {@link EffectRefused} when the request is refused.
 */
export interface EffectsBackend {
  emit(cause: bigint, event: NewEvent): void;
  schedule(cause: bigint, key: string, delayMs: bigint, payload: string): void;
  cancel(key: string): void;
}

/**
 * A batch's effects, each caused by the event being handled: the host appends
 * the emitted events, and keeps the timers, only if the whole batch succeeds.
 */
export class Effects {
  readonly #backend: EffectsBackend;
  #cause = 0n;

  /** @internal The SDK creates the `Effects`; reactors receive them. */
  constructor(backend: EffectsBackend) {
    this.#backend = backend;
  }

  /** @internal Names the event whose effects follow. */
  setCause(offset: bigint): void {
    this.#cause = offset;
  }

  /**
   * Emits an event of `type` (one of the reactor's `emits`) with `data`, any
   * JSON value (`bigint`s are written as exact integers), on `stream`:
   *
   * ```ts
   * effects.emit(`payment-${order}`, "payment.requested", { order_id: order, amount });
   * effects.emit(order, "order.confirmed", { order_id: order }, { expectedVersion: 1 });
   * ```
   *
   * Throws an {@link EffectRefused} if the host refuses it, and a `TypeError` or
   * `RangeError` for a value the contract cannot carry.
   */
  emit(stream: string, type: string, data: unknown, options: EmitOptions = {}): void {
    const { metadata, expectedVersion } = options;
    if (
      metadata !== undefined &&
      (metadata === null || typeof metadata !== "object" || Array.isArray(metadata))
    ) {
      throw new TypeError(`emit of ${JSON.stringify(type)}: metadata must be a JSON object, not ${describeValue(metadata)}`);
    }
    this.#backend.emit(this.#cause, {
      stream: text(stream, "the stream", "emit"),
      eventType: text(type, "the event type", "emit"),
      data: json(data, `emit of ${JSON.stringify(type)}: data`),
      metadata: metadata === undefined ? undefined : json(metadata, `emit of ${JSON.stringify(type)}: metadata`),
      expectedVersion: expectedVersion === undefined ? undefined : u64(expectedVersion, "expectedVersion"),
    });
  }

  /**
   * Schedules the timer `key` to fire `delayMs` milliseconds after the
   * `recordedAt` of the event being handled, carrying `payload` (any JSON
   * value). Scheduling a pending key replaces it. When it is due, the reactor
   * receives a `refract.timer` event: read it with {@link Timer.of}.
   */
  schedule(key: string, delayMs: bigint | number, payload: unknown = null): void {
    this.#backend.schedule(
      this.#cause,
      text(key, "the timer key", "schedule"),
      u64(delayMs, "delayMs"),
      json(payload, `schedule of ${JSON.stringify(key)}: payload`),
    );
  }

  /** Cancels the pending timer `key`, if there is one; a timer that already fired, or never existed, is no error. */
  cancel(key: string): void {
    this.#backend.cancel(text(key, "the timer key", "cancel"));
  }
}

/** The JSON text of `value`, or a `TypeError` naming `what`. */
function json(value: unknown, what: string): string {
  try {
    return stringifyJson(value);
  } catch (e) {
    throw new TypeError(`${what} has no JSON form (${describeValue(value)}): ${(e as Error).message}`);
  }
}

function text(value: unknown, what: string, call: string): string {
  if (typeof value !== "string") throw new TypeError(`${call}: ${what} must be a string, not ${describeValue(value)}`);
  return value;
}

/** `value` as the contract's `u64`, or a `TypeError`/`RangeError` naming `what`. */
function u64(value: bigint | number, what: string): bigint {
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value)) {
      throw new RangeError(`${what} is ${value}; it must be a whole number of 0 or more (a bigint beyond 2^53)`);
    }
    value = BigInt(value);
  } else if (typeof value !== "bigint") {
    throw new TypeError(`${what} must be a number or a bigint, not ${describeValue(value)}`);
  }
  if (value < 0n || value > U64_MAX) {
    throw new RangeError(`${what} is ${value}; it must be between 0 and ${U64_MAX}`);
  }
  return value;
}

function describeValue(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return `a ${typeof value}`;
}

/**
 * A `refract.timer` event: the timer `key`, when it was due, and the payload
 * given to {@link Effects.schedule}.
 *
 * ```ts
 * const timer = Timer.of<{ order_id: string }>(event);
 * if (timer !== undefined) return cancel(timer.payload.order_id, "payment timed out");
 * ```
 */
export class Timer<P = unknown> {
  constructor(
    /** The key it was scheduled under. */
    readonly key: string,
    /** When it was due: microseconds since the Unix epoch, UTC (its cause's `recordedAt` plus the delay). */
    readonly dueAtMicros: bigint,
    /** The payload given to `schedule`, parsed like `event.data()`; the type parameter is a claim, not a check. */
    readonly payload: P,
  ) {}

  /** {@link dueAtMicros} as a `Date` (millisecond precision). */
  get dueAt(): Date {
    return new Date(Number(this.dueAtMicros / 1000n));
  }

  /**
   * The timer `event` carries, or `undefined` when it is not a timer event.
   * Throws a `TypeError` naming the event if its data is not a timer's.
   */
  static of<P = unknown>(event: Event): Timer<P> | undefined {
    if (event.type !== TIMER_EVENT_TYPE) return undefined;
    const data = event.data<{ key?: unknown; due_at?: unknown; payload?: unknown }>();
    const key = data?.key;
    const dueAt = data?.due_at;
    if (
      typeof key !== "string" ||
      !(typeof dueAt === "bigint" || (typeof dueAt === "number" && Number.isSafeInteger(dueAt)))
    ) {
      throw new TypeError(
        `the ${TIMER_EVENT_TYPE} event at offset ${event.offset} is not a timer: its data must be {"key": string, "due_at": integer, "payload": …}, not ${event.dataJson.slice(0, 200)}`,
      );
    }
    return new Timer<P>(key, BigInt(dueAt), (data.payload ?? null) as P);
  }
}

/**
 * A reactor: keeps its own state from the events it subscribes to (and its
 * own timer events, whatever its subscriptions), and reacts with effects.
 *
 * The host calls `init` once per fresh database and `react` for every
 * delivered event, in offset order, in batches. Each batch runs in one
 * transaction that the host commits with the reactor's checkpoint, its timers
 * and the events it emitted, or rolls back with none of its effects if any
 * event fails. A reactor must be deterministic: its state is rebuilt by
 * replaying the log, and a replay must make the same decisions.
 */
export interface Reactor {
  /** 1 to 64 characters of `[a-z0-9_-]`; every version of one reactor carries the same name. Its timer stream is `refract.timer/<name>`. */
  readonly name: string;
  /** One line for operators: what the reactor does. */
  readonly description: string;
  /** Receive only events of these exact types; omitted or empty means every type. */
  readonly eventTypes?: readonly string[];
  /** Receive only events whose stream starts with one of these prefixes; omitted or empty means every stream. */
  readonly streamPrefixes?: readonly string[];
  /** The event types this reactor may emit; the host refuses an emit of any other type. */
  readonly emits: readonly string[];
  /** Creates the reactor's state schema in a fresh, empty database. Throw to fail. */
  init(db: Db): void;
  /**
   * Reacts to one event. Throwing fails the batch, with none of its effects,
   * and the error names this event's offset. Must be synchronous.
   */
  react(event: Event, db: Db, effects: Effects): void;
}

/**
 * Declares a reactor; export it as the module's default export and build it
 * with `refract-build --reactor`:
 *
 * ```ts
 * export default reactor({
 *   name: "greeter",
 *   description: "Welcomes new users",
 *   eventTypes: ["user.joined"],
 *   emits: ["mail.requested"],
 *   init(db) {
 *     db.executeScript("CREATE TABLE seen (user TEXT PRIMARY KEY)");
 *   },
 *   react(event, db, effects) {
 *     effects.emit(`mail-${event.stream}`, "mail.requested", { to: event.stream });
 *   },
 * });
 * ```
 */
export function reactor<R extends Reactor>(definition: R): R {
  const problem = reactorProblem(definition);
  if (problem !== undefined) throw new TypeError(problem);
  return definition;
}

/** What is wrong with `r` as a reactor, or `undefined` when nothing is. */
export function reactorProblem(r: unknown): string | undefined {
  const candidate = r as Partial<Reactor> | null | undefined;
  if (typeof candidate?.init !== "function" || typeof candidate?.react !== "function") {
    return "a reactor needs `init(db)` and `react(event, db, effects)` functions";
  }
  const emits = candidate.emits;
  if (!Array.isArray(emits) || emits.some((type) => typeof type !== "string" || type === "")) {
    return `a reactor's \`emits\` must list the event types it may emit, for example \`emits: ["order.confirmed"]\`, not ${JSON.stringify(emits)}`;
  }
  return undefined;
}

/** Whether `p` looks like a reactor rather than a projector: it has `react` and no `handle`. */
export function isReactor(p: unknown): boolean {
  const candidate = p as { react?: unknown; handle?: unknown } | null | undefined;
  return typeof candidate?.react === "function" && typeof candidate?.handle !== "function";
}

/**
 * @internal `r` as the projector the batch loop runs: `handle` names the event
 * as the cause of the effects that follow, then calls `react`.
 */
export function asProjector(r: Reactor, effects: Effects): Projector {
  const p: Projector = {
    name: r.name,
    description: r.description,
    init: (db) => r.init(db),
    handle: (event, db) => {
      effects.setCause(event.offset);
      mustBeSynchronous(r.react(event, db, effects), "react");
    },
  };
  return {
    ...p,
    ...(r.eventTypes === undefined ? {} : { eventTypes: r.eventTypes }),
    ...(r.streamPrefixes === undefined ? {} : { streamPrefixes: r.streamPrefixes }),
  };
}
