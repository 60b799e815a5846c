"""The loop behind the `init` and `handle` exports, shared by the component glue and
the native test harness so that both run the same code.

A batch is any object with the five attributes of the WIT `event-batch`: `offsets`,
`stream_versions`, `recorded_at` (lists of ints), `ends` (five ints per event) and
`text` (bytes).
"""

import os
from itertools import islice
from operator import itemgetter, le
from typing import Any

from ._db import Db
from ._event import Utf8Text, event_class

FIELDS = 5
"""How many text fields each event has in a packed batch: id, stream, type, data,
metadata."""

# Where the SDK and the standard library live, as the interpreter names their files,
# so that an error points at the projector's own line rather than inside `json`.
# Plain prefixes, not `abspath`: a component has no working directory to resolve
# against.
_SDK_DIR = os.path.dirname(__file__) + os.sep
_STDLIB_DIR = os.path.dirname(os.__file__) + os.sep if getattr(os, "__file__", None) else None


class Failed:
    """The event that failed a batch, and why: `handle-error` in the WIT contract."""

    __slots__ = ("offset", "message")

    def __init__(self, offset: int, message: str) -> None:
        self.offset = offset
        self.message = message

    def __repr__(self) -> str:
        return f"Failed(offset={self.offset}, message={self.message!r})"


def init(projector: Any, db: Db) -> str | None:
    """Runs `projector.init` and sends its deferred writes. Returns None, or why it
    failed."""
    db._reset()
    error: BaseException | None = None
    try:
        projector.init(db)
        db.flush()
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # every failure becomes the init error string
        error = e
    failure = db._take_failure()
    db._reset()
    if failure is not None:
        return failure.describe()
    if error is not None:
        return describe(error)
    return None


def handle(projector: Any, db: Db, batch: Any) -> Failed | None:
    """Unpacks a batch and runs `projector.handle` on each event, then sends the
    deferred writes. Returns None, or the event that failed and why."""
    db._reset()
    try:
        return _run(projector.handle, db, batch, event_class(projector.info.reads))
    finally:
        db._reset()


def _run(handle: Any, db: Db, batch: Any, new_event: Any) -> Failed | None:
    offsets = batch.offsets
    versions = batch.stream_versions
    recorded = batch.recorded_at
    ends = batch.ends
    raw = batch.text
    n = len(offsets)
    first = offsets[0] if n else 0
    if len(versions) != n or len(recorded) != n or len(ends) != FIELDS * n:
        return _malformed(
            first,
            f"{n} offsets, {len(versions)} stream versions, {len(recorded)} timestamps "
            f"and {len(ends)} text ends",
        )
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return _malformed(first, f"text is not UTF-8: {e}")
    # Pure ASCII (the common case): byte positions are character positions, so every
    # field is a slice of one decoded string. Otherwise each field decodes its bytes.
    is_ascii = len(decoded) == len(raw)
    bad = _first_bad_end(ends, raw, is_ascii)
    if bad is not None:
        start = ends[bad - 1] if bad else 0
        return _malformed(
            offsets[bad // FIELDS],
            f"a field spans bytes {start}..{ends[bad]} of {len(raw)}, outside the text "
            "or inside a character",
        )
    text: Any = decoded if is_ascii else Utf8Text(raw)

    start = 0
    fields = iter(ends)
    # The same iterator five times: each step takes one event's five ends. The lengths
    # were checked above, so all run out together.
    events = zip(offsets, versions, recorded, fields, fields, fields, fields, fields, strict=True)
    for offset, version, at, id_end, stream_end, type_end, data_end, end in events:
        db._offset = offset
        try:
            handle(
                new_event(
                    offset, version, at, text, start, id_end, stream_end, type_end, data_end, end
                ),
                db,
            )
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # every failure names the event
            failure = db._take_failure()
            if failure is not None:
                return _failed_write(failure, offset)
            return Failed(offset, describe(e))
        # A failed deferred write outranks whatever the projector made of it: the batch
        # is lost either way, and the write names the event that caused it. (Read the
        # attribute rather than call a method: this runs for every event.)
        if db._failure is not None:
            return _failed_write(db._take_failure(), offset)
        start = end

    last = offsets[-1] if n else 0
    try:
        db.flush()
    except KeyboardInterrupt:
        raise
    except BaseException as e:
        failure = db._take_failure()
        if failure is not None:
            return _failed_write(failure, last)
        return Failed(last, describe(e))
    return None


def _first_bad_end(ends: Any, raw: bytes, is_ascii: bool) -> int | None:
    """The index of the first end position that goes backwards, past the text, or
    (in non-ASCII text) inside a character; None when all are sound. The common case
    runs at C speed: one pass of `map` over the ends and, for non-ASCII text, one
    `translate` and one `itemgetter` gather."""
    total = len(raw)
    if not ends:
        return None
    if ends[-1] <= total and all(map(le, ends, islice(ends, 1, None))):
        if is_ascii:
            return None
        # 1 where the byte is a UTF-8 continuation byte (a position inside a
        # character), and a 0 past the end for the positions equal to the length.
        inside = raw.translate(_CONTINUATION) + b"\x00"
        picked = itemgetter(*ends)(inside) if len(ends) > 1 else (inside[ends[0]],)
        if not any(picked):
            return None
        return next(index for index, flag in enumerate(picked) if flag)
    previous = 0
    for index, end in enumerate(ends):
        if end < previous or end > total:
            return index
        previous = end
    return None


# Maps each byte to 1 if it is a UTF-8 continuation byte (0x80..0xBF), else to 0.
_CONTINUATION = bytes(1 if 0x80 <= byte < 0xC0 else 0 for byte in range(256))


def _malformed(offset: int, message: str) -> Failed:
    return Failed(offset, f"malformed event batch from the host: {message}")


def _failed_write(failure: Any, current: int) -> Failed:
    return Failed(failure.offset if failure.offset is not None else current, failure.describe())


def describe(error: BaseException) -> str:
    """The last line of the error's traceback (`KeyError: 'amount'`), and where the
    projector raised it (`at balances.py:42, in handle`)."""
    kind = type(error).__qualname__
    try:
        text = str(error)
    except BaseException:  # a broken __str__ must not hide the failure
        text = ""
    line = f"{kind}: {text}" if text else kind
    try:
        where = _where(error)
    except BaseException:
        where = None
    return f"{line} (at {where})" if where else line


def _where(error: BaseException) -> str | None:
    """The innermost frame of the traceback outside the SDK and the standard library,
    else the innermost frame."""
    chosen = innermost = None
    tb = error.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        innermost = (code.co_filename, tb.tb_lineno, code.co_name)
        if not _library(code.co_filename):
            chosen = innermost
        tb = tb.tb_next
    frame = chosen or innermost
    if frame is None:
        return None
    filename, line, function = frame
    return f"{os.path.basename(filename)}:{line}, in {function}"


def _library(path: str) -> bool:
    """Whether a frame's file is the SDK's or the standard library's."""
    if path.startswith(_SDK_DIR):
        return True
    return bool(_STDLIB_DIR) and path.startswith(_STDLIB_DIR) and "site-packages" not in path
