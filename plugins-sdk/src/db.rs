//! The read model: prepared statements, deferred writes, immediate writes, queries.

use crate::sys::{Backend, Handle};
use crate::{Result, SqlError, Value};

/// One SQL statement, compiled by the host the first time it is used and then named
/// by a small handle, so the hot path never sends SQL text.
///
/// Declare statements as `static`s next to the projector:
///
/// ```
/// use refract_sdk::Statement;
///
/// static DEPOSIT: Statement = Statement::new(
///     "INSERT INTO balances (account, balance) VALUES (?1, ?2)
///      ON CONFLICT (account) DO UPDATE SET balance = balance + excluded.balance",
/// );
/// assert!(DEPOSIT.sql().starts_with("INSERT"));
/// ```
pub struct Statement {
    sql: &'static str,
    /// The host's handle, once prepared. A component instance is single-threaded
    /// and owns its memory, so a handle cached here always came from this
    /// instance's host, and stays valid for the instance's life.
    #[cfg(target_arch = "wasm32")]
    pub(crate) handle: std::sync::OnceLock<u32>,
}

impl Statement {
    /// A statement with this SQL text. Parameters are `?1`, `?2`, and so on.
    pub const fn new(sql: &'static str) -> Self {
        Statement {
            sql,
            #[cfg(target_arch = "wasm32")]
            handle: std::sync::OnceLock::new(),
        }
    }

    /// The SQL text.
    pub fn sql(&self) -> &'static str {
        self.sql
    }
}

impl std::fmt::Debug for Statement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Statement").field(&self.sql).finish()
    }
}

/// The projector's read model: its own SQLite database, inside the transaction the
/// host opened for the current `init` or `handle` call.
///
/// - [`execute`](Db::execute) is **deferred**: the write joins a buffer that the SDK
///   sends in one host call at the end of the batch, and before any query or
///   immediate write, so reads always see earlier writes. If a deferred write
///   fails, the batch fails and names the event that issued it; later SQL calls in
///   the same batch return the same error.
/// - [`execute_now`](Db::execute_now) runs at once and returns its error, for a
///   projector that wants to react to, say, a constraint failure.
/// - [`query`](Db::query) reads rows.
/// - [`execute_script`](Db::execute_script) runs parameterless SQL, such as the
///   schema in `init`.
pub struct Db {
    backend: Backend,
    pending: WriteBuffer,
    /// The offset of the event being handled; `None` during `init`.
    offset: Option<u64>,
    /// The first deferred write that failed in the current call.
    failure: Option<Failure>,
}

/// A deferred write that failed, with the event that issued it.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    /// The offset of the event that issued the write; `None` during `init`.
    pub(crate) offset: Option<u64>,
    /// What the host or SQLite said.
    pub(crate) error: SqlError,
    /// The statement's SQL, for the operator.
    pub(crate) sql: &'static str,
}

impl Db {
    /// Buffered writes that make the SDK flush before the batch ends. It keeps each
    /// `execute-packed` call, and the guest memory it uses, well under the host's
    /// caps even when one event issues many writes.
    pub const FLUSH_WRITES: usize = 4096;

    /// Buffered parameter bytes (text and blobs) that make the SDK flush early.
    pub const FLUSH_BYTES: usize = 4 << 20;

    /// Buffered parameters that make the SDK flush early, for writes with many
    /// parameters each.
    pub const FLUSH_VALUES: usize = 64 << 10;

