//! The CLI's HTTP client for a running host: where it is (`--url`), the token
//! (`--token`, `REFRACT_TOKEN`, else `<data-dir>/token`), and the API's error shape.

use std::io::Read;
use std::time::Duration;

use anyhow::Context as _;
use serde::de::DeserializeOwned;
use ureq::http::Response;
use ureq::{Agent, Body};

use crate::api::Token;
use crate::data_dir::DataDir;

/// The environment variable naming the host's URL.
pub const URL_ENV: &str = "REFRACT_URL";

/// The environment variable holding the API token.
pub const TOKEN_ENV: &str = "REFRACT_TOKEN";

/// How long connecting may take: the host is usually on this machine, where a refused
/// connection is immediate and a slow one means it is not there.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a request may take in all. A deploy compiles the component before it
/// answers, which can take a while for a large one.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// The largest response body read, well above the server's own caps.
const MAX_RESPONSE_BYTES: u64 = 256 * 1024 * 1024;

/// Why a call to the host failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    /// Nothing answers at the URL.
    #[error("no refract host answers at {url} (start one with `refract run`, or pass --url)")]
    Unreachable {
        /// The URL.
        url: String,
        /// What the connection attempt said.
        #[source]
        source: ureq::Error,
    },
    /// The host answered with an error.
    #[error("the host refused: {message} ({status} {code})")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The API's error code.
        code: String,
        /// The API's message.
        message: String,
    },
    /// Anything else: a broken response, a dropped connection.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// A client for one host.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    base: String,
    token: Option<String>,
    agent: Agent,
    /// The same agent without the overall timeout, for subscriptions.
    streaming: Agent,
}

impl Client {
    /// A client for `url`, with the token from `token` (flag or environment) or else
    /// the data directory's token file.
    pub(crate) fn new(url: &str, token: Option<&str>, data: &DataDir) -> anyhow::Result<Client> {
        let token = match token {
            Some(token) => Some(token.trim().to_owned()),
            None => Token::read_file(data)
                .with_context(|| "cannot read the API token file")?
                .map(|token| token.secret().to_owned()),
        };
        let agent = |overall: Option<Duration>| -> Agent {
            Agent::config_builder()
                .http_status_as_error(false)
                .timeout_connect(Some(CONNECT_TIMEOUT))
                .timeout_global(overall)
                // The host is local or named explicitly; a proxy from the environment
                // would only get in the way of 127.0.0.1.
                .proxy(None)
                .build()
                .new_agent()
        };
        Ok(Client {
            base: url.trim_end_matches('/').to_owned(),
            token,
            agent: agent(Some(REQUEST_TIMEOUT)),
            streaming: agent(None),
        })
    }

    /// Whether there is a token to send.
    pub(crate) fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// The host's base URL.
    pub(crate) fn url(&self) -> &str {
        &self.base
    }

    fn authorization(&self) -> Option<String> {
        self.token.as_ref().map(|token| format!("Bearer {token}"))
    }

    /// The request with the bearer token, when there is one.
    fn authorized<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match self.authorization() {
            Some(auth) => request.header("Authorization", auth),
            None => request,
        }
    }

    /// `GET path`, with query parameters, decoded from JSON.
    pub(crate) fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, ClientError> {
        let mut request = self.authorized(self.agent.get(format!("{}{path}", self.base)));
        for (key, value) in query {
            request = request.query(key, value);
        }
        self.answer(request.call())
    }

    /// `POST path` with a JSON body, decoded from JSON.
    pub(crate) fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, ClientError> {
        let request = self.authorized(
            self.agent
                .post(format!("{}{path}", self.base))
                .content_type("application/json"),
        );
        self.answer(request.send(body.to_string()))
    }

    /// `PUT path` with a JSON body, decoded from JSON.
    pub(crate) fn put_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, ClientError> {
        let request = self.authorized(
            self.agent
                .put(format!("{}{path}", self.base))
                .content_type("application/json"),
        );
        self.answer(request.send(body.to_string()))
    }

    /// `DELETE path`, decoded from JSON.
    pub(crate) fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let request = self.authorized(self.agent.delete(format!("{}{path}", self.base)));
        self.answer(request.call())
    }

    /// `POST path` with a binary body, decoded from JSON.
    pub(crate) fn post_bytes<T: DeserializeOwned>(
        &self,
        path: &str,
        bytes: &[u8],
    ) -> Result<T, ClientError> {
        let request = self.authorized(
            self.agent
                .post(format!("{}{path}", self.base))
                .content_type("application/wasm"),
        );
        self.answer(request.send(bytes))
    }

    /// The same client (token and timeouts) for the host at `url`.
    pub(crate) fn for_url(&self, url: &str) -> Client {
        Client {
            base: url.trim_end_matches('/').to_owned(),
            ..self.clone()
        }
    }

    /// `GET path` into the file `dest`, streamed; returns the answer's headers.
    pub(crate) fn download(
        &self,
        path: &str,
        dest: &std::path::Path,
    ) -> Result<ureq::http::HeaderMap, ClientError> {
        let request = self.authorized(self.streaming.get(format!("{}{path}", self.base)));
        let response = self.checked(request.call())?;
        let headers = response.headers().clone();
        let mut file = std::fs::File::create(dest)
            .with_context(|| format!("cannot create {}", dest.display()))?;
        std::io::copy(&mut response.into_body().into_reader(), &mut file)
            .with_context(|| format!("cannot download {}{path}", self.base))?;
        Ok(headers)
    }

    /// Opens an event stream (`text/event-stream`) and returns its body as a reader.
    pub(crate) fn stream(
        &self,
        path: &str,
        query: &[(&str, String)],
        last_event_id: Option<u64>,
    ) -> Result<impl Read + use<>, ClientError> {
        let mut request = self.authorized(
            self.streaming
                .get(format!("{}{path}", self.base))
                .header("Accept", "text/event-stream"),
        );
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        for (key, value) in query {
            request = request.query(key, value);
        }
        let response = self.checked(request.call())?;
        Ok(response.into_body().into_reader())
    }

    /// The response if it is a success; the API error otherwise.
    fn checked(
        &self,
        result: Result<Response<Body>, ureq::Error>,
    ) -> Result<Response<Body>, ClientError> {
        let mut response = result.map_err(|error| self.transport(error))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_string()
            .unwrap_or_default();
        Err(api_error(status.as_u16(), &text))
    }

    fn answer<T: DeserializeOwned>(
        &self,
        result: Result<Response<Body>, ureq::Error>,
    ) -> Result<T, ClientError> {
        let mut response = self.checked(result)?;
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_string()
            .with_context(|| format!("cannot read the answer of {}", self.base))?;
        Ok(serde_json::from_str(&text).with_context(|| {
            format!(
                "{} answered something that is not the expected JSON",
                self.base
            )
        })?)
    }

    fn transport(&self, error: ureq::Error) -> ClientError {
        let unreachable = match &error {
            ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => true,
            ureq::Error::Timeout(timeout) => {
                matches!(timeout, ureq::Timeout::Connect | ureq::Timeout::Resolve)
            }
            ureq::Error::Io(io) => matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::AddrNotAvailable
                    | std::io::ErrorKind::NotFound
            ),
            _ => false,
        };
        if unreachable {
            ClientError::Unreachable {
                url: self.base.clone(),
                source: error,
            }
        } else {
            ClientError::Other(
                anyhow::Error::new(error)
                    .context(format!("cannot talk to the host at {}", self.base)),
            )
        }
    }
}

