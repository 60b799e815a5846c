// SQL values: what a projector binds to a statement, and what a query returns.

/**
 * A value bound to a SQL parameter. It maps to the contract's `sql-value`:
 *
 * - `null` and `undefined`: NULL;
 * - `bigint`: a 64-bit integer (a `RangeError` outside the signed 64-bit range);
 * - `number`: an integer when it holds an integer that fits 64 bits, a float
 *   otherwise (wrap it in {@link real} to store an integral number as a float);
 * - `boolean`: the integer 1 or 0;
 * - `string`: text; `Uint8Array`: a blob.
 */
export type Param = null | undefined | bigint | number | boolean | string | Uint8Array | Real;

/**
 * A value read from a result column. Integers are always `bigint`, so no value
 * loses precision; floats are `number`.
 */
export type SqlValue = null | bigint | number | string | Uint8Array;

/** A number that binds as a SQL float even when it holds an integer. */
export class Real {
  constructor(readonly value: number) {}
}

/** Binds `value` as a SQL float: `db.execute(AVG, real(2))` stores `2.0`. */
export function real(value: number): Real {
  return new Real(value);
}

/** The contract's `sql-value`, as the component bindings take and return it. */
export type WireValue =
  | { tag: "null" }
  | { tag: "integer"; val: bigint }
  | { tag: "real"; val: number }
  | { tag: "text"; val: string }
  | { tag: "blob"; val: Uint8Array };

const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;
/** The integral doubles that convert to a 64-bit integer exactly. */
const F64_I64_LIMIT = 2 ** 63;

const NULL: WireValue = Object.freeze({ tag: "null" }) as WireValue;

/**
 * Converts one parameter, or throws a `TypeError`/`RangeError` naming its
 * position (1-based, as in `?1`) so the handle error points at the bug.
 */
export function toWire(value: Param, position: number): WireValue {
  switch (typeof value) {
    case "number":
      if (Number.isInteger(value) && value >= -F64_I64_LIMIT && value < F64_I64_LIMIT) {
        return { tag: "integer", val: BigInt(value) };
      }
      return { tag: "real", val: value };
    case "bigint":
      if (value < I64_MIN || value > I64_MAX) {
        throw new RangeError(
          `parameter ?${position} is ${value}, outside SQLite's 64-bit integer range`,
        );
      }
      return { tag: "integer", val: value };
    case "string":
      return { tag: "text", val: value };
    case "boolean":
      return { tag: "integer", val: value ? 1n : 0n };
    case "undefined":
      return NULL;
    case "object":
      if (value === null) return NULL;
      if (value instanceof Uint8Array) return { tag: "blob", val: value };
      if (value instanceof Real) return { tag: "real", val: value.value };
      break;
    default:
      break;
  }
  throw new TypeError(
    `parameter ?${position} is ${kindOf(value)}; bind null, a number, a bigint, a boolean, a string or a Uint8Array`,
  );
}

/** The bindings' `sql-value` as a plain JavaScript value. */
export function fromWire(value: WireValue): SqlValue {
  return value.tag === "null" ? null : value.val;
}

function kindOf(value: unknown): string {
  if (value === null) return "null";
  if (typeof value !== "object") return `a ${typeof value}`;
  const name = (value as { constructor?: { name?: string } }).constructor?.name;
  return name ? `a ${name}` : "an object";
}

/** Which SQL type a column value has, for error messages. */
export function typeName(value: SqlValue): string {
  if (value === null) return "NULL";
  if (typeof value === "bigint") return "an integer";
  if (typeof value === "number") return "a float";
  if (typeof value === "string") return "text";
  return "a blob";
}
