//! The projector author's loop, through the real `refract` binary: `refract new` makes a
//! Rust project outside this repository that builds and passes its test as generated;
//! `refract test` runs golden fixtures (the examples' too) and explains failures;
//! `refract dev` rebuilds on save, shows the diff, swaps, and keeps serving through a
//! broken edit. `refract new --kind reactor` makes a Rust reactor that passes its native
//! tests, builds with its manifest's command, and reacts on a real engine; `refract
//! test` and `refract dev` refuse it, saying how to run it.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};
use support::cli::{refract, text};
use support::guests::guest;
use support::host::RunningHost;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Builds under load on a shared 2-core machine can take minutes: liveness only.
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);

/// Where this process's projects live: a folder of the system's temp directory, so
/// outside this repository (and any cargo workspace). Folders left by earlier runs
/// whose process is gone are removed first.
fn scratch_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let parent = std::env::temp_dir().join("refract-devkit-tests");
        if let Ok(entries) = std::fs::read_dir(&parent) {
            for entry in entries.flatten() {
                let alive = entry
                    .file_name()
                    .to_str()
                    .and_then(|pid| pid.parse::<u32>().ok())
                    .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
                if !alive {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let root = parent.join(std::process::id().to_string());
        std::fs::create_dir_all(&root).expect("create the scratch folder");
        root
    })
}

/// The first project: `refract new demo-rust --lang rust`, then `refract test` in it
/// (which builds it). Returns its folder and that first `refract test`'s output. Later
/// tests copy the built project, so the dependencies compile once per test process.
fn built_project() -> &'static (PathBuf, Output) {
    static BUILT: OnceLock<(PathBuf, Output)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = scratch_root().join("first").join("demo-rust");
        let new = refract(
            scratch_root(),
            &["new", "demo-rust", "--lang", "rust", "--dir"],
        )
        .arg(&dir)
        .output()
        .expect("run refract new");
        assert!(new.status.success(), "refract new failed:\n{}", text(&new));
        let tested = refract(&dir, &["test"]).output().expect("run refract test");
        (dir, tested)
    })
}

/// A copy of the built project (its `target/` included) in a folder of its own.
fn copy_of_project(name: &str) -> Result<PathBuf> {
    let (source, first) = built_project();
    assert!(
        first.status.success(),
        "the project did not build and pass:\n{}",
        text(first)
    );
    let dir = scratch_root().join(name).join("demo-rust");
    std::fs::create_dir_all(dir.parent().ok_or("no parent")?)?;
    let copied = Command::new("cp")
        .arg("-a")
        .arg(source)
        .arg(&dir)
        .status()?;
    assert!(copied.success(), "cp -a failed");
    Ok(dir)
}

#[test]
fn a_new_rust_project_builds_and_passes_its_test_outside_the_repo() -> Result {
    let (dir, tested) = built_project();
    let out = text(tested);
    assert!(tested.status.success(), "{out}");
    assert!(
        !dir.starts_with(refract::guest_build::workspace_root()),
        "outside the repo"
    );
    assert!(
        out.contains("building `demo-rust`: cargo build --release --target wasm32-wasip2"),
        "{out}"
    );
    assert!(out.contains("testing `demo-rust` (version "), "{out}");
    assert!(out.contains("ok    "), "{out}");
    assert!(
        out.contains("tests/items.jsonl (5 events, 2 queries)"),
        "{out}"
    );
    assert!(out.contains("fixtures: 1 passed, 0 failed"), "{out}");
    for file in [
        "Cargo.toml",
        "projector.toml",
        "README.md",
        "src/lib.rs",
        "tests/items.expect.json",
    ] {
        assert!(dir.join(file).is_file(), "{file} was generated");
    }
    let cargo = std::fs::read_to_string(dir.join("Cargo.toml"))?;
    assert!(
        cargo.contains("[workspace]"),
        "a workspace of its own: {cargo}"
    );
    Ok(())
}

