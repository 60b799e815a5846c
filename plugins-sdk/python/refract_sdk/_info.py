"""What a projector says about itself: name, description, subscriptions, and the
optional event fields it reads."""

from collections.abc import Iterable

MAX_NAME_LEN = 64
"""The longest projector name the host accepts."""

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")

EVENT_FIELDS = ("id", "metadata")
"""The optional event fields a projector may leave out of `Info.reads`."""


class Info:
    """A projector's name, description, subscriptions and the optional event fields it
    reads.

    The host delivers an event when its type is one of `event_types` (or none are
    listed) and its stream starts with one of `stream_prefixes` (or none are listed).
    With neither, the projector receives every event.

    >>> info = Info("balances", "Account balances in cents",
    ...             event_types=["account.opened", "money.deposited"],
    ...             stream_prefixes=["acc-"])
    >>> info.accepts("money.deposited", "acc-1"), info.accepts("money.deposited", "order-1")
    (True, False)

    `reads` names the optional event fields the projector reads: `"id"` (`Event.id`)
    and `"metadata"` (`Event.metadata`, `Event.metadata_json`); both by default. The
    host does not read a field left out from the log, which makes a replay cheaper,
    and reading it in `handle` raises::

        Info("totals", "Totals per account", reads=())  # neither ids nor metadata
    """

    __slots__ = ("name", "description", "event_types", "stream_prefixes", "reads")

    def __init__(
        self,
        name: str,
        description: str,
        *,
        event_types: Iterable[str] = (),
        stream_prefixes: Iterable[str] = (),
        reads: Iterable[str] = EVENT_FIELDS,
    ) -> None:
        self.name: str = name
        """1 to 64 characters of `[a-z0-9_-]`; every version of one projector carries
        the same name."""
        self.description: str = description
        """One line for operators: what the read model holds."""
        self.event_types: tuple[str, ...] = tuple(event_types)
        """Exact event types to receive; empty means every type."""
        self.stream_prefixes: tuple[str, ...] = tuple(stream_prefixes)
        """Stream name prefixes to receive; empty means every stream."""
        self.reads: frozenset[str] = (
            frozenset((reads,)) if isinstance(reads, str) else frozenset(reads)
        )
        """The optional event fields the projector reads: `"id"`, `"metadata"`."""

    def accepts(self, event_type: str, stream: str) -> bool:
        """Whether the host delivers an event of `event_type` on `stream`."""
        return (not self.event_types or event_type in self.event_types) and (
            not self.stream_prefixes or stream.startswith(self.stream_prefixes)
        )

    def problem(self) -> str | None:
        """Why the host would refuse this info, or None. The host enforces the same
        rule at load time; checking here makes a native test fail the same way."""
        for field in ("name", "description"):
            value = getattr(self, field)
            if not isinstance(value, str):
                return f"the projector's {field} must be a str, not {type(value).__name__}"
        for field in ("event_types", "stream_prefixes"):
            for item in getattr(self, field):
                if not isinstance(item, str):
                    return f"{field} must hold str values, not {type(item).__name__} ({item!r})"
        for field in sorted(self.reads, key=repr):
            if field not in EVENT_FIELDS:
                return (
                    f"reads holds {field!r}; the optional event fields are "
                    f"{', '.join(map(repr, EVENT_FIELDS))}"
                )
        if not 1 <= len(self.name) <= MAX_NAME_LEN or not _NAME_CHARS.issuperset(self.name):
            return (
                f"projector name {self.name!r} is invalid: use 1 to {MAX_NAME_LEN} "
                "characters of [a-z0-9_-]"
            )
        return None

    def __repr__(self) -> str:
        return (
            f"Info({self.name!r}, {self.description!r}, event_types={list(self.event_types)!r}, "
            f"stream_prefixes={list(self.stream_prefixes)!r}, "
            f"reads={[f for f in EVENT_FIELDS if f in self.reads]!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Info):
            return NotImplemented
        return (
            self.name,
            self.description,
            self.event_types,
            self.stream_prefixes,
            self.reads,
        ) == (
            other.name,
            other.description,
            other.event_types,
            other.stream_prefixes,
            other.reads,
        )

    __hash__ = None  # type: ignore[assignment]
