"""Native tests of the Python `balances`, the same cases as the Rust twin's.

Run with `python3 -m unittest discover -s tests` in this folder; the test puts `src`
and the SDK (`plugins-sdk/python`) on the path.
"""

import os
import random
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [
    os.path.join(HERE, "..", "src"),
    os.path.join(HERE, "..", "..", "..", "plugins-sdk", "python"),
]

from refract_sdk.testing import BatchError, TestProjector, event  # noqa: E402

from balances import Balances  # noqa: E402

ROWS = "SELECT account, owner, balance, tx_count, last_offset FROM balances ORDER BY account"


def opened(account, owner):
    return event("account.opened", stream=account, data={"account": account, "owner": owner})


def deposited(account, amount):
    return event("money.deposited", stream=account, data={"account": account, "amount": amount})


def withdrawn(account, amount):
    return event("money.withdrawn", stream=account, data={"account": account, "amount": amount})


class BalancesTest(unittest.TestCase):
    def test_deposits_and_withdrawals_move_the_balance(self):
        t = TestProjector(Balances)
        t.apply(
            [
                opened("acc-1", "Alice"),
                deposited("acc-1", 10_000),
                withdrawn("acc-1", 2_550),
                opened("acc-2", "Bob"),
            ]
        )
        self.assertEqual(t.rows(ROWS), [("acc-1", "Alice", 7_450, 2, 3), ("acc-2", "Bob", 0, 0, 4)])

    def test_money_for_an_unopened_account_creates_it_without_owner(self):
        t = TestProjector(Balances)
        t.apply([deposited("acc-9", 500)])
        self.assertEqual(t.rows(ROWS), [("acc-9", None, 500, 1, 1)])
        t.apply([opened("acc-9", "Dana")])
        self.assertEqual(t.rows(ROWS), [("acc-9", "Dana", 500, 1, 2)])

    def test_unsubscribed_events_are_not_delivered(self):
        t = TestProjector(Balances)
        self.assertEqual(
            t.apply([opened("acc-1", "Alice"), event("account.closed", stream="acc-1")]), 1
        )

    def test_names_with_json_escapes_and_non_ascii_parse(self):
        t = TestProjector(Balances)
        t.apply([opened("acc-1", 'Zoë "Z" O\'Neil'), deposited("acc-1", 1)])
        self.assertEqual(t.rows(ROWS)[0][1], 'Zoë "Z" O\'Neil')

    def test_a_bad_event_fails_the_batch_and_rolls_it_back(self):
        t = TestProjector(Balances)
        t.apply([deposited("acc-1", 100)])
        with self.assertRaises(BatchError) as failed:
            t.apply([deposited("acc-1", 100), deposited("acc-1", "lots")])
        self.assertEqual(failed.exception.offset, 3)
        self.assertIn(
            "TypeError: amount must be an integer number of cents, not 'lots'",
            failed.exception.message,
        )
        self.assertIn("balances.py:", failed.exception.message)
        # The first deposit of the failed batch rolled back with it.
        self.assertEqual(t.rows(ROWS), [("acc-1", None, 100, 1, 1)])

    def test_amounts_past_2_to_the_53_stay_exact(self):
        t = TestProjector(Balances)
        big = 2**62 + 1
        t.apply([deposited("acc-1", big), deposited("acc-1", 1)])
        self.assertEqual(t.rows("SELECT balance FROM balances"), [(big + 1,)])

    def test_matches_an_independent_computation(self):
        """The read model equals balances computed independently, in plain Python."""
        t = TestProjector(Balances)
        rng = random.Random(0x2545F4914F6CDD1D)
        expected = {}
        offset = 0
        for _batch in range(20):
            events = []
            for _ in range(250):
                offset += 1
                account = f"acc-{rng.randrange(40)}"
                amount = rng.randrange(100_000)
                row = expected.setdefault(account, [account, None, 0, 0, 0])
                row[4] = offset
                choice = rng.randrange(10)
                if choice == 0:
                    owner = f"owner-{rng.randrange(1000)}"
                    row[1] = owner
                    events.append(opened(account, owner))
                elif choice <= 5:
                    row[2] += amount
                    row[3] += 1
                    events.append(deposited(account, amount))
                else:
                    row[2] -= amount
                    row[3] += 1
                    events.append(withdrawn(account, amount))
            t.apply(events)
        self.assertEqual(t.rows(ROWS), [tuple(expected[k]) for k in sorted(expected)])


if __name__ == "__main__":
    unittest.main()
