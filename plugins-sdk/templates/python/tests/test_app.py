"""Native unit tests: the real `init` and `handle` against an in-memory SQLite, with no
wasm build. Run with `python3 -m unittest discover -s tests`."""

import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "..", "src"), "{{sdk_dir}}/python"]

from refract_sdk.testing import BatchError, TestProjector, event  # noqa: E402

from app import ReadModel  # noqa: E402


def added(sku, qty):
    return event("stock.added", stream=f"sku-{sku}", data={"sku": sku, "qty": qty})


def removed(sku, qty):
    return event("stock.removed", stream=f"sku-{sku}", data={"sku": sku, "qty": qty})


class ReadModelTest(unittest.TestCase):
    def test_stock_moves_with_the_events(self):
        t = TestProjector(ReadModel)
        t.apply([added("A", 10), removed("A", 4), added("B", 1)])
        self.assertEqual(
            t.rows("SELECT sku, qty, last_offset FROM stock ORDER BY sku"),
            [("A", 6, 2), ("B", 1, 3)],
        )

    def test_a_bad_event_names_its_offset(self):
        t = TestProjector(ReadModel)
        with self.assertRaises(BatchError) as failed:
            t.apply([added("A", 1), event("stock.added", data={"sku": "A"})])
        self.assertEqual(failed.exception.offset, 2)
        self.assertIn("KeyError: 'qty'", failed.exception.message)


if __name__ == "__main__":
    unittest.main()
