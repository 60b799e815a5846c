"""Account balances in cents, from `account.opened`, `money.deposited` and
`money.withdrawn`: the Python twin of the Rust `balances` example, row for row.

A deposit or withdrawal for an account that was never opened still counts: the upsert
creates the row with `owner` NULL, and a later `account.opened` fills in the owner and
keeps the balance. Balances may go negative; the projector reports what the log says.
"""

from refract_sdk import Db, Event, Info, Projector, Statement, export

SCHEMA = """
    CREATE TABLE balances (
        account     TEXT PRIMARY KEY,
        owner       TEXT,
        balance     INTEGER NOT NULL,
        tx_count    INTEGER NOT NULL,
        last_offset INTEGER NOT NULL
    );
"""

# Opens an account, or names the owner of one that already saw money.
OPEN = Statement(
    """INSERT INTO balances (account, owner, balance, tx_count, last_offset)
       VALUES (?1, ?2, 0, 0, ?3)
       ON CONFLICT (account) DO UPDATE SET
           owner = excluded.owner,
           last_offset = excluded.last_offset"""
)

# Adds a signed amount; creates the account (owner NULL) if it was never opened.
MOVE = Statement(
    """INSERT INTO balances (account, owner, balance, tx_count, last_offset)
       VALUES (?1, NULL, ?2, 1, ?3)
       ON CONFLICT (account) DO UPDATE SET
           balance = balance + excluded.balance,
           tx_count = tx_count + 1,
           last_offset = excluded.last_offset"""
)


class Balances(Projector):
    info = Info(
        "balances",
        "Account balances in cents, with owners and transaction counts",
        event_types=["account.opened", "money.deposited", "money.withdrawn"],
        # Neither event ids nor metadata: the host leaves them out of every batch.
        reads=(),
    )

    def init(self, db: Db) -> None:
        db.execute_script(SCHEMA)

    def handle(self, event: Event, db: Db) -> None:
        kind, data = event.type, event.data
        # The Rust twin's typed parse refuses what is not a string or an integer; so do
        # these checks (cents never go through float).
        account = data["account"]
        if type(account) is not str:
            raise TypeError(f"account must be a string, not {account!r}")
        if kind == "account.opened":
            owner = data["owner"]
            if type(owner) is not str:
                raise TypeError(f"owner must be a string, not {owner!r}")
            db.execute(OPEN, (account, owner, event.offset))
            return
        amount = data["amount"]
        if type(amount) is not int:
            raise TypeError(f"amount must be an integer number of cents, not {amount!r}")
        if kind == "money.deposited":
            db.execute(MOVE, (account, amount, event.offset))
        elif kind == "money.withdrawn":
            db.execute(MOVE, (account, -amount, event.offset))


WitWorld = export(Balances)
