"""`Reactor`, `export_reactor`, `Effects` and `Timer`: misuse reported with the fix,
effects serialized as the host's imports take them, timer events recognised."""

import unittest

from refract_sdk import Info
from refract_sdk.reactor import Effects, Reactor, RecordingEffects, Timer, export_reactor
from refract_sdk.testing import TestReactor, event


class Echo(Reactor):
    info = Info("echo", "Echoes", event_types=["ping"])
    emits = ["pong"]

    def init(self, db):
        pass

    def react(self, event, db, effects):
        timer = Timer.of(event)
        if timer is not None:
            effects.emit("pongs", "pong", {"timer": timer.key})
            return
        effects.emit("pongs", "pong", {"n": event.data["n"]}, metadata={"k": 1})


class ReactorTest(unittest.TestCase):
    def test_natively_export_reactor_checks_and_returns_the_class(self):
        self.assertIs(export_reactor(Echo), Echo)

    def test_misuse_is_reported_with_the_fix(self):
        class NoReact(Reactor):
            info = Info("no-react", "x")
            emits = ["a"]

            def init(self, db):
                pass

        class NoEmits(Echo):
            emits = "pong"

        with self.assertRaisesRegex(TypeError, "must define react"):
            export_reactor(NoReact)
        with self.assertRaisesRegex(TypeError, "emits must be a list"):
            export_reactor(NoEmits)
        with self.assertRaisesRegex(TypeError, "takes a Reactor subclass"):
            export_reactor(int)

    def test_effects_name_their_cause_and_send_json(self):
        recorded = []

        class Backend:
            def emit(self, *args):
                recorded.append(args)

            def schedule(self, *args):
                recorded.append(args)

            def cancel(self, *args):
                recorded.append(args)

        effects = Effects(Backend())
        effects._cause = 7
        effects.emit("s", "t", {"a": [1, 2]}, metadata={"m": "x"}, expected_version=0)
        effects.schedule("k", 1500, {"p": None})
        effects.cancel("k")
        self.assertEqual(
            recorded,
            [(7, "s", "t", '{"a":[1,2]}', '{"m":"x"}', 0), (7, "k", 1500, '{"p":null}'), ("k",)],
        )

    def test_test_reactor_records_and_delivers_its_own_timers_only(self):
        reactor = TestReactor(Echo)
        self.assertIsInstance(reactor.effects, RecordingEffects)
        self.assertEqual(reactor.apply([event("ping", data={"n": 3})]), 1)
        self.assertEqual(reactor.effects.requests, [("emit", 1, "pongs", "pong", {"n": 3})])
        own = reactor.timer_event("k", {"x": 1}, due_at_micros=5)
        other = event("refract.timer", stream="refract.timer/other", data={})
        self.assertEqual(reactor.apply([other]), 0)
        self.assertEqual(reactor.apply([own]), 1)
        self.assertEqual(reactor.effects.requests[-1], ("emit", 3, "pongs", "pong", {"timer": "k"}))
        timer = Timer.of(own.as_event())
        self.assertEqual((timer.key, timer.due_at_micros, timer.payload), ("k", 5, {"x": 1}))
        self.assertIsNone(Timer.of(event("ping").as_event()))


if __name__ == "__main__":
    unittest.main()
