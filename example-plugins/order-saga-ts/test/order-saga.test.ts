// The saga natively, with `TestReactor`: each path's effects, and the first of a
// payment result and a timeout wins. The end-to-end test on a real engine is
// `tests/sdk_typescript.rs`.

import assert from "node:assert/strict";
import { beforeEach, test } from "node:test";

import { BatchError, event, TestReactor } from "refract-sdk/testing";

import orderSaga, { DEFAULT_PAYMENT_TIMEOUT_MS } from "../src/index.ts";

const PLACED = { customer: "ann", total: 1200, payment_timeout_ms: 300 };
const TIMER = "payment-timeout:order-1";

let saga: TestReactor;

beforeEach(async () => {
  saga = await TestReactor.create(orderSaga);
  saga.apply([event("order.placed", { stream: "order-1", data: PLACED })]);
});

test("placing requests payment and schedules the timeout", () => {
  assert.deepEqual(saga.effects, [
    {
      kind: "emit",
      cause: 1n,
      stream: "payment-order-1",
      type: "payment.requested",
      data: { order_id: "order-1", amount: 1200, customer: "ann" },
    },
    { kind: "schedule", cause: 1n, key: TIMER, delayMs: 300n, payload: { order_id: "order-1" } },
  ]);
  assert.deepEqual(saga.rows("SELECT order_id, customer, total, step, updated_offset FROM sagas"), [
    ["order-1", "ann", 1200n, "awaiting_payment", 1n],
  ]);
});

test("an order without a timeout waits 15 minutes, and a second placement does nothing", () => {
  saga.effects.length = 0;
  saga.apply([
    event("order.placed", { stream: "order-2", data: { customer: "bob", total: 5 } }),
    event("order.placed", { stream: "order-2", data: { customer: "bob", total: 5 } }),
  ]);
  assert.deepEqual(saga.effects.map((e) => (e.kind === "schedule" ? e.delayMs : e.kind)), [
    "emit",
    BigInt(DEFAULT_PAYMENT_TIMEOUT_MS),
  ]);
});

test("a success confirms and cancels the timeout, and a late timer does nothing", () => {
  saga.effects.length = 0;
  saga.apply([
    event("payment.succeeded", { stream: "payment-order-1", data: { order_id: "order-1" } }),
    saga.timerEvent(TIMER, { order_id: "order-1" }),
  ]);
  assert.deepEqual(saga.effects, [
    { kind: "cancel", key: TIMER },
    { kind: "emit", cause: 2n, stream: "order-1", type: "order.confirmed", data: { order_id: "order-1" } },
  ]);
  assert.deepEqual(saga.rows("SELECT step FROM sagas"), [["confirmed"]]);
});

test("a timeout cancels and releases the stock", () => {
  saga.effects.length = 0;
  saga.apply([saga.timerEvent(TIMER, { order_id: "order-1" })]);
  const reason = "payment timed out";
  assert.deepEqual(saga.effects, [
    { kind: "cancel", key: TIMER },
    { kind: "emit", cause: 2n, stream: "order-1", type: "order.cancelled", data: { reason } },
    { kind: "emit", cause: 2n, stream: "stock-order-1", type: "stock.released", data: { order_id: "order-1", reason } },
  ]);
});

test("a failed payment cancels with its reason and compensates", () => {
  saga.effects.length = 0;
  saga.apply([
    event("payment.failed", { stream: "payment-order-1", data: { order_id: "order-1", reason: "card declined" } }),
  ]);
  const reason = "card declined";
  assert.deepEqual(saga.effects, [
    { kind: "cancel", key: TIMER },
    { kind: "emit", cause: 2n, stream: "order-1", type: "order.cancelled", data: { reason } },
    { kind: "emit", cause: 2n, stream: "stock-order-1", type: "stock.released", data: { order_id: "order-1", reason } },
  ]);
  assert.deepEqual(saga.rows("SELECT step, reason FROM sagas"), [["cancelled", "card declined"]]);
});

test("a failed batch records no effects and keeps no state", () => {
  saga.effects.length = 0;
  // The second placement has no customer: `sagas.customer` is NOT NULL.
  assert.throws(
    () =>
      saga.apply([
        event("order.placed", { stream: "order-2", data: PLACED }),
        event("order.placed", { stream: "order-3", data: { total: 1 } }),
      ]),
    (e: unknown) => e instanceof BatchError && e.offset === 3n && /NOT NULL constraint failed: sagas.customer/.test(e.detail),
  );
  assert.deepEqual(saga.effects, []);
  assert.deepEqual(saga.rows("SELECT order_id FROM sagas"), [["order-1"]]);
});
