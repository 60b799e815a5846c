"""Native unit tests with `TestReactor`: the reactor's real `init` and `react` against
an in-memory SQLite, its effects recorded, with no wasm build. Run with
`python3 -m unittest discover -s tests`."""

import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "..", "src"), "{{sdk_dir}}/python"]

from refract_sdk.testing import TestReactor, event  # noqa: E402

from app import Welcome  # noqa: E402

ANN = {"user": "ann", "email": "ann@example.com", "follow_up_ms": 60000}
MAIL = {"user": "ann", "email": "ann@example.com"}


class WelcomeTest(unittest.TestCase):
    def test_a_new_user_is_welcomed_once_and_followed_up_when_the_timer_fires(self):
        t = TestReactor(Welcome)
        t.apply([
            event("user.registered", stream="user-ann", data=ANN),
            event("user.registered", stream="user-ann", data=ANN),
        ])
        self.assertEqual(
            t.effects.requests,
            [
                ("emit", 1, "email-ann", "welcome.requested", MAIL),
                ("schedule", 1, "follow-up:ann", 60000, MAIL),
            ],
        )
        t.effects.requests.clear()
        t.apply([t.timer_event("follow-up:ann", MAIL)])
        self.assertEqual(
            t.effects.requests,
            [("emit", 3, "email-ann", "follow_up.requested", MAIL)],
        )
        self.assertEqual(
            t.rows("SELECT user_id, registered_offset, followed_up FROM users"),
            [("ann", 1, 1)],
        )


if __name__ == "__main__":
    unittest.main()
