//! SQL values: what `params![...]` binds and what a query returns.

use std::borrow::Cow;

/// A value bound to a SQL parameter or read from a result column.
///
/// Parameters borrow where they can, so binding a `&str` taken from an event copies
/// nothing until the SDK buffers the write. Query results own their values
/// (`Value<'static>`).
///
/// Conversions exist from the usual Rust types; `params!` applies them:
///
/// ```
/// use refract_sdk::Value;
///
/// assert_eq!(Value::from(7_i32), Value::Integer(7));
/// assert_eq!(Value::from(true), Value::Integer(1));
/// assert_eq!(Value::from(None::<&str>), Value::Null);
/// assert_eq!(Value::from("blue").as_str(), Some("blue"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// SQL NULL.
    Null,
    /// A 64-bit signed integer.
    Integer(i64),
    /// A 64-bit IEEE 754 float.
    Real(f64),
    /// UTF-8 text.
    Text(Cow<'a, str>),
    /// Raw bytes.
    Blob(Cow<'a, [u8]>),
}

impl Value<'_> {
    /// The integer, if this is an integer.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// The number as a float, if this is a float or an integer.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Real(f) => Some(*f),
            // SQLite converts the same way; the caller asked for a float.
            Value::Integer(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// The text, if this is text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The bytes, if this is a blob.
    pub fn as_blob(&self) -> Option<&[u8]> {
        match self {
            Value::Blob(b) => Some(b),
            _ => None,
        }
    }

    /// Whether this is SQL NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// This value with any borrowed text or bytes copied, so it outlives its source.
    pub fn into_owned(self) -> Value<'static> {
        match self {
            Value::Null => Value::Null,
            Value::Integer(i) => Value::Integer(i),
            Value::Real(f) => Value::Real(f),
            Value::Text(s) => Value::Text(Cow::Owned(s.into_owned())),
            Value::Blob(b) => Value::Blob(Cow::Owned(b.into_owned())),
        }
    }

    /// The SQL type's name, for error messages.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Integer(_) => "an integer",
            Value::Real(_) => "a float",
            Value::Text(_) => "text",
            Value::Blob(_) => "a blob",
        }
    }
}

macro_rules! from_integer {
    ($($t:ty),*) => {$(
        impl From<$t> for Value<'_> {
            fn from(v: $t) -> Self {
                Value::Integer(i64::from(v))
            }
        }
    )*};
}
from_integer!(i8, i16, i32, i64, u8, u16, u32);

/// Offsets, versions and counts. SQLite integers are signed 64-bit, so a value
/// above `i64::MAX` becomes the nearest float, as SQLite itself treats an integer
/// literal that does not fit.
impl From<u64> for Value<'_> {
    fn from(v: u64) -> Self {
        match i64::try_from(v) {
            Ok(i) => Value::Integer(i),
            Err(_) => Value::Real(v as f64),
        }
    }
}

/// Lengths and counts; see the `u64` conversion for values above `i64::MAX`.
impl From<usize> for Value<'_> {
    fn from(v: usize) -> Self {
        match i64::try_from(v) {
            Ok(i) => Value::Integer(i),
            Err(_) => Value::Real(v as f64),
        }
    }
}

impl From<bool> for Value<'_> {
    fn from(v: bool) -> Self {
        Value::Integer(i64::from(v))
    }
}

impl From<f64> for Value<'_> {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}

impl From<f32> for Value<'_> {
    fn from(v: f32) -> Self {
        Value::Real(f64::from(v))
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Value::Text(Cow::Borrowed(v))
    }
}

impl<'a> From<&'a String> for Value<'a> {
    fn from(v: &'a String) -> Self {
        Value::Text(Cow::Borrowed(v))
    }
}

impl From<String> for Value<'_> {
    fn from(v: String) -> Self {
        Value::Text(Cow::Owned(v))
    }
}

impl<'a> From<Cow<'a, str>> for Value<'a> {
    fn from(v: Cow<'a, str>) -> Self {
        Value::Text(v)
    }
}

impl<'a> From<&'a Cow<'_, str>> for Value<'a> {
    fn from(v: &'a Cow<'_, str>) -> Self {
        Value::Text(Cow::Borrowed(v))
    }
}

impl<'a> From<&'a [u8]> for Value<'a> {
    fn from(v: &'a [u8]) -> Self {
        Value::Blob(Cow::Borrowed(v))
    }
}

impl From<Vec<u8>> for Value<'_> {
    fn from(v: Vec<u8>) -> Self {
        Value::Blob(Cow::Owned(v))
    }
}

impl<'a, T: Into<Value<'a>>> From<Option<T>> for Value<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