#[test]
fn a_broken_expectation_fails_with_a_readable_row_diff() -> Result {
    let dir = copy_of_project("broken-expectation")?;
    let expect = dir.join("tests/items.expect.json");
    let mut queries: Value = serde_json::from_str(&std::fs::read_to_string(&expect)?)?;
    // cart-1's pear: 1 in the log, 7 in the expectation; and an extra row expected.
    queries[0]["rows"][1] = json!(["cart-1", "pear", 7]);
    queries[0]["rows"]
        .as_array_mut()
        .ok_or("rows")?
        .push(json!(["cart-3", "fig", 1]));
    std::fs::write(&expect, serde_json::to_string_pretty(&queries)?)?;

    let output = refract(&dir, &["test"]).output()?;
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(out.contains("FAIL  "), "{out}");
    assert!(
        out.contains("query 1: SELECT stream, item, quantity FROM items ORDER BY stream, item"),
        "{out}"
    );
    assert!(out.contains("expected 4 rows, got 3; 2 differ:"), "{out}");
    assert!(out.contains("row 2\n      expected: [\"cart-1\",\"pear\",7]\n      actual:   [\"cart-1\",\"pear\",1]"), "{out}");
    assert!(
        out.contains("row 4\n      expected: [\"cart-3\",\"fig\",1]\n      actual:   (no row)"),
        "{out}"
    );
    assert!(
        !out.contains("[\"cart-1\",\"apple\",2]"),
        "equal rows are not shown: {out}"
    );
    assert!(
        !out.contains("query 2"),
        "the passing query is not reported: {out}"
    );
    assert!(out.contains("fixtures: 0 passed, 1 failed"), "{out}");
    Ok(())
}

#[test]
fn the_examples_pass_their_golden_fixtures() -> Result {
    let root = refract::guest_build::workspace_root();
    for example in ["balances", "cars-v1", "cars-v2"] {
        let plugin = guest(example);
        let fixtures = root.join("example-plugins").join(example).join("tests");
        let output = refract(&root, &["test", "--plugin"])
            .arg(&plugin)
            .arg(&fixtures)
            .output()?;
        let out = text(&output);
        assert!(output.status.success(), "{example}: {out}");
        assert!(
            out.contains("fixtures: 1 passed, 0 failed"),
            "{example}: {out}"
        );
    }
    // The v1 expectation does not hold for v2, which is the point of the pair.
    let output = refract(&root, &["test", "--plugin"])
        .arg(guest("cars-v2"))
        .arg(root.join("example-plugins/cars-v1/tests/story.jsonl"))
        .output()?;
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(
        out.contains("expected: [\"hrxs21\",\"Alice\",\"orange\",1,\"Bob\",\"b2dhuw\"]"),
        "{out}"
    );
    assert!(
        out.contains("actual:   [\"hrxs21\",\"Alice\",\"orange\",1,\"Charlie\",\"b2dhuw\"]"),
        "{out}"
    );
    Ok(())
}

/// Writes a fixture `<stem>.jsonl` + `<stem>.expect.json` into `dir`.
fn write_fixture(dir: &Path, stem: &str, events: &[Value], expect: &Value) -> Result<PathBuf> {
    let lines: Vec<String> = events.iter().map(Value::to_string).collect();
    let path = dir.join(format!("{stem}.jsonl"));
    std::fs::write(&path, lines.join("\n") + "\n")?;
    std::fs::write(dir.join(format!("{stem}.expect.json")), expect.to_string())?;
    Ok(path)
}

