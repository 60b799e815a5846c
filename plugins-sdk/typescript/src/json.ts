// JSON that keeps every integer exact.
//
// `JSON.parse` turns every number into a double, so an integer beyond 2^53
// (an id, a balance in micro-units) silently becomes a neighbour. `parseJson`
// gives the same result as `JSON.parse`, except that an integer literal that a
// double cannot hold exactly comes back as a `bigint`.
//
// It costs nothing on the common path: such a literal has at least 16 digits,
// so text without a run of 16 digits goes straight to `JSON.parse`. Only text
// with one (a long number, or a long digit run inside a string) takes the
// slower scanner below.

/** A run of digits long enough to hold an integer beyond 2^53 (9007199254740992 has 16). */
const LONG_DIGITS = /\d{16}/;

/**
 * Parses JSON text like `JSON.parse`, but integers that do not fit a double
 * exactly (beyond ±2^53) are `bigint`s. Floats, and integers within ±2^53, are
 * `number`s as usual. Throws a `SyntaxError` on malformed JSON.
 */
export function parseJson(text: string): unknown {
  if (!LONG_DIGITS.test(text)) return JSON.parse(text);
  return new Scanner(text).document();
}

/**
 * Serializes like `JSON.stringify`, but writes `bigint`s as exact JSON
 * integers (where `JSON.stringify` throws).
 */
export function stringifyJson(value: unknown): string {
  let found = false;
  const plain = JSON.stringify(value, (_key, v: unknown) => {
    if (typeof v !== "bigint") return v;
    found = true;
    return 0;
  });
  if (plain === undefined) throw new TypeError("the value has no JSON form");
  if (!found) return plain;
  // A marker that occurs nowhere in the text, so a quoted marker can only be one
  // that stands for a bigint.
  let marker = "bigint";
  while (plain.includes(marker)) marker += "~";
  const digits: string[] = [];
  const text = JSON.stringify(value, (_key, v: unknown) => {
    if (typeof v !== "bigint") return v;
    digits.push(v.toString());
    return `${marker}${digits.length - 1}`;
  }) as string;
  return text.replace(new RegExp(`"${marker}(\\d+)"`, "g"), (_m, i: string) => digits[Number(i)] as string);
}

const NUMBER = /-?(?:0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/y;
const WHITESPACE = /[ \t\n\r]*/y;

/** A small recursive-descent JSON parser; strings are decoded by `JSON.parse` itself. */
class Scanner {
  #at = 0;

  constructor(readonly text: string) {}

  document(): unknown {
    const value = this.#value(0);
    this.#skip();
    if (this.#at !== this.text.length) this.#fail("unexpected text after the JSON value");
    return value;
  }

  #value(depth: number): unknown {
    if (depth > MAX_DEPTH) this.#fail(`nesting deeper than ${MAX_DEPTH}`);
    this.#skip();
    const c = this.text.charCodeAt(this.#at);
    switch (c) {
      case 0x7b /* { */:
        return this.#object(depth);
      case 0x5b /* [ */:
        return this.#array(depth);
      case 0x22 /* " */:
        return this.#string();
      case 0x74 /* t */:
        return this.#literal("true", true);
      case 0x66 /* f */:
        return this.#literal("false", false);
      case 0x6e /* n */:
        return this.#literal("null", null);
      default:
        return this.#number();
    }
  }

  #object(depth: number): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    this.#at++;
    this.#skip();
    if (this.text.charCodeAt(this.#at) === 0x7d) {
      this.#at++;
      return out;
    }
    for (;;) {
      this.#skip();
      if (this.text.charCodeAt(this.#at) !== 0x22) this.#fail("expected a property name");
      const key = this.#string();
      this.#skip();
      if (this.text.charCodeAt(this.#at) !== 0x3a) this.#fail("expected ':'");
      this.#at++;
      const value = this.#value(depth + 1);
      // As JSON.parse does: `__proto__` is an own property, not the prototype.
      Object.defineProperty(out, key, { value, writable: true, enumerable: true, configurable: true });
      this.#skip();
      const next = this.text.charCodeAt(this.#at++);
      if (next === 0x7d) return out;
      if (next !== 0x2c) this.#fail("expected ',' or '}'", this.#at - 1);
    }
  }

  #array(depth: number): unknown[] {
    const out: unknown[] = [];
    this.#at++;
    this.#skip();
    if (this.text.charCodeAt(this.#at) === 0x5d) {
      this.#at++;
      return out;
    }
    for (;;) {
      out.push(this.#value(depth + 1));
      this.#skip();
      const next = this.text.charCodeAt(this.#at++);
      if (next === 0x5d) return out;
      if (next !== 0x2c) this.#fail("expected ',' or ']'", this.#at - 1);
    }
  }

  #string(): string {
    const start = this.#at;
    let i = start + 1;
    for (;;) {
      const c = this.text.charCodeAt(i);
      if (Number.isNaN(c)) this.#fail("unterminated string", start);
      if (c === 0x5c /* \ */) i += 2;
      else if (c === 0x22) break;
      else i++;
    }
    this.#at = i + 1;
    // JSON.parse validates and decodes the escapes exactly as it would in place.
    return JSON.parse(this.text.slice(start, i + 1)) as string;
  }

  #number(): number | bigint {
    NUMBER.lastIndex = this.#at;
    const match = NUMBER.exec(this.text);
    if (match === null) this.#fail("unexpected character");
    const token = match[0];
    this.#at += token.length;
    const value = Number(token);
    if (match[1] === undefined && match[2] === undefined && !Number.isSafeInteger(value)) {
      return BigInt(token);
    }
    return value;
  }

  #literal<T>(word: string, value: T): T {
    if (!this.text.startsWith(word, this.#at)) this.#fail("unexpected character");
    this.#at += word.length;
    return value;
  }

  #skip(): void {
    WHITESPACE.lastIndex = this.#at;
    WHITESPACE.exec(this.text);
    this.#at = WHITESPACE.lastIndex;
  }

  #fail(what: string, at = this.#at): never {
    throw new SyntaxError(`JSON: ${what} at position ${at}`);
  }
}

/** Nesting the scanner accepts, so hostile input cannot exhaust the stack. */
const MAX_DEPTH = 512;
