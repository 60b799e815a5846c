// The packed write buffer (`write-batch` of refract:projector@0.2.0), checked
// against the decoder in `testing.ts`, which follows the contract's layout, and
// through the native harness into a real SQLite.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import type { Backend } from "../src/backend.ts";
import { projector, real, Statement } from "../src/index.ts";
import { info } from "../src/projector.ts";
import { KIND_BLOB, KIND_INTEGER, KIND_NULL, KIND_REAL, KIND_TEXT, PackedWrites, type WriteBatch } from "../src/packed.ts";
import { runHandle } from "../src/batch.ts";
import { Db } from "../src/db.ts";
import { unpackWrites } from "../src/packed.ts";
import { event, TestProjector } from "../src/testing.ts";
import type { Param, WireValue } from "../src/values.ts";

const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;

/** Encodes one write and decodes it again with the contract's layout. */
function roundTrip(params: Param[]): WireValue[] {
  const packed = new PackedWrites();
  packed.push(7, params);
  const [write, ...rest] = unpackWrites(packed.batch());
  assert.equal(rest.length, 0);
  assert.equal(write?.error, undefined);
  assert.equal(write?.statement, 7);
  return write?.params ?? [];
}

/** The IEEE 754 bits of a double, as the packed format carries a real. */
function bitsOf(x: number): bigint {
  return new BigInt64Array(Float64Array.of(x).buffer)[0] as bigint;
}

