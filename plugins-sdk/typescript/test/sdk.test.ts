import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { type Db, type Event, projector, real, SqlError, Statement } from "../src/index.ts";
import { runHandle } from "../src/batch.ts";
import { Db as DbClass } from "../src/db.ts";
import { BatchError, event, TestProjector } from "../src/testing.ts";
import type { Backend } from "../src/backend.ts";

const BUMP = new Statement(
  `INSERT INTO counts (stream, events, last_offset) VALUES (?1, 1, ?2)
   ON CONFLICT (stream) DO UPDATE SET events = events + 1, last_offset = excluded.last_offset`,
);
const COUNT = new Statement("SELECT events FROM counts WHERE stream = ?1");

/** Counts events per stream; its behaviour is steered by the event type. */
function counter(handle?: (event: Event, db: Db) => void) {
  return projector({
    name: "counter",
    description: "Events per stream",
    streamPrefixes: ["acc-"],
    init(db) {
      db.executeScript(
        "CREATE TABLE counts (stream TEXT PRIMARY KEY, events INTEGER NOT NULL, last_offset INTEGER NOT NULL)",
      );
    },
    handle(event, db) {
      if (handle) return handle(event, db);
      db.execute(BUMP, event.stream, event.offset);
    },
  });
}

describe("the batch loop", () => {
  test("applies subscribed events only, with deferred writes visible to later reads", async () => {
    const seen: bigint[] = [];
    const t = await TestProjector.create(
      counter((e, db) => {
        db.execute(BUMP, e.stream, e.offset);
        // The query flushes the write just queued, so it sees it.
        seen.push(db.query(COUNT, e.stream).first()?.bigint("events") ?? -1n);
      }),
    );
    const delivered = t.apply([
      event("a", { stream: "acc-1" }),
      event("b", { stream: "order-1" }),
      event("c", { stream: "acc-1" }),
    ]);
    assert.equal(delivered, 2);
    assert.deepEqual(seen, [1n, 2n]);
    assert.deepEqual(t.rows("SELECT stream, events, last_offset FROM counts"), [["acc-1", 2n, 3n]]);
    assert.equal(t.lastOffset, 3n);
  });

  test("a thrown Error fails the batch, names the offset, and rolls the batch back", async () => {
    const t = await TestProjector.create(
      counter((e, db) => {
        db.execute(BUMP, e.stream, e.offset);
        if (e.type === "bad") throw new Error("cannot handle this one");
      }),
    );
    t.apply([event("ok", { stream: "acc-1" })]);
    assert.throws(
      () => t.apply([event("ok", { stream: "acc-1" }), event("bad", { stream: "acc-2" })]),
      (e: unknown) => e instanceof BatchError && e.offset === 3n && e.detail === "cannot handle this one",
    );
    assert.deepEqual(t.rows("SELECT stream, events FROM counts"), [["acc-1", 1n]]);
  });

  test("anything thrown becomes a message: runtime errors, strings, objects, undefined", async () => {
    const cases: [unknown, string][] = [
      [undefined, "undefined"],
      ["plain text", "plain text"],
      [{ code: 7 }, 'thrown value {"code":7}'],
      [42n, "42"],
    ];
    for (const [thrown, message] of cases) {
      const t = await TestProjector.create(
        counter(() => {
          throw thrown;
        }),
      );
      assert.throws(
        () => t.apply([event("x", { stream: "acc-1" })]),
        (e: unknown) => e instanceof BatchError && e.offset === 1n && e.detail === message,
      );
    }
    const t = await TestProjector.create(
      counter((e) => {
        (e.data<{ missing: { field: number } }>().missing as { field: number }).field;
      }),
    );
    assert.throws(
      () => t.apply([event("x", { stream: "acc-1" })]),
      (e: unknown) => e instanceof BatchError && e.detail.startsWith("TypeError: "),
    );
  });

  test("an async handle is refused rather than losing its writes", async () => {
    const t = await TestProjector.create(counter((async () => undefined) as unknown as () => void));
    assert.throws(
      () => t.apply([event("x", { stream: "acc-1" })]),
      (e: unknown) => e instanceof BatchError && /must be synchronous/.test(e.detail),
    );
  });

  test("a failed deferred write names the event that issued it, even when sent later", async () => {
    const UNIQUE = new Statement("INSERT INTO counts (stream, events, last_offset) VALUES (?1, 0, 0)");
    const t = await TestProjector.create(counter((e, db) => db.execute(UNIQUE, e.type)));
    assert.throws(
      () =>
        t.apply([
          event("one", { stream: "acc-1" }),
          event("dup", { stream: "acc-1" }),
          event("dup", { stream: "acc-1" }),
          event("two", { stream: "acc-1" }),
        ]),
      (e: unknown) =>
        e instanceof BatchError &&
        e.offset === 3n &&
        e.detail.startsWith("deferred write failed: constraint: ") &&
        e.detail.includes("(statement: INSERT INTO counts"),
    );
    assert.deepEqual(t.rows("SELECT count(*) FROM counts"), [[0n]]);
  });

  test("executeNow throws a SqlError the projector can catch and carry on", async () => {
    const CLAIM = new Statement("INSERT INTO counts (stream, events, last_offset) VALUES (?1, 1, ?2)");
    const t = await TestProjector.create(
      counter((e, db) => {
        try {
          db.executeNow(CLAIM, e.stream, e.offset);
        } catch (err) {
          if (!(err instanceof SqlError) || err.kind !== "constraint") throw err;
        }
      }),
    );
    t.apply([event("a", { stream: "acc-1" }), event("b", { stream: "acc-1" })]);
    assert.deepEqual(t.rows("SELECT stream, last_offset FROM counts"), [["acc-1", 1n]]);
  });

  test("more writes than one flush holds all land", async () => {
    const t = await TestProjector.create(counter());
    const events = Array.from({ length: DbClass.FLUSH_WRITES * 2 + 7 }, (_, i) =>
      event("x", { stream: `acc-${i % 100}` }),
    );
    t.apply(events);
    assert.deepEqual(t.rows("SELECT sum(events), count(*) FROM counts"), [[BigInt(events.length), 100n]]);
  });

  test("a malformed batch is an error value naming the first offset, never an exception", () => {
    const db = new DbClass({} as Backend);
    const p = counter();
    const batch = {
      offsets: BigUint64Array.of(7n),
      streamVersions: BigUint64Array.of(1n),
      recordedAt: BigInt64Array.of(0n),
      ends: Uint32Array.of(2, 3, 4, 6),
      text: new TextEncoder().encode("idstd{}"),
    };
    const short = runHandle(p, db, batch);
    assert.equal(short.tag, "err");
    assert.match(short.tag === "err" ? short.val.message : "", /text ends/);
    const outside = runHandle(p, db, { ...batch, ends: Uint32Array.of(2, 3, 4, 6, 99) });
    assert.ok(outside.tag === "err" && outside.val.offset === 7n);
    // The projector reads the stream, which is fine; the failure is in a later field it never reads.
    const badUtf8 = runHandle(
      projector({ ...p, handle: (e) => void e.dataJson }),
      db,
      { ...batch, ends: Uint32Array.of(2, 3, 4, 6, 6), text: Uint8Array.of(105, 100, 115, 116, 0xff, 123, 125) },
    );
    assert.ok(badUtf8.tag === "err" && /not UTF-8/.test(badUtf8.val.message), JSON.stringify(badUtf8, (_, v) => (typeof v === "bigint" ? `${v}` : v)));
  });
});

