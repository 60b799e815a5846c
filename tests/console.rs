//! The web console in a real browser: `refract run` (the real binary) serves it, and
//! headless Chromium, driven through chromedriver (WebDriver), uses it the way a person
//! would. The tests assert what the page shows.
//!
//! - the hot-swap story through the UI: sign in, see `cars` v1, upload v2, watch the
//!   replay reach lag zero, read the diff (Bob → Charlie), promote, see v2 active and
//!   the query console return the new rows;
//! - guest-controlled strings with markup (an event's stream and data, a projector's
//!   error, a stall and the health reason that quotes it) are shown as text and never
//!   become elements; a stalled projector is shown in red;
//! - without the token, or with a wrong one, only the sign-in page shows, with no data;
//! - every console response carries the strict Content-Security-Policy, and the browser
//!   enforces it.
//!
//! One browser session and one host serve every test of this binary, so it has its own
//! harness (libtest-compatible): the tests run one after another, and the browser,
//! chromedriver and the host are shut down at the end. Screenshots of the main pages go
//! to `target/tmp/console-screenshots/`.
//!
//! Needs Debian's `chromium` and `chromium-driver`; without them every test fails with
//! the command that installs them.

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use libtest_mimic::{Arguments, Failed, Trial};
use refract::log::{EventLog, LogOptions, NewEvent};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::host::RunningHost;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The browser and its driver, as Debian's `chromium` and `chromium-driver` install them.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const INSTALL: &str = "apt-get install -y chromium chromium-driver";

/// Liveness bound for anything the page should show; generous, CI machines are slow.
const LIVENESS: Duration = Duration::from_secs(90);

/// How often a wait looks at the page again.
const POLL: Duration = Duration::from_millis(100);

/// `cars` replays at this many events per second (one per batch), so the shadow's
/// replay of [`CARS_EVENTS`] takes several seconds: long enough to be watched.
const CARS_RATE: u64 = 5;

/// Cars created besides the story's two, so the replay has something to race through.
const EXTRA_CARS: usize = 25;

/// A stream name and an event payload that are markup; a guest error quotes the payload.
const MARKUP_STREAM: &str = "<img src=x onerror=window.__pwned='stream'>";
const MARKUP_DATA: &str = "<img src=x onerror=window.__pwned='data'><b>bold</b>";

/// The policy every console response must carry.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn main() -> ExitCode {
    let mut args = Arguments::from_args();
    // One browser session: the tests take turns.
    args.test_threads = Some(1);
    let shared: Arc<Mutex<Option<std::result::Result<Fixture, String>>>> =
        Arc::new(Mutex::new(None));
    let trial = |name: &'static str, test: fn(&mut Fixture) -> Result| {
        let shared = Arc::clone(&shared);
        Trial::test(name, move || {
            let mut guard = shared.lock().unwrap_or_else(PoisonError::into_inner);
            let fixture = guard.get_or_insert_with(|| Fixture::start().map_err(|e| e.to_string()));
            let fixture = fixture.as_mut().map_err(|e| Failed::from(e.clone()))?;
            test(fixture).map_err(|error| {
                let page = fixture.page_text();
                fixture.screenshot(&format!("failed-{name}"));
                Failed::from(format!(
                    "{error}\n--- the page showed:\n{page}\n--- host:\n{}",
                    fixture.host.tail(30)
                ))
            })
        })
    };
    let tests = vec![
        trial(
            "the_hot_swap_story_through_the_console",
            the_hot_swap_story_through_the_console,
        ),
        trial(
            "guest_strings_with_markup_are_shown_as_text",
            guest_strings_with_markup_are_shown_as_text,
        ),
        trial(
            "without_the_right_token_only_the_sign_in_page_shows",
            without_the_right_token_only_the_sign_in_page_shows,
        ),
        trial(
            "console_responses_carry_a_strict_csp_that_the_browser_enforces",
            console_responses_carry_a_strict_csp_that_the_browser_enforces,
        ),
    ];
    let conclusion = libtest_mimic::run(&args, tests);
    if let Some(Ok(fixture)) = shared.lock().unwrap_or_else(PoisonError::into_inner).take() {
        fixture.shut_down();
    }
    conclusion.exit_code()
}

// ---------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------