#[test]
fn handler_errors_and_traps_are_reported_with_their_offset() -> Result {
    let dir = tempfile::tempdir()?;
    let deposit = |account: &str, data: Value| json!({"stream": format!("account-{account}"), "type": "money.deposited", "data": data});
    let bad = write_fixture(
        dir.path(),
        "bad-amount",
        &[
            deposit("a", json!({"account": "a", "amount": 1})),
            deposit("a", json!({"account": "a", "amount": 2})),
            deposit("a", json!({"account": "a"})),
        ],
        &json!([{"sql": "SELECT count(*) FROM balances", "rows": [[1]]}]),
    )?;
    let output = refract(dir.path(), &["test", "--plugin"])
        .arg(guest("balances"))
        .arg(&bad)
        .output()?;
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(out.contains("the projector failed at offset 3:"), "{out}");
    assert!(out.contains("missing field `amount`"), "{out}");

    // A trap in a batch names its event too (the batch is replayed one event at a time),
    // carries the guest's last stderr lines, and runs under the projector's own limits.
    let bomb = write_fixture(
        dir.path(),
        "bomb",
        &[
            json!({"stream": "s", "type": "memory.probe", "data": {}}),
            json!({"stream": "s", "type": "bomb", "data": {}}),
        ],
        &json!([{"sql": "SELECT count(*) FROM probe", "rows": [[1]]}]),
    )?;
    let config = dir.path().join("refract.toml");
    std::fs::write(
        &config,
        "[projectors.memory-bomb.limits]\nmax_memory_bytes = 16777216\n",
    )?;
    let output = refract(dir.path(), &["test", "--plugin"])
        .arg(guest("memory-bomb"))
        .arg(&bomb)
        .output()?;
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(out.contains("the projector failed at offset 2:"), "{out}");
    assert!(
        out.contains("16 MiB (`limits.max_memory_bytes`)"),
        "the projector's own limit: {out}"
    );
    assert!(
        out.contains("its last stderr lines: memory allocation of"),
        "{out}"
    );
    assert!(!out.contains("Rust"), "language-neutral: {out}");
    Ok(())
}

#[test]
fn setup_failures_exit_3_and_say_why() -> Result {
    let dir = tempfile::tempdir()?;
    let output = refract(dir.path(), &["test"]).output()?;
    let out = text(&output);
    assert_eq!(output.status.code(), Some(3), "{out}");
    assert!(out.contains("no projector.toml in"), "{out}");

    // The compile deadline holds in the `refract` binary, which compiles in a child
    // process and kills it at the deadline.
    let config = dir.path().join("refract.toml");
    std::fs::write(&config, "[limits]\ncompile_timeout_ms = 1\n")?;
    let root = refract::guest_build::workspace_root();
    let output = refract(dir.path(), &["test", "--plugin"])
        .arg(guest("balances"))
        .arg(root.join("example-plugins/balances/tests"))
        .output()?;
    let out = text(&output);
    assert_eq!(output.status.code(), Some(3), "{out}");
    assert!(out.contains("`limits.compile_timeout_ms`"), "{out}");

    // So does the compile memory cap.
    std::fs::write(&config, "[limits]\nmax_compile_memory_bytes = 67108864\n")?;
    let output = refract(dir.path(), &["test", "--plugin"])
        .arg(guest("balances"))
        .arg(root.join("example-plugins/balances/tests"))
        .output()?;
    assert!(
        output.status.success(),
        "balances compiles in 64 MiB: {}",
        text(&output)
    );
    Ok(())
}

#[test]
fn new_refuses_to_overwrite_and_names_missing_templates() -> Result {
    let dir = tempfile::tempdir()?;
    let target = dir.path().join("taken");
    std::fs::create_dir_all(&target)?;
    std::fs::write(target.join("keep.txt"), "mine")?;
    let output = refract(dir.path(), &["new", "taken", "--dir"])
        .arg(&target)
        .output()?;
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(out.contains("already exists and is not empty"), "{out}");
    assert_eq!(std::fs::read_to_string(target.join("keep.txt"))?, "mine");

    let output = refract(dir.path(), &["new", "9lives"]).output()?;
    assert!(
        text(&output).contains("not a usable projector or reactor name"),
        "{}",
        text(&output)
    );

    let embedded = refract::devkit::template::embedded_templates();
    for (lang, folder) in [("ts", "typescript"), ("python", "python")] {
        let output = refract(
            dir.path(),
            &["new", &format!("demo-{folder}"), "--lang", lang],
        )
        .output()?;
        let out = text(&output);
        if embedded.contains(&folder) {
            assert!(output.status.success(), "{lang}: {out}");
            assert!(
                dir.path()
                    .join(format!("demo-{folder}/projector.toml"))
                    .is_file(),
                "{out}"
            );
        } else {
            assert_eq!(output.status.code(), Some(1), "{out}");
            assert!(
                out.contains(&format!(
                    "plugins-sdk/templates/{folder}/ was missing when it was built"
                )),
                "{out}"
            );
        }
    }
    Ok(())
}

