"""The saga natively, with `TestReactor`: each path's effects, and the first of a
payment result and a timeout wins.

Run with `python3 -m unittest discover -s tests` in this folder; the test puts `src`
and the SDK (`plugins-sdk/python`) on the path. The end-to-end test on a real engine is
`tests/sdk_python.rs`.
"""

import sys
import unittest
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parents[1] / "src"), str(Path(__file__).parents[3] / "plugins-sdk/python")]

from order_saga import OrderSaga  # noqa: E402
from refract_sdk.testing import BatchError, TestReactor, event  # noqa: E402

PLACED = {"customer": "ann", "total": 1200, "payment_timeout_ms": 300}


class OrderSagaTest(unittest.TestCase):
    def setUp(self):
        self.saga = TestReactor(OrderSaga)
        self.saga.apply([event("order.placed", stream="order-1", data=PLACED)])

    def test_placing_requests_payment_and_schedules_the_timeout(self):
        self.assertEqual(
            self.saga.effects.requests,
            [
                ("emit", 1, "payment-order-1", "payment.requested",
                 {"order_id": "order-1", "amount": 1200, "customer": "ann"}),
                ("schedule", 1, "payment-timeout:order-1", 300, {"order_id": "order-1"}),
            ],
        )

    def test_a_success_confirms_and_cancels_the_timeout_and_a_late_timer_does_nothing(self):
        self.saga.effects.requests.clear()
        self.saga.apply([
            event("payment.succeeded", stream="payment-order-1", data={"order_id": "order-1"}),
            self.saga.timer_event("payment-timeout:order-1", {"order_id": "order-1"}),
        ])
        self.assertEqual(
            self.saga.effects.requests,
            [
                ("cancel", "payment-timeout:order-1"),
                ("emit", 2, "order-1", "order.confirmed", {"order_id": "order-1"}),
            ],
        )
        self.assertEqual(self.saga.rows("SELECT step FROM sagas"), [("confirmed",)])

    def test_a_timeout_cancels_and_releases_the_stock(self):
        self.saga.effects.requests.clear()
        self.saga.apply([self.saga.timer_event("payment-timeout:order-1", {"order_id": "order-1"})])
        reason = {"reason": "payment timed out"}
        self.assertEqual(
            self.saga.effects.requests,
            [
                ("cancel", "payment-timeout:order-1"),
                ("emit", 2, "order-1", "order.cancelled", reason),
                ("emit", 2, "stock-order-1", "stock.released", {"order_id": "order-1", **reason}),
            ],
        )

    def test_a_failed_payment_cancels_with_its_reason_and_compensates(self):
        self.saga.effects.requests.clear()
        self.saga.apply([
            event("payment.failed", stream="payment-order-1",
                  data={"order_id": "order-1", "reason": "card declined"}),
        ])
        reason = {"reason": "card declined"}
        self.assertEqual(
            self.saga.effects.requests,
            [
                ("cancel", "payment-timeout:order-1"),
                ("emit", 2, "order-1", "order.cancelled", reason),
                ("emit", 2, "stock-order-1", "stock.released", {"order_id": "order-1", **reason}),
            ],
        )
        self.assertEqual(self.saga.rows("SELECT step, reason FROM sagas"), [("cancelled", "card declined")])

    def test_a_failed_batch_records_no_effects(self):
        self.saga.effects.requests.clear()
        with self.assertRaises(BatchError):
            self.saga.apply([
                event("order.placed", stream="order-2", data=PLACED),
                event("payment.failed", stream="payment-order-2", data={}),
            ])
        self.assertEqual(self.saga.effects.requests, [])
        self.assertEqual(self.saga.rows("SELECT order_id FROM sagas"), [("order-1",)])


if __name__ == "__main__":
    unittest.main()