describe("values", () => {
  const PUT = new Statement("INSERT INTO v (k, x) VALUES (?1, ?2)");
  const store = (value: unknown) =>
    projector({
      name: "values",
      description: "",
      init: (db) => db.executeScript("CREATE TABLE v (k TEXT, x)"),
      handle: (e, db) => db.execute(PUT, e.type, value as never),
    });

  test("each JavaScript type binds as the SQL type documented", async () => {
    const expected: [unknown, string, unknown][] = [
      [7, "integer", 7n],
      [2 ** 60, "integer", 2n ** 60n],
      [1.5, "real", 1.5],
      [real(2), "real", 2],
      [9007199254740993n, "integer", 9007199254740993n],
      [true, "integer", 1n],
      [null, "null", null],
      [undefined, "null", null],
      ["zoë", "text", "zoë"],
      [Uint8Array.of(1, 2), "blob", Uint8Array.of(1, 2)],
      [1e300, "real", 1e300],
    ];
    for (const [value, type, back] of expected) {
      const t = await TestProjector.create(store(value));
      t.apply([event("x")]);
      assert.deepEqual(t.rows("SELECT typeof(x), x FROM v"), [[type, back]], `binding ${String(value)}`);
    }
  });

  test("an unbindable value names its parameter", async () => {
    for (const [value, pattern] of [
      [2n ** 63n, /parameter \?2 is 9223372036854775808, outside/],
      [{ a: 1 }, /parameter \?2 is a Object/],
      [Symbol("s"), /parameter \?2 is a symbol/],
    ] as const) {
      const t = await TestProjector.create(store(value));
      assert.throws(
        () => t.apply([event("x")]),
        (e: unknown) => e instanceof BatchError && pattern.test(e.detail),
        String(pattern),
      );
    }
  });

  test("offsets, versions and timestamps past 2^53 are exact", async () => {
    const big = 2n ** 53n + 1n;
    const t = await TestProjector.create(
      counter((e, db) => {
        db.execute(BUMP, `acc-${e.streamVersion}-${e.recordedAtMicros}`, e.offset);
      }),
    );
    t.apply([event("x", { stream: "acc-1", offset: big, streamVersion: big + 1n, recordedAtMicros: -big })]);
    assert.deepEqual(t.rows("SELECT stream, last_offset FROM counts"), [
      [`acc-${big + 1n}-${-big}`, big],
    ]);
  });
});

