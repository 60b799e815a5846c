// Native tests: the projector's real init and handle against an in-memory SQLite,
// with no component build. `npm test` runs them.

import assert from "node:assert/strict";
import { test } from "node:test";

import { event, TestProjector } from "refract-sdk/testing";

import p from "./index.ts";

test("counts events per stream and keeps the last one", async () => {
  const t = await TestProjector.create(p);
  t.apply([
    event("order.placed", { stream: "order-1", data: { total: 250 } }),
    event("order.placed", { stream: "order-2", data: { total: 90 } }),
    event("order.shipped", { stream: "order-1" }),
  ]);
  assert.deepEqual(t.rows("SELECT stream, events, last_type, last_offset FROM streams ORDER BY stream"), [
    ["order-1", 2n, "order.shipped", 3n],
    ["order-2", 1n, "order.placed", 2n],
  ]);
});
