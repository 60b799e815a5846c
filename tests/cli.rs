//! The `refract` binary, run as a real process: `append` and `events`, their filters, and
//! how bad input is reported.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// A temporary data directory and a way to run `refract` against it.
struct Refract {
    dir: tempfile::TempDir,
}

impl Refract {
    fn new() -> Result<Refract> {
        Ok(Refract {
            dir: tempfile::tempdir()?,
        })
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `refract --data-dir <tmp>/data <args>`, not influenced by the caller's environment.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = bare_command(args);
        command.arg("--data-dir").arg(self.data_dir());
        command
    }

    fn run(&self, args: &[&str]) -> Result<Output> {
        Ok(self.command(args).output()?)
    }

    fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Result<Output> {
        run_with_stdin(self.command(args), stdin)
    }

    /// Runs a command that must succeed and returns its stdout.
    fn ok(&self, args: &[&str]) -> Result<String> {
        let output = self.run(args)?;
        assert_success(&output, args);
        Ok(String::from_utf8(output.stdout)?)
    }

    /// `refract events` with `args`, parsed.
    fn events(&self, args: &[&str]) -> Result<Vec<Value>> {
        let mut all = vec!["events"];
        all.extend_from_slice(args);
        let stdout = self.ok(&all)?;
        Ok(stdout
            .lines()
            .map(serde_json::from_str)
            .collect::<std::result::Result<_, _>>()?)
    }

    fn count(&self, args: &[&str]) -> Result<u64> {
        let mut all = vec!["events", "--count"];
        all.extend_from_slice(args);
        Ok(self.ok(&all)?.trim().parse()?)
    }

    fn write_file(&self, name: &str, contents: &str) -> Result<PathBuf> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents)?;
        Ok(path)
    }
}

fn bare_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_refract"));
    command.args(args).env_remove("REFRACT_DATA");
    command
}

fn run_with_stdin(mut command: Command, stdin: &str) -> Result<Output> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut input = child.stdin.take().ok_or("stdin")?;
    input.write_all(stdin.as_bytes())?;
    drop(input);
    Ok(child.wait_with_output()?)
}

