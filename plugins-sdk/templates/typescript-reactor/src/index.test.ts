// Native tests with `TestReactor`: the reactor's real init and react against an
// in-memory SQLite, its effects recorded, with no component build. `npm test` runs them.

import assert from "node:assert/strict";
import { test } from "node:test";

import { event, TestReactor } from "refract-sdk/testing";

import welcome from "./index.ts";

const ANN = { user: "ann", email: "ann@example.com", follow_up_ms: 60000 };

test("a new user is welcomed once, and followed up when the timer fires", async () => {
  const t = await TestReactor.create(welcome);
  t.apply([
    event("user.registered", { stream: "user-ann", data: ANN }),
    event("user.registered", { stream: "user-ann", data: ANN }),
  ]);
  const mail = { user: "ann", email: "ann@example.com" };
  assert.deepEqual(t.effects, [
    { kind: "emit", cause: 1n, stream: "email-ann", type: "welcome.requested", data: mail },
    { kind: "schedule", cause: 1n, key: "follow-up:ann", delayMs: 60000n, payload: mail },
  ]);

  t.effects.length = 0;
  t.apply([t.timerEvent("follow-up:ann", mail)]);
  assert.deepEqual(t.effects, [
    { kind: "emit", cause: 3n, stream: "email-ann", type: "follow_up.requested", data: mail },
  ]);
  assert.deepEqual(t.rows("SELECT user_id, registered_offset, followed_up FROM users"), [["ann", 1n, 1n]]);
});
