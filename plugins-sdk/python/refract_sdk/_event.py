"""One event as a projector sees it, cut from the batch the host sent."""

import json
from datetime import datetime, timedelta, timezone
from typing import Any

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# Marks `Event._data` as not parsed yet (None is a valid JSON value).
_UNPARSED = object()


class Utf8Text:
    """The packed text of a batch that is not pure ASCII: byte positions are not
    character positions, so each field is decoded from its own byte range. A range
    that starts or ends inside a character raises `UnicodeDecodeError`."""

    __slots__ = ("_bytes",)

    def __init__(self, data: bytes) -> None:
        self._bytes = memoryview(data)

    def __getitem__(self, span: slice) -> str:
        return str(self._bytes[span], "utf-8")


class Event:
    """One event from the log.

    Attributes, read as plain values:

    - `offset` (int): the event's global position in the log, from 1, only growing;
    - `stream_version` (int): its position within its stream, from 1;
    - `recorded_at_micros` (int): when the log recorded it, microseconds since the
      Unix epoch, UTC; `recorded_at` is the same as an aware `datetime`. This is
      the projector's only clock, and it replays identically;
    - `stream` (str), `type` (str), `id` (str).

    Offsets, versions and timestamps are Python ints, exact to 64 bits.

    `data` is the JSON payload, parsed on first use (integers stay exact; JSON
    numbers with a fraction or exponent become floats), and `data_json` its text.
    `metadata` and `metadata_json` are the same for the metadata, or None when the
    event has none.

    An event is valid during the `handle` call it is passed to, and may be kept
    after it: it holds its own reference to the batch's text.
    """

    __slots__ = (
        "offset",
        "stream_version",
        "recorded_at_micros",
        "stream",
        "type",
        "_text",
        "_start",
        "_id_end",
        "_data_start",
        "_data_end",
        "_end",
        "_data",
    )

    def __init__(
        self,
        offset: int,
        stream_version: int,
        recorded_at_micros: int,
        text: Any,
        start: int,
        id_end: int,
        stream_end: int,
        type_end: int,
        data_end: int,
        end: int,
    ) -> None:
        self.offset = offset
        self.stream_version = stream_version
        self.recorded_at_micros = recorded_at_micros
        # Nearly every projector reads the stream and the type; the rest is cut from
        # the batch's text when asked for.
        self.stream = text[id_end:stream_end]
        self.type = text[stream_end:type_end]
        self._text = text
        self._start = start
        self._id_end = id_end
        self._data_start = type_end
        self._data_end = data_end
        self._end = end
        self._data = _UNPARSED

    @property
    def id(self) -> str:
        """The event's unique id."""
        return self._text[self._start : self._id_end]

    @property
    def data_json(self) -> str:
        """The payload as JSON text."""
        return self._text[self._data_start : self._data_end]

    @property
    def data(self) -> Any:
        """The payload, parsed from JSON on first use and kept. Raises
        `json.JSONDecodeError` (a `ValueError`) if it is not valid JSON."""
        data = self._data
        if data is _UNPARSED:
            data = self._data = json.loads(self._text[self._data_start : self._data_end])
        return data

    @property
    def metadata_json(self) -> str | None:
        """The metadata as JSON text, or None when the event has none."""
        if self._end == self._data_end:
            return None
        return self._text[self._data_end : self._end]

    @property
    def metadata(self) -> Any:
        """The metadata, parsed from JSON (on every access), or None when the event
        has none."""
        text = self.metadata_json
        return None if text is None else json.loads(text)

    @property
    def recorded_at(self) -> datetime:
        """When the log recorded the event, as an aware UTC `datetime` (exact to the
        microsecond: no float on the way)."""
        return _EPOCH + timedelta(microseconds=self.recorded_at_micros)

    def __repr__(self) -> str:
        return (
            f"Event(offset={self.offset}, stream={self.stream!r}, type={self.type!r}, "
            f"stream_version={self.stream_version}, data={self.data_json})"
        )


def _not_read(field: str, attribute: str) -> AttributeError:
    return AttributeError(
        f"event.{attribute} was read, but this projector's Info(reads=...) leaves out "
        f"{field!r}, so the host does not send it: add {field!r} to reads"
    )


class _EventWithoutId(Event):
    """An event for a projector whose `reads` leaves out the id."""

    __slots__ = ()

    @property
    def id(self) -> str:
        raise _not_read("id", "id")


class _EventWithoutMetadata(Event):
    """An event for a projector whose `reads` leaves out the metadata."""

    __slots__ = ()

    @property
    def metadata_json(self) -> str | None:
        raise _not_read("metadata", "metadata_json")

    @property
    def metadata(self) -> Any:
        raise _not_read("metadata", "metadata")


class _EventWithoutIdOrMetadata(_EventWithoutId, _EventWithoutMetadata):
    """An event for a projector that reads neither the id nor the metadata."""

    __slots__ = ()


def event_class(reads: Any) -> type[Event]:
    """The `Event` class for a projector that reads the optional fields in `reads`:
    reading a field the host did not send raises rather than passing off empty text as
    the value. No cost per event: the check is the class."""
    if "id" in reads:
        return Event if "metadata" in reads else _EventWithoutMetadata
    return _EventWithoutId if "metadata" in reads else _EventWithoutIdOrMetadata
