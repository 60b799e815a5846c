"""`Db`: deferred writes flushed once per batch, reads after writes, failures that
name the event, immediate writes, parameter checks, and statement handles."""

import unittest

from refract_sdk import (
    FLUSH_BYTES,
    FLUSH_WRITES,
    Db,
    Info,
    Projector,
    SqlError,
    SqlErrorKind,
    Statement,
    _batch,
)
from refract_sdk.testing import BatchError, InitError, TestProjector, event

from .support import SpyBackend

SCHEMA = """
    CREATE TABLE items (name TEXT PRIMARY KEY, qty INTEGER NOT NULL CHECK (qty >= 0));
    CREATE TABLE log (n INTEGER, value);
"""
ADD = Statement("INSERT INTO items (name, qty) VALUES (?1, ?2)")
COUNT = Statement("SELECT count(*) AS n FROM items")
CLAIM = Statement("INSERT INTO items (name, qty) VALUES (?1, 0)")
RECORD = Statement("INSERT INTO log (n, value) VALUES (?1, ?2)")


class Items(Projector):
    """Behaviour chosen per event type, to drive `Db` from a real batch."""

    info = Info("items", "Items, for the SDK's tests")
    seen_counts: list = []

    def init(self, db):
        db.execute_script(SCHEMA)
        type(self).seen_counts = []

    def handle(self, event, db):
        data = event.data
        if event.type == "add":
            db.execute(ADD, (data["name"], data["qty"]))
        elif event.type == "count":
            type(self).seen_counts.append(db.query(COUNT).first()["n"])
        elif event.type == "claim":
            try:
                db.execute_now(CLAIM, (data["name"],))
                type(self).seen_counts.append("claimed")
            except SqlError as e:
                if e.kind is not SqlErrorKind.CONSTRAINT:
                    raise
                type(self).seen_counts.append("taken")
        elif event.type == "record":
            db.execute(RECORD, (event.offset, data["value"]))
        elif event.type == "swallow":
            try:
                db.flush()
            except SqlError:
                pass  # the batch fails all the same


class DeferredWritesTest(unittest.TestCase):
    def test_reads_see_the_writes_before_them(self):
        t = TestProjector(Items)
        t.apply(
            [
                event("add", data={"name": "a", "qty": 1}),
                event("count"),
                event("add", data={"name": "b", "qty": 2}),
                event("count"),
            ]
        )
        self.assertEqual(Items.seen_counts, [1, 2])

    def test_a_failed_deferred_write_names_the_event_that_issued_it(self):
        t = TestProjector(Items)
        with self.assertRaises(BatchError) as failed:
            t.apply(
                [
                    event("add", data={"name": "a", "qty": 1}),
                    event("add", data={"name": "b", "qty": -1}),  # CHECK fails at flush
                    event("add", data={"name": "c", "qty": 1}),
                ]
            )
        self.assertEqual(failed.exception.offset, 2)
        self.assertIn(
            "deferred write failed: constraint: CHECK constraint failed", failed.exception.message
        )
        self.assertIn("(statement: INSERT INTO items", failed.exception.message)
        self.assertEqual(t.rows("SELECT count(*) FROM items"), [(0,)])  # rolled back

    def test_a_failure_swallowed_by_the_projector_still_fails_the_batch(self):
        t = TestProjector(Items)
        with self.assertRaises(BatchError) as failed:
            t.apply(
                [
                    event("add", data={"name": "a", "qty": -1}),
                    event("swallow"),
                    event("add", data={"name": "b", "qty": 1}),
                ]
            )
        self.assertEqual(failed.exception.offset, 1)
        self.assertIn("CHECK constraint failed", failed.exception.message)

    def test_execute_now_raises_an_error_the_projector_can_catch(self):
        t = TestProjector(Items)
        t.apply([event("claim", data={"name": "x"}), event("claim", data={"name": "x"})])
        self.assertEqual(Items.seen_counts, ["claimed", "taken"])
        self.assertEqual(t.rows("SELECT name, qty FROM items"), [("x", 0)])

    def test_writes_are_sent_once_per_batch(self):
        backend = SpyBackend()
        db = Db(backend)
        projector = Items()
        batch = _packed([event("add", data={"name": str(i), "qty": i}) for i in range(10)])
        self.assertIsNone(_batch.handle(projector, db, batch))
        self.assertEqual(len(backend.batches), 1)
        self.assertEqual([w[2] for w in backend.batches[0]][:2], [["0", 0], ["1", 1]])
        self.assertEqual(backend.prepared, [ADD.sql])  # prepared once, by handle after

    def test_a_batch_with_many_writes_flushes_early(self):
        backend = SpyBackend()
        batch = _packed(
            [event("add", data={"name": str(i), "qty": i}) for i in range(FLUSH_WRITES + 5)]
        )
        self.assertIsNone(_batch.handle(Items(), Db(backend), batch))
        self.assertEqual([len(b) for b in backend.batches], [FLUSH_WRITES, 5])

    def test_large_parameters_flush_early(self):
        backend = SpyBackend()
        megabyte = "x" * (1 << 20)
        batch = _packed([event("record", data={"value": megabyte}) for _ in range(6)])
        self.assertIsNone(_batch.handle(Items(), Db(backend), batch))
        # Four 1 MiB texts reach FLUSH_BYTES (4 MiB): sent early, the rest at the end.
        self.assertEqual(FLUSH_BYTES, 4 << 20)
        self.assertEqual([len(b) for b in backend.batches], [4, 2])

    def test_statements_are_prepared_once_per_database(self):
        first, second = SpyBackend(), SpyBackend()
        for backend in (first, first, second):
            _batch.handle(
                Items(), Db(backend), _packed([event("add", data={"name": "a", "qty": 1})])
            )
        # A handle is only good for the database that issued it: a second one prepares
        # the statement again.
        self.assertEqual((first.prepared, second.prepared), ([ADD.sql], [ADD.sql]))

    def test_a_statement_that_does_not_compile_fails_the_event(self):
        class Broken(Projector):
            info = Info("broken", "")

            def init(self, db):
                pass

            def handle(self, event, db):
                db.execute(Statement("INSERT INTO nowhere VALUES (?1)"), (1,))

        with self.assertRaises(BatchError) as failed:
            TestProjector(Broken).apply([event("x")])
        self.assertEqual(failed.exception.offset, 1)
        self.assertIn("SqlError: invalid: no such table: nowhere", failed.exception.message)


