"""The deferred writes of a batch in the packed layout of `refract:projector@0.2.0`'s
`write-batch`: a few flat buffers instead of one record and one list of values per
write, so that `execute-packed` sends a whole batch for a handful of copies.

Write `i` runs `statements[i]` with the parameters `param_ends[i - 1] ..
param_ends[i]`; parameter `j` has `kinds[j]` (0 null, 1 integer, 2 real, 3 text,
4 blob) and `numbers[j]`: the integer, the real's IEEE 754 bits as a signed 64-bit
integer, or for text and blobs the end of its bytes in `data`. The contract's doc
comment on `write-batch` is the authority.

Encoding builds no object per value: integers go into `numbers` as they are, kinds
into a `bytearray`, and text is kept as the `str` objects the projector passed, joined
and encoded once when the batch is sent (their UTF-8 lengths are known as they are
queued: `len` for ASCII, which is the common case).

`unpack` is the reverse, written from the contract rather than from the encoder: the
native harness and the reactor world's `execute-batch` path run on it.
"""

import struct
from typing import Any
from collections.abc import Iterator, Sequence

from ._errors import SqlError, SqlErrorKind

I64_MIN = -(1 << 63)
I64_MAX = (1 << 63) - 1

KIND_NULL = 0
KIND_INTEGER = 1
KIND_REAL = 2
KIND_TEXT = 3
KIND_BLOB = 4

_DOUBLE = struct.Struct("<d")
_INT64 = struct.Struct("<q")
_pack_double = _DOUBLE.pack
_unpack_double = _DOUBLE.unpack
_pack_int64 = _INT64.pack
_unpack_int64 = _INT64.unpack


def real_bits(value: float) -> int:
    """The IEEE 754 bits of `value` as a signed 64-bit integer, as `numbers` holds a
    real (negative zero and NaN keep their bits)."""
    return _unpack_int64(_pack_double(value))[0]


def bits_real(bits: int) -> float:
    """The float whose IEEE 754 bits are `bits`: the reverse of `real_bits`."""
    return _unpack_double(_pack_int64(bits))[0]


class PackedWrites:
    """A growing `write-batch`: `statements`, `param_ends`, `kinds` and `numbers` are
    the contract's lists; `data()` is its `bytes`."""

    __slots__ = ("statements", "param_ends", "kinds", "numbers", "byte_length", "_data", "_text")

    def __init__(self) -> None:
        self.statements: list[int] = []
        self.param_ends: list[int] = []
        self.kinds = bytearray()
        self.numbers: list[int] = []
        self.byte_length = 0
        """Bytes of text and blobs queued."""
        # The bytes so far are `_data` followed by the UTF-8 of the `str`s in `_text`.
        self._data = bytearray()
        self._text: list[str] = []

    def clear(self) -> None:
        """Forgets every queued write."""
        self.statements = []
        self.param_ends = []
        self.kinds = bytearray()
        self.numbers = []
        self.byte_length = 0
        self._data = bytearray()
        self._text = []

    def data(self) -> bytes:
        """The bytes of every text and blob parameter, back to back."""
        self._join_text()
        return bytes(self._data)

    def push(self, statement: int, params: Sequence[Any]) -> None:
        """Queues one write. A parameter without a SQL type, an int outside 64 bits, or
        text that is not valid Unicode raises `TypeError` or `ValueError` naming its
        position, and leaves the buffers as they were."""
        if type(params) is not tuple and isinstance(params, (str, bytes)):
            raise TypeError(
                f"parameters must be a sequence such as a tuple, not {type(params).__name__}: "
                "write `(value,)` for one parameter"
            )
        kinds = self.kinds
        numbers = self.numbers
        text = self._text
        first = len(kinds)
        size = self.byte_length
        try:
            # The common types first, by exact type, to keep the hot path short.
            for value in params:
                kind = type(value)
                if kind is str:
                    size += len(value) if value.isascii() else _utf8_length(value, params)
                    text.append(value)
                    kinds.append(KIND_TEXT)
                    numbers.append(size)
                elif kind is int:
                    if not I64_MIN <= value <= I64_MAX:
                        raise _out_of_range(value, params)
                    kinds.append(KIND_INTEGER)
                    numbers.append(value)
                elif value is None:
                    kinds.append(KIND_NULL)
                    numbers.append(0)
                elif kind is float:
                    kinds.append(KIND_REAL)
                    numbers.append(_unpack_int64(_pack_double(value))[0])
                elif kind is bytes:
                    size = self._blob(value, size)
                else:
                    size = self._other(value, params, size)
        except BaseException:
            del kinds[first:]
            del numbers[first:]
            self._join_text()
            del self._data[self.byte_length :]
            raise
        self.byte_length = size
        self.statements.append(statement)
        self.param_ends.append(len(kinds))

    def _blob(self, blob: bytes, size: int) -> int:
        self._join_text()
        self._data += blob
        size += len(blob)
        self.kinds.append(KIND_BLOB)
        self.numbers.append(size)
        return size

    def _other(self, value: Any, params: Sequence[Any], size: int) -> int:
        """The uncommon parameter types, and the error for those without a SQL type."""
        if isinstance(value, int):  # bool, IntEnum and other int subclasses
            number = int(value)
            if not I64_MIN <= number <= I64_MAX:
                raise _out_of_range(number, params)
            self.kinds.append(KIND_INTEGER)
            self.numbers.append(number)
            return size
        if isinstance(value, str):
            plain = str.__str__(value)
            size += len(plain) if plain.isascii() else _utf8_length(plain, params)
            self._text.append(plain)
            self.kinds.append(KIND_TEXT)
            self.numbers.append(size)
            return size
        if isinstance(value, float):
            self.kinds.append(KIND_REAL)
            self.numbers.append(real_bits(float(value)))
            return size
        if isinstance(value, (bytes, bytearray, memoryview)):
            return self._blob(bytes(value), size)
        raise TypeError(
            f"parameter {position(value, params)} is {value!r}, a {type(value).__name__}; SQL "
            "parameters are None, int, float, str or bytes"
        )

    def _join_text(self) -> None:
        if self._text:
            # Every str was checked to encode when it was queued.
            self._data += "".join(self._text).encode("utf-8")
            # In place: `push` holds the list while it runs.
            self._text.clear()


