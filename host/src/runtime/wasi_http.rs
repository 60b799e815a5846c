//! `wasi:http` 0.2, linked so that interpreter runtimes load, and denied.
//!
//! componentize-js builds import `wasi:http/types` and `wasi:http/outgoing-handler` by
//! default (StarlingMonkey implements `fetch` on them), whether or not the projector
//! ever calls `fetch`. Refusing those imports would refuse every default JavaScript
//! build, so the interfaces are linked, from wasmtime-wasi-http, with one change: the
//! hook that would send a request answers `HTTP-request-denied` instead. Every request a
//! guest makes therefore fails with an error value it can handle (a rejected `fetch`
//! promise in JavaScript); nothing reaches the network, and the crate's own client (and
//! its TLS stack) is not even compiled in (`default-send-request` is off).
//!
//! The types a guest can build (`fields`, `outgoing-request`, bodies) live in its own
//! resource table and count against its limits like any other host resource.

use axum::http::{Request, Response};
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi_http::{
    Error, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

/// The `wasi:http` packages a projector may import; linked, every request denied.
pub const DENIED_WASI_PACKAGES: &[&str] = &["http"];

/// The per-instance `wasi:http` state: the context and the denying hooks.
#[derive(Default)]
pub(crate) struct DeniedHttp {
    ctx: WasiHttpCtx,
    hooks: DenyRequests,
}

impl DeniedHttp {
    /// The view wasmtime-wasi-http's host functions work on, over `table` (the one
    /// WASI's streams and pollables live in, since HTTP bodies are WASI streams).
    pub(crate) fn view<'a>(&'a mut self, table: &'a mut ResourceTable) -> WasiHttpCtxView<'a> {
        WasiHttpCtxView {
            ctx: &mut self.ctx,
            table,
            hooks: &mut self.hooks,
        }
    }
}

/// The hooks that refuse every outgoing request.
#[derive(Debug, Default)]
struct DenyRequests;

impl WasiHttpHooks for DenyRequests {
    fn send_request(
        &mut self,
        _request: Request<WasiBody>,
        _options: Option<RequestOptions>,
        _response_errors: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        Response<WasiBody>,
                        Box<dyn Future<Output = Result<(), Error>> + Send>,
                    ),
                    Error,
                >,
            > + Send,
    > {
        Box::new(async { Err(Error::HttpRequestDenied) })
    }
}

/// Links `wasi:http/types` and `wasi:http/outgoing-handler` (synchronous) into `linker`.
/// WASI itself must be linked separately: the HTTP types use its streams and pollables.
pub(crate) fn add_to_linker<T: WasiHttpView + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    wasmtime_wasi_http::p2::add_only_http_to_linker_sync(linker)
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;

    use super::*;

    #[test]
    fn every_request_is_denied_without_touching_the_network() {
        let mut hooks = DenyRequests;
        let request = Request::builder()
            .uri("https://example.invalid/")
            .body(WasiBody::default())
            .expect("a request");
        let sent = hooks.send_request(request, None, Box::new(async { Ok(()) }));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let outcome = runtime.block_on(Pin::from(sent));
        assert!(
            matches!(outcome, Err(Error::HttpRequestDenied)),
            "{:?}",
            outcome.err()
        );
    }
}