fn the_hot_swap_story_through_the_console(f: &mut Fixture) -> Result {
    let v1 = version_of(&support::guests::guest_bytes("cars-v1"));
    let v2_path = support::guests::guest("cars-v2");
    let v2 = version_of(&std::fs::read(&v2_path)?);

    // 1. Sign in.
    f.sign_in()?;
    // 2. cars v1, active.
    let v1_row = format!("section.projector[data-projector='cars'] tr[data-version='{v1}']");
    f.wait_text(&v1_row, "active")?;
    f.wait_text(&v1_row, "live")?;
    f.wait_text(
        "section.projector[data-projector='cars'] h2",
        &format!("active {v1}"),
    )?;
    f.screenshot("projectors");

    // 3. Upload v2.
    f.click("nav a[href='#/deploy']")?;
    f.wait_present("#deploy-form")?;
    f.fill("#deploy-name", "cars")?;
    f.block(
        f.find("#deploy-file")?
            .send_keys(&v2_path.display().to_string()),
    )?;
    f.click("#deploy-upload")?;
    f.wait_text(
        "#deploy-result",
        &format!("Deployed cars version {v2}: it is replaying the log"),
    )?;

    // 4. Watch the progress reach lag zero.
    let card = "section.card[data-projector='cars']";
    let progress = format!("{card} .progress-text");
    let mut seen = Vec::new();
    f.wait_until("the replay to reach lag zero", |f| {
        let text = f.text(&progress).unwrap_or_default();
        if seen.last() != Some(&text) {
            seen.push(text.clone());
        }
        text.starts_with("Caught up: lag 0")
    })?;
    assert!(
        seen.iter().any(|text| text.starts_with("Replaying:")
            && text.contains("events/s")
            && text.contains("ETA")),
        "the page showed the replay in progress with events/s and an ETA: {seen:#?}"
    );
    let full = f.script(&format!(
        "const bar = document.querySelector(\"{card} progress\"); return [bar.value, bar.max];"
    ))?;
    assert_eq!(full, json!([100, 100]), "the progress bar is full");

    // 5. The diff: v1 kept Bob on the sold car, v2 has Charlie.
    let samples = format!("{card} .samples[data-table='cars']");
    f.wait_text(&format!("{samples} li.only-base"), "'Bob'")?;
    let only_active = f
        .text(&format!("{samples} li.only-base"))
        .unwrap_or_default();
    let only_shadow = f
        .text(&format!("{samples} li.only-other"))
        .unwrap_or_default();
    assert!(
        only_active.contains(&format!("only in active {v1}")) && only_active.contains("'hrxs21'"),
        "{only_active}"
    );
    assert!(
        only_shadow.contains(&format!("only in shadow {v2}")) && only_shadow.contains("'Charlie'"),
        "{only_shadow}"
    );
    // Table, rows on each side, checksums on each side, verdict.
    let cars_row = f.cells(&format!("{card} .diff-tables tr[data-table='cars']"))?;
    let rows = (2 + EXTRA_CARS).to_string();
    assert_eq!(
        (
            cars_row[0].as_str(),
            cars_row[1].as_str(),
            cars_row[2].as_str(),
            cars_row[5].as_str()
        ),
        ("cars", rows.as_str(), rows.as_str(), "differs"),
        "{cars_row:?}"
    );
    assert!(
        cars_row[3].len() == 12 && cars_row[4].len() == 12 && cars_row[3] != cars_row[4],
        "two different checksums: {cars_row:?}"
    );
    let customers = f.cells(&format!("{card} .diff-tables tr[data-table='customers']"))?;
    assert_eq!(
        (customers[1].as_str(), customers[5].as_str()),
        ("1", "differs"),
        "{customers:?}"
    );
    f.wait_text(&format!("{card} #diff-gate"), "passed")?;
    f.screenshot("deploy");

    // 6. Promote, through the confirmation.
    f.click(&format!("{card} button[data-action='promote']"))?;
    let dialog = f.wait_text(
        "dialog.confirm",
        &format!("Version {v2} becomes the active version of cars"),
    )?;
    assert!(
        dialog.contains(&format!(
            "The active version {v1} becomes the previous version"
        )),
        "the confirmation says what happens to v1: {dialog}"
    );
    f.click("dialog.confirm button[value='confirm']")?;
    f.wait_text(
        "#deploy-result",
        &format!("Promoted: cars version {v2} is now active."),
    )?;
    f.wait_text(
        &format!("{card} button[data-action='rollback']"),
        &format!("Roll back to {v1}"),
    )?;

    // 7. v2 active, v1 previous; the query console returns the new rows.
    f.click("nav a[href='#/projectors']")?;
    f.wait_text(
        &format!("section.projector[data-projector='cars'] tr[data-version='{v2}']"),
        "active",
    )?;
    f.wait_text(
        &format!("section.projector[data-projector='cars'] tr[data-version='{v1}']"),
        "previous",
    )?;

    f.click("nav a[href='#/query']")?;
    f.wait_present("#q-projector option[value='cars']")?;
    f.block(f.find("#q-projector")?.select_by_value("cars"))?;
    f.fill(
        "#q-sql",
        "SELECT car_id, color, customer_name FROM cars WHERE car_id = 'hrxs21'",
    )?;
    f.click("#q-run")?;
    let summary = f.wait_text("#q-summary", &format!("from cars version {v2}"))?;
    let checkpoint = f.head()?;
    assert!(
        summary.contains(&format!("reflecting the log up to checkpoint {checkpoint}")),
        "the answer names its checkpoint ({checkpoint}): {summary}"
    );
    assert_eq!(
        f.cells("#q-results table tbody tr")?,
        ["hrxs21", "red", "Charlie"],
        "the new row, as the page shows it"
    );
    // (The headers' source text: the stylesheet shows them in capitals.)
    assert_eq!(
        f.script(
            "return [...document.querySelectorAll('#q-results thead th')].map(th => th.textContent)"
        )?,
        json!(["car_id", "color", "customer_name"])
    );
    f.screenshot("query");

    // Health, as the page shows it, is what /health says.
    f.click("nav a[href='#/health']")?;
    let health: Value = f.api_get("/health")?;
    let status = health["status"].as_str().unwrap_or_default().to_owned();
    f.wait_text("#health-status", &status)?;
    for reason in health["reasons"].as_array().into_iter().flatten() {
        f.wait_text("#health-body", reason.as_str().unwrap_or_default())?;
    }
    f.screenshot("health");
    Ok(())
}

