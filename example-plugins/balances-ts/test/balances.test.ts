import assert from "node:assert/strict";
import { test } from "node:test";

import { BatchError, event, type TestEvent, TestProjector } from "refract-sdk/testing";

import balances from "../src/index.ts";

const opened = (account: string, owner: string): TestEvent =>
  event("account.opened", { stream: account, data: { account, owner } });
const deposited = (account: string, amount: number | bigint): TestEvent =>
  event("money.deposited", { stream: account, data: { account, amount } });
const withdrawn = (account: string, amount: number | bigint): TestEvent =>
  event("money.withdrawn", { stream: account, data: { account, amount } });

const rows = (t: TestProjector) =>
  t.rows("SELECT account, owner, balance, tx_count, last_offset FROM balances ORDER BY account");

test("deposits and withdrawals move the balance", async () => {
  const t = await TestProjector.create(balances);
  t.apply([opened("acc-1", "Alice"), deposited("acc-1", 10_000), withdrawn("acc-1", 2_550), opened("acc-2", "Bob")]);
  assert.deepEqual(rows(t), [
    ["acc-1", "Alice", 7_450n, 2n, 3n],
    ["acc-2", "Bob", 0n, 0n, 4n],
  ]);
});

test("money for an unopened account creates it without owner", async () => {
  const t = await TestProjector.create(balances);
  t.apply([deposited("acc-9", 500)]);
  assert.deepEqual(rows(t), [["acc-9", null, 500n, 1n, 1n]]);
  t.apply([opened("acc-9", "Dana")]);
  assert.deepEqual(rows(t), [["acc-9", "Dana", 500n, 1n, 2n]]);
});

test("unsubscribed events are not delivered", async () => {
  const t = await TestProjector.create(balances);
  assert.equal(t.apply([opened("acc-1", "Alice"), event("account.closed", { stream: "acc-1" })]), 1);
});

test("names with JSON escapes parse", async () => {
  const t = await TestProjector.create(balances);
  t.apply([opened("acc-1", 'Zoë "Z" O\'Neil')]);
  assert.equal(rows(t)[0]?.[1], 'Zoë "Z" O\'Neil');
});

test("a bad event fails the batch and rolls it back", async () => {
  const t = await TestProjector.create(balances);
  t.apply([deposited("acc-1", 100)]);
  assert.throws(
    () => t.apply([deposited("acc-1", 100), event("money.deposited", { stream: "acc-1", data: { account: "acc-1", amount: "lots" } })]),
    (e: unknown) => e instanceof BatchError && e.offset === 3n && /`amount` must be integer cents/.test(e.detail),
  );
  assert.deepEqual(rows(t), [["acc-1", null, 100n, 1n, 1n]]);
});

test("amounts beyond 2^53 are exact", async () => {
  const t = await TestProjector.create(balances);
  t.apply([deposited("acc-1", 2n ** 53n + 1n), deposited("acc-1", 2n ** 53n + 1n), withdrawn("acc-1", 1)]);
  assert.deepEqual(rows(t), [["acc-1", null, 2n ** 54n + 1n, 3n, 3n]]);
});

test("matches an independent computation", async () => {
  const t = await TestProjector.create(balances);
  type Row = [string, string | null, bigint, bigint, bigint];
  const expected = new Map<string, Row>();
  let seed = 0x2545f4914f6cdd1dn;
  const next = (bound: bigint) => {
    seed ^= (seed << 13n) & 0xffffffffffffffffn;
    seed ^= seed >> 7n;
    seed ^= (seed << 17n) & 0xffffffffffffffffn;
    return seed % bound;
  };
  let offset = 0n;
  for (let batch = 0; batch < 20; batch++) {
    const events: TestEvent[] = [];
    for (let i = 0; i < 250; i++) {
      offset += 1n;
      const account = `acc-${next(40n)}`;
      const amount = next(100_000n);
      const row = expected.get(account) ?? [account, null, 0n, 0n, 0n];
      expected.set(account, row);
      row[4] = offset;
      const kind = next(10n);
      if (kind === 0n) {
        const owner = `owner-${next(1000n)}`;
        row[1] = owner;
        events.push(opened(account, owner));
      } else if (kind <= 5n) {
        row[2] += amount;
        row[3] += 1n;
        events.push(deposited(account, Number(amount)));
      } else {
        row[2] -= amount;
        row[3] += 1n;
        events.push(withdrawn(account, Number(amount)));
      }
    }
    t.apply(events);
  }
  const sorted = [...expected.values()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  assert.deepEqual(rows(t), sorted);
});