    pub(crate) fn new(backend: Backend) -> Self {
        Db {
            backend,
            pending: WriteBuffer::default(),
            offset: None,
            failure: None,
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Starts an `init` or `handle` call: nothing pending, no failure.
    pub(crate) fn reset(&mut self) {
        self.pending.clear();
        self.offset = None;
        self.failure = None;
    }

    /// Names the event whose writes follow.
    pub(crate) fn set_offset(&mut self, offset: Option<u64>) {
        self.offset = offset;
    }

    /// The first deferred write that failed in this call, if any.
    pub(crate) fn take_failure(&mut self) -> Option<Failure> {
        self.failure.take()
    }

    /// Queues a write; the SDK sends it with the rest of the batch. Returns an error
    /// only if the statement does not compile or an earlier deferred write failed.
    ///
    /// ```
    /// # use refract_sdk::{Db, Statement, Result, params};
    /// static OPEN: Statement = Statement::new("INSERT INTO accounts (id, owner) VALUES (?1, ?2)");
    ///
    /// fn open(db: &mut Db, id: &str, owner: &str) -> Result<()> {
    ///     db.execute(&OPEN, params![id, owner])
    /// }
    /// ```
    pub fn execute(&mut self, statement: &Statement, params: &[Value<'_>]) -> Result<()> {
        self.check()?;
        let handle = self.backend.prepare(statement)?;
        self.pending
            .push(handle, statement.sql, params, self.offset);
        if self.pending.is_full() {
            self.flush()?;
        }
        Ok(())
    }

    /// Runs a write now, after any deferred writes, and returns how many rows it
    /// changed. Its error comes back as a value the projector can handle.
    ///
    /// ```
    /// # use refract_sdk::{Db, Statement, SqlErrorKind, Result, params};
    /// static CLAIM: Statement = Statement::new("INSERT INTO names (name) VALUES (?1)");
    ///
    /// fn claim(db: &mut Db, name: &str) -> Result<bool> {
    ///     match db.execute_now(&CLAIM, params![name]) {
    ///         Ok(_) => Ok(true),
    ///         Err(e) if e.sql_kind() == Some(SqlErrorKind::Constraint) => Ok(false),
    ///         Err(e) => Err(e),
    ///     }
    /// }
    /// ```
    pub fn execute_now(&mut self, statement: &Statement, params: &[Value<'_>]) -> Result<u64> {
        self.flush()?;
        let handle = self.backend.prepare(statement)?;
        Ok(self.backend.execute(handle, statement.sql, params)?)
    }

    /// Runs a query, after any deferred writes, and returns its rows. The host caps
    /// how many rows and bytes come back.
    ///
    /// ```
    /// # use refract_sdk::{Db, Statement, Result, params};
    /// static OWNER: Statement = Statement::new("SELECT owner FROM accounts WHERE id = ?1");
    ///
    /// fn owner(db: &mut Db, id: &str) -> Result<Option<String>> {
    ///     let rows = db.query(&OWNER, params![id])?;
    ///     rows.first().map(|row| row.get("owner")).transpose()
    /// }
    /// ```
    pub fn query(&mut self, statement: &Statement, params: &[Value<'_>]) -> Result<Rows> {
        self.flush()?;
        let handle = self.backend.prepare(statement)?;
        Ok(self.backend.query(handle, statement.sql, params)?)
    }

    /// Runs SQL text without parameters, possibly several statements, after any
    /// deferred writes. Meant for the schema in `init`: the text crosses to the host
    /// on every call.
    pub fn execute_script(&mut self, sql: &str) -> Result<()> {
        self.flush()?;
        Ok(self.backend.execute_script(sql)?)
    }

    /// Sends the deferred writes now. The SDK does this by itself at the end of each
    /// batch and before every query, so a projector rarely needs to.
    pub fn flush(&mut self) -> Result<()> {
        self.check()?;
        if self.pending.is_empty() {
            return Ok(());
        }
        let outcome = self.backend.execute_batch(&self.pending);
        let failure = outcome.err().map(|(index, error)| Failure {
            offset: self
                .pending
                .offsets
                .get(index)
                .copied()
                .flatten()
                .or(self.offset),
            error,
            sql: self.pending.sqls.get(index).copied().unwrap_or(""),
        });
        self.pending.clear();
        match failure {
            None => Ok(()),
            Some(failure) => {
                let error = failure.error.clone();
                self.failure = Some(failure);
                Err(error.into())
            }
        }
    }

    /// Fails fast once a deferred write has failed: the batch is lost anyway, and
    /// running more SQL against half of it would only confuse.
    fn check(&self) -> Result<()> {
        match &self.failure {
            Some(failure) => Err(failure.error.clone().into()),
            None => Ok(()),
        }
    }
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("pending_writes", &self.pending.len())
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

/// Deferred writes, stored flat in the layout of the contract's packed `write-batch`
/// (0.2.0), so that buffering a write allocates nothing once the buffers have grown and
/// flushing sends the buffers as they are: the statement of each write, the end of its
/// parameters, each parameter's kind and number, and the bytes of every text and blob
/// back to back (a text or blob's number is the end of its bytes). The buffers are
/// reused from batch to batch.
#[derive(Default)]
pub(crate) struct WriteBuffer {
    /// The statement handle of each write (natively a unit: statements are named by
    /// their SQL).
    pub(crate) statements: Vec<Handle>,
    /// The end of each write's parameters in `kinds` and `numbers`.
    pub(crate) param_ends: Vec<u32>,
    /// Each parameter's kind: [`KIND_NULL`] to [`KIND_BLOB`].
    pub(crate) kinds: Vec<u8>,
    /// Each parameter's integer, real bits, or end of its bytes.
    pub(crate) numbers: Vec<i64>,
    /// Every text and blob parameter, back to back.
    pub(crate) bytes: Vec<u8>,
    /// Each write's SQL, for error messages (and natively, to run it).
    pub(crate) sqls: Vec<&'static str>,
    /// The event that issued each write.
    pub(crate) offsets: Vec<Option<u64>>,
}

/// Parameter kind in [`WriteBuffer::kinds`]: SQL NULL.
pub(crate) const KIND_NULL: u8 = 0;
/// Parameter kind: an integer, the number itself.
pub(crate) const KIND_INTEGER: u8 = 1;
/// Parameter kind: a real, whose IEEE 754 bits are the number.
pub(crate) const KIND_REAL: u8 = 2;
/// Parameter kind: UTF-8 text ending at the number in the bytes.
pub(crate) const KIND_TEXT: u8 = 3;
/// Parameter kind: a blob ending at the number in the bytes.
pub(crate) const KIND_BLOB: u8 = 4;

/// Byte capacity kept across batches; a batch with larger parameters gives the
/// excess back, so one odd event does not pin memory for the instance's life.
const RETAINED_BYTES: usize = 2 * Db::FLUSH_BYTES;

/// A buffer position as a packed number: buffers stay far below `i64::MAX` bytes.
fn position(end: usize) -> i64 {
    i64::try_from(end).unwrap_or(i64::MAX)
}

impl WriteBuffer {
    fn push(
        &mut self,
        handle: Handle,
        sql: &'static str,
        params: &[Value<'_>],
        offset: Option<u64>,
    ) {
        for value in params {
            let (kind, number) = match value {
                Value::Null => (KIND_NULL, 0),
                Value::Integer(i) => (KIND_INTEGER, *i),
                Value::Real(f) => (KIND_REAL, f.to_bits().cast_signed()),
                Value::Text(s) => {
                    self.bytes.extend_from_slice(s.as_bytes());
                    (KIND_TEXT, position(self.bytes.len()))
                }
                Value::Blob(b) => {
                    self.bytes.extend_from_slice(b);
                    (KIND_BLOB, position(self.bytes.len()))
                }
            };
            self.kinds.push(kind);
            self.numbers.push(number);
        }
        self.statements.push(handle);
        // `FLUSH_VALUES` keeps the count far below 4 billion.
        self.param_ends
            .push(u32::try_from(self.kinds.len()).unwrap_or(u32::MAX));
        self.sqls.push(sql);
        self.offsets.push(offset);
    }

    /// How many writes are buffered.
    pub(crate) fn len(&self) -> usize {
        self.sqls.len()
    }

    fn is_empty(&self) -> bool {
        self.sqls.is_empty()
    }

    fn is_full(&self) -> bool {
        self.len() >= Db::FLUSH_WRITES
            || self.kinds.len() >= Db::FLUSH_VALUES
            || self.bytes.len() >= Db::FLUSH_BYTES
    }

    fn clear(&mut self) {
        self.statements.clear();
        self.param_ends.clear();
        self.kinds.clear();
        self.numbers.clear();
        self.bytes.clear();
        self.sqls.clear();
        self.offsets.clear();
        self.bytes.shrink_to(RETAINED_BYTES);
    }

    /// Every buffered write: its SQL and its parameters as borrowed values, in order.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn decoded(&self) -> Vec<(&'static str, Vec<Value<'_>>)> {
        use std::borrow::Cow;
        let mut from = 0;
        let mut start = 0;
        let mut writes = Vec::with_capacity(self.len());
        for (&sql, &end) in self.sqls.iter().zip(&self.param_ends) {
            let end = end as usize;
            let mut params = Vec::with_capacity(end - start);
            for (&kind, &number) in self.kinds[start..end].iter().zip(&self.numbers[start..end]) {
                params.push(match kind {
                    KIND_INTEGER => Value::Integer(number),
                    KIND_REAL => Value::Real(f64::from_bits(number.cast_unsigned())),
                    KIND_TEXT | KIND_BLOB => {
                        let stop = usize::try_from(number).unwrap_or(from);
                        let bytes = &self.bytes[from..stop];
                        from = stop;
                        if kind == KIND_BLOB {
                            Value::Blob(Cow::Borrowed(bytes))
                        } else {
                            // Pushed from a `&str`, so always UTF-8.
                            Value::Text(String::from_utf8_lossy(bytes))
                        }
                    }
                    _ => Value::Null,
                });
            }
            start = end;
            writes.push((sql, params));
        }
        writes
    }
}

/// The rows a query returned, with their column names.
///
/// ```
/// # fn main() -> refract_sdk::Result<()> {
/// # use refract_sdk::{Rows, Value};
/// # let rows = Rows::new(vec!["account".into(), "balance".into()], vec![vec![Value::from("acc-1"), Value::Integer(350)]]);
/// for row in &rows {
///     let account: &str = row.get("account")?;
///     let balance: i64 = row.get(1)?;
///     assert_eq!((account, balance), ("acc-1", 350));
/// }
/// let all: Vec<(String, i64)> = rows.decode()?;
/// assert_eq!(all, [("acc-1".to_owned(), 350)]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rows {
    columns: Vec<String>,
    rows: Vec<Vec<Value<'static>>>,
}

impl Rows {
    /// Rows with these column names; every row holds one value per column.
    pub fn new(columns: Vec<String>, rows: Vec<Vec<Value<'static>>>) -> Self {
        Rows { columns, rows }
    }

    /// The column names, in order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// How many rows there are.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Row `index`, if there is one.
    pub fn get(&self, index: usize) -> Option<Row<'_>> {
        self.rows.get(index).map(|values| Row {
            columns: &self.columns,
            values,
        })
    }

    /// The first row, if there is one.
    pub fn first(&self) -> Option<Row<'_>> {
        self.get(0)
    }

    /// The rows, in order.
    pub fn iter(&self) -> RowIter<'_> {
        RowIter {
            columns: &self.columns,
            rows: self.rows.iter(),
        }
    }

    /// Converts every row, for example into tuples: `rows.decode::<(String, i64)>()`.
    pub fn decode<T: FromRow>(&self) -> Result<Vec<T>> {
        self.iter().map(T::from_row).collect()
    }
}

impl<'r> IntoIterator for &'r Rows {
    type Item = Row<'r>;
    type IntoIter = RowIter<'r>;

    fn into_iter(self) -> RowIter<'r> {
        self.iter()
    }
}

/// An iterator over [`Rows`].
#[derive(Debug, Clone)]
pub struct RowIter<'r> {
    columns: &'r [String],
    rows: std::slice::Iter<'r, Vec<Value<'static>>>,
}

