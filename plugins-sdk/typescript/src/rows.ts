// The rows a query returns, with typed, strict accessors.

import { type SqlValue, typeName } from "./values.ts";

/** Names a column: by index (from 0) or by name. */
export type Column = number | string;

/**
 * The rows a query returned, with their column names. Iterate it for {@link Row}s:
 *
 * ```ts
 * for (const row of db.query(OWNER, id)) {
 *   const owner = row.string("owner");
 * }
 * ```
 */
export class Rows implements Iterable<Row> {
  constructor(
    /** The column names, in order. */
    readonly columns: readonly string[],
    /** Each row's values, in column order. Integers are `bigint`. */
    readonly values: readonly (readonly SqlValue[])[],
  ) {}

  /** How many rows there are. */
  get length(): number {
    return this.values.length;
  }

  /** Row `index`, or `undefined` past the end. */
  get(index: number): Row | undefined {
    const values = this.values[index];
    return values === undefined ? undefined : new Row(this.columns, values);
  }

  /** The first row, or `undefined` when there is none. */
  first(): Row | undefined {
    return this.get(0);
  }

  *[Symbol.iterator](): Iterator<Row> {
    for (const values of this.values) yield new Row(this.columns, values);
  }
}

/**
 * One row. `get` returns the raw value; the typed accessors check the SQL type
 * (as rusqlite does: an integer column does not read as text) and throw a
 * `TypeError` naming the column otherwise. Each has a `…OrNull` twin for
 * columns that may be NULL.
 */
export class Row {
  constructor(
    /** The column names, in order. */
    readonly columns: readonly string[],
    /** The values, in column order. */
    readonly values: readonly SqlValue[],
  ) {}

  /** The raw value of a column, by index or by name. */
  get(column: Column): SqlValue {
    const index = this.index(column);
    return this.values[index] as SqlValue;
  }

  /** An integer column, exactly. */
  bigint(column: Column): bigint {
    return this.expect(column, "an integer", (v) => (typeof v === "bigint" ? v : undefined));
  }

  /** An integer column as a `number`; throws if it is beyond 2^53 and would lose precision. */
  integer(column: Column): number {
    return this.expect(column, "an integer within ±2^53", (v) =>
      typeof v === "bigint" && v >= -MAX_SAFE && v <= MAX_SAFE ? Number(v) : undefined,
    );
  }

  /** A float or integer column as a `number` (integers beyond 2^53 round, as in SQLite). */
  number(column: Column): number {
    return this.expect(column, "a number", (v) =>
      typeof v === "number" ? v : typeof v === "bigint" ? Number(v) : undefined,
    );
  }

  /** A text column. */
  string(column: Column): string {
    return this.expect(column, "text", (v) => (typeof v === "string" ? v : undefined));
  }

  /** A blob column. */
  blob(column: Column): Uint8Array {
    return this.expect(column, "a blob", (v) => (v instanceof Uint8Array ? v : undefined));
  }

  /** An integer column read as a boolean (non-zero is true). */
  boolean(column: Column): boolean {
    return this.expect(column, "an integer (boolean)", (v) =>
      typeof v === "bigint" ? v !== 0n : undefined,
    );
  }

  /** Like {@link bigint}, but NULL reads as `null`. */
  bigintOrNull(column: Column): bigint | null {
    return this.get(column) === null ? null : this.bigint(column);
  }

  /** Like {@link integer}, but NULL reads as `null`. */
  integerOrNull(column: Column): number | null {
    return this.get(column) === null ? null : this.integer(column);
  }

  /** Like {@link number}, but NULL reads as `null`. */
  numberOrNull(column: Column): number | null {
    return this.get(column) === null ? null : this.number(column);
  }

  /** Like {@link string}, but NULL reads as `null`. */
  stringOrNull(column: Column): string | null {
    return this.get(column) === null ? null : this.string(column);
  }

  /** The row as an object keyed by column name. */
  toObject(): Record<string, SqlValue> {
    const out: Record<string, SqlValue> = {};
    this.columns.forEach((name, i) => {
      out[name] = this.values[i] as SqlValue;
    });
    return out;
  }

  private index(column: Column): number {
    if (typeof column === "number") {
      if (Number.isInteger(column) && column >= 0 && column < this.values.length) return column;
      throw new RangeError(`no column ${column}: the row has ${this.values.length}`);
    }
    const index = this.columns.indexOf(column);
    if (index < 0) {
      throw new RangeError(
        `no column named ${JSON.stringify(column)}; the query returned ${JSON.stringify(this.columns)}`,
      );
    }
    return index;
  }

  private expect<T>(column: Column, expected: string, convert: (v: SqlValue) => T | undefined): T {
    const index = this.index(column);
    const value = this.values[index] as SqlValue;
    const converted = convert(value);
    if (converted === undefined) {
      const name = this.columns[index];
      throw new TypeError(
        `column ${index}${name === undefined ? "" : ` (${JSON.stringify(name)})`} holds ${typeName(value)}, not ${expected}`,
      );
    }
    return converted;
  }
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
