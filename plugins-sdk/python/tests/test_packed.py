"""The packed write buffer (`write-batch` of refract:projector@0.2.0): values checked
against the decoder written from the contract's layout, through `Db`, and into a real
SQLite by the native harness; and the `reads` option."""

import math
import struct
import unittest

from refract_sdk import FLUSH_WRITES, Db, Info, Projector, Statement, _batch
from refract_sdk._packed import (
    KIND_BLOB,
    KIND_INTEGER,
    KIND_NULL,
    KIND_REAL,
    KIND_TEXT,
    Malformed,
    PackedWrites,
    bits_real,
    real_bits,
    unpack,
)
from refract_sdk.testing import BatchError, TestProjector, event

from .support import SpyBackend

I64_MIN = -(1 << 63)
I64_MAX = (1 << 63) - 1


def round_trip(params):
    packed = PackedWrites()
    packed.push(7, params)
    writes = list(
        unpack(packed.statements, packed.param_ends, bytes(packed.kinds), packed.numbers, packed.data())
    )
    assert len(writes) == 1 and writes[0].statement == 7
    return writes[0].values


class PackedWritesTest(unittest.TestCase):
    def test_integers_keep_every_bit(self):
        values = [I64_MIN, I64_MAX, 0, -1, 1, 2**53 + 1, True, False]
        self.assertEqual(round_trip(values), [I64_MIN, I64_MAX, 0, -1, 1, 2**53 + 1, 1, 0])

    def test_reals_travel_as_their_ieee_754_bits(self):
        reals = [-0.0, 0.5, -1.5e-300, 1.7976931348623157e308, 5e-324, -math.inf, math.inf]
        packed = PackedWrites()
        packed.push(1, reals + [math.nan])
        self.assertEqual(bytes(packed.kinds), bytes([KIND_REAL] * 8))
        self.assertEqual(
            packed.numbers[:7], [struct.unpack("<q", struct.pack("<d", r))[0] for r in reals]
        )
        self.assertEqual(real_bits(-0.0), I64_MIN, "negative zero is the sign bit alone")
        back = round_trip(reals + [math.nan])
        self.assertEqual(back[:7], reals)
        self.assertEqual(math.copysign(1, back[0]), -1.0, "negative zero keeps its sign")
        self.assertTrue(math.isnan(back[7]))
        self.assertTrue(math.isnan(bits_real(real_bits(math.nan))))

    def test_text_and_blobs_back_to_back_with_empty_ones(self):
        params = ["", 'Zoë "Z" 🎉 日本', "", b"", b"\x00\xff\x80", bytearray(b"ba"), "a", None]
        self.assertEqual(
            round_trip(params),
            ["", 'Zoë "Z" 🎉 日本', "", b"", b"\x00\xff\x80", b"ba", "a", None],
        )
        packed = PackedWrites()
        packed.push(1, params)
        self.assertEqual(
            bytes(packed.kinds),
            bytes([KIND_TEXT, KIND_TEXT, KIND_TEXT, KIND_BLOB, KIND_BLOB, KIND_BLOB, KIND_TEXT, KIND_NULL]),
        )
        text = len('Zoë "Z" 🎉 日本'.encode())
        self.assertEqual(packed.numbers[:7], [0, text, text, text, text + 3, text + 5, text + 6])
        self.assertEqual(packed.byte_length, text + 6)
        self.assertEqual(len(packed.data()), text + 6)

    def test_a_bad_value_names_its_position_and_leaves_the_buffer_as_it_was(self):
        packed = PackedWrites()
        packed.push(1, ("kept", 1, b"\x01"))
        before = (list(packed.statements), bytes(packed.kinds), list(packed.numbers), packed.data())
        cases = [
            (("dropped", b"\x02", I64_MAX + 1), ValueError, "parameter ?3 is 9223372036854775808, outside"),
            ((I64_MIN - 1,), ValueError, "parameter ?1 is -9223372036854775809, outside"),
            (("é", "\ud800"), ValueError, "parameter ?2 is not valid Unicode text"),
            ((1, object()), TypeError, "parameter ?2 is <object object"),
        ]
        for params, kind, message in cases:
            with self.assertRaises(kind) as raised:
                packed.push(2, params)
            self.assertIn(message, str(raised.exception))
            self.assertEqual(
                (list(packed.statements), bytes(packed.kinds), list(packed.numbers), packed.data()),
                before,
            )
        with self.assertRaises(TypeError):
            packed.push(2, "not a tuple")

    def test_many_writes_with_many_parameters_decode_in_order(self):
        packed = PackedWrites()
        wide = tuple(i if i % 2 == 0 else f"v{i}" for i in range(999))
        for i in range(3000):
            packed.push(i, wide if i % 1000 == 0 else (i, f"text {i} é", i / 2, b"\x00" * (i % 3)))
        writes = list(
            unpack(packed.statements, packed.param_ends, bytes(packed.kinds), packed.numbers, packed.data())
        )
        self.assertEqual(len(writes), 3000)
        for i, write in enumerate(writes):
            self.assertEqual(write.statement, i)
            if i % 1000 == 0:
                self.assertEqual(write.values, list(wide))
            else:
                self.assertEqual(write.values, [i, f"text {i} é", i / 2, b"\x00" * (i % 3)])

    def test_the_decoder_refuses_what_the_host_refuses(self):
        def base():
            return [[1, 2], [1, 2], bytearray([KIND_INTEGER, KIND_TEXT]), [5, 2], b"hi"]

        self.assertEqual([w.values for w in unpack(*base())], [[5], ["hi"]])
        for change, message in [
            (lambda b: b[2].__setitem__(1, 9), "has kind 9"),
            (lambda b: b[3].__setitem__(1, 3), "spans bytes 0..3 of 2"),
            (lambda b: b.__setitem__(4, b"\xffi"), "is not UTF-8"),
            (lambda b: b[1].__setitem__(1, 5), "parameters 1..5 of 2"),
        ]:
            batch = base()
            change(batch)
            with self.assertRaises(Malformed) as raised:
                list(unpack(*batch))
            self.assertEqual(raised.exception.index, 1)
            self.assertIn(message, str(raised.exception.error))


