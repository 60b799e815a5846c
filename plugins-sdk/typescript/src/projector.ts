// What a projector author writes: a definition with its name, subscriptions,
// `init` and `handle`.

import type { Db } from "./db.ts";
import type { Event } from "./event.ts";

/** The longest projector name the host accepts. */
export const MAX_NAME_LEN = 64;

/**
 * A projector: builds one read model from the events it subscribes to.
 *
 * The host calls `init` once per fresh database and `handle` for every
 * delivered event, in offset order, in batches. Each batch runs in one
 * transaction that the host commits with the projector's checkpoint, or rolls
 * back if any event fails, so a projector never sees its own half-applied
 * batch. All state lives in the database: the component may be
 * re-instantiated at any time, and a replay must rebuild the same model.
 */
export interface Projector {
  /** 1 to 64 characters of `[a-z0-9_-]`; every version of one projector carries the same name. */
  readonly name: string;
  /** One line for operators: what the read model holds. */
  readonly description: string;
  /** Receive only events of these exact types; omitted or empty means every type. */
  readonly eventTypes?: readonly string[];
  /** Receive only events whose stream starts with one of these prefixes; omitted or empty means every stream. */
  readonly streamPrefixes?: readonly string[];
  /**
   * The optional event fields this projector reads: `"id"` ({@link Event.id})
   * and `"metadata"` ({@link Event.metadataJson}, {@link Event.metadata}).
   * Omitted means both. The host does not read a field left out from the log,
   * which makes a replay cheaper; reading it in `handle` then throws.
   *
   * ```ts
   * reads: [], // neither ids nor metadata
   * ```
   */
  readonly reads?: readonly EventField[];
  /** Creates the read model's schema in a fresh, empty database. Throw to fail. */
  init(db: Db): void;
  /** Applies one event. Throwing fails the batch, and the error names this event's offset. Must be synchronous. */
  handle(event: Event, db: Db): void;
}

/**
 * Declares a projector; export it as the module's default export, and the
 * build turns it into a component:
 *
 * ```ts
 * export default projector({
 *   name: "deposits",
 *   description: "Deposit totals per account",
 *   eventTypes: ["money.deposited"],
 *   init(db) {
 *     db.executeScript("CREATE TABLE deposits (account TEXT PRIMARY KEY, total INTEGER)");
 *   },
 *   handle(event, db) {
 *     const d = event.data<{ account: string; amount: number }>();
 *     db.execute(ADD, d.account, d.amount);
 *   },
 * });
 * ```
 */
export function projector<P extends Projector>(definition: P): P {
  if (typeof definition?.init !== "function" || typeof definition?.handle !== "function") {
    throw new TypeError("a projector needs `init(db)` and `handle(event, db)` functions");
  }
  readsOf(definition);
  return definition;
}

/** An optional event field a projector may leave out (see {@link Projector.reads}). */
export type EventField = "id" | "metadata";

/** The contract's `event-fields` flags: which optional fields the projector reads. */
export interface EventFields {
  id: boolean;
  metadata: boolean;
}

/** The contract's `projector-info`, as the component bindings take it. */
export interface ProjectorInfo {
  name: string;
  description: string;
  subscriptions: { eventTypes: string[]; streamPrefixes: string[] };
  reads: EventFields;
}

/** The projector's `metadata`. */
export function info(p: Projector): ProjectorInfo {
  return {
    name: p.name,
    description: p.description,
    subscriptions: {
      eventTypes: [...(p.eventTypes ?? [])],
      streamPrefixes: [...(p.streamPrefixes ?? [])],
    },
    reads: readsOf(p),
  };
}

/** The fields `p` reads: both unless it says otherwise. Throws a `TypeError` naming an unknown field. */
export function readsOf(p: Projector): EventFields {
  if (p.reads === undefined) return { id: true, metadata: true };
  if (!Array.isArray(p.reads)) {
    throw new TypeError(`reads must be an array of "id" and "metadata", not ${JSON.stringify(p.reads)}`);
  }
  for (const field of p.reads) {
    if (field !== "id" && field !== "metadata") {
      throw new TypeError(`reads holds ${JSON.stringify(field)}; the optional event fields are "id" and "metadata"`);
    }
  }
  return { id: p.reads.includes("id"), metadata: p.reads.includes("metadata") };
}

/** Checks the name against the rule the host enforces, so a native test fails the same way the host would. */
export function validateName(name: string): string | undefined {
  if (typeof name !== "string" || !/^[a-z0-9_-]{1,64}$/.test(name)) {
    return `projector name ${JSON.stringify(name)} is invalid: use 1 to ${MAX_NAME_LEN} characters of [a-z0-9_-]`;
  }
  return undefined;
}

/** Whether the host delivers an event of `type` on `stream` to `p`. */
export function accepts(p: Projector, type: string, stream: string): boolean {
  const types = p.eventTypes ?? [];
  const prefixes = p.streamPrefixes ?? [];
  return (
    (types.length === 0 || types.includes(type)) &&
    (prefixes.length === 0 || prefixes.some((prefix) => stream.startsWith(prefix)))
  );
}
