// The deferred writes of a batch, encoded as they are queued into the flat
// buffers of the contract's `write-batch` (`refract:projector@0.2.0`), so a
// flush hands the bindings five typed arrays and they copy each one into the
// host call with a single memcpy: no object per write or per value.
//
// The layout (the contract's doc comment on `write-batch` is the authority):
// write `i` runs `statements[i]` with parameters `paramEnds[i-1] .. paramEnds[i]`;
// parameter `j` has `kinds[j]` (0 null, 1 integer, 2 real, 3 text, 4 blob) and
// `numbers[j]`: the integer, the real's IEEE 754 bits, or for text and blobs
// the end of its bytes in `bytes`.

import { decodeUtf8 } from "./utf8.ts";
import { Real, type Param, type WireValue } from "./values.ts";

/** The contract's `write-batch`, as the component bindings take it. */
export interface WriteBatch {
  statements: Uint32Array;
  paramEnds: Uint32Array;
  kinds: Uint8Array;
  numbers: BigInt64Array;
  bytes: Uint8Array;
}

/** Parameter kinds of the packed format. */
export const KIND_NULL = 0;
export const KIND_INTEGER = 1;
export const KIND_REAL = 2;
export const KIND_TEXT = 3;
export const KIND_BLOB = 4;

const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;
/** The integral doubles that convert to a 64-bit integer exactly: `[-2^63, 2^63)`. */
const F64_I64_LIMIT = 2 ** 63;
const TWO_POW_32 = 2 ** 32;

interface Utf8Encoder {
  encodeInto(text: string, into: Uint8Array): { read: number; written: number };
}
const encoder = new (globalThis as unknown as { TextEncoder: new () => Utf8Encoder }).TextEncoder();

/**
 * A growing `write-batch`. Buffers are reused from flush to flush (the
 * bindings copy them during the call), so a steady stream of batches allocates
 * nothing once they have grown to fit.
 */
export class PackedWrites {
  #statements = new Uint32Array(256);
  #paramEnds = new Uint32Array(256);
  #kinds = new Uint8Array(1024);
  /** The numbers, seen as 64-bit integers, as doubles (for reals) and as 32-bit halves (for integral `number`s, without a `BigInt`). */
  #numbers = new BigInt64Array(1024);
  #reals = new Float64Array(this.#numbers.buffer);
  #halves = new Int32Array(this.#numbers.buffer);
  #bytes = new Uint8Array(16 << 10);
  #writes = 0;
  #params = 0;
  #byteLength = 0;

  /** Writes queued. */
  get writes(): number {
    return this.#writes;
  }

  /** Parameters queued, over all writes. */
  get params(): number {
    return this.#params;
  }

  /** Bytes of text and blobs queued. */
  get byteLength(): number {
    return this.#byteLength;
  }

  /**
   * Queues one write of `statement` with `params`. A parameter that cannot be
   * bound throws a `TypeError` or `RangeError` naming its position (`?1` is the
   * first), and leaves the buffers as they were before the call.
   */
  push(statement: number, params: readonly Param[]): void {
    const startParams = this.#params;
    const startBytes = this.#byteLength;
    try {
      this.#reserveParams(params.length);
      for (let i = 0; i < params.length; i++) this.#param(params[i], i + 1);
    } catch (e) {
      this.#params = startParams;
      this.#byteLength = startBytes;
      throw e;
    }
    if (this.#writes === this.#statements.length) {
      this.#statements = grown(this.#statements, this.#writes + 1);
      this.#paramEnds = grown(this.#paramEnds, this.#writes + 1);
    }
    this.#statements[this.#writes] = statement;
    this.#paramEnds[this.#writes] = this.#params;
    this.#writes++;
  }

  /** The queued writes as the contract's record: views of the buffers, valid until the next `push` or `clear`. */
  batch(): WriteBatch {
    return {
      statements: this.#statements.subarray(0, this.#writes),
      paramEnds: this.#paramEnds.subarray(0, this.#writes),
      kinds: this.#kinds.subarray(0, this.#params),
      numbers: this.#numbers.subarray(0, this.#params),
      bytes: this.#bytes.subarray(0, this.#byteLength),
    };
  }

  /** Forgets every queued write, keeping the buffers. */
  clear(): void {
    this.#writes = 0;
    this.#params = 0;
    this.#byteLength = 0;
  }