describe("the packed write buffer", () => {
  test("integers keep every bit, from bigints and from numbers", () => {
    const params: Param[] = [I64_MIN, I64_MAX, 0n, -1n, -1, 0, 1, 2 ** 53 + 2, -(2 ** 63), 2 ** 63 - 1024, true, false];
    assert.deepEqual(roundTrip(params), [
      { tag: "integer", val: I64_MIN },
      { tag: "integer", val: I64_MAX },
      { tag: "integer", val: 0n },
      { tag: "integer", val: -1n },
      { tag: "integer", val: -1n },
      { tag: "integer", val: 0n },
      { tag: "integer", val: 1n },
      { tag: "integer", val: 2n ** 53n + 2n },
      { tag: "integer", val: I64_MIN },
      { tag: "integer", val: 2n ** 63n - 1024n },
      { tag: "integer", val: 1n },
      { tag: "integer", val: 0n },
    ]);
  });

  test("reals travel as their IEEE 754 bits: negative zero, extremes, infinities and NaN", () => {
    const reals = [real(-0), real(2), 0.5, -1.5e-300, Number.MAX_VALUE, Number.MIN_VALUE, -Infinity, Infinity, NaN, 2 ** 63];
    const packed = new PackedWrites();
    packed.push(1, reals);
    const batch = packed.batch();
    assert.deepEqual([...batch.kinds], reals.map(() => KIND_REAL));
    assert.deepEqual(
      [...batch.numbers],
      [-0, 2, 0.5, -1.5e-300, Number.MAX_VALUE, Number.MIN_VALUE, -Infinity, Infinity, NaN, 2 ** 63].map(bitsOf),
    );
    const decoded = roundTrip(reals).map((v) => (v.tag === "real" ? v.val : v.tag));
    assert.ok(Object.is(decoded[0], -0), "negative zero keeps its sign");
    assert.ok(Number.isNaN(decoded[8]));
    assert.deepEqual(decoded.slice(1, 8), [2, 0.5, -1.5e-300, Number.MAX_VALUE, Number.MIN_VALUE, -Infinity, Infinity]);
  });

  test("text is UTF-8 and blobs are bytes, back to back, with empty ones in between", () => {
    const blob = Uint8Array.of(0, 255, 128);
    const params: Param[] = ["", "Zoë \"Z\" 🎉 日本", "", new Uint8Array(0), blob, "a", null, undefined];
    assert.deepEqual(roundTrip(params), [
      { tag: "text", val: "" },
      { tag: "text", val: "Zoë \"Z\" 🎉 日本" },
      { tag: "text", val: "" },
      { tag: "blob", val: new Uint8Array(0) },
      { tag: "blob", val: blob },
      { tag: "text", val: "a" },
      { tag: "null" },
      { tag: "null" },
    ]);
    const packed = new PackedWrites();
    packed.push(1, params);
    const batch = packed.batch();
    assert.deepEqual([...batch.kinds], [KIND_TEXT, KIND_TEXT, KIND_TEXT, KIND_BLOB, KIND_BLOB, KIND_TEXT, KIND_NULL, KIND_NULL]);
    const textBytes = new TextEncoder().encode("Zoë \"Z\" 🎉 日本").length;
    assert.deepEqual(
      [...batch.numbers].slice(0, 6),
      [0, textBytes, textBytes, textBytes, textBytes + 3, textBytes + 4].map(BigInt),
    );
    assert.equal(packed.byteLength, textBytes + 4);
  });

  test("a value that cannot be bound names its position and leaves the buffer as it was", () => {
    const packed = new PackedWrites();
    packed.push(1, ["kept", 1]);
    const before = snapshot(packed.batch());
    assert.throws(() => packed.push(2, ["dropped", I64_MAX + 1n]), {
      name: "RangeError",
      message: /^parameter \?2 is 9223372036854775808, outside SQLite's 64-bit integer range/,
    });
    assert.throws(() => packed.push(2, [I64_MIN - 1n]), { name: "RangeError", message: /parameter \?1 is -9223372036854775809/ });
    assert.throws(() => packed.push(2, [1, 2, {} as unknown as Param]), {
      name: "TypeError",
      message: "parameter ?3 is a Object; bind null, a number, a bigint, a boolean, a string or a Uint8Array",
    });
    assert.deepEqual(snapshot(packed.batch()), before);
    assert.equal(packed.writes, 1);
  });

  test("many writes with many parameters grow the buffers and decode in order", () => {
    const packed = new PackedWrites();
    const wide = Array.from({ length: 999 }, (_, i) => (i % 2 === 0 ? i : `v${i}`));
    for (let i = 0; i < 3000; i++) packed.push(i, i % 1000 === 0 ? wide : [i, `text ${i} é`, real(i / 2)]);
    const writes = unpackWrites(packed.batch());
    assert.equal(writes.length, 3000);
    assert.equal(packed.params, 2997 * 3 + 3 * 999);
    for (const [i, write] of writes.entries()) {
      assert.equal(write.statement, i);
      if (i % 1000 === 0) {
        assert.equal(write.params.length, 999);
        assert.deepEqual(write.params[998], { tag: "integer", val: 998n });
        assert.deepEqual(write.params[997], { tag: "text", val: "v997" });
      } else {
        assert.deepEqual(write.params, [
          { tag: "integer", val: BigInt(i) },
          { tag: "text", val: `text ${i} é` },
          { tag: "real", val: i / 2 },
        ]);
      }
    }
    packed.clear();
    packed.push(5, ["again"]);
    assert.deepEqual(unpackWrites(packed.batch()), [{ statement: 5, params: [{ tag: "text", val: "again" }] }]);
  });

  test("the decoder refuses what the host refuses: unknown kinds, ranges outside the bytes, text that is not UTF-8", () => {
    const base = (): WriteBatch => ({
      statements: Uint32Array.of(1, 2),
      paramEnds: Uint32Array.of(1, 2),
      kinds: Uint8Array.of(KIND_INTEGER, KIND_TEXT),
      numbers: BigInt64Array.of(5n, 2n),
      bytes: Uint8Array.of(0x68, 0x69),
    });
    assert.deepEqual(unpackWrites(base())[1], { statement: 2, params: [{ tag: "text", val: "hi" }] });
    const kind = base();
    kind.kinds[1] = 9;
    assert.match(unpackWrites(kind)[1]?.error ?? "", /kind 9/);
    const range = base();
    range.numbers[1] = 3n;
    assert.match(unpackWrites(range)[1]?.error ?? "", /spans bytes 0..3 of 2/);
    const utf8 = base();
    utf8.bytes[0] = 0xff;
    assert.match(unpackWrites(utf8)[1]?.error ?? "", /not UTF-8/);
  });
});

function snapshot(batch: WriteBatch): unknown {
  return {
    statements: [...batch.statements],
    paramEnds: [...batch.paramEnds],
    kinds: [...batch.kinds],
    numbers: [...batch.numbers],
    bytes: [...batch.bytes],
  };
}

const VALUE = new Statement("INSERT INTO vals (seq, v) VALUES (?1, ?2)");