/// `refract new --lang rust --kind reactor`: a reactor project outside the repository
/// whose native tests (`TestReactor`) pass, whose manifest's build command makes a
/// component the real engine loads as a reactor, and which reacts there (emits and a
/// fired timer). `refract test` and `refract dev` refuse the project, and `refract test
/// --plugin` the component, naming the manifest (or the component) and the way to run
/// it.
#[test]
fn a_new_rust_reactor_passes_its_tests_builds_and_reacts_on_a_real_engine() -> Result {
    let dir = scratch_root().join("reactor").join("demo-saga");
    let new = refract(
        scratch_root(),
        &[
            "new",
            "demo-saga",
            "--lang",
            "rust",
            "--kind",
            "reactor",
            "--dir",
        ],
    )
    .arg(&dir)
    .output()?;
    let out = text(&new);
    assert!(new.status.success(), "{out}");
    assert!(
        out.contains("created the rust reactor `demo-saga`"),
        "{out}"
    );
    assert!(
        out.contains("refract deploy target/wasm32-wasip2/release/demo_saga.wasm"),
        "{out}"
    );

    for (command, code) in [("test", 3), ("dev", 1)] {
        let refused = refract(&dir, &[command]).output()?;
        let out = text(&refused);
        assert_eq!(refused.status.code(), Some(code), "{command}: {out}");
        assert!(
            out.contains("projector.toml says `kind = \"reactor\"`")
                && out.contains(&format!("`refract {command}` runs projectors only"))
                && out.contains("refract deploy"),
            "{command}: {out}"
        );
    }
    assert!(
        !dir.join(refract::devkit::dev::DEFAULT_DEV_DIR).exists(),
        "a refused `refract dev` starts no host"
    );

    let native = Command::new("cargo")
        .args(["test", "--quiet"])
        .current_dir(&dir)
        .output()?;
    let out = text(&native);
    assert!(native.status.success(), "cargo test in the scaffold: {out}");
    assert!(out.contains("1 passed"), "{out}");

    let manifest = refract::devkit::manifest::Manifest::load(&dir)?;
    let built = refract::devkit::builder::build(&manifest)?;

    // A golden fixture cannot check a reactor: the component itself is refused too.
    std::fs::create_dir_all(dir.join("fixtures"))?;
    let fixture = write_fixture(
        &dir.join("fixtures"),
        "users",
        &[
            json!({"stream": "user-ann", "type": "user.registered", "data": {"user": "ann", "email": "a@b"}}),
        ],
        &json!([{"sql": "SELECT count(*) FROM users", "rows": [[1]]}]),
    )?;
    let refused = refract(&scratch_root().join("reactor"), &["test", "--plugin"])
        .arg(&built.component)
        .arg(&fixture)
        .output()?;
    let out = text(&refused);
    assert_eq!(refused.status.code(), Some(3), "{out}");
    assert!(
        out.contains("is a reactor (it exports `reactor-info`)"),
        "{out}"
    );

    let engine_dir = tempfile::tempdir()?;
    support::saga::assert_scaffolded_reactor(engine_dir.path(), "demo-saga", &built.component, None)
}

/// The dev host's HTTP API, from its startup lines.
struct Api {
    url: String,
    token: String,
}

