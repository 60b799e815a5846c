//! Serving one connection: hyper's HTTP/1 connection, timed.
//!
//! A connection is watched for three things, each a `[server]` limit:
//! - **idle**: no request in flight and no byte received for `idle_timeout_ms`, from
//!   its opening or its last response;
//! - **head**: a request head that started arriving (its first byte) but is not whole
//!   within `header_read_timeout_ms`;
//! - **body**: a request body not whole within `body_read_timeout_ms` of its head; the
//!   handler reading it gets [`BodyTimedOut`] and answers 408.
//!
//! It is also closed at once when [`Admission`](super::admission) evicts it, and shut
//! down gracefully (requests in flight finish) when the server stops.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt as _;

use super::admission::Ticket;

/// The timeouts of one connection, from `[server]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionTimeouts {
    /// A request head must be whole within this of its first byte.
    pub header_read: Duration,
    /// A request body must be whole within this of its head.
    pub body_read: Duration,
    /// A connection with no request in flight is closed after this.
    pub idle: Duration,
}

/// The error a request body gives when it did not arrive in time. Handlers find it in
/// the cause chain of a body rejection and answer 408.
#[derive(Debug, thiserror::Error)]
#[error(
    "the request body did not arrive within {0:?} (server.body_read_timeout_ms); send it faster, or raise the limit"
)]
pub struct BodyTimedOut(pub Duration);

/// Serves `stream` until the client closes it, a timeout or an eviction ends it, or the
/// server stops (`stopping` turns true: requests in flight finish first).
pub(crate) async fn serve_connection(
    stream: TcpStream,
    router: Router,
    ticket: Ticket,
    timeouts: ConnectionTimeouts,
    mut stopping: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(WatchedIo {
        inner: stream,
        activity: Arc::clone(&activity),
    });
    let connection = ticket.connection();
    let requests = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let in_flight = InFlight::start(Arc::clone(&requests));
        let mut request = request.map(|body| {
            Body::new(DeadlineBody::new(
                body,
                Instant::now() + timeouts.body_read,
                timeouts.body_read,
            ))
        });
        request.extensions_mut().insert(connection.clone());
        let router = router.clone();
        async move {
            let response = router.oneshot(request).await?;
            // The request stays in flight until its response body is written or dropped
            // (an event stream is in flight for as long as it runs).
            Ok::<_, Infallible>(response.map(|body| {
                Body::new(TrackedBody {
                    body,
                    _in_flight: in_flight,
                })
            }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The head timeout is enforced below, from a head's first byte; hyper's own
    // (which starts when the connection becomes ready to read) stays as a backstop.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.idle + timeouts.header_read)
        .keep_alive(true);
    let served = builder.serve_connection(io, service);
    tokio::pin!(served);
    let mut shutting_down = false;
    loop {
        let deadline = activity.deadline(timeouts);
        tokio::select! {
            result = served.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!("connection ended: {error}");
                }
                return;
            }
            () = ticket.evicted() => {
                tracing::debug!("connection closed to make room for a newer one");
                return;
            }
            changed = stopping.changed(), if !shutting_down => {
                if changed.is_err() || *stopping.borrow() {
                    shutting_down = true;
                    served.as_mut().graceful_shutdown();
                }
            }
            () = activity.changed.notified() => {}
            () = sleep_until_some(deadline) => {
                if let Some(why) = activity.expired(timeouts) {
                    tracing::debug!("connection closed: {why}");
                    return;
                }
            }
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// What a connection has been doing, shared by its IO, its requests and its watcher.
/// Instants are milliseconds since the connection opened; 0 in `head_started` is none.
#[derive(Debug)]
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// When the connection last became idle: opened, or the last response finished.
    idle_since: AtomicU64,
    /// When the first byte of a request head arrived while idle (+1, so 0 is none).
    head_started: AtomicU64,
    /// Woken when a deadline moves earlier (a head starts) or a request ends.
    changed: Notify,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&self, millis: u64) -> Instant {
        self.opened + Duration::from_millis(millis)
    }

    /// Bytes arrived: if the connection was idle, a request head has started.
    fn received(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.head_started.load(Ordering::Acquire) == 0
        {
            self.head_started.store(self.now() + 1, Ordering::Release);
            self.changed.notify_one();
        }
    }

    /// When the connection is to be closed unless something happens first; none while
    /// a request is in flight.
    fn deadline(&self, timeouts: ConnectionTimeouts) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        match self.head_started.load(Ordering::Acquire) {
            0 => Some(self.at(self.idle_since.load(Ordering::Acquire)) + timeouts.idle),
            started => Some(self.at(started - 1) + timeouts.header_read),
        }
    }

    /// Why the connection should close now, if it should.
    fn expired(&self, timeouts: ConnectionTimeouts) -> Option<&'static str> {
        let deadline = self.deadline(timeouts)?;
        if Instant::now() < deadline {
            return None;
        }
        Some(if self.head_started.load(Ordering::Acquire) == 0 {
            "idle for longer than server.idle_timeout_ms"
        } else {
            "the request head did not arrive within server.header_read_timeout_ms"
        })
    }
}

/// A request from its head to the end of its response.
struct InFlight {
    activity: Arc<Activity>,
}

impl InFlight {
    fn start(activity: Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        // The head is whole: the head timeout no longer applies.
        activity.head_started.store(0, Ordering::Release);
        InFlight { activity }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.activity;
        activity.idle_since.store(activity.now(), Ordering::Release);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
        activity.changed.notify_one();
    }
}

/// The socket, noting when bytes arrive.
struct WatchedIo {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.received();
        }
        polled
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request body that fails with [`BodyTimedOut`] once its deadline passes.
struct DeadlineBody {
    body: Incoming,
    deadline: Pin<Box<Sleep>>,
    limit: Duration,
}

impl DeadlineBody {
    fn new(body: Incoming, deadline: Instant, limit: Duration) -> DeadlineBody {
        DeadlineBody {
            body,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            limit,
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(axum::BoxError::from)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimedOut(self.limit))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A response body that keeps its request in flight until it is written or dropped.
struct TrackedBody {
    body: Body,
    /// Held for its `Drop`, which marks the request done.
    _in_flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