/// The API's `{"error": {"code", "message"}}`, or the raw text if it is not that.
fn api_error(status: u16, text: &str) -> ClientError {
    #[derive(serde::Deserialize)]
    struct Envelope {
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        code: String,
        message: String,
    }
    match serde_json::from_str::<Envelope>(text) {
        Ok(Envelope { error }) => ClientError::Api {
            status,
            code: error.code,
            message: error.message,
        },
        Err(_) => ClientError::Api {
            status,
            code: "http_error".to_owned(),
            message: text.trim().chars().take(500).collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_are_decoded() {
        let error = api_error(
            409,
            r#"{"error":{"code":"conflict","message":"no shadow"}}"#,
        );
        assert_eq!(
            error.to_string(),
            "the host refused: no shadow (409 conflict)"
        );
        let error = api_error(502, "bad gateway");
        assert!(error.to_string().contains("bad gateway"));
    }
}

/// The API's answers, as the CLI reads them (the server's types only serialize).
pub(crate) mod wire {
    use serde::Deserialize;

    /// `GET /v1/projectors/{name}`.
    #[derive(Debug, Clone, Deserialize)]
    pub(crate) struct Projector {
        /// The projector's name.
        pub name: String,
        /// Every known version.
        pub versions: Vec<Version>,
    }

    /// `GET /v1/projectors`.
    #[derive(Debug, Clone, Deserialize)]
    pub(crate) struct Projectors {
        /// Every projector.
        pub projectors: Vec<Projector>,
        /// Refused plugin files.
        #[serde(default)]
        pub rejected: Vec<Rejected>,
    }

    /// A refused plugin file.
    #[derive(Debug, Clone, Deserialize)]
    pub(crate) struct Rejected {
        /// The file.
        pub path: String,
        /// Why.
        pub reason: String,
    }

    /// One version of a projector.
    #[derive(Debug, Clone, Deserialize)]
    pub(crate) struct Version {
        /// The short content hash.
        pub version: String,
        /// active, shadow, previous, retired or failed.
        pub role: String,
        /// The contract its component implements, while a worker runs it.
        #[serde(default)]
        pub contract: Option<String>,
        /// Live figures while a worker runs it.
        pub status: Option<Status>,
        /// Replay progress, for a shadow.
        pub replay: Option<Replay>,
    }

    /// A running version's live figures.
    #[derive(Debug, Clone, Deserialize)]
    pub(crate) struct Status {
        /// catching-up, live, stalled at N: reason, retired.
        pub state: String,
        /// The last offset in its read model.
        pub checkpoint: u64,
        /// The log head.
        pub head: u64,
        /// Events applied per second.
        pub events_per_second: f64,
        /// The last error.
        pub last_error: Option<String>,
        /// Dead letters recorded.
        pub dead_letters: u64,
    }

    impl Status {
        /// Offsets behind the head.
        pub fn lag(&self) -> u64 {
            self.head.saturating_sub(self.checkpoint)
        }
    }

    /// Replay progress.
    #[derive(Debug, Clone, Copy, Deserialize)]
    pub(crate) struct Replay {
        /// Offsets processed.
        pub done: u64,
        /// The log head.
        pub total: u64,
        /// Events per second.
        pub events_per_second: f64,
        /// Seconds left, if moving.
        pub eta_seconds: Option<f64>,
    }

    /// The answer to a deploy.
    #[derive(Debug, Clone, Deserialize)]
    pub(crate) struct Deployment {
        /// The projector the component declares.
        pub projector: String,
        /// The new version.
        pub version: String,
        /// started, already-active or already-deploying.
        pub outcome: String,
    }

    /// The answer to promote, rollback and abort.
    #[derive(Debug, Clone, Deserialize)]
    pub(crate) struct Changed {
        /// The projector.
        pub projector: String,
        /// The version acted on.
        pub version: String,
    }
}
