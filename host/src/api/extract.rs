//! Extractors that answer bad input with an [`ApiError`] (the JSON error shape) rather
//! than axum's plain-text rejections: [`ApiJson`], [`ApiPath`], [`Params`] and
//! [`ProjectorName`].

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::runtime::MAX_NAME_BYTES;

/// A JSON body; 400 for malformed JSON, 422 for the wrong shape or types, 413 when too
/// large, 415 without `Content-Type: application/json`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let Json(value) = Json::<T>::from_request(request, state).await?;
        Ok(ApiJson(value))
    }
}

/// The query string as `(key, value)` pairs in order, so a key may repeat
/// (`type=A&type=B`). Handlers check the keys themselves and refuse unknown ones.
#[derive(Debug, Clone, Default)]
pub struct Params(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(pairs) = Query::<Vec<(String, String)>>::from_request_parts(parts, state).await?;
        Ok(Params(pairs))
    }
}

impl Params {
    /// Refuses keys not in `known`, naming the ones that are.
    pub fn only(&self, known: &[&str]) -> Result<(), ApiError> {
        match self
            .0
            .iter()
            .find(|(key, _)| !known.contains(&key.as_str()))
        {
            Some((key, _)) => Err(ApiError::bad_request(
                "invalid_parameter",
                format!(
                    "unknown query parameter `{key}`; this endpoint takes {}",
                    known.join(", ")
                ),
            )),
            None => Ok(()),
        }
    }

    /// Every value of `key`, in order.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, value)| value.as_str())
    }

    /// The one value of `key`, if given; a repeated key is an error.
    pub fn one(&self, key: &str) -> Result<Option<&str>, ApiError> {
        let mut values = self
            .0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, value)| value.as_str());
        let first = values.next();
        if values.next().is_some() {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                format!("`{key}` is given more than once; give it once"),
            ));
        }
        Ok(first)
    }

    /// The one value of `key` parsed as a number, if given.
    pub fn number(&self, key: &str) -> Result<Option<u64>, ApiError> {
        self.one(key)?
            .map(|text| {
                text.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(
                        "invalid_parameter",
                        format!("`{key}` must be a non-negative integer, not {text:?}"),
                    )
                })
            })
            .transpose()
    }

    /// A page size: `limit` if given (1 to `max`), else `default`.
    pub fn limit(&self, default: u64, max: u64) -> Result<u64, ApiError> {
        match self.number("limit")? {
            None => Ok(default),
            Some(0) => Err(ApiError::bad_request(
                "invalid_parameter",
                "`limit` must be at least 1",
            )),
            Some(limit) if limit > max => Err(ApiError::bad_request(
                "limit_too_large",
                format!(
                    "`limit` is {limit}, above the maximum of {max} (`server.max_page_rows`); \
                     page through with `from_offset` instead"
                ),
            )),
            Some(limit) => Ok(limit),
        }
    }
}

/// A path parameter; 400 when it is not valid percent-encoded UTF-8.
#[derive(Debug, Clone)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(value) = Path::<T>::from_request_parts(parts, state).await?;
        Ok(ApiPath(value))
    }
}

/// The `{name}` of a projector route, checked to be a projector name (1 to
/// [`MAX_NAME_BYTES`] of `a-z`, `0-9`, `_`, `-`) before anything looks it up, so a name
/// can never carry a path separator, `..` or a control character into a file path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectorName(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ProjectorName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(name) = Path::<String>::from_request_parts(parts, state).await?;
        check_projector_name(&name)?;
        Ok(ProjectorName(name))
    }
}

/// Checks a projector name; the error says what a name may contain.
pub fn check_projector_name(name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        let shown: String = name.chars().take(MAX_NAME_BYTES + 8).collect();
        Err(ApiError::bad_request(
            "invalid_name",
            format!(
                "{shown:?} is not a projector name: names are 1 to {MAX_NAME_BYTES} characters of \
                 a-z, 0-9, `_` and `-`"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projector_names_cannot_reach_outside() {
        for bad in [
            "",
            "../etc",
            "a/b",
            "a\\b",
            "A",
            "x\0",
            ".",
            "..",
            &"a".repeat(65),
        ] {
            assert!(check_projector_name(bad).is_err(), "{bad:?}");
        }
        for good in ["balances", "cars-v2", "order_summary", "a"] {
            check_projector_name(good).unwrap();
        }
    }
}