impl<'a> From<&'a Value<'_>> for Value<'a> {
    fn from(v: &'a Value<'_>) -> Self {
        match v {
            Value::Null => Value::Null,
            Value::Integer(i) => Value::Integer(*i),
            Value::Real(f) => Value::Real(*f),
            Value::Text(s) => Value::Text(Cow::Borrowed(s)),
            Value::Blob(b) => Value::Blob(Cow::Borrowed(b)),
        }
    }
}

/// Converts a result column into a Rust type; [`Row::get`](crate::Row::get) uses it.
///
/// Conversions are strict, like rusqlite's: an integer column does not read as
/// text. Use `Option<T>` for a column that may be NULL.
pub trait FromValue<'a>: Sized {
    /// Converts `value`, or says what was expected instead (for example
    /// `"an integer"`).
    fn from_value(value: &'a Value<'a>) -> Result<Self, &'static str>;
}

impl<'a> FromValue<'a> for i64 {
    fn from_value(value: &'a Value<'a>) -> Result<Self, &'static str> {
        value.as_i64().ok_or("an integer")
    }
}

macro_rules! from_value_integer {
    ($($t:ty => $expected:literal),*) => {$(
        impl<'a> FromValue<'a> for $t {
            fn from_value(value: &'a Value<'a>) -> Result<Self, &'static str> {
                value
                    .as_i64()
                    .and_then(|i| <$t>::try_from(i).ok())
                    .ok_or($expected)
            }
        }
    )*};
}
from_value_integer!(
    i32 => "an integer that fits in i32",
    u32 => "an integer that fits in u32",
    u64 => "a non-negative integer",
    usize => "a non-negative integer that fits in usize"
);

impl<'a> FromValue<'a> for f64 {
    fn from_value(value: &'a Value<'a>) -> Result<Self, &'static str> {
        value.as_f64().ok_or("a number")
    }
}

impl<'a> FromValue<'a> for bool {
    fn from_value(value: &'a Value<'a>) -> Result<Self, &'static str> {
        value.as_i64().map(|i| i != 0).ok_or("an integer (boolean)")
    }
}

impl<'a> FromValue<'a> for &'a str {
    fn from_value(value: &'a Value<'a>) -> Result<Self, &'static str> {
        value.as_str().ok_or("text")
    }
}

impl<'a> FromValue<'a> for String {
    fn from_value(value: &'a Value<'a>) -> Result<Self, &'static str> {
        value.as_str().map(str::to_owned).ok_or("text")
    }
}

impl<'a> FromValue<'a> for &'a [u8] {
    fn from_value(value: &'a Value<'a>) -> Result<Self, &'static str> {
        value.as_blob().ok_or("a blob")
    }
}

impl<'a> FromValue<'a> for Vec<u8> {
    fn from_value(value: &'a Value<'a>) -> Result<Self, &'static str> {
        value.as_blob().map(<[u8]>::to_vec).ok_or("a blob")
    }
}

impl<'a> FromValue<'a> for Value<'a> {
    fn from_value(value: &'a Value<'a>) -> Result<Self, &'static str> {
        Ok(Value::from(value))
    }
}

impl<'a, T: FromValue<'a>> FromValue<'a> for Option<T> {
    fn from_value(value: &'a Value<'a>) -> Result<Self, &'static str> {
        match value {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// Builds the parameter list of a statement: `params![a, b, c]` binds `a` to `?1`,
/// `b` to `?2` and `c` to `?3`, converting each with `Value::from`.
///
/// ```
/// use refract_sdk::{Value, params};
///
/// let owner: Option<&str> = None;
/// let p = params!["acc-1", 250_i64, owner];
/// assert_eq!(p, [Value::from("acc-1"), Value::Integer(250), Value::Null]);
/// assert!(params![].is_empty());
/// ```
#[macro_export]
macro_rules! params {
    () => {
        &[] as &[$crate::Value<'_>]
    };
    ($($param:expr),+ $(,)?) => {
        &[$($crate::Value::from($param)),+] as &[$crate::Value<'_>]
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_are_strict() {
        let text = Value::from("7");
        assert_eq!(i64::from_value(&text), Err("an integer"));
        assert_eq!(<&str>::from_value(&text), Ok("7"));
        let big = Value::Integer(i64::MAX);
        assert!(i32::from_value(&big).is_err());
        assert_eq!(Option::<i64>::from_value(&Value::Null), Ok(None));
        assert_eq!(f64::from_value(&Value::Integer(2)), Ok(2.0));
        assert_eq!(Value::from(7_u64), Value::Integer(7));
        assert_eq!(Value::from(u64::MAX), Value::Real(u64::MAX as f64));
    }

    #[test]
    fn into_owned_copies_borrowed_text() {
        let s = String::from("x");
        let owned = Value::from(s.as_str()).into_owned();
        drop(s);
        assert_eq!(owned.as_str(), Some("x"));
    }
}
