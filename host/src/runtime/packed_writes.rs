//! Decoding 0.2.0's packed `write-batch` (`execute-packed`), in place.
//!
//! The five lists of a `write-batch` are read where they lie in guest memory: a write's
//! parameters are decoded one at a time into a [`PackedValue`] whose text and blobs
//! borrow the guest's `bytes`, and `host_sql` binds them to SQLite straight from there.
//! Nothing is allocated per write or per parameter.
//!
//! Every rule of the WIT's `write-batch` is checked, and a breach is an `invalid` error
//! naming the write and the rule, never a panic or a trap:
//! - the shape of the whole batch ([`PackedWrites::check_shape`]): `statements` and
//!   `param-ends` of equal length, `kinds` and `numbers` of equal length, and the last
//!   `param-ends` entry equal to that length. A breach fails the call at write 0, before
//!   anything is applied;
//! - per write ([`Decoder::next_write`]): its parameter range does not go backwards or
//!   past the lists; each kind is 0 to 4; each text or blob range does not go backwards
//!   or past `bytes`; text is UTF-8. A breach fails the call at that write; the writes
//!   before it were applied, as the contract says.
//!
//! The limits `execute-batch` has apply here too, named the same: `limits.max_writes_per_call`
//! writes, `limits.max_params_per_statement` parameters per write, `limits.max_value_bytes`
//! per text or blob (checked when bound), and `limits.max_hostcall_bytes` for the whole
//! batch's lists together ([`PackedWrites::check_limits`]).

use super::bindings::{SqlError, SqlErrorKind};
use super::limits::{SandboxLimits, format_bytes};

/// Parameter kind: SQL NULL.
const KIND_NULL: u8 = 0;
/// Parameter kind: a 64-bit integer.
const KIND_INTEGER: u8 = 1;
/// Parameter kind: a real, its IEEE 754 bits in the number.
const KIND_REAL: u8 = 2;
/// Parameter kind: UTF-8 text in `bytes`.
const KIND_TEXT: u8 = 3;
/// Parameter kind: a blob in `bytes`.
const KIND_BLOB: u8 = 4;

/// A `write-batch` borrowed from guest memory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PackedWrites<'a> {
    /// The statement of each write.
    pub(crate) statements: &'a [u32],
    /// The end of each write's parameters in `kinds` and `numbers`.
    pub(crate) param_ends: &'a [u32],
    /// The kind of each parameter.
    pub(crate) kinds: &'a [u8],
    /// The value of each parameter, or the end of its bytes.
    pub(crate) numbers: &'a [i64],
    /// The bytes of every text and blob parameter.
    pub(crate) bytes: &'a [u8],
}

/// One decoded parameter, borrowing text and blobs from the batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum PackedValue<'a> {
    /// SQL NULL.
    Null,
    /// An integer.
    Integer(i64),
    /// A real.
    Real(f64),
    /// UTF-8 text.
    Text(&'a str),
    /// A blob.
    Blob(&'a [u8]),
}

fn invalid(message: String) -> SqlError {
    SqlError {
        kind: SqlErrorKind::Invalid,
        message,
    }
}

impl<'a> PackedWrites<'a> {
    /// The number of writes.
    pub(crate) fn len(&self) -> usize {
        self.statements.len()
    }

    /// The bytes the batch's lists take in guest memory.
    pub(crate) fn byte_len(&self) -> usize {
        // Each list is already in guest memory, so none of these can overflow a usize.
        self.statements.len() * 4
            + self.param_ends.len() * 4
            + self.kinds.len()
            + self.numbers.len() * 8
            + self.bytes.len()
    }

    /// The limits on the whole call: `limits.max_writes_per_call` writes and
    /// `limits.max_hostcall_bytes` of lists. A breach fails the call before anything
    /// is applied.
    pub(crate) fn check_limits(&self, limits: &SandboxLimits) -> Result<(), SqlError> {
        let limit = |message: String| SqlError {
            kind: SqlErrorKind::Limit,
            message,
        };
        if self.len() > limits.max_writes_per_call {
            return Err(limit(format!(
                "execute-packed got {} writes; the limit is {} (`limits.max_writes_per_call`). Nothing was applied; send smaller batches",
                self.len(),
                limits.max_writes_per_call
            )));
        }
        if self.byte_len() > limits.max_hostcall_bytes {
            return Err(limit(format!(
                "execute-packed got a write-batch of {} bytes; the limit is {} (`limits.max_hostcall_bytes`). Nothing was applied; send smaller batches",
                self.byte_len(),
                format_bytes(limits.max_hostcall_bytes)
            )));
        }
        Ok(())
    }

    /// The shape of the whole batch: the list lengths the contract ties together. A
    /// breach fails the call before anything is applied.
    pub(crate) fn check_shape(&self) -> Result<(), SqlError> {
        if self.statements.len() != self.param_ends.len() {
            return Err(invalid(format!(
                "the write-batch has {} statements but {} param-ends; they must be equal (one per write). Nothing was applied",
                self.statements.len(),
                self.param_ends.len()
            )));
        }
        if self.kinds.len() != self.numbers.len() {
            return Err(invalid(format!(
                "the write-batch has {} kinds but {} numbers; they must be equal (one per parameter). Nothing was applied",
                self.kinds.len(),
                self.numbers.len()
            )));
        }
        let params = self.param_ends.last().map_or(0, |&end| end as usize);
        if params != self.kinds.len() {
            return Err(invalid(format!(
                "the write-batch's last param-end is {params}, but it holds {} parameters; they must be equal. Nothing was applied",
                self.kinds.len()
            )));
        }
        Ok(())
    }

    /// A decoder over the writes, in order. Call [`check_shape`](Self::check_shape)
    /// first; the decoder checks everything else.
    pub(crate) fn decoder(self) -> Decoder<'a> {
        Decoder {
            writes: self,
            index: 0,
            param: 0,
            byte: 0,
        }
    }
}

