"""`Projector`, `export` and `TestProjector`: misuse reported clearly, exceptions
turned into handle errors naming the offset, subscriptions, and the native sandbox."""

import unittest

from refract_sdk import Info, Projector, SqlError, SqlErrorKind, Statement, export
from refract_sdk.testing import BatchError, TestProjector, event

from .support import Recorder


class Good(Projector):
    info = Info("good", "A projector that works", event_types=["a", "b"], stream_prefixes=["acc-"])

    def init(self, db):
        db.execute_script("CREATE TABLE t (x)")

    def handle(self, event, db):
        if event.type == "b":
            raise KeyError(event.data["missing"] if "missing" in event.data else "amount")


class ExportTest(unittest.TestCase):
    def test_natively_export_checks_and_returns_the_class(self):
        self.assertIs(export(Good), Good)

    def test_misuse_is_reported_with_the_fix(self):
        class NoInfo(Projector):
            def init(self, db):
                pass

            def handle(self, event, db):
                pass

        class NoHandle(Projector):
            info = Info("x", "")

            def init(self, db):
                pass

        class BadName(Projector):
            info = Info("Bad Name", "")

            def init(self, db):
                pass

            def handle(self, event, db):
                pass

        class Plain:
            pass

        cases = [
            (Plain, TypeError, "export() takes a Projector subclass"),
            (
                NoInfo,
                TypeError,
                'NoInfo.info must be an Info, not NoneType: add `info = Info("noinfo"',
            ),
            (NoHandle, TypeError, "NoHandle must define handle(self, event, db)"),
            (
                BadName,
                ValueError,
                "projector name 'Bad Name' is invalid: use 1 to 64 characters of [a-z0-9_-]",
            ),
        ]
        for projector, error, message in cases:
            with self.assertRaises(error) as raised:
                export(projector)
            self.assertIn(message, str(raised.exception))
        self.assertIn("64", Info("a" * 65, "").problem())
        self.assertIsNone(Info("cars-v2_x", "").problem())


class HandleErrorTest(unittest.TestCase):
    def test_an_exception_names_the_offset_with_the_tracebacks_last_line(self):
        t = TestProjector(Good)
        with self.assertRaises(BatchError) as failed:
            t.apply(
                [event("a", stream="acc-1"), event("b", stream="acc-1"), event("a", stream="acc-1")]
            )
        self.assertEqual(failed.exception.offset, 2)
        self.assertRegex(
            failed.exception.message,
            r"^KeyError: 'amount' \(at test_projector.py:\d+, in handle\)$",
        )

    def test_the_location_is_the_projectors_line_not_the_json_modules(self):
        class Parses(Recorder):
            def handle(self, event, db):
                return event.data

        t = TestProjector(Parses)
        with self.assertRaises(BatchError) as failed:
            t.apply([event("x", data_json="{oops")])
        self.assertRegex(
            failed.exception.message,
            r"^JSONDecodeError: Expecting property name .* "
            r"\(at test_projector.py:\d+, in handle\)$",
        )


class SubscriptionsTest(unittest.TestCase):
    def test_only_subscribed_events_are_delivered(self):
        t = TestProjector(Good)
        delivered = t.apply(
            [event("a", stream="acc-1"), event("a", stream="order-1"), event("c", stream="acc-1")]
        )
        self.assertEqual((delivered, t.last_offset), (1, 3))

    def test_offsets_must_grow(self):
        t = TestProjector(Recorder)
        t.apply([event("a", offset=5)])
        with self.assertRaises(BatchError) as failed:
            t.apply([event("a", offset=5)])
        self.assertIn("offsets must grow: 5 follows 5", str(failed.exception))


class Sql(Projector):
    """Runs the SQL an event carries, as a projector would, to probe the sandbox."""

    info = Info("sql", "")
    errors: list = []

    def init(self, db):
        type(self).errors = []
        db.execute_script(
            "CREATE TABLE t (x); CREATE INDEX t_x ON t (x); INSERT INTO t VALUES ('a;b');"
        )

    def handle(self, event, db):
        try:
            if event.type == "script":
                db.execute_script(event.data["sql"])
            else:
                db.query(Statement(event.data["sql"]))
            type(self).errors.append(None)
        except SqlError as e:
            type(self).errors.append(e.kind)


class NativeSandboxTest(unittest.TestCase):
    """The native stand-in denies what the host denies, with the same error kind."""

    def kinds(self, *statements):
        t = TestProjector(Sql)
        t.apply([event(kind, data={"sql": sql}) for kind, sql in statements])
        return Sql.errors

    def test_host_only_statements_are_denied(self):
        denied = [
            ("script", "ATTACH DATABASE ':memory:' AS other"),
            ("script", "BEGIN"),
            ("script", "COMMIT"),
            ("script", "SAVEPOINT s"),
            ("script", "PRAGMA journal_mode = DELETE"),
            ("script", "PRAGMA user_version = 7"),
            ("query", "PRAGMA compile_options"),
            ("script", "CREATE TABLE _refract_checkpoint (x)"),
            ("script", "CREATE INDEX _Refract_x ON t (x)"),
            ("script", "CREATE TEMP TABLE scratch (x)"),
            ("script", "CREATE VIRTUAL TABLE v USING dbstat"),
            ("query", "SELECT load_extension('x')"),
            ("query", "SELECT random()"),
            ("query", "SELECT current_timestamp"),
        ]
        self.assertEqual(self.kinds(*denied), [SqlErrorKind.DENIED] * len(denied))

    def test_ordinary_sql_and_read_only_pragmas_are_allowed(self):
        allowed = [
            ("query", "PRAGMA table_info(t)"),
            ("query", "PRAGMA user_version"),
            ("query", "SELECT x FROM t"),
            ("script", "CREATE VIRTUAL TABLE docs USING fts5 (body)"),
            (
                "query",
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3) "
                "SELECT * FROM n",
            ),
            ("script", "CREATE TABLE u (y); INSERT INTO u VALUES ('1;2'); -- done"),
            (
                "script",
                "CREATE TRIGGER t_ins AFTER INSERT ON t BEGIN INSERT INTO u VALUES (1); END;",
            ),
        ]
        self.assertEqual(self.kinds(*allowed), [None] * len(allowed))

    def test_errors_keep_their_kind(self):
        kinds = self.kinds(
            ("query", "SELEC nonsense"),
            ("query", "SELECT 1; SELECT 2"),
            ("script", "INSERT INTO t VALUES (1"),
        )
        self.assertEqual(kinds, [SqlErrorKind.INVALID] * 3)


if __name__ == "__main__":
    unittest.main()
