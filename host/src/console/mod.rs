//! The web console `refract run` serves at `/`: a few hand-written ES modules, one
//! HTML page and one stylesheet (the sources in `host/console/`), embedded in the
//! binary at build time. Nothing is fetched from elsewhere at run time and nothing is
//! generated: the files served are the files in the repository.
//!
//! The console is a client of the public HTTP API and nothing more. Its pages load
//! without the token (they hold no data); every call they make goes to `/v1/...` with
//! `Authorization: Bearer <token>`, the token kept in the tab's `sessionStorage`.
//!
//! Every response carries [`CONTENT_SECURITY_POLICY`]: scripts, styles and connections
//! from this origin only, no inline script or style, no `eval`, no framing. The
//! scripts set guest-controlled text (names, errors, event data) with `textContent`
//! only; the tests in this module refuse HTML-building APIs in the sources.

use axum::Router;
use axum::extract::Path;
use axum::http::HeaderValue;
use axum::http::header::{self, HeaderName};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::api::ApiError;

/// The policy on every console response. `img-src data:` is for the favicon-less
/// page's empty icon; everything else comes from this origin or not at all.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// The path prefix of the console's scripts and stylesheet.
pub const ASSET_PREFIX: &str = "/console/";

/// One embedded file.
struct Asset {
    /// Its name under [`ASSET_PREFIX`], as in `host/console/`.
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!("../../console/", $name)),
        }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The page served at `/`.
const INDEX: Asset = asset!("index.html", HTML);

/// Every file under [`ASSET_PREFIX`]. A test checks this matches `host/console/`.
const ASSETS: &[Asset] = &[
    asset!("style.css", CSS),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("projectors.js", JS),
    asset!("deploy.js", JS),
    asset!("events.js", JS),
    asset!("query.js", JS),
    asset!("dead-letters.js", JS),
    asset!("health.js", JS),
];

/// The console's routes: `/` and `/console/{file}`. They need no token; mount them
/// outside the API's authentication layer.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/console/{file}", get(asset))
}

async fn index() -> Response {
    serve(&INDEX)
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|asset| asset.name == file) {
        Some(asset) => serve(asset),
        None => with_headers(
            ApiError::not_found("not_found", "no such console file; the console lives at /")
                .into_response(),
        ),
    }
}

fn serve(asset: &Asset) -> Response {
    let response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        )],
        asset.body,
    )
        .into_response();
    with_headers(response)
}

/// The security headers of every console response.
fn with_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let mut set = |name: HeaderName, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY);
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::X_FRAME_OPTIONS, "DENY");
    set(header::REFERRER_POLICY, "no-referrer");
    set(
        HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    // A new binary may bring new files under the same names: always revalidate.
    set(header::CACHE_CONTROL, "no-cache");
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("console")
    }

    #[test]
    fn every_source_file_is_embedded_and_nothing_else() {
        let mut on_disk: Vec<String> = std::fs::read_dir(sources())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| {
                [".js", ".css", ".html"]
                    .iter()
                    .any(|ext| name.ends_with(ext))
            })
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = ASSETS
            .iter()
            .chain([&INDEX])
            .map(|asset| asset.name.to_owned())
            .collect();
        embedded.sort();
        assert_eq!(
            on_disk, embedded,
            "host/console/ and the embedded assets differ"
        );
    }

    #[test]
    fn the_sources_build_no_html_from_strings_and_run_no_strings() {
        // Each of these turns a string into markup or code; the console sets text with
        // textContent and builds elements with createElement instead.
        let refused = [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            "setTimeout('",
            "setTimeout(\"",
            "createContextualFragment",
            "DOMParser",
            "srcdoc",
        ];
        for asset in ASSETS.iter().filter(|asset| asset.content_type == JS) {
            let text = std::str::from_utf8(asset.body).unwrap();
            for word in refused {
                assert!(!text.contains(word), "{} uses {word}", asset.name);
            }
        }
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let page = std::str::from_utf8(INDEX.body).unwrap();
        for tag in page.split("<script").skip(1) {
            let open = &tag[..tag.find('>').unwrap()];
            assert!(open.contains("src="), "inline script: <script{open}>");
        }
        assert!(!page.contains("<style"), "inline <style>");
        assert!(!page.contains("style="), "inline style attribute");
        for (at, _) in page.match_indices(" on") {
            let name: String = page[at + 3..]
                .chars()
                .take_while(char::is_ascii_lowercase)
                .collect();
            let after = page[at + 3 + name.len()..].chars().next();
            assert!(
                name.is_empty() || after != Some('='),
                "an inline event handler: on{name}="
            );
        }
    }
}
