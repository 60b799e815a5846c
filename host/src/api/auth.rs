//! Bearer-token authentication: the [`Token`], where it is kept, and the middleware that
//! checks it on every request but `/health`.
//!
//! The token is taken only from the `Authorization: Bearer <token>` header. A token in
//! the query string is never looked at: URLs end up in shell history, proxy logs and
//! `Referer` headers.

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::admission::Connection;
use super::error::ApiError;
use crate::data_dir::DataDir;

/// The token file's name inside the data directory.
pub const TOKEN_FILE_NAME: &str = "token";

/// Random bytes in a generated token (hex-encoded, so twice as many characters).
pub const GENERATED_TOKEN_BYTES: usize = 32;

/// The shortest token accepted from `--token`: shorter ones can be guessed online.
pub const MIN_TOKEN_CHARS: usize = 16;

/// Paths served without a token: load balancers and orchestrators probe health
/// without credentials, and it reveals nothing but ok or degraded.
pub const PUBLIC_PATHS: &[&str] = &["/health"];

/// The API's bearer token. Its `Debug` never shows the secret.
#[derive(Clone)]
pub struct Token {
    secret: Arc<str>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Why a token could not be used, created or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token is too short or has characters that do not fit in a header.
    #[error(
        "the API token must be at least {MIN_TOKEN_CHARS} visible ASCII characters (no spaces)"
    )]
    Invalid,
    /// The token file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The token file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
}

impl Token {
    /// A token with a chosen secret, as given to `--token`.
    pub fn new(secret: &str) -> Result<Token, TokenError> {
        let secret = secret.trim();
        if secret.chars().count() < MIN_TOKEN_CHARS || !secret.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(TokenError::Invalid);
        }
        Ok(Token {
            secret: Arc::from(secret),
        })
    }

    /// A fresh random token from the operating system's CSPRNG (through `rand`'s
    /// thread-local generator, which it seeds).
    pub fn generate() -> Token {
        let mut bytes = [0u8; GENERATED_TOKEN_BYTES];
        rand::fill(&mut bytes);
        Token {
            secret: Arc::from(hex::encode(bytes)),
        }
    }

    /// The secret, to send in an `Authorization` header.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Whether `presented` is this token, in time independent of where they differ.
    /// Both sides are hashed first, so the comparison does not reveal the length either.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let expected = Sha256::digest(self.secret.as_bytes());
        let presented = Sha256::digest(presented);
        expected.ct_eq(&presented).into()
    }

    /// The token file of a data directory.
    pub fn file(data: &DataDir) -> PathBuf {
        data.root().join(TOKEN_FILE_NAME)
    }

    /// Reads the data directory's token file, `None` if there is none.
    pub fn read_file(data: &DataDir) -> Result<Option<Token>, TokenError> {
        let path = Token::file(data);
        match std::fs::read_to_string(&path) {
            Ok(text) => Token::new(&text).map(Some),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(TokenError::Io { path, source }),
        }
    }

    /// The data directory's token, generated into `<data-dir>/token` (mode 0600) the
    /// first time. Returns the token and whether it was just created.
    pub fn load_or_create(data: &DataDir) -> Result<(Token, bool), TokenError> {
        let path = Token::file(data);
        if let Some(token) = Token::read_file(data)? {
            warn_if_readable_by_others(&path);
            return Ok((token, false));
        }
        let io = |source| TokenError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(data.root()).map_err(io)?;
        let token = Token::generate();
        match create_private(&path) {
            Ok(mut file) => {
                file.write_all(token.secret().as_bytes()).map_err(io)?;
                file.write_all(b"\n").map_err(io)?;
                file.sync_all().map_err(io)?;
                Ok((token, true))
            }
            // Another process created it between our read and our create: use theirs.
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                let token = Token::read_file(data)?.ok_or(TokenError::Invalid)?;
                Ok((token, false))
            }
            Err(source) => Err(io(source)),
        }
    }
}

/// Creates a new file that only its owner can read and write.
fn create_private(path: &Path) -> io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path)
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = %path.display(),
                "the API token file is readable by other users; run `chmod 600` on it"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Middleware: lets a request through only with the right bearer token (except
/// [`PUBLIC_PATHS`]); otherwise 401 with `WWW-Authenticate: Bearer`.
pub(crate) async fn require_token(
    State(token): State<Token>,
    request: Request,
    next: Next,
) -> Response {
    if PUBLIC_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    match check(&token, &request) {
        Ok(()) => {
            // The connection showed the token: it no longer counts against the
            // unauthenticated connections' cap.
            if let Some(connection) = request.extensions().get::<Connection>() {
                connection.authenticated();
            }
            next.run(request).await
        }
        Err(error) => {
            tracing::debug!(path = %request.uri().path(), "refused: {}", error.message);
            error.into_response()
        }
    }
}

fn check(token: &Token, request: &Request) -> Result<(), ApiError> {
    let mut values = request.headers().get_all(AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(ApiError::unauthorized(
            "send the API token as `Authorization: Bearer <token>` (one header); it is in the \
             file `token` of the host's data directory",
        ));
    };
    let value = value.as_bytes();
    let scheme_len = "Bearer ".len();
    let presented = match value.get(..scheme_len) {
        Some(scheme) if scheme.eq_ignore_ascii_case(b"Bearer ") => value[scheme_len..].trim_ascii(),
        _ => {
            return Err(ApiError::unauthorized(
                "the Authorization header must use the Bearer scheme: `Authorization: Bearer <token>`",
            ));
        }
    };
    if token.matches(presented) {
        Ok(())
    } else {
        Err(ApiError::unauthorized(
            "wrong API token; it is in the file `token` of the host's data directory",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_themselves() {
        let token = Token::new("0123456789abcdef-secret").unwrap();
        assert!(token.matches(b"0123456789abcdef-secret"));
        assert!(!token.matches(b"0123456789abcdef-secreT"));
        assert!(!token.matches(b""));
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
    }

    #[test]
    fn short_or_spaced_tokens_are_refused() {
        assert!(Token::new("short").is_err());
        assert!(Token::new("has a space in the middle").is_err());
        assert!(Token::new("  padded-but-long-enough  ").is_ok());
    }

    #[test]
    fn the_token_file_is_created_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path().join("data"));
        let (first, created) = Token::load_or_create(&data).unwrap();
        assert!(created);
        let (second, created) = Token::load_or_create(&data).unwrap();
        assert!(!created);
        assert_eq!(first.secret(), second.secret());
        assert_eq!(first.secret().len(), GENERATED_TOKEN_BYTES * 2);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(Token::file(&data))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