impl<'r> Iterator for RowIter<'r> {
    type Item = Row<'r>;

    fn next(&mut self) -> Option<Row<'r>> {
        let columns = self.columns;
        self.rows.next().map(|values| Row { columns, values })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.rows.size_hint()
    }
}

impl ExactSizeIterator for RowIter<'_> {}

/// One row of [`Rows`].
#[derive(Debug, Clone, Copy)]
pub struct Row<'r> {
    columns: &'r [String],
    values: &'r [Value<'static>],
}

impl<'r> Row<'r> {
    /// The value of a column, by index (from 0) or by name, converted to `T`.
    /// Text and blobs can be borrowed as `&str` and `&[u8]`.
    pub fn get<T: crate::FromValue<'r>>(&self, column: impl ColumnIndex) -> Result<T> {
        let index = column.index(self.columns)?;
        let value = self.value(index)?;
        T::from_value(value).map_err(|expected| {
            crate::Error::Column(format!(
                "column {} holds {}, not {expected}",
                describe(self.columns, index),
                value.type_name()
            ))
        })
    }

    /// The raw value of a column, by index or by name.
    pub fn value(&self, column: impl ColumnIndex) -> Result<&'r Value<'static>> {
        let index = column.index(self.columns)?;
        self.values.get(index).ok_or_else(|| {
            crate::Error::Column(format!(
                "no column {index}: the row has {}",
                self.values.len()
            ))
        })
    }

    /// The row's values, in column order.
    pub fn values(&self) -> &'r [Value<'static>] {
        self.values
    }

    /// How many columns the row has.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the row has no columns.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