describe("the sandbox approximation", () => {
  for (const [what, sql] of [
    ["ATTACH", "ATTACH ':memory:' AS other"],
    ["transaction control", "COMMIT"],
    ["a writing PRAGMA", "PRAGMA journal_mode = DELETE"],
    ["a host table", "CREATE TABLE _refract_mine (x)"],
  ]) {
    test(`denies ${what}, as the host does`, async () => {
      const t = await TestProjector.create(
        projector({
          name: "hostile",
          description: "",
          init: () => undefined,
          handle: (_e, db) => db.executeScript(sql as string),
        }),
      );
      assert.throws(
        () => t.apply([event("x")]),
        (e: unknown) => e instanceof BatchError && /^denied: /.test(e.detail),
      );
    });
  }

  test("allows the read-only PRAGMAs", async () => {
    const TABLE_INFO = new Statement("SELECT name FROM pragma_table_info('counts') ORDER BY cid");
    let columns: string[] = [];
    const t = await TestProjector.create(
      counter((_e, db) => {
        columns = [...db.query(TABLE_INFO)].map((row) => row.string(0));
      }),
    );
    t.apply([event("x", { stream: "acc-1" })]);
    assert.deepEqual(columns, ["stream", "events", "last_offset"]);
  });

  test("rejects a name the host would reject, and a failing init", async () => {
    await assert.rejects(TestProjector.create({ ...counter(), name: "Counter" }), /invalid: use 1 to 64/);
    await assert.rejects(
      TestProjector.create({
        ...counter(),
        init: (db) => db.executeScript("CREATE TABLE broken ("),
      }),
      /init of projector "counter" failed: invalid: /,
    );
  });
});