  #param(value: Param, position: number): void {
    const j = this.#params;
    switch (typeof value) {
      case "number":
        if (Number.isInteger(value) && value >= -F64_I64_LIMIT && value < F64_I64_LIMIT) {
          this.#integral(j, value);
        } else {
          this.#kinds[j] = KIND_REAL;
          this.#reals[j] = value;
        }
        break;
      case "bigint":
        if (value < I64_MIN || value > I64_MAX) {
          throw new RangeError(
            `parameter ?${position} is ${value}, outside SQLite's 64-bit integer range [${I64_MIN}, ${I64_MAX}]; store it as text`,
          );
        }
        this.#kinds[j] = KIND_INTEGER;
        this.#numbers[j] = value;
        break;
      case "string":
        this.#kinds[j] = KIND_TEXT;
        this.#text(j, value);
        break;
      case "boolean":
        this.#integral(j, value ? 1 : 0);
        break;
      case "undefined":
        this.#null(j);
        break;
      case "object":
        if (value === null) {
          this.#null(j);
        } else if (value instanceof Uint8Array) {
          this.#kinds[j] = KIND_BLOB;
          this.#blob(j, value);
        } else if (value instanceof Real) {
          this.#kinds[j] = KIND_REAL;
          this.#reals[j] = value.value;
        } else {
          throw unbindable(value, position);
        }
        break;
      default:
        throw unbindable(value, position);
    }
    this.#params = j + 1;
  }

  #null(j: number): void {
    this.#kinds[j] = KIND_NULL;
    this.#halves[2 * j] = 0;
    this.#halves[2 * j + 1] = 0;
  }

  /** An integral `number` in `[-2^63, 2^63)`, written as two 32-bit halves (wasm is little-endian): no `BigInt` per value. */
  #integral(j: number, value: number): void {
    this.#kinds[j] = KIND_INTEGER;
    const high = Math.floor(value / TWO_POW_32);
    this.#halves[2 * j] = value - high * TWO_POW_32;
    this.#halves[2 * j + 1] = high;
  }

  #text(j: number, text: string): void {
    // UTF-8 takes at most 3 bytes per UTF-16 unit (a surrogate pair: 4 bytes for 2 units).
    this.#reserveBytes(text.length * 3);
    const { written } = encoder.encodeInto(text, this.#bytes.subarray(this.#byteLength));
    this.#endBytes(j, written);
  }

  #blob(j: number, blob: Uint8Array): void {
    this.#reserveBytes(blob.length);
    this.#bytes.set(blob, this.#byteLength);
    this.#endBytes(j, blob.length);
  }

  #endBytes(j: number, length: number): void {
    this.#byteLength += length;
    this.#halves[2 * j] = this.#byteLength;
    this.#halves[2 * j + 1] = 0;
  }

  #reserveParams(count: number): void {
    const needed = this.#params + count;
    if (needed <= this.#kinds.length) return;
    this.#kinds = grown(this.#kinds, needed);
    this.#numbers = grown(this.#numbers, needed);
    this.#reals = new Float64Array(this.#numbers.buffer);
    this.#halves = new Int32Array(this.#numbers.buffer);
  }

  #reserveBytes(count: number): void {
    const needed = this.#byteLength + count;
    if (needed > this.#bytes.length) this.#bytes = grown(this.#bytes, needed);
  }
}

type Growable = Uint8Array | Uint32Array | BigInt64Array;

/** A copy of `array` with room for at least `needed` elements, doubling to keep growth amortized. */
function grown<T extends Growable>(array: T, needed: number): T {
  let length = Math.max(array.length, 1);
  while (length < needed) length *= 2;
  const bigger = new (array.constructor as new (length: number) => T)(length);
  bigger.set(array as never);
  return bigger;
}

function unbindable(value: unknown, position: number): TypeError {
  return new TypeError(
    `parameter ?${position} is ${kindOf(value)}; bind null, a number, a bigint, a boolean, a string or a Uint8Array`,
  );
}

function kindOf(value: unknown): string {
  if (value === null) return "null";
  if (typeof value !== "object") return `a ${typeof value}`;
  const name = (value as { constructor?: { name?: string } }).constructor?.name;
  return name ? `a ${name}` : "an object";
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
 * against itself; a reactor's component glue sends them through it as the
 * `refract:projector@0.1.0` `execute-batch` that the reactor world speaks.
 * Decoding stops at the first write that breaks the layout, which carries
 * the error.
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
