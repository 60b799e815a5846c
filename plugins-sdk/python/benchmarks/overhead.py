"""The SDK's own cost per event, natively: unpacking a packed batch, building each
`Event`, calling `handle`, parsing `data` and buffering one write, against a backend
that does nothing, so that neither SQLite nor the component boundary is in the figure.

    python3 plugins-sdk/python/benchmarks/overhead.py [--events 1000] [--reps 30]

Prints nanoseconds per event, the best of `--reps` batches, for four handlers that
add one step each. Inside the component, CPython runs as WebAssembly and every figure
is several times larger; `refract project` measures that end to end (see the README).
"""

import argparse
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from refract_sdk import Db, Info, Projector, Statement, _batch  # noqa: E402
from refract_sdk.testing import _Packed, event  # noqa: E402

MOVE = Statement("INSERT INTO balances (account, balance, last_offset) VALUES (?1, ?2, ?3)")


class NullBackend:
    """Accepts everything and does nothing."""

    null = None
    integer = int
    real = float
    text = str
    blob = bytes

    def prepare(self, sql):
        return 1

    def execute_packed(self, packed):
        # What the component sends: the packed lists as they are, and the bytes.
        return packed.data()


class Empty(Projector):
    info = Info("empty", "unpacking and the call only")

    def init(self, db):
        pass

    def handle(self, event, db):
        pass


class ReadsType(Empty):
    def handle(self, event, db):
        return event.type


class ParsesData(Empty):
    def handle(self, event, db):
        return event.type, event.data


class Writes(Empty):
    def handle(self, event, db):
        data = event.data
        if event.type == "money.deposited":
            db.execute(MOVE, (data["account"], data["amount"], event.offset))
        else:
            db.execute(MOVE, (data["account"], -data["amount"], event.offset))


def balances_batch(events: int, non_ascii: bool) -> _Packed:
    rng = random.Random(42)
    packed = _Packed()
    for offset in range(1, events + 1):
        account = f"acc-{rng.randrange(1000):04}" + ("é" if non_ascii else "")
        kind = "money.deposited" if rng.random() < 0.7 else "money.withdrawn"
        data = {"account": account, "amount": rng.randrange(1, 50_001)}
        packed.push(event(kind, stream=f"account-{account}", data=data), offset, 1)
    return packed


def per_event_ns(projector, batch, reps: int) -> float:
    db = Db(NullBackend())
    instance = projector()
    best = float("inf")
    for _ in range(reps):
        started = time.perf_counter_ns()
        failed = _batch.handle(instance, db, batch)
        best = min(best, time.perf_counter_ns() - started)
        assert failed is None, failed
    return best / len(batch.offsets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=30)
    args = parser.parse_args()
    version = sys.version.split()[0]
    print(f"Python {version}, batches of {args.events} balances events, best of {args.reps}")
    payload = '{"account":"acc-0001","amount":123}'
    started = time.perf_counter_ns()
    for _ in range(100_000):
        json.loads(payload)
    parse_ns = (time.perf_counter_ns() - started) / 100_000
    print(f"  reference: json.loads of a 36-byte payload: {parse_ns:.0f} ns")
    for non_ascii in (False, True):
        batch = balances_batch(args.events, non_ascii)
        print(f"  {'non-ASCII' if non_ascii else 'ASCII'} batch:")
        for projector in (Empty, ReadsType, ParsesData, Writes):
            cost = per_event_ns(projector, batch, args.reps)
            print(f"    {projector.__name__:<11} {cost:7.0f} ns/event")


if __name__ == "__main__":
    main()
