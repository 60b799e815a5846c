// Account balances in cents, from `account.opened`, `money.deposited` and
// `money.withdrawn`: the Rust `balances` example in TypeScript, building the
// same read model row for row (a test replays one log through both and
// compares checksums).
//
// A deposit or withdrawal for an account that was never opened still counts:
// the upsert creates the row with `owner` NULL, and a later `account.opened`
// fills in the owner and keeps the balance. Amounts are integer cents; one
// beyond 2^53 arrives from `event.data()` as an exact `bigint` and is stored
// exactly.

import { type Event, projector, Statement } from "refract-sdk";

/** `account.opened`. */
interface Opened {
  account: string;
  owner: string;
}

/** `money.deposited` and `money.withdrawn`; amount in cents. */
interface Movement {
  account: string;
  amount: number | bigint;
}

const SCHEMA = `
    CREATE TABLE balances (
        account     TEXT PRIMARY KEY,
        owner       TEXT,
        balance     INTEGER NOT NULL,
        tx_count    INTEGER NOT NULL,
        last_offset INTEGER NOT NULL
    );
`;

/** Opens an account, or names the owner of one that already saw money. */
const OPEN = new Statement(
  `INSERT INTO balances (account, owner, balance, tx_count, last_offset)
     VALUES (?1, ?2, 0, 0, ?3)
     ON CONFLICT (account) DO UPDATE SET
         owner = excluded.owner,
         last_offset = excluded.last_offset`,
);

/** Adds a signed amount; creates the account (owner NULL) if it was never opened. */
const MOVE = new Statement(
  `INSERT INTO balances (account, owner, balance, tx_count, last_offset)
     VALUES (?1, NULL, ?2, 1, ?3)
     ON CONFLICT (account) DO UPDATE SET
         balance = balance + excluded.balance,
         tx_count = tx_count + 1,
         last_offset = excluded.last_offset`,
);

export default projector({
  name: "balances",
  description: "Account balances in cents, with owners and transaction counts",
  eventTypes: ["account.opened", "money.deposited", "money.withdrawn"],
  // Neither event ids nor metadata: the host leaves them out of every batch.
  reads: [],

  init(db) {
    db.executeScript(SCHEMA);
  },

  handle(event, db) {
    switch (event.type) {
      case "account.opened": {
        const e = event.data<Opened>();
        db.execute(OPEN, text(e.account, "account", event), text(e.owner, "owner", event), event.offset);
        break;
      }
      case "money.deposited": {
        const e = event.data<Movement>();
        db.execute(MOVE, text(e.account, "account", event), cents(e.amount, event), event.offset);
        break;
      }
      case "money.withdrawn": {
        const e = event.data<Movement>();
        db.execute(MOVE, text(e.account, "account", event), -cents(e.amount, event), event.offset);
        break;
      }
      default:
      // Not subscribed: the host never delivers other types.
    }
  },
});

/** A string field, or an error naming it, as the Rust version's typed parsing reports. */
function text(value: unknown, field: string, event: Event): string {
  if (typeof value !== "string") {
    throw new TypeError(`${event.type}: \`${field}\` must be a string, not ${JSON.stringify(value) ?? "missing"}`);
  }
  return value;
}

/** An integer amount of cents, exact at any size. */
function cents(value: unknown, event: Event): bigint {
  if (typeof value === "bigint") return value;
  if (typeof value === "number" && Number.isInteger(value)) return BigInt(value);
  throw new TypeError(`${event.type}: \`amount\` must be integer cents, not ${JSON.stringify(value) ?? "missing"}`);
}