class ParametersTest(unittest.TestCase):
    def stored(self, value):
        t = TestProjector(Items)
        db = t._db
        t._transaction("BEGIN")
        db.execute(RECORD, (1, value))
        db.flush()
        t._transaction("COMMIT")
        return t.rows("SELECT value, typeof(value) FROM log")[0]

    def test_python_values_bind_as_sql_values(self):
        self.assertEqual(self.stored(None), (None, "null"))
        self.assertEqual(self.stored(-(2**63)), (-(2**63), "integer"))
        self.assertEqual(self.stored(True), (1, "integer"))
        self.assertEqual(self.stored(1.5), (1.5, "real"))
        self.assertEqual(self.stored("tëxt"), ("tëxt", "text"))
        self.assertEqual(self.stored(b"\x00\x01"), (b"\x00\x01", "blob"))
        self.assertEqual(self.stored(bytearray(b"ab")), (b"ab", "blob"))
        self.assertEqual(self.stored(memoryview(b"cd")), (b"cd", "blob"))

    def test_values_without_a_sql_type_are_refused_clearly(self):
        db = Db(SpyBackend())
        cases = [
            (
                (1, 2**63),
                ValueError,
                "parameter ?2 is 9223372036854775808, outside SQLite's 64-bit integer range",
            ),
            (("ok", {"a": 1}), TypeError, "parameter ?2 is {'a': 1}, a dict"),
            (("\ud800",), ValueError, "parameter ?1 is not valid Unicode text"),
            ("abc", TypeError, "parameters must be a sequence such as a tuple, not str"),
        ]
        for params, error, message in cases:
            with self.assertRaises(error) as raised:
                db.execute(RECORD, params)
            self.assertIn(message, str(raised.exception))
        with self.assertRaises(TypeError) as raised:
            db.execute("INSERT INTO log VALUES (1, 2)", ())
        self.assertIn("expected a Statement, not str", str(raised.exception))

    def test_an_out_of_range_result_fails_the_event_by_offset(self):
        t = TestProjector(Items)
        with self.assertRaises(BatchError) as failed:
            t.apply([event("record", data={"value": 1}), event("record", data={"value": 2**64})])
        self.assertEqual(failed.exception.offset, 2)
        self.assertIn("ValueError: parameter ?2 is 18446744073709551616", failed.exception.message)


class InitTest(unittest.TestCase):
    def test_an_init_error_carries_the_exception(self):
        class BadInit(Projector):
            info = Info("bad-init", "")

            def init(self, db):
                db.execute_script("CREATE TABLE t (x INTEGER);")
                raise RuntimeError("no schema today")

            def handle(self, event, db):
                pass

        with self.assertRaises(InitError) as failed:
            TestProjector(BadInit)
        self.assertRegex(
            str(failed.exception),
            r"init of projector 'bad-init' failed: "
            r"RuntimeError: no schema today \(at test_db.py:\d+, in init\)",
        )

    def test_a_deferred_write_in_init_is_flushed_and_can_fail(self):
        class Seeds(Projector):
            info = Info("seeds", "")

            def init(self, db):
                db.execute_script(SCHEMA)
                db.execute(ADD, ("seed", -1))

            def handle(self, event, db):
                pass

        with self.assertRaises(InitError) as failed:
            TestProjector(Seeds)
        self.assertIn(
            "deferred write failed: constraint: CHECK constraint failed", str(failed.exception)
        )


def _packed(events):
    from refract_sdk.testing import _Packed

    packed = _Packed()
    for offset, item in enumerate(events, 1):
        packed.push(item, offset, 1)
    return packed


if __name__ == "__main__":
    unittest.main()