fn guest_strings_with_markup_are_shown_as_text(f: &mut Fixture) -> Result {
    f.sign_in()?;
    // The projector's error quotes the payload: shown as text in the projectors table.
    let row = "section.projector[data-projector='balances'] tr[data-role='active']";
    let error = f.wait_text(row, "<img src=x onerror=")?;
    assert!(
        error.contains(MARKUP_DATA),
        "the error quotes the data literally: {error}"
    );
    f.assert_inert()?;

    // The events browser: the stream and the data, literally, in the table and the JSON.
    f.click("nav a[href='#/events']")?;
    f.fill("#ev-stream", MARKUP_STREAM)?;
    f.click("#ev-apply")?;
    let table = f.wait_text("#ev-results tbody", MARKUP_STREAM)?;
    assert!(table.contains("money.deposited"), "{table}");
    f.click("#ev-results tbody button.link")?;
    let shown = f.wait_text("#event-json", MARKUP_STREAM)?;
    let event: Value = serde_json::from_str(&shown)?;
    assert_eq!(event["stream"], MARKUP_STREAM);
    assert_eq!(event["data"], MARKUP_DATA);
    f.assert_inert()?;

    // The live tail (SSE read through fetch, with the token in a header) shows a new
    // event of the filtered stream as it is appended, as text too.
    f.click("#ev-tail")?;
    f.wait_text("#ev-status", "Live: following the log")?;
    let path = format!(
        "/v1/streams/{}/events",
        MARKUP_STREAM
            .bytes()
            .map(|b| format!("%{b:02X}"))
            .collect::<String>()
    );
    f.api_post(
        &path,
        &json!([{"type": "note.added", "data": {"note": MARKUP_DATA}}]),
    )?;
    let tailed = f.wait_text("#ev-results tbody tr:last-child", "note.added")?;
    assert!(tailed.contains(MARKUP_DATA), "{tailed}");
    f.assert_inert()?;
    f.click("#ev-tail")?;
    f.screenshot("events");

    // Dead letters: the error and the event, literally.
    f.click("nav a[href='#/dead-letters']")?;
    f.wait_present("#dl-projector option[value='balances']")?;
    f.block(f.find("#dl-projector")?.select_by_value("balances"))?;
    let letters = f.wait_text("#dl-list", MARKUP_DATA)?;
    assert!(letters.contains("1 dead letter of balances"), "{letters}");
    f.click("#dl-list tbody button.link")?;
    let shown = f.wait_text("#dl-event", MARKUP_DATA)?;
    assert_eq!(
        serde_json::from_str::<Value>(&shown)?["stream"],
        MARKUP_STREAM
    );
    f.assert_inert()?;
    f.screenshot("dead-letters");

    // A stalled projector (order-summary, `on_poison = "stop"`) is red, and its stall
    // message, which quotes the data, is text on the projectors and health pages.
    f.api_post(
        "/v1/streams/order-9/events",
        &json!([{"type": "order.placed", "data": MARKUP_DATA}]),
    )?;
    f.click("nav a[href='#/projectors']")?;
    let stalled = "section.projector[data-projector='order-summary'] tr.bad[data-role='active']";
    f.wait_text(&format!("{stalled} .badge.bad"), "stalled at")?;
    let error = f.wait_text(&format!("{stalled} .error-text"), MARKUP_DATA)?;
    assert!(error.contains("order-summary"), "{error}");
    f.assert_inert()?;
    f.screenshot("projectors-stalled");
    f.click("nav a[href='#/health']")?;
    f.wait_text("#health-status", "degraded")?;
    let reasons = f.wait_text("#health-body ul.reasons", "order-summary")?;
    assert!(reasons.contains(MARKUP_DATA), "{reasons}");
    f.assert_inert()?;
    Ok(())
}