/** Writes every tricky value, one row each, with `seq` giving the order. */
const values = projector({
  name: "values",
  description: "Tricky values, one per row",
  init(db) {
    db.executeScript("CREATE TABLE vals (seq INTEGER PRIMARY KEY, v)");
  },
  handle(e, db) {
    const tricky: Param[] = [I64_MIN, I64_MAX, real(-0), 1e308, 5e-324, "", "Zoë 🎉", new Uint8Array(0), Uint8Array.of(0, 255), null];
    tricky.forEach((v, i) => db.execute(VALUE, i, v));
    if (e.type === "many") {
      // 10,000 writes: more than two flushes of Db.FLUSH_WRITES.
      for (let i = 0; i < 10_000; i++) db.execute(VALUE, 100 + i, `row ${i}`);
    }
  },
});

describe("packed writes through the native harness", () => {
  test("land in SQLite with their exact types and values", async () => {
    const t = await TestProjector.create(values);
    t.apply([event("one")]);
    const rows = t.rows("SELECT seq, typeof(v), v FROM vals ORDER BY seq");
    assert.deepEqual(rows.slice(0, 3), [
      [0n, "integer", I64_MIN],
      [1n, "integer", I64_MAX],
      [2n, "real", -0],
    ]);
    assert.deepEqual(rows.slice(3), [
      [3n, "real", 1e308],
      [4n, "real", 5e-324],
      [5n, "text", ""],
      [6n, "text", "Zoë 🎉"],
      [7n, "blob", new Uint8Array(0)],
      [8n, "blob", Uint8Array.of(0, 255)],
      [9n, "null", null],
    ]);
  });

  test("writes spanning several flushes all land, in order, in as many host calls", async () => {
    const calls: number[] = [];
    const seqs: bigint[] = [];
    const recording: Backend = {
      prepare: () => 1,
      executePacked(writes) {
        const unpacked = unpackWrites(writes);
        calls.push(unpacked.length);
        for (const w of unpacked) seqs.push(w.params[0]?.tag === "integer" ? w.params[0].val : -1n);
      },
      execute: () => 0n,
      query: () => ({ columns: [], rows: [] }),
      executeScript() {},
      log() {},
    };
    const result = runHandle(values, new Db(recording), { ...oneEvent, text: new TextEncoder().encode("many") });
    assert.deepEqual(result, { tag: "ok", val: undefined });
    assert.deepEqual(calls, [Db.FLUSH_WRITES, Db.FLUSH_WRITES, 10_010 - 2 * Db.FLUSH_WRITES]);
    const expected = [...Array.from({ length: 10 }, (_, i) => BigInt(i)), ...Array.from({ length: 10_000 }, (_, i) => BigInt(100 + i))];
    assert.deepEqual(seqs, expected);

    // The same through SQLite.
    const t = await TestProjector.create(values);
    t.apply([event("many")]);
    assert.deepEqual(t.rows("SELECT count(*), min(v), max(seq) FROM vals WHERE seq >= 100"), [[10_000n, "row 0", 10_099n]]);
  });
});

/** One event of type `many` (the type is field 2, the only text). */
const oneEvent = {
  offsets: BigUint64Array.of(1n),
  streamVersions: BigUint64Array.of(1n),
  recordedAt: BigInt64Array.of(0n),
  ends: Uint32Array.of(0, 0, 4, 4, 4),
  text: new Uint8Array(0),
};

describe("reads", () => {
  const base = { description: "d", init() {}, handle() {} };

  test("defaults to every optional field, and can leave out ids and metadata", () => {
    assert.deepEqual(info(projector({ name: "a", ...base })).reads, { id: true, metadata: true });
    assert.deepEqual(info(projector({ name: "a", reads: [], ...base })).reads, { id: false, metadata: false });
    assert.deepEqual(info(projector({ name: "a", reads: ["metadata"], ...base })).reads, { id: false, metadata: true });
    assert.throws(() => projector({ name: "a", reads: ["data" as "id"], ...base }), {
      message: 'reads holds "data"; the optional event fields are "id" and "metadata"',
    });
  });

  test("a field left out is not delivered, and reading it is a clear error", async () => {
    const seen: string[] = [];
    const p = projector({
      name: "no-ids",
      description: "reads metadata only",
      reads: ["metadata"],
      init() {},
      handle(e) {
        seen.push(e.metadataJson ?? "none");
        if (e.type === "peek") seen.push(e.id);
      },
    });
    const t = await TestProjector.create(p);
    t.apply([event("ok", { metadata: { m: 1 }, id: "secret" })]);
    assert.deepEqual(seen, ['{"m":1}']);
    assert.throws(() => t.apply([event("peek")]), {
      message: /event\.id was read, but this projector's `reads` leaves out "id", so the host does not send it: add "id" to `reads`/,
    });
  });
});