fn describe(columns: &[String], index: usize) -> String {
    match columns.get(index) {
        Some(name) => format!("{index} ({name:?})"),
        None => index.to_string(),
    }
}

/// Names a column: by index (`usize`, from 0) or by name (`&str`).
pub trait ColumnIndex: private::Sealed {
    /// The column's index among `columns`.
    fn index(self, columns: &[String]) -> Result<usize>;
}

impl ColumnIndex for usize {
    fn index(self, _columns: &[String]) -> Result<usize> {
        Ok(self)
    }
}

impl ColumnIndex for &str {
    fn index(self, columns: &[String]) -> Result<usize> {
        columns.iter().position(|c| c == self).ok_or_else(|| {
            crate::Error::Column(format!(
                "no column named {self:?}; the query returned {columns:?}"
            ))
        })
    }
}

mod private {
    pub trait Sealed {}
    impl Sealed for usize {}
    impl Sealed for &str {}
}

/// Converts a whole row; implemented for tuples of up to twelve owned column types,
/// taken in column order.
pub trait FromRow: Sized {
    /// Converts `row`.
    fn from_row(row: Row<'_>) -> Result<Self>;
}

macro_rules! from_row_tuple {
    ($($t:ident $i:tt),+) => {
        impl<$($t),+> FromRow for ($($t,)+)
        where
            $($t: for<'v> crate::FromValue<'v>,)+
        {
            fn from_row(row: Row<'_>) -> Result<Self> {
                Ok(($(row.get::<$t>($i)?,)+))
            }
        }
    };
}
from_row_tuple!(A 0);
from_row_tuple!(A 0, B 1);
from_row_tuple!(A 0, B 1, C 2);
from_row_tuple!(A 0, B 1, C 2, D 3);
from_row_tuple!(A 0, B 1, C 2, D 3, E 4);
from_row_tuple!(A 0, B 1, C 2, D 3, E 4, F 5);
from_row_tuple!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
from_row_tuple!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);
from_row_tuple!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8);
from_row_tuple!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9);
from_row_tuple!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10);
from_row_tuple!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11);

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Rows {
        Rows::new(
            vec!["account".into(), "owner".into()],
            vec![vec![Value::from("acc-1"), Value::Null]],
        )
    }

    #[test]
    fn row_access_by_index_and_name() -> Result<()> {
        let rows = sample();
        let row = rows.first().ok_or("no row")?;
        assert_eq!(row.get::<&str>(0)?, "acc-1");
        assert_eq!(row.get::<Option<String>>("owner")?, None);
        let err = row.get::<i64>("account").unwrap_err().to_string();
        assert_eq!(err, r#"column 0 ("account") holds text, not an integer"#);
        assert!(row.get::<i64>("missing").is_err());
        assert!(row.get::<i64>(7).is_err());
        Ok(())
    }

    #[test]
    fn buffer_keeps_params_in_the_packed_layout() {
        let mut buffer = WriteBuffer::default();
        let handle = Handle;
        buffer.push(handle, "x", &[Value::from("a"), Value::Integer(1)], Some(1));
        buffer.push(
            handle,
            "y",
            &[
                Value::from("bc"),
                Value::from(vec![1_u8, 2]),
                Value::Real(0.5),
            ],
            Some(2),
        );
        // The contract's `write-batch`: parameter ends per write, kinds and numbers per
        // parameter, a text or blob's number the end of its bytes.
        assert_eq!(buffer.param_ends, [2, 5]);
        assert_eq!(
            buffer.kinds,
            [KIND_TEXT, KIND_INTEGER, KIND_TEXT, KIND_BLOB, KIND_REAL]
        );
        assert_eq!(buffer.numbers[..4], [1, 1, 3, 5]);
        assert_eq!(buffer.bytes, b"abc\x01\x02");
        let decoded = buffer.decoded();
        assert_eq!(decoded[1].0, "y");
        assert_eq!(
            decoded[1].1,
            [
                Value::from("bc"),
                Value::from(vec![1_u8, 2]),
                Value::Real(0.5)
            ]
        );
    }
}