/// Walks the writes of a [`PackedWrites`] in order.
#[derive(Debug)]
pub(crate) struct Decoder<'a> {
    writes: PackedWrites<'a>,
    /// The next write.
    index: usize,
    /// The next write's first parameter.
    param: usize,
    /// Where the next text or blob starts in `bytes`.
    byte: usize,
}

impl<'a> Decoder<'a> {
    /// The position of the write the last [`next_write`](Self::next_write) returned.
    pub(crate) fn index(&self) -> usize {
        self.index.saturating_sub(1)
    }

    /// The next write: its statement, with its parameters in `values` (cleared first);
    /// `None` after the last. `max_params` is `limits.max_params_per_statement`.
    pub(crate) fn next_write(
        &mut self,
        values: &mut Vec<PackedValue<'a>>,
        max_params: usize,
    ) -> Option<Result<u32, SqlError>> {
        let index = self.index;
        let statement = *self.writes.statements.get(index)?;
        self.index += 1;
        values.clear();
        Some(self.decode(index, values, max_params).map(|()| statement))
    }

    fn decode(
        &mut self,
        index: usize,
        values: &mut Vec<PackedValue<'a>>,
        max_params: usize,
    ) -> Result<(), SqlError> {
        let writes = self.writes;
        let end = writes
            .param_ends
            .get(index)
            .map_or(usize::MAX, |&end| end as usize);
        if end < self.param || end > writes.kinds.len() || end > writes.numbers.len() {
            return Err(invalid(format!(
                "write {index}: its param-end {end} is before the previous write's ({}) or past the {} parameters",
                self.param,
                writes.kinds.len().min(writes.numbers.len())
            )));
        }
        let count = end - self.param;
        if count > max_params {
            return Err(SqlError {
                kind: SqlErrorKind::Limit,
                message: format!(
                    "write {index}: {count} parameters exceed the limit of {max_params} (`limits.max_params_per_statement`)"
                ),
            });
        }
        for j in self.param..end {
            let (kind, number) = (writes.kinds[j], writes.numbers[j]);
            let position = j - self.param + 1;
            let value = match kind {
                KIND_NULL => PackedValue::Null,
                KIND_INTEGER => PackedValue::Integer(number),
                KIND_REAL => PackedValue::Real(f64::from_bits(number.cast_unsigned())),
                KIND_TEXT | KIND_BLOB => {
                    let what = if kind == KIND_TEXT { "text" } else { "blob" };
                    let stop = usize::try_from(number)
                        .ok()
                        .filter(|&stop| stop >= self.byte && stop <= writes.bytes.len());
                    let Some(stop) = stop else {
                        return Err(invalid(format!(
                            "write {index}, parameter {position}: its {what} ends at {number}, before the previous text or blob's end ({}) or past the {} bytes",
                            self.byte,
                            writes.bytes.len()
                        )));
                    };
                    let slice = &writes.bytes[self.byte..stop];
                    self.byte = stop;
                    if kind == KIND_BLOB {
                        PackedValue::Blob(slice)
                    } else {
                        match std::str::from_utf8(slice) {
                            Ok(text) => PackedValue::Text(text),
                            Err(err) => {
                                return Err(invalid(format!(
                                    "write {index}, parameter {position}: its text is not UTF-8 ({err})"
                                )));
                            }
                        }
                    }
                }
                other => {
                    return Err(invalid(format!(
                        "write {index}, parameter {position}: kind {other} is unknown; kinds are 0 null, 1 integer, 2 real, 3 text, 4 blob"
                    )));
                }
            };
            values.push(value);
        }
        self.param = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes every write, collecting owned values, or the first error and its index.
    fn decode_all(writes: PackedWrites<'_>) -> Result<Vec<(u32, String)>, (usize, SqlError)> {
        writes.check_shape().map_err(|error| (0, error))?;
        let mut decoder = writes.decoder();
        let mut values = Vec::new();
        let mut out = Vec::new();
        while let Some(next) = decoder.next_write(&mut values, 999) {
            let statement = next.map_err(|error| (decoder.index(), error))?;
            out.push((statement, format!("{values:?}")));
        }
        Ok(out)
    }

    #[test]
    fn a_well_formed_batch_decodes_in_place() {
        let bytes = b"ann\x01\x02bob";
        let writes = PackedWrites {
            statements: &[4, 7],
            param_ends: &[4, 6],
            kinds: &[
                KIND_TEXT,
                KIND_INTEGER,
                KIND_REAL,
                KIND_BLOB,
                KIND_NULL,
                KIND_TEXT,
            ],
            numbers: &[3, -5, 1.5f64.to_bits().cast_signed(), 5, 99, 8],
            bytes,
        };
        let decoded = decode_all(writes).expect("valid");
        assert_eq!(
            decoded,
            [
                (
                    4,
                    r#"[Text("ann"), Integer(-5), Real(1.5), Blob([1, 2])]"#.to_owned()
                ),
                (7, r#"[Null, Text("bob")]"#.to_owned()),
            ]
        );
    }

    #[test]
    fn every_broken_rule_is_invalid_at_its_write() {
        let ok_first =
            |kinds: &'static [u8], numbers: &'static [i64], bytes: &'static [u8]| PackedWrites {
                statements: &[0, 1],
                param_ends: &[1, 2],
                kinds,
                numbers,
                bytes,
            };
        let cases: [(&str, PackedWrites<'static>, usize, &str); 7] = [
            (
                "unknown kind",
                ok_first(&[KIND_INTEGER, 9], &[1, 0], b""),
                1,
                "kind 9 is unknown",
            ),
            (
                "range past the end",
                ok_first(&[KIND_TEXT, KIND_TEXT], &[2, 10], b"abc"),
                1,
                "past the 3 bytes",
            ),
            (
                "range going backwards",
                ok_first(&[KIND_TEXT, KIND_BLOB], &[2, 1], b"abc"),
                1,
                "before the previous",
            ),
            (
                "negative end",
                ok_first(&[KIND_BLOB, KIND_NULL], &[-1, 0], b"abc"),
                0,
                "ends at -1",
            ),
            (
                "invalid UTF-8",
                ok_first(&[KIND_NULL, KIND_TEXT], &[0, 2], b"\xff\xfe"),
                1,
                "not UTF-8",
            ),
            (
                "mismatched statements and param-ends",
                PackedWrites {
                    statements: &[0, 1],
                    param_ends: &[0],
                    kinds: &[],
                    numbers: &[],
                    bytes: b"",
                },
                0,
                "2 statements but 1 param-ends",
            ),
            (
                "mismatched kinds and numbers",
                PackedWrites {
                    statements: &[0],
                    param_ends: &[1],
                    kinds: &[KIND_NULL],
                    numbers: &[],
                    bytes: b"",
                },
                0,
                "1 kinds but 0 numbers",
            ),
        ];
        for (what, writes, index, needle) in cases {
            let (at, error) = decode_all(writes).expect_err(what);
            assert_eq!(at, index, "{what}: {}", error.message);
            assert!(
                matches!(error.kind, SqlErrorKind::Invalid),
                "{what}: {error:?}"
            );
            assert!(error.message.contains(needle), "{what}: {}", error.message);
        }
    }

    #[test]
    fn param_ends_going_backwards_or_short_are_invalid() {
        let backwards = PackedWrites {
            statements: &[0, 1, 2],
            param_ends: &[2, 1, 2],
            kinds: &[KIND_NULL; 2],
            numbers: &[0; 2],
            bytes: b"",
        };
        let (at, error) = decode_all(backwards).expect_err("backwards");
        assert_eq!(at, 1, "{}", error.message);
        let trailing = PackedWrites {
            statements: &[0],
            param_ends: &[1],
            kinds: &[KIND_NULL; 2],
            numbers: &[0; 2],
            bytes: b"",
        };
        let (at, error) = decode_all(trailing).expect_err("trailing parameters");
        assert_eq!(at, 0);
        assert!(
            error.message.contains("last param-end is 1"),
            "{}",
            error.message
        );
    }

    #[test]
    fn limits_name_their_keys() {
        let limits = SandboxLimits {
            max_writes_per_call: 1,
            ..SandboxLimits::default()
        };
        let writes = PackedWrites {
            statements: &[0, 0],
            param_ends: &[0, 0],
            kinds: &[],
            numbers: &[],
            bytes: b"",
        };
        let error = writes.check_limits(&limits).expect_err("over");
        assert!(matches!(error.kind, SqlErrorKind::Limit));
        assert!(error.message.contains("limits.max_writes_per_call"));
        let mut decoder = PackedWrites {
            statements: &[0],
            param_ends: &[3],
            kinds: &[KIND_NULL; 3],
            numbers: &[0; 3],
            bytes: b"",
        }
        .decoder();
        let error = decoder
            .next_write(&mut Vec::new(), 2)
            .expect("a write")
            .expect_err("over");
        assert!(error.message.contains("limits.max_params_per_statement"));
    }
}
