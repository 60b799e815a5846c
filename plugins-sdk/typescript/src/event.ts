// One event as a projector sees it: a view into the packed batch the host sent,
// decoding each field only when it is read.

import { parseJson } from "./json.ts";
import type { EventFields } from "./projector.ts";
import { decodeUtf8 } from "./utf8.ts";

/** The contract's `event-batch`: a batch of events packed into five flat buffers. */
export interface EventBatch {
  offsets: BigUint64Array;
  streamVersions: BigUint64Array;
  recordedAt: BigInt64Array;
  /** Five end positions per event, into `text`: id, stream, type, data, metadata. */
  ends: Uint32Array;
  text: Uint8Array;
}

/** How many text fields each event has in a packed batch. */
export const FIELDS = 5;
const ID = 0;
const STREAM = 1;
const TYPE = 2;
const DATA = 3;
const METADATA = 4;

/**
 * One event from the log. Reading a field decodes it from the batch the first
 * time, so a projector pays only for the fields it reads.
 *
 * Offsets, stream versions and timestamps are `bigint`s: exact at any size.
 * {@link data} parses the JSON payload like `JSON.parse`, except that an
 * integer beyond ±2^53, which a `number` cannot hold exactly, arrives as a
 * `bigint` instead of being silently rounded.
 *
 * An `Event` is valid during the `handle` call it is passed to; copy what you
 * need to keep.
 */
export class Event {
  readonly #batch: EventBatch;
  readonly #index: number;
  readonly #reads: EventFields;
  #type: string | undefined;
  #stream: string | undefined;

  /** @internal The batch loop creates events; `reads` is what the projector declared it reads. */
  constructor(batch: EventBatch, index: number, reads: EventFields) {
    this.#batch = batch;
    this.#index = index;
    this.#reads = reads;
  }

  /** The event's global position in the log. Offsets start at 1 and only grow. */
  get offset(): bigint {
    return this.#batch.offsets[this.#index] as bigint;
  }

  /** The event's position within its stream, from 1. */
  get streamVersion(): bigint {
    return this.#batch.streamVersions[this.#index] as bigint;
  }

  /**
   * When the log recorded the event: microseconds since the Unix epoch, UTC.
   * This is the projector's only clock, and it replays identically.
   */
  get recordedAtMicros(): bigint {
    return this.#batch.recordedAt[this.#index] as bigint;
  }

  /** {@link recordedAtMicros} as a `Date` (millisecond precision). */
  get recordedAt(): Date {
    return new Date(Number(this.recordedAtMicros / 1000n));
  }

  /** The event's unique id. Throws if the projector's `reads` leaves out `"id"`: the host did not send it. */
  get id(): string {
    if (!this.#reads.id) throw notRead("id", "id");
    return this.#field(ID);
  }

  /** The stream the event belongs to, for example an account or order id. */
  get stream(): string {
    return (this.#stream ??= this.#field(STREAM));
  }

  /** The event type, for example `money.deposited`. */
  get type(): string {
    return (this.#type ??= this.#field(TYPE));
  }

  /** The payload as JSON text. */
  get dataJson(): string {
    return this.#field(DATA);
  }

  /**
   * The payload, parsed from JSON. Integers beyond ±2^53 are `bigint`s (see
   * the class documentation); the type parameter is a claim about the shape,
   * not a check: validate what you rely on.
   */
  data<T = unknown>(): T {
    return parseJson(this.dataJson) as T;
  }

  /**
   * The metadata as JSON text, or `undefined` when the event has none. Throws
   * if the projector's `reads` leaves out `"metadata"`: the host did not send it.
   */
  get metadataJson(): string | undefined {
    if (!this.#reads.metadata) throw notRead("metadata", "metadataJson");
    const json = this.#field(METADATA);
    return json === "" ? undefined : json;
  }

  /** The metadata, parsed like {@link data}, or `undefined` when the event has none. */
  metadata<T = unknown>(): T | undefined {
    const json = this.metadataJson;
    return json === undefined ? undefined : (parseJson(json) as T);
  }

  #field(field: number): string {
    const ends = this.#batch.ends;
    const at = this.#index * FIELDS + field;
    const start = at === 0 ? 0 : (ends[at - 1] as number);
    return decodeUtf8(this.#batch.text, start, ends[at] as number);
  }
}

/** Reading a field the projector said it does not read: the host sent empty text, which must not pass for the real value. */
function notRead(field: string, getter: string): Error {
  return new Error(
    `event.${getter} was read, but this projector's \`reads\` leaves out "${field}", so the host does not send it: add "${field}" to \`reads\``,
  );
}
