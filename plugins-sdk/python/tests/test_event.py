"""Unpacking batches into events: fields, laziness, exact integers, and malformed
batches reported without a crash."""

import json
import unittest
from datetime import datetime, timezone

from refract_sdk import Db, Info, Projector, _batch
from refract_sdk.testing import DEFAULT_EPOCH_MICROS, TestProjector, event

from .support import Recorder, SpyBackend


class Batch:
    def __init__(self, offsets, versions, recorded, ends, text):
        self.offsets, self.stream_versions, self.recorded_at, self.ends, self.text = (
            offsets,
            versions,
            recorded,
            ends,
            text,
        )


class Quiet(Projector):
    info = Info("quiet", "")

    def init(self, db):
        pass

    def handle(self, event, db):
        self.last = (event.id, event.stream, event.type, event.data_json, event.metadata_json)


def run(ends, text, offsets=(7,)):
    n = len(offsets)
    projector = Quiet()
    failed = _batch.handle(
        projector, Db(SpyBackend()), Batch(list(offsets), [1] * n, [0] * n, ends, text)
    )
    return failed, getattr(projector, "last", None)


class EventFieldsTest(unittest.TestCase):
    def test_every_field_reads_back(self):
        t = TestProjector(Recorder)
        t.apply(
            [
                event("a.b", stream="s-1", data={"x": 1}, metadata={"by": "me"}, id="id-1"),
                event("c", stream="s-1", recorded_at_micros=-5),
                event("d", stream="s-2"),
            ]
        )
        first, second, third = Recorder.events
        self.assertEqual((first.offset, first.stream_version, first.id), (1, 1, "id-1"))
        self.assertEqual((first.stream, first.type, first.data), ("s-1", "a.b", {"x": 1}))
        self.assertEqual((first.metadata, first.metadata_json), ({"by": "me"}, '{"by":"me"}'))
        self.assertEqual(first.recorded_at_micros, DEFAULT_EPOCH_MICROS + 1_000_000)
        self.assertEqual(first.recorded_at, datetime(2024, 1, 1, 0, 0, 1, tzinfo=timezone.utc))
        self.assertEqual(
            (second.stream_version, second.metadata, second.metadata_json), (2, None, None)
        )
        self.assertEqual(second.recorded_at_micros, -5)
        self.assertEqual((third.stream_version, third.data), (1, {}))
        self.assertEqual(second.id, "00000000-0000-7000-8000-000000000002")

    def test_events_outlive_their_batch(self):
        t = TestProjector(Recorder)
        t.apply([event("a", data={"n": 1})])
        t.apply([event("b", data={"n": 2})])
        self.assertEqual([(e.type, e.data["n"]) for e in Recorder.events], [("a", 1), ("b", 2)])

    def test_non_ascii_text_is_cut_at_byte_positions(self):
        t = TestProjector(Recorder)
        t.apply([event("é", stream="flüß-1", data={"name": "Zoë 🎉"}), event("plain", stream="s")])
        first, second = Recorder.events
        self.assertEqual((first.stream, first.type, first.data["name"]), ("flüß-1", "é", "Zoë 🎉"))
        self.assertEqual((second.stream, second.type, second.data_json), ("s", "plain", "{}"))
        self.assertEqual(
            t.rows("SELECT stream, payload FROM seen WHERE offset = 1"),
            [("flüß-1", '{"name":"Zoë 🎉"}')],
        )

    def test_offsets_versions_and_json_integers_are_exact_past_2_to_the_53(self):
        t = TestProjector(Recorder)
        huge = 2**63 - 1
        t.apply(
            [
                event(
                    "big",
                    data_json=f'{{"n": {huge}, "m": {2**53 + 1}}}',
                    offset=2**53 + 1,
                    stream_version=2**64 - 1,
                )
            ]
        )
        (only,) = Recorder.events
        self.assertEqual((only.offset, only.stream_version), (2**53 + 1, 2**64 - 1))
        self.assertEqual(only.data, {"n": huge, "m": 2**53 + 1})
        self.assertIs(type(only.data["m"]), int)
        self.assertEqual(t.rows("SELECT offset FROM seen"), [(2**53 + 1,)])

    def test_data_is_parsed_lazily_and_once(self):
        t = TestProjector(Recorder)
        t.apply([event("bad", data_json="{not json")])  # never parsed: no failure
        (only,) = Recorder.events
        with self.assertRaises(json.JSONDecodeError):
            _ = only.data
        ok = event("ok", data={"k": [1]}).as_event()
        self.assertIs(ok.data, ok.data)

    def test_as_event_builds_an_event_for_unit_tests(self):
        e = event("money.deposited", stream="acc-1", data={"amount": 5}, offset=9).as_event()
        self.assertEqual(
            (e.offset, e.stream_version, e.type, e.stream, e.data),
            (9, 1, "money.deposited", "acc-1", {"amount": 5}),
        )


class MalformedBatchTest(unittest.TestCase):
    def test_a_well_formed_batch_is_handled(self):
        failed, last = run([2, 3, 4, 6, 6], b"idstd{}")
        self.assertIsNone(failed)
        self.assertEqual(last, ("id", "s", "t", "d{", None))

    def test_fields_split_where_the_ends_say(self):
        failed, last = run([2, 3, 4, 6, 8], b"idstd{}{}")
        self.assertIsNone(failed)
        self.assertEqual(last, ("id", "s", "t", "d{", "}{"))

    def test_malformed_batches_fail_without_raising(self):
        def message(ends, text, offsets=(7,)):
            failed, _ = run(ends, text, offsets)
            self.assertIsNotNone(failed)
            self.assertTrue(
                failed.message.startswith("malformed event batch from the host: "), failed.message
            )
            return failed

        self.assertIn("text ends", message([2, 3, 4, 6], b"idstd{}").message)
        self.assertIn("outside the text", message([2, 3, 4, 6, 99], b"idstd{}").message)
        self.assertIn("outside the text", message([2, 3, 2, 6, 6], b"idstd{}").message)
        self.assertIn("not UTF-8", message([2, 3, 4, 6, 6], b"idst\xff{}").message)
        # A field boundary inside a multi-byte character.
        self.assertIn("inside a character", message([2, 3, 5, 7, 7], "idéd{}".encode()).message)
        # The second event's fields are the bad ones: the error names its offset.
        second = message([1, 2, 3, 5, 5, 6, 7, 4, 9, 9], b"abc{}def{}", offsets=(3, 4))
        self.assertEqual(second.offset, 4)
        self.assertEqual(message([1], b"x", offsets=()).offset, 0)


if __name__ == "__main__":
    unittest.main()