impl Api {
    fn of(dev: &mut RunningHost, project: &Path) -> Result<Api> {
        let line = dev.wait_for_line(BUILD_TIMEOUT, "dev: http api on http://");
        let url = line
            .split("http api on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .ok_or("no address")?
            .to_owned();
        let token = std::fs::read_to_string(project.join(".refract-dev/token"))?
            .trim()
            .to_owned();
        Ok(Api { url, token })
    }

    /// The read model's rows for `sql`, through the API.
    fn rows(&self, sql: &str) -> Result<Value> {
        let mut response = ureq::post(&format!("{}/v1/projectors/demo-rust/query", self.url))
            .header("Authorization", &format!("Bearer {}", self.token))
            .header("Content-Type", "application/json")
            .send(json!({ "sql": sql }).to_string())?;
        let body: Value = serde_json::from_str(&response.body_mut().read_to_string()?)?;
        Ok(body["rows"].clone())
    }
}

const APPLES: &str = "SELECT stream, item, quantity FROM items ORDER BY stream, item";

#[test]
fn dev_rebuilds_shows_the_diff_swaps_and_survives_a_broken_edit() -> Result {
    let dir = copy_of_project("dev")?;
    let mut command = refract(&dir, &["dev", ".", "--bind", "127.0.0.1:0"]);
    command.env("NO_COLOR", "1");
    let mut dev = RunningHost::spawn(command)?;
    let api = Api::of(&mut dev, &dir)?;
    dev.wait_for_line(BUILD_TIMEOUT, "dev: seeded the log with 5 events from");
    let first = dev.wait_for_line(BUILD_TIMEOUT, "swap: version ");
    let first_version = first
        .split_whitespace()
        .nth(2)
        .ok_or("no version")?
        .to_owned();
    assert_eq!(
        api.rows(APPLES)?,
        json!([
            ["cart-1", "apple", 2],
            ["cart-1", "pear", 1],
            ["cart-2", "apple", 5]
        ])
    );

    // An edit: removals now count double.
    let source = dir.join("src/lib.rs");
    let code = std::fs::read_to_string(&source)?;
    let doubled = code.replace(
        "\"item.removed\" => -change.quantity,",
        "\"item.removed\" => -2 * change.quantity,",
    );
    assert_ne!(
        code, doubled,
        "the template's handler changed; update this test"
    );
    std::fs::write(&source, &doubled)?;
    dev.wait_for_line(BUILD_TIMEOUT, "change: src/lib.rs");
    let deploy = dev.wait_for_line(BUILD_TIMEOUT, "as a shadow");
    assert!(deploy.starts_with("deploy: built in "), "{deploy}");
    let diff = dev.wait_for_line(BUILD_TIMEOUT, "diff: active ");
    assert!(
        diff.contains(&format!("diff: active {first_version} → shadow ")),
        "{diff}"
    );
    assert!(diff.ends_with("1 of 1 tables differ"), "{diff}");
    dev.wait_for_line(BUILD_TIMEOUT, "  items: 3 → 3 rows, checksum ");
    dev.wait_for_line(BUILD_TIMEOUT, "    - ('cart-1', 'apple', 2)");
    dev.wait_for_line(BUILD_TIMEOUT, "    + ('cart-1', 'apple', 1)");
    let swapped = dev.wait_for_line_where(BUILD_TIMEOUT, "a second swap", |line| {
        line.starts_with("swap: version ") && !line.contains(&first_version)
    });
    let second_version = swapped
        .split_whitespace()
        .nth(2)
        .ok_or("no version")?
        .to_owned();
    assert_eq!(
        api.rows(APPLES)?,
        json!([
            ["cart-1", "apple", 1],
            ["cart-1", "pear", 1],
            ["cart-2", "apple", 5]
        ]),
        "the new read model serves"
    );

    // A broken edit: the compiler's error is shown and the new version keeps serving.
    std::fs::write(&source, doubled.replace("fn handle(", "fn handle(,"))?;
    let failed = dev.wait_for_line(BUILD_TIMEOUT, "build failed; ");
    assert!(
        failed.contains(&format!("version {second_version} keeps serving")),
        "{failed}"
    );
    dev.wait_for_line_where(BUILD_TIMEOUT, "the compiler's error", |line| {
        line.trim_start().starts_with("error") && !line.starts_with("error:")
    });
    assert_eq!(
        api.rows(APPLES)?,
        json!([
            ["cart-1", "apple", 1],
            ["cart-1", "pear", 1],
            ["cart-2", "apple", 5]
        ]),
        "the running version still serves"
    );
    let lines = dev.lines();
    assert!(
        !lines.iter().any(|line| line.contains(" INFO ")),
        "one line per state change, not a log:\n{}",
        lines.join("\n")
    );
    let status = dev.terminate(Duration::from_secs(60));
    assert!(status.success(), "{status}");
    Ok(())
}