fn without_the_right_token_only_the_sign_in_page_shows(f: &mut Fixture) -> Result {
    // No token at all: even a deep link shows the sign-in page, and no data.
    f.sign_out()?;
    f.goto("/#/projectors")?;
    f.wait_present("#sign-in-form")?;
    f.assert_no_data()?;
    f.screenshot("sign-in");

    // A wrong token: the host's refusal is shown, nothing is kept, no data.
    f.fill("#token", "wrong-token-0123456789abcdef")?;
    f.click("#sign-in-form button[type='submit']")?;
    f.wait_text(
        "#sign-in-status",
        "The host refused the token: wrong API token",
    )?;
    f.assert_no_data()?;
    assert_eq!(
        f.script("return sessionStorage.length")?,
        json!(0),
        "the wrong token is not kept"
    );

    // The right token works, and it is neither in the URL nor in a cookie.
    f.sign_in()?;
    f.wait_present("section.projector[data-projector='cars']")?;
    let url = f.block(f.client.current_url())?.to_string();
    assert!(
        !url.contains(&f.token),
        "the token is not in the URL: {url}"
    );
    assert_eq!(f.script("return document.cookie")?, json!(""));

    // A token the host no longer accepts (changed under the tab): back to sign-in.
    f.script("sessionStorage.setItem('refract.token', 'another-wrong-token-0123456789')")?;
    f.block(f.client.refresh())?;
    f.wait_text("#sign-in-status", "The host refused the token")?;
    f.assert_no_data()?;
    Ok(())
}