VALUE = Statement("INSERT INTO vals (seq, v) VALUES (?1, ?2)")
TRICKY = [I64_MIN, I64_MAX, -0.0, 1e308, 5e-324, "", "Zoë 🎉", b"", b"\x00\xff", None]


class Values(Projector):
    """Writes every tricky value, one row each; `many` adds 10,000 rows."""

    info = Info("values", "Tricky values, one per row")

    def init(self, db):
        db.execute_script("CREATE TABLE vals (seq INTEGER PRIMARY KEY, v)")

    def handle(self, event, db):
        for seq, value in enumerate(TRICKY):
            db.execute(VALUE, (seq, value))
        if event.type == "many":
            for i in range(10_000):
                db.execute(VALUE, (100 + i, f"row {i}"))


class ThroughDbTest(unittest.TestCase):
    def test_values_land_in_sqlite_with_their_exact_types(self):
        t = TestProjector(Values)
        t.apply([event("one")])
        rows = t.rows("SELECT seq, typeof(v), v FROM vals ORDER BY seq")
        self.assertEqual(
            rows,
            [
                (0, "integer", I64_MIN),
                (1, "integer", I64_MAX),
                (2, "real", -0.0),
                (3, "real", 1e308),
                (4, "real", 5e-324),
                (5, "text", ""),
                (6, "text", "Zoë 🎉"),
                (7, "blob", b""),
                (8, "blob", b"\x00\xff"),
                (9, "null", None),
            ],
        )
        self.assertEqual(math.copysign(1, rows[2][2]), -1.0)

    def test_writes_spanning_several_flushes_all_land_in_order(self):
        backend = SpyBackend()
        from .test_db import _packed

        self.assertIsNone(_batch.handle(Values(), Db(backend), _packed([event("many")])))
        self.assertEqual(
            [len(b) for b in backend.batches], [FLUSH_WRITES, FLUSH_WRITES, 10_010 - 2 * FLUSH_WRITES]
        )
        seqs = [w[2][0] for b in backend.batches for w in b]
        self.assertEqual(seqs, list(range(10)) + list(range(100, 10_100)))
        t = TestProjector(Values)
        t.apply([event("many")])
        self.assertEqual(
            t.rows("SELECT count(*), min(v), max(seq) FROM vals WHERE seq >= 100"),
            [(10_000, "row 0", 10_099)],
        )

    def test_an_out_of_range_int_fails_the_event_clearly(self):
        class Big(Values):
            def handle(self, event, db):
                db.execute(VALUE, (1, 1 << 63))

        with self.assertRaises(BatchError) as raised:
            TestProjector(Big).apply([event("x")])
        self.assertIn("parameter ?2 is 9223372036854775808, outside SQLite's 64-bit", str(raised.exception))


class ReadsTest(unittest.TestCase):
    def test_reads_defaults_to_every_field_and_checks_names(self):
        self.assertEqual(Info("a", "b").reads, frozenset(("id", "metadata")))
        self.assertEqual(Info("a", "b", reads=()).reads, frozenset())
        self.assertEqual(Info("a", "b", reads="metadata").reads, frozenset(("metadata",)))
        self.assertIn("reads holds 'data'", Info("a", "b", reads=("data",)).problem() or "")

    def test_a_field_left_out_is_not_delivered_and_reading_it_is_a_clear_error(self):
        seen = []

        class MetadataOnly(Projector):
            info = Info("metadata-only", "reads metadata", reads=("metadata",))

            def init(self, db):
                pass

            def handle(self, event, db):
                seen.append(event.metadata)
                if event.type == "peek":
                    seen.append(event.id)

        t = TestProjector(MetadataOnly)
        t.apply([event("ok", metadata={"m": 1})])
        self.assertEqual(seen, [{"m": 1}])
        with self.assertRaises(BatchError) as raised:
            t.apply([event("peek")])
        self.assertIn(
            "event.id was read, but this projector's Info(reads=...) leaves out 'id'",
            str(raised.exception),
        )


if __name__ == "__main__":
    unittest.main()