class Unpacked:
    """One write of a `write-batch`, decoded: its statement and its values as Python
    values (None, int, float, str, bytes)."""

    __slots__ = ("statement", "values")

    def __init__(self, statement: int, values: list[Any]) -> None:
        self.statement = statement
        self.values = values


class Malformed(Exception):
    """Write `index` of a `write-batch` breaks the layout; the writes before it are
    sound."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(index, message)
        self.index = index
        self.error = SqlError(SqlErrorKind.INVALID, message)


def unpack(
    statements: Sequence[int],
    param_ends: Sequence[int],
    kinds: bytes,
    numbers: Sequence[int],
    data: bytes,
) -> Iterator[Unpacked]:
    """Decodes a `write-batch` write by write, as the host does; raises `Malformed`
    at the first write that breaks the layout (mismatched lists, an unknown kind, a
    range outside `data`, text that is not UTF-8)."""
    if len(param_ends) != len(statements) or len(numbers) != len(kinds):
        raise Malformed(
            0,
            f"mismatched lists: {len(statements)} statements, {len(param_ends)} parameter "
            f"ends, {len(kinds)} kinds, {len(numbers)} numbers",
        )
    param = 0
    byte_start = 0
    for index, (statement, end) in enumerate(zip(statements, param_ends, strict=True)):
        if not param <= end <= len(kinds):
            raise Malformed(index, f"parameters {param}..{end} of {len(kinds)}")
        values: list[Any] = []
        for j in range(param, end):
            kind = kinds[j]
            number = numbers[j]
            if kind == KIND_NULL:
                values.append(None)
            elif kind == KIND_INTEGER:
                values.append(number)
            elif kind == KIND_REAL:
                values.append(bits_real(number))
            elif kind in (KIND_TEXT, KIND_BLOB):
                if not byte_start <= number <= len(data):
                    raise Malformed(
                        index, f"parameter {j} spans bytes {byte_start}..{number} of {len(data)}"
                    )
                chunk = bytes(data[byte_start:number])
                if kind == KIND_TEXT:
                    try:
                        values.append(chunk.decode("utf-8"))
                    except UnicodeDecodeError:
                        raise Malformed(index, f"parameter {j} is not UTF-8") from None
                else:
                    values.append(chunk)
                byte_start = number
            else:
                raise Malformed(index, f"parameter {j} has kind {kind}")
        param = end
        yield Unpacked(statement, values)


def position(value: Any, params: Sequence[Any]) -> str:
    """`?n` for `value` in `params`, for error messages."""
    for index, candidate in enumerate(params, 1):
        if candidate is value:
            return f"?{index}"
    return "?"


def _out_of_range(value: int, params: Sequence[Any]) -> ValueError:
    return ValueError(
        f"parameter {position(value, params)} is {value}, outside SQLite's 64-bit integer "
        f"range [{I64_MIN}, {I64_MAX}]; store it as text"
    )


def _utf8_length(value: str, params: Sequence[Any]) -> int:
    """The UTF-8 length of a non-ASCII str. A str with a lone surrogate (JSON can
    produce one from `"\\ud800"`) is not UTF-8 and would fail at the component
    boundary, so it fails here, clearly."""
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError as e:
        raise ValueError(
            f"parameter {position(value, params)} is not valid Unicode text ({e.reason} at "
            f"index {e.start}); encode it or bind bytes instead"
        ) from None