fn console_responses_carry_a_strict_csp_that_the_browser_enforces(f: &mut Fixture) -> Result {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build(),
    );
    for (path, status, content_type) in [
        ("/", 200, "text/html; charset=utf-8"),
        ("/console/app.js", 200, "text/javascript; charset=utf-8"),
        ("/console/style.css", 200, "text/css; charset=utf-8"),
        ("/console/no-such-file.js", 404, "application/json"),
    ] {
        let response = agent.get(&format!("{}{path}", f.url)).call()?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(response.status().as_u16(), status, "{path}");
        assert_eq!(
            header("content-security-policy").as_deref(),
            Some(CSP),
            "{path}"
        );
        assert_eq!(
            header("x-content-type-options").as_deref(),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(header("x-frame-options").as_deref(), Some("DENY"), "{path}");
        assert_eq!(
            header("content-type").as_deref(),
            Some(content_type),
            "{path}"
        );
    }
    // The API is untouched: still the token, and no console page in its place.
    let api = agent.get(&format!("{}/v1/projectors", f.url)).call()?;
    assert_eq!(api.status().as_u16(), 401);

    // The browser enforces the policy: an injected inline script does not run.
    f.sign_in()?;
    f.wait_present("section.projector")?;
    f.script(
        "const s = document.createElement('script'); \
         s.textContent = 'window.__inline = 1'; document.body.append(s);",
    )?;
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        f.script("return typeof window.__inline")?,
        json!("undefined")
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The fixture: a host, chromedriver, one browser session
// ---------------------------------------------------------------------------------------

struct Fixture {
    /// The console's base URL, `http://127.0.0.1:PORT`.
    url: String,
    token: String,
    host: RunningHost,
    driver: Child,
    client: Client,
    runtime: tokio::runtime::Runtime,
    screenshots: PathBuf,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn start() -> Result<Fixture> {
        for (binary, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            if !Path::new(binary).is_file() {
                return Err(format!(
                    "{binary} is missing: the console tests need Debian's {package}; install it with `{INSTALL}`"
                )
                .into());
            }
        }
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        seed(&data)?;
        let gate = dir.path().join("no-car-lost.sql");
        std::fs::write(
            &gate,
            "-- every car of the active version is still there\n\
             SELECT car_id FROM active.cars WHERE car_id NOT IN (SELECT car_id FROM cars);\n",
        )?;
        let config = dir.path().join("refract.toml");
        std::fs::write(
            &config,
            format!(
                "[projectors.cars]\npromote = \"manual\"\nbatch_size = 1\nreplay_rate_limit = {CARS_RATE}\n\
                 diff_gate = \"{}\"\n\n[projectors.balances]\non_poison = \"skip\"\n",
                gate.display()
            ),
        )?;
        let mut host = RunningHost::start(
            Path::new(env!("CARGO_BIN_EXE_refract")),
            dir.path(),
            &data,
            &config,
            &[],
        )?;
        host.wait_serving(LIVENESS);
        let line = host.wait_for_line(LIVENESS, "console:");
        let url = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .map(|address| format!("http://{address}"))
            .ok_or_else(|| format!("no console URL in {line:?}"))?;
        let token = std::fs::read_to_string(data.join("token"))?
            .trim()
            .to_owned();

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (driver, driver_url) = start_chromedriver()?;
        let profile = dir.path().join("chromium-profile");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    format!("--user-data-dir={}", profile.display()),
                    "--window-size=1360,1060",
                ],
            }),
        );
        let client = runtime.block_on(
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(capabilities)
                .connect(&driver_url),
        )?;
        let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
        std::fs::create_dir_all(&screenshots)?;
        let fixture = Fixture {
            url,
            token,
            host,
            driver,
            client,
            runtime,
            screenshots,
            _dir: dir,
        };
        // The tests start once the projectors have caught up with the seeded log.
        fixture.wait_caught_up()?;
        Ok(fixture)
    }

    fn shut_down(mut self) {
        let _ = self.runtime.block_on(self.client.clone().close());
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let status = self.host.terminate(LIVENESS);
        assert!(status.success(), "refract run exited with {status}");
    }

    fn block<T, E: std::error::Error + 'static>(
        &self,
        future: impl Future<Output = std::result::Result<T, E>>,
    ) -> Result<T> {
        Ok(self.runtime.block_on(future)?)
    }

    fn goto(&self, path: &str) -> Result {
        self.block(self.client.goto(&format!("{}{path}", self.url)))
    }

    fn find(&self, css: &str) -> Result<fantoccini::elements::Element> {
        self.block(self.client.find(Locator::Css(css)))
    }

    fn count(&self, css: &str) -> Result<usize> {
        Ok(self.block(self.client.find_all(Locator::Css(css)))?.len())
    }

    /// The text of the first element matching `css`, if there is one.
    fn text(&self, css: &str) -> Option<String> {
        let element = self.block(self.client.find(Locator::Css(css))).ok()?;
        self.block(element.text()).ok()
    }

    /// The texts of the cells of the first row matching `css`.
    fn cells(&self, row: &str) -> Result<Vec<String>> {
        self.cells_of(&format!("{row} td"))
    }

    /// The texts of every element matching `css`.
    fn cells_of(&self, css: &str) -> Result<Vec<String>> {
        let elements = self.block(self.client.find_all(Locator::Css(css)))?;
        elements
            .iter()
            .map(|element| self.block(element.text()))
            .collect()
    }

    fn click(&self, css: &str) -> Result {
        let element = self.wait_for(&format!("{css} to be there"), || self.find(css).ok())?;
        self.block(element.click())
    }

    fn fill(&self, css: &str, text: &str) -> Result {
        let element = self.wait_for(&format!("{css} to be there"), || self.find(css).ok())?;
        self.block(element.clear())?;
        self.block(element.send_keys(text))
    }

    fn script(&self, js: &str) -> Result<Value> {
        self.block(self.client.execute(js, Vec::new()))
    }

    /// Polls `probe` until it returns a value.
    fn wait_for<T>(&self, what: &str, mut probe: impl FnMut() -> Option<T>) -> Result<T> {
        let deadline = Instant::now() + LIVENESS;
        loop {
            if let Some(value) = probe() {
                return Ok(value);
            }
            if Instant::now() > deadline {
                return Err(format!("timed out after {LIVENESS:?} waiting for {what}").into());
            }
            std::thread::sleep(POLL);
        }
    }

    fn wait_until(
        &mut self,
        what: &str,
        mut condition: impl FnMut(&mut Fixture) -> bool,
    ) -> Result {
        let deadline = Instant::now() + LIVENESS;
        while !condition(self) {
            if Instant::now() > deadline {
                return Err(format!("timed out after {LIVENESS:?} waiting for {what}").into());
            }
            std::thread::sleep(POLL);
        }
        Ok(())
    }

    fn wait_present(&self, css: &str) -> Result {
        self.wait_for(&format!("{css} on the page"), || {
            self.count(css).ok().filter(|n| *n > 0)
        })
        .map(drop)
    }

    /// Waits until the first element matching `css` shows `needle`; returns its text.
    fn wait_text(&self, css: &str, needle: &str) -> Result<String> {
        let mut last = None;
        self.wait_for(&format!("{css} to show {needle:?}"), || {
            let text = self.text(css);
            last.clone_from(&text);
            text.filter(|text| text.contains(needle))
        })
        .map_err(|error| format!("{error}; it showed {last:?}").into())
    }

    fn page_text(&self) -> String {
        self.text("body").unwrap_or_else(|| "(no page)".into())
    }

    fn screenshot(&self, name: &str) {
        match self.block(self.client.screenshot()) {
            Ok(png) => {
                let path = self.screenshots.join(format!("{name}.png"));
                if let Err(error) = std::fs::write(&path, png) {
                    eprintln!("cannot save {}: {error}", path.display());
                }
            }
            Err(error) => eprintln!("no screenshot {name}: {error}"),
        }
    }

    /// Signs in through the form (from whatever state the tab is in).
    fn sign_in(&self) -> Result {
        self.sign_out()?;
        self.goto("/")?;
        self.wait_present("#sign-in-form")?;
        self.fill("#token", &self.token)?;
        self.click("#sign-in-form button[type='submit']")?;
        self.wait_present("nav#nav:not([hidden])")?;
        self.wait_present("section.projector")
    }

    fn sign_out(&self) -> Result {
        self.goto("/")?;
        self.script("sessionStorage.clear()")?;
        self.block(self.client.refresh())?;
        Ok(())
    }

    /// The page shows no data: only the sign-in form, the navigation hidden.
    fn assert_no_data(&self) -> Result {
        assert_eq!(
            self.count("section.projector, table, #deploy-form")?,
            0,
            "no data views"
        );
        assert_eq!(
            self.count("nav#nav:not([hidden])")?,
            0,
            "the navigation is hidden"
        );
        let main = self.text("main").unwrap_or_default();
        assert!(
            !main.contains("cars") && !main.contains("balances"),
            "no projector names before sign-in: {main}"
        );
        Ok(())
    }

    /// No guest string became an element, and none of their scripts ran.
    fn assert_inert(&self) -> Result {
        assert_eq!(
            self.count("img, b")?,
            0,
            "markup from guest strings became elements"
        );
        assert_eq!(
            self.script("return typeof window.__pwned")?,
            json!("undefined")
        );
        Ok(())
    }

    /// A GET on the API with the token, for comparing the page with the API's answer.
    fn api_get(&self, path: &str) -> Result<Value> {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build(),
        );
        let mut response = agent
            .get(&format!("{}{path}", self.url))
            .header("Authorization", &format!("Bearer {}", self.token))
            .call()?;
        Ok(serde_json::from_str(
            &response.body_mut().read_to_string()?,
        )?)
    }

    /// A POST of JSON on the API with the token; the answer must be a success.
    fn api_post(&self, path: &str, body: &Value) -> Result<Value> {
        let mut response = ureq::post(&format!("{}{path}", self.url))
            .header("Authorization", &format!("Bearer {}", self.token))
            .header("Content-Type", "application/json")
            .send(body.to_string())?;
        Ok(serde_json::from_str(
            &response.body_mut().read_to_string()?,
        )?)
    }

    /// The log head.
    fn head(&self) -> Result<u64> {
        let count = self.api_get("/v1/events/count")?;
        count["count"]
            .as_u64()
            .ok_or_else(|| format!("no count in {count}").into())
    }

    fn wait_caught_up(&self) -> Result {
        let head = self.head()?;
        self.wait_for("cars and balances to catch up with the seeded log", || {
            let projectors = self.api_get("/v1/projectors").ok()?;
            let all = projectors["projectors"].as_array()?;
            let caught_up = all.len() == 3
                && all
                    .iter()
                    .filter(|projector| projector["name"] != "order-summary")
                    .all(|projector| {
                        projector["versions"].as_array().is_some_and(|versions| {
                            versions.iter().any(|version| {
                                version["role"] == "active"
                                    && version["status"]["checkpoint"] == head
                            })
                        })
                    });
            caught_up.then_some(())
        })
    }
}