fn assert_success(output: &Output, args: &[&str]) {
    assert!(
        output.status.success(),
        "refract {args:?} failed: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Asserts a failure with `code` and one `error: ` line on stderr containing `needle`;
/// returns stderr.
fn assert_failure(output: &Output, code: i32, needle: &str) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(code), "stderr: {stderr}");
    assert!(
        stderr.contains(needle),
        "stderr should mention {needle:?}: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "no panics: {stderr}");
    if code == 1 {
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    }
    stderr
}

#[test]
fn append_then_events_round_trips_every_field() -> Result {
    let refract = Refract::new()?;
    let out = refract.ok(&[
        "append",
        "--stream",
        "order-1",
        "--type",
        "OrderPlaced",
        "--data",
        r#"{"total": 42, "items": ["a"]}"#,
        "--metadata",
        r#"{"correlation_id":"c-1"}"#,
        "--id",
        "evt-1",
    ])?;
    assert_eq!(out, "1\n");
    let out = refract.ok(&[
        "append",
        "--stream",
        "order-1",
        "--type",
        "OrderPaid",
        "--data",
        "{}",
    ])?;
    assert_eq!(out, "2\n");
    // The same id again: no-op, original offset.
    let out = refract.ok(&[
        "append", "--stream", "order-1", "--type", "X", "--data", "{}", "--id", "evt-1",
    ])?;
    assert_eq!(out, "1\n");

    // JSON that starts with a hyphen is a value, not a flag.
    let out = refract.ok(&["append", "--stream", "n", "--type", "T", "--data", "-5"])?;
    assert_eq!(out, "3\n");
    assert_eq!(refract.events(&["--stream", "n"])?[0]["data"], -5);

    let events = refract.events(&["--stream", "order-1"])?;
    assert_eq!(events.len(), 2);
    let first = &events[0];
    assert_eq!(first["offset"], 1);
    assert_eq!(first["id"], "evt-1");
    assert_eq!(first["stream"], "order-1");
    assert_eq!(first["stream_version"], 1);
    assert_eq!(first["type"], "OrderPlaced");
    assert_eq!(
        first["data"],
        serde_json::json!({"total": 42, "items": ["a"]})
    );
    assert_eq!(
        first["metadata"],
        serde_json::json!({"correlation_id": "c-1"})
    );
    let recorded_at = first["recorded_at"].as_str().ok_or("recorded_at")?;
    recorded_at.parse::<jiff::Timestamp>()?;
    assert!(recorded_at.ends_with('Z'));
    assert_eq!(events[1]["stream_version"], 2);
    assert!(events[1]["metadata"].is_null());
    assert!(refract.data_dir().join("events.db").is_file());
    Ok(())
}

#[test]
fn append_file_is_one_batch_and_prints_one_offset_per_line() -> Result {
    let refract = Refract::new()?;
    let file = refract.write_file(
        "events.jsonl",
        concat!(
            r#"{"stream":"a","type":"T","data":{"n":1}}"#,
            "\n\n   \n",
            r#"{"stream":"b","type":"U","data":[1,2],"metadata":{"m":true},"id":"b-1"}"#,
            "\n",
            r#"{"stream":"a","type":"T","data":null,"expected_version":1}"#,
            "\n",
            r#"{"stream":"b","type":"U","data":[1,2],"id":"b-1"}"#,
        ),
    )?;
    let out = refract.ok(&["append", "--file", file.to_str().ok_or("path")?])?;
    assert_eq!(out, "1\n2\n3\n2\n");
    let events = refract.events(&[])?;
    assert_eq!(events.len(), 3);
    assert_eq!(events[1]["metadata"], serde_json::json!({"m": true}));
    assert_eq!(events[2]["stream_version"], 2);
    assert!(events[2]["data"].is_null());
    Ok(())
}

#[test]
fn append_file_from_stdin() -> Result {
    let refract = Refract::new()?;
    let input = (1..=5)
        .map(|i| format!(r#"{{"stream":"s","type":"T","data":{i}}}"#))
        .collect::<Vec<_>>()
        .join("\n");
    let output = refract.run_with_stdin(&["append", "--file", "-"], &input)?;
    assert_success(&output, &["append", "--file", "-"]);
    assert_eq!(String::from_utf8(output.stdout)?, "1\n2\n3\n4\n5\n");
    assert_eq!(refract.count(&[])?, 5);
    Ok(())
}

#[test]
fn a_bad_line_aborts_the_whole_file_and_names_the_line() -> Result {
    let refract = Refract::new()?;
    refract.ok(&["append", "--stream", "s", "--type", "T", "--data", "0"])?;
    let good = r#"{"stream":"s","type":"T","data":{}}"#;
    let cases = [
        (r#"{"stream":"s","type":"T","data":{oops}}"#, "line 3"),
        (r#"{"stream":"s","type":"T"}"#, "missing field `data`"),
        (
            r#"{"stream":"s","type":"T","data":1,"colour":"red"}"#,
            "unknown field `colour`",
        ),
        (
            r#"{"stream":"","type":"T","data":1}"#,
            "stream must not be empty",
        ),
        ("not json at all", "line 3"),
    ];
    for (bad, needle) in cases {
        let contents = format!("{good}\n\n{bad}\n{good}\n");
        let file = refract.write_file("bad.jsonl", &contents)?;
        let output = refract.run(&["append", "--file", file.to_str().ok_or("path")?])?;
        let stderr = assert_failure(&output, 1, needle);
        assert!(
            stderr.contains("line 3"),
            "the line number is named: {stderr}"
        );
        assert!(output.stdout.is_empty());
        assert_eq!(refract.count(&[])?, 1, "nothing of {bad:?} was appended");
    }
    // Same through stdin.
    let output = refract.run_with_stdin(&["append", "--file", "-"], &format!("{good}\n{{\n"))?;
    let stderr = assert_failure(&output, 1, "stdin line 2");
    assert!(!stderr.contains("panicked"));
    assert_eq!(refract.count(&[])?, 1);

    let output = refract.run(&["append", "--file", "/definitely/not/here.jsonl"])?;
    assert_failure(&output, 1, "/definitely/not/here.jsonl");
    Ok(())
}

#[test]
fn bad_events_get_one_clear_sentence_and_exit_1() -> Result {
    let refract = Refract::new()?;
    let output = refract.run(&[
        "append",
        "--stream",
        "s",
        "--type",
        "T",
        "--data",
        "{not json",
    ])?;
    assert_failure(&output, 1, "data is not valid JSON");
    let output = refract.run(&["append", "--stream", "", "--type", "T", "--data", "{}"])?;
    assert_failure(&output, 1, "stream must not be empty");
    let output = refract.run(&["append", "--stream", "s", "--type", "", "--data", "{}"])?;
    assert_failure(&output, 1, "type must not be empty");
    let output = refract.run(&[
        "append",
        "--stream",
        "s",
        "--type",
        "T",
        "--data",
        "{}",
        "--metadata",
        "[1,",
    ])?;
    assert_failure(&output, 1, "metadata is not valid JSON");

    let big = format!(
        r#"{{"stream":"s","type":"T","data":"{}"}}"#,
        "x".repeat(1024 * 1024 + 10)
    );
    let output = refract.run_with_stdin(&["append", "--file", "-"], &big)?;
    assert_failure(&output, 1, "the limit is 1048576 bytes");

    refract.ok(&[
        "append",
        "--stream",
        "acct",
        "--type",
        "Opened",
        "--data",
        "{}",
        "--expected-version",
        "0",
    ])?;
    let output = refract.run(&[
        "append",
        "--stream",
        "acct",
        "--type",
        "Opened",
        "--data",
        "{}",
        "--expected-version",
        "0",
    ])?;
    assert_failure(
        &output,
        1,
        "version conflict on stream `acct`: expected version 0, but it is at 1",
    );
    assert_eq!(refract.count(&[])?, 1);
    Ok(())
}

#[test]
fn usage_errors_exit_2() -> Result {
    let refract = Refract::new()?;
    assert_failure(
        &refract.run(&[
            "append", "--stream", "s", "--type", "T", "--data", "1", "--colour",
        ])?,
        2,
        "--colour",
    );
    assert_failure(
        &refract.run(&["append", "--stream", "s", "--type", "T"])?,
        2,
        "--data",
    );
    assert_failure(
        &refract.run(&["append", "--file", "x", "--stream", "s"])?,
        2,
        "cannot be used with",
    );
    assert_failure(
        &refract.run(&["events", "--stream", "a", "--stream-prefix", "b"])?,
        2,
        "cannot be used with",
    );
    assert_failure(
        &refract.run(&["events", "--from-time", "yesterday"])?,
        2,
        "--from-time",
    );
    assert_failure(
        &refract.run(&["events", "--from-offset", "abc"])?,
        2,
        "--from-offset",
    );
    assert_failure(&refract.run(&["frobnicate"])?, 2, "frobnicate");
    Ok(())
}

#[test]
fn events_filters_and_count() -> Result {
    let refract = Refract::new()?;
    let lines: Vec<String> = (1..=12)
        .map(|i| {
            let stream = ["order-1", "order-2", "user-1"][i % 3];
            let ty = if i % 2 == 0 { "Even" } else { "Odd" };
            format!(r#"{{"stream":"{stream}","type":"{ty}","data":{{"i":{i}}}}}"#)
        })
        .collect();
    let file = refract.write_file("events.jsonl", &lines.join("\n"))?;
    refract.ok(&["append", "--file", file.to_str().ok_or("path")?])?;
    let offsets = |args: &[&str]| -> Result<Vec<u64>> {
        Ok(refract
            .events(args)?
            .iter()
            .map(|e| e["offset"].as_u64().unwrap_or(0))
            .collect())
    };

    assert_eq!(offsets(&["--from-offset", "10"])?, vec![10, 11, 12]);
    assert_eq!(
        offsets(&["--from-offset", "3", "--to-offset", "5"])?,
        vec![3, 4, 5]
    );
    assert_eq!(offsets(&["--type", "Even", "--limit", "3"])?, vec![2, 4, 6]);
    assert_eq!(
        offsets(&["--type", "Even", "--type", "Odd", "--limit", "2"])?,
        vec![1, 2]
    );
    assert_eq!(offsets(&["--stream", "user-1"])?, vec![2, 5, 8, 11]);
    assert_eq!(
        offsets(&["--stream-prefix", "order-", "--type", "Odd"])?,
        vec![1, 3, 7, 9]
    );
    assert_eq!(
        offsets(&["--stream-prefix", "user", "--stream-prefix", "order-2"])?,
        vec![1, 2, 4, 5, 7, 8, 10, 11]
    );
    assert_eq!(refract.count(&[])?, 12);
    assert_eq!(refract.count(&["--type", "Even"])?, 6);
    assert_eq!(refract.count(&["--stream-prefix", "order"])?, 8);
    assert_eq!(refract.count(&["--stream", "order-1", "--limit", "2"])?, 2);

    // Time: everything was recorded in one batch, so one instant.
    let at = refract.events(&["--limit", "1"])?[0]["recorded_at"]
        .as_str()
        .ok_or("time")?
        .to_owned();
    assert_eq!(refract.count(&["--from-time", &at])?, 12);
    assert_eq!(
        refract.count(&["--until-time", &at])?,
        0,
        "until is exclusive"
    );
    assert_eq!(
        refract.count(&[
            "--from-time",
            "2000-01-01T00:00:00Z",
            "--until-time",
            "2999-01-01T00:00:00+02:00"
        ])?,
        12
    );
    assert_eq!(refract.count(&["--from-time", "2999-01-01T00:00:00Z"])?, 0);
    Ok(())
}

#[test]
fn the_data_dir_comes_from_refract_data_unless_given() -> Result {
    let dir = tempfile::tempdir()?;
    let from_env = dir.path().join("from-env");
    let output = bare_command(&["append", "--stream", "s", "--type", "T", "--data", "1"])
        .env("REFRACT_DATA", &from_env)
        .output()?;
    assert_success(&output, &["append"]);
    assert!(from_env.join("events.db").is_file());
    let output = bare_command(&["events", "--count"])
        .env("REFRACT_DATA", &from_env)
        .output()?;
    assert_eq!(String::from_utf8(output.stdout)?, "1\n");
    // The flag wins over the environment.
    let flag = dir.path().join("flag");
    let output = bare_command(&["events", "--count", "--data-dir"])
        .arg(&flag)
        .env("REFRACT_DATA", &from_env)
        .output()?;
    assert_eq!(String::from_utf8(output.stdout)?, "0\n");
    // Neither: ./refract-data.
    let output = bare_command(&["append", "--stream", "s", "--type", "T", "--data", "1"])
        .current_dir(dir.path())
        .output()?;
    assert_success(&output, &["append"]);
    assert!(dir.path().join("refract-data/events.db").is_file());
    Ok(())
}

#[test]
fn unusable_data_dirs_and_foreign_files_are_reported() -> Result {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("a-file");
    std::fs::write(&file, "hello")?;
    let output = bare_command(&["events", "--data-dir"])
        .arg(&file)
        .output()?;
    assert_failure(&output, 1, "cannot use the data directory");

    let not_sqlite = dir.path().join("not-sqlite");
    std::fs::create_dir(&not_sqlite)?;
    std::fs::write(
        not_sqlite.join("events.db"),
        "definitely not SQLite, but long enough",
    )?;
    let output = bare_command(&["events", "--data-dir"])
        .arg(&not_sqlite)
        .output()?;
    assert_failure(&output, 1, "is not an SQLite database");

    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign)?;
    rusqlite::Connection::open(foreign.join("events.db"))?.execute_batch("CREATE TABLE t (x)")?;
    let output = bare_command(&[
        "append",
        "--stream",
        "s",
        "--type",
        "T",
        "--data",
        "1",
        "--data-dir",
    ])
    .arg(&foreign)
    .output()?;
    assert_failure(&output, 1, "not a Refract event log");

    let newer = dir.path().join("newer");
    let output = bare_command(&[
        "append",
        "--stream",
        "s",
        "--type",
        "T",
        "--data",
        "1",
        "--data-dir",
    ])
    .arg(&newer)
    .output()?;
    assert_success(&output, &["append"]);
    rusqlite::Connection::open(newer.join("events.db"))?.pragma_update(None, "user_version", 9)?;
    let output = bare_command(&["events", "--data-dir"])
        .arg(&newer)
        .output()?;
    assert_failure(&output, 1, "newer Refract (schema 9");
    Ok(())
}

#[test]
fn a_closed_stdout_ends_events_quietly() -> Result {
    let refract = Refract::new()?;
    let input: String = (0..3000)
        .map(|i| format!(r#"{{"stream":"s","type":"T","data":{{"padding":"{i:0>60}"}}}}"#) + "\n")
        .collect();
    assert_success(
        &refract.run_with_stdin(&["append", "--file", "-"], &input)?,
        &["append"],
    );
    let mut child = refract
        .command(&["events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("stdout")?;
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first)?; // and drop the pipe, like `| head -1`
    let output = child.wait_with_output()?;
    assert!(first.contains(r#""offset":1"#), "{first}");
    assert!(
        output.status.success(),
        "{:?} {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

#[test]
fn separate_processes_appending_at_once_stay_gap_free() -> Result {
    let refract = Refract::new()?;
    refract.ok(&["append", "--stream", "init", "--type", "T", "--data", "0"])?;
    let children = (0..4)
        .map(|p| {
            let input: String = (0..50)
                .map(|i| format!(r#"{{"stream":"p{p}","type":"T","data":{i}}}"#) + "\n")
                .collect();
            let path = refract.write_file(&format!("p{p}.jsonl"), &input)?;
            Ok(refract
                .command(&["append", "--file", path.to_str().ok_or("path")?])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?)
        })
        .collect::<Result<Vec<_>>>()?;
    for child in children {
        let output = child.wait_with_output()?;
        assert_success(&output, &["append"]);
    }
    let events = refract.events(&[])?;
    let offsets: Vec<u64> = events.iter().filter_map(|e| e["offset"].as_u64()).collect();
    assert_eq!(offsets, (1..=201).collect::<Vec<_>>());
    for p in 0..4 {
        let versions: Vec<u64> = events
            .iter()
            .filter(|e| e["stream"] == format!("p{p}"))
            .filter_map(|e| e["stream_version"].as_u64())
            .collect();
        assert_eq!(versions, (1..=50).collect::<Vec<_>>());
    }
    Ok(())
}

#[test]
fn help_lists_the_commands() -> Result {
    let output = bare_command(&["--help"]).output()?;
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout)?;
    for needle in ["append", "events", "--data-dir", "REFRACT_DATA"] {
        assert!(help.contains(needle), "{needle}: {help}");
    }
    Ok(())
}
