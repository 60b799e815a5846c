import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { type Db, type Effects, type Event, projector, reactor, Statement, Timer } from "../src/index.ts";
import { BatchError, event, TestProjector, TestReactor } from "../src/testing.ts";

const SEEN = new Statement("INSERT INTO seen (stream, offset) VALUES (?1, ?2)");

/** A reactor that records what it saw and lets each test choose its effects. */
function echo(react: (event: Event, db: Db, effects: Effects) => void = () => undefined) {
  return reactor({
    name: "echo",
    description: "Echoes orders",
    eventTypes: ["order.placed"],
    emits: ["order.echoed", "order.noted"],
    init(db) {
      db.executeScript("CREATE TABLE seen (stream TEXT NOT NULL, offset INTEGER NOT NULL)");
    },
    react(event, db, effects) {
      db.execute(SEEN, event.stream, event.offset);
      react(event, db, effects);
    },
  });
}

describe("reactor()", () => {
  test("refuses a definition without react or emits, naming the fix", () => {
    const base = { name: "x", description: "d", init() {} };
    assert.throws(() => reactor({ ...base, emits: [] } as never), /`react\(event, db, effects\)`/);
    assert.throws(
      () => reactor({ ...base, react() {} } as never),
      /`emits` must list the event types it may emit, for example `emits: \["order.confirmed"\]`/,
    );
    assert.throws(() => reactor({ ...base, react() {}, emits: ["ok", 7] } as never), /`emits` must list/);
  });

  test("a reactor is not a projector, and each harness says which one it takes", async () => {
    await assert.rejects(TestProjector.create(echo() as never), /is a reactor .* test it with `TestReactor`/);
    const p = projector({ name: "p", description: "d", init() {}, handle() {} });
    await assert.rejects(TestReactor.create(p as never), /a reactor needs `init\(db\)` and `react/);
  });
});

describe("TestReactor", () => {
  test("records emits and timers with their cause, and delivers only subscribed events", async () => {
    const t = await TestReactor.create(
      echo((e, _db, fx) => {
        fx.emit(`echo-${e.stream}`, "order.echoed", { big: 2n ** 60n, n: 1 }, {
          metadata: { source: "test" },
          expectedVersion: 0,
        });
        fx.schedule(`t:${e.stream}`, 300, { stream: e.stream });
        fx.cancel(`old:${e.stream}`);
      }),
    );
    const delivered = t.apply([
      event("order.placed", { stream: "order-1" }),
      event("order.shipped", { stream: "order-1" }),
      event("order.placed", { stream: "order-2" }),
    ]);
    assert.equal(delivered, 2);
    assert.deepEqual(t.effects, [
      {
        kind: "emit",
        cause: 1n,
        stream: "echo-order-1",
        type: "order.echoed",
        data: { big: 2n ** 60n, n: 1 },
        metadata: { source: "test" },
        expectedVersion: 0n,
      },
      { kind: "schedule", cause: 1n, key: "t:order-1", delayMs: 300n, payload: { stream: "order-1" } },
      { kind: "cancel", key: "old:order-1" },
      {
        kind: "emit",
        cause: 3n,
        stream: "echo-order-2",
        type: "order.echoed",
        data: { big: 2n ** 60n, n: 1 },
        metadata: { source: "test" },
        expectedVersion: 0n,
      },
      { kind: "schedule", cause: 3n, key: "t:order-2", delayMs: 300n, payload: { stream: "order-2" } },
      { kind: "cancel", key: "old:order-2" },
    ]);
    assert.deepEqual(t.rows("SELECT stream, offset FROM seen"), [
      ["order-1", 1n],
      ["order-2", 3n],
    ]);
  });

  test("an emit leaves out the options it was not given", async () => {
    const t = await TestReactor.create(echo((e, _db, fx) => fx.emit(e.stream, "order.noted", null)));
    t.apply([event("order.placed", { stream: "order-1" })]);
    assert.deepEqual(t.effects, [{ kind: "emit", cause: 1n, stream: "order-1", type: "order.noted", data: null }]);
  });

  test("the reactor's own timer events arrive whatever its subscriptions, and Timer.of reads them", async () => {
    const timers: Timer<{ stream: string }>[] = [];
    const t = await TestReactor.create(
      echo((e) => {
        const timer = Timer.of<{ stream: string }>(e);
        if (timer !== undefined) timers.push(timer);
      }),
    );
    const dueAt = 1_704_067_500_000_000n;
    const delivered = t.apply([
      t.timerEvent("t:order-1", { stream: "order-1" }, dueAt),
      // Another reactor's timer stream is not delivered.
      event("refract.timer", { stream: "refract.timer/other", data: { key: "k", due_at: 1, payload: null } }),
    ]);
    assert.equal(delivered, 1);
    assert.equal(timers.length, 1);
    assert.equal(timers[0]?.key, "t:order-1");
    assert.equal(timers[0]?.dueAtMicros, dueAt);
    assert.deepEqual(timers[0]?.payload, { stream: "order-1" });
    assert.equal(timers[0]?.dueAt.toISOString(), "2024-01-01T00:05:00.000Z");
    assert.deepEqual(t.rows("SELECT stream FROM seen"), [["refract.timer/echo"]]);
  });

  test("Timer.of is undefined for other events and names a malformed timer event", async () => {
    const t = await TestReactor.create(
      echo((e) => {
        if (e.type === "order.placed") assert.equal(Timer.of(e), undefined);
        else Timer.of(e);
      }),
    );
    t.apply([event("order.placed")]);
    assert.throws(
      () => t.apply([event("refract.timer", { stream: "refract.timer/echo", data: { key: 7 } })]),
      (e: unknown) =>
        e instanceof BatchError &&
        e.offset === 2n &&
        /^TypeError: the refract.timer event at offset 2 is not a timer: its data must be \{"key": string/.test(e.detail),
    );
  });

  test("a refused emit fails the batch with the host's message, and the batch's effects are dropped", async () => {
    const t = await TestReactor.create(
      echo((e, _db, fx) => {
        fx.schedule(`t:${e.stream}`, 1, null);
        if (e.stream === "order-2") fx.emit(e.stream, "order.shipped", {});
      }),
    );
    t.apply([event("order.placed", { stream: "order-1" })]);
    assert.throws(
      () => t.apply([event("order.placed", { stream: "order-3" }), event("order.placed", { stream: "order-2" })]),
      (e: unknown) =>
        e instanceof BatchError &&
        e.offset === 3n &&
        e.detail ===
          "EffectRefused: the type `order.shipped` is not among the types this reactor declares in `reactor-info` (order.echoed, order.noted)",
    );
    assert.deepEqual(t.effects, [{ kind: "schedule", cause: 1n, key: "t:order-1", delayMs: 1n, payload: null }]);
    assert.deepEqual(t.rows("SELECT stream FROM seen"), [["order-1"]], "the failed batch's state rolled back");
  });

  test("a refusal can be caught, and the reactor goes on", async () => {
    const t = await TestReactor.create(
      echo((e, _db, fx) => {
        try {
          fx.schedule("", 1, null);
        } catch (refused) {
          assert.equal((refused as Error).name, "EffectRefused");
          fx.emit(e.stream, "order.noted", { refused: (refused as Error).message });
        }
      }),
    );
    t.apply([event("order.placed", { stream: "order-1" })]);
    assert.deepEqual(t.effects, [
      {
        kind: "emit",
        cause: 1n,
        stream: "order-1",
        type: "order.noted",
        data: { refused: "a timer key must be 1 to 256 bytes without control characters" },
      },
    ]);
  });

  test("values the contract cannot carry are thrown at the call, naming the value", async () => {
    const cases: [(fx: Effects) => void, RegExp][] = [
      [(fx) => fx.emit("s", "order.noted", undefined), /^TypeError: emit of "order.noted": data has no JSON form/],
      [(fx) => fx.emit("s", "order.noted", {}, { metadata: [1] as never }), /metadata must be a JSON object, not an array/],
      [(fx) => fx.emit("s", "order.noted", {}, { expectedVersion: -1 }), /^RangeError: expectedVersion is -1/],
      [(fx) => fx.schedule("k", 1.5, null), /^RangeError: delayMs is 1.5/],
      [(fx) => fx.schedule("k", 2n ** 64n, null), /^RangeError: delayMs is 18446744073709551616; it must be between 0/],
      [(fx) => fx.schedule("k", 11n * 366n * 24n * 3600n * 1000n, null), /^EffectRefused: a delay of .* ms is longer than/],
      [(fx) => fx.cancel(7 as never), /^TypeError: cancel: the timer key must be a string, not a number/],
    ];
    for (const [effect, expected] of cases) {
      const t = await TestReactor.create(echo((_e, _db, fx) => effect(fx)));
      assert.throws(
        () => t.apply([event("order.placed")]),
        (e: unknown) => e instanceof BatchError && expected.test(e.detail),
        String(expected),
      );
    }
  });

  test("an async react is refused, naming the fix", async () => {
    const t = await TestReactor.create(
      reactor({
        name: "eager",
        description: "d",
        emits: [],
        init() {},
        async react() {},
      }),
    );
    assert.throws(
      () => t.apply([event("order.placed")]),
      (e: unknown) => e instanceof BatchError && /react returned a Promise; it must be synchronous/.test(e.detail),
    );
  });

  test("a failed init names the reactor", async () => {
    await assert.rejects(
      TestReactor.create(
        reactor({
          name: "broken",
          description: "d",
          emits: [],
          init(db) {
            db.executeScript("CREATE TABLE _refract_mine (x)");
          },
          react() {},
        }),
      ),
      /^Error: init of reactor "broken" failed: denied: /,
    );
  });
});