/// Starts chromedriver on a free loopback port and waits until it answers.
fn start_chromedriver() -> Result<(Child, String)> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut driver = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|error| {
            format!("cannot start {CHROMEDRIVER} ({error}); install it with `{INSTALL}`")
        })?;
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + LIVENESS;
    loop {
        if let Ok(Some(status)) = driver.try_wait() {
            return Err(format!("chromedriver exited at once ({status}); try `{INSTALL}`").into());
        }
        if ureq::get(&format!("{url}/status")).call().is_ok() {
            return Ok((driver, url));
        }
        if Instant::now() > deadline {
            let _ = driver.kill();
            return Err(format!("chromedriver did not answer on {url} within {LIVENESS:?}").into());
        }
        std::thread::sleep(POLL);
    }
}

/// The short content hash that names a component's version.
fn version_of(wasm: &[u8]) -> String {
    hex::encode(Sha256::digest(wasm))[..8].to_owned()
}

/// The data directory the host starts on: the plugins (cars v1, balances) and a log
/// with the cars story (Bob renamed Charlie after buying a car), more cars, and events
/// whose stream and data are markup.
fn seed(data: &Path) -> Result {
    let plugins = data.join("plugins");
    std::fs::create_dir_all(&plugins)?;
    std::fs::copy(support::guests::guest("cars-v1"), plugins.join("cars.wasm"))?;
    std::fs::copy(
        support::guests::guest("balances"),
        plugins.join("balances.wasm"),
    )?;
    std::fs::copy(
        support::guests::guest("order-summary"),
        plugins.join("order-summary.wasm"),
    )?;
    let log = EventLog::open(&data.join("events.db"), LogOptions::default())?;
    let mut events = refract::workload::cars_story(1);
    for index in 0..EXTRA_CARS {
        events.push(NewEvent::new(
            format!("car-{index:02}"),
            "car.created",
            json!({ "by": "Zed", "color": "grey" }).to_string(),
        ));
    }
    events.push(NewEvent::new(
        "account-1",
        "money.deposited",
        json!({ "account": "a1", "amount": 500 }).to_string(),
    ));
    // balances cannot read a string as a deposit: a dead letter whose error quotes it.
    events.push(NewEvent::new(
        MARKUP_STREAM,
        "money.deposited",
        json!(MARKUP_DATA).to_string(),
    ));
    log.append(events)?;
    Ok(())
}
