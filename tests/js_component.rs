//! What the public JavaScript toolchain produces loads: a projector built by
//! componentize-js with its default features, which import `wasi:http`, is accepted
//! (the host links `wasi:http` with every request denied) and builds its read model.
//! The build needs Node.js and npm; without them these tests fail, naming the install.

mod support;

use std::process::Command;

use refract::runtime::{DbOptions, EventBatch, Runtime, RuntimeConfig, SandboxLimits};
use support::js::default_js_component;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// A 12 MB JavaScript engine compiles in 15–30 s of CPU; on a shared, loaded CI machine
/// the wall time can be several times that. The deadline here is for liveness only.
const COMPILE_TIMEOUT_MS: u64 = 900_000;

/// The component's top-level imports, read with wasmparser.
fn imports(wasm: &[u8]) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        if let wasmparser::Payload::ComponentImportSection(reader) = payload? {
            for import in reader {
                names.push(import?.name.name.to_owned());
            }
        }
    }
    Ok(names)
}

#[test]
fn a_default_componentize_js_build_loads_and_projects() -> Result {
    let wasm = std::fs::read(default_js_component())?;
    let imports = imports(&wasm)?;
    assert!(
        imports
            .iter()
            .any(|name| name.starts_with("wasi:http/outgoing-handler@0.2.")),
        "a default build imports wasi:http: {imports:?}"
    );

    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: None,
        limits: SandboxLimits {
            compile_timeout_ms: COMPILE_TIMEOUT_MS,
            ..SandboxLimits::default()
        },
    })?;
    let loaded = runtime.load(&wasm)?;
    assert_eq!(loaded.info().name, "js-default");
    let dir = tempfile::tempdir()?;
    let mut instance = loaded.instantiate(&dir.path().join("js.db"), DbOptions::live())?;
    instance.init(|_| Ok(()))?;
    let mut batch = EventBatch::new();
    for offset in 1..=3 {
        batch.push(
            offset,
            &format!("e-{offset}"),
            "s-1",
            offset,
            "thing.happened",
            "{}",
            None,
            0,
        );
    }
    instance.apply(&batch, |_| Ok(()))?;
    let rows: (i64, i64) = instance.host_connection().query_row(
        "SELECT first_offset, events FROM batches",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    assert_eq!(rows, (1, 3));
    Ok(())
}

#[test]
fn the_compile_memory_cap_holds_in_the_refract_binary() -> Result {
    // The `refract` binary compiles in a child process whose heap is capped; a 12 MB
    // JavaScript engine does not compile in 64 MiB, and the error names the key.
    let component = default_js_component();
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("refract.toml"),
        format!(
            "[limits]\ncompile_timeout_ms = {COMPILE_TIMEOUT_MS}\nmax_compile_memory_bytes = 67108864\n"
        ),
    )?;
    std::fs::write(
        dir.path().join("one.jsonl"),
        "{\"stream\":\"s\",\"type\":\"t\",\"data\":{}}\n",
    )?;
    std::fs::write(
        dir.path().join("one.expect.json"),
        "[{\"sql\": \"SELECT events FROM batches\", \"rows\": [[1]]}]",
    )?;
    let output = Command::new(env!("CARGO_BIN_EXE_refract"))
        .current_dir(dir.path())
        .env_remove("REFRACT_CONFIG")
        .args(["test", "--plugin"])
        .arg(&component)
        .arg("one.jsonl")
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("`limits.max_compile_memory_bytes`"),
        "{stderr}"
    );

    // With the default cap it compiles, and the fixture passes through the binary.
    std::fs::write(
        dir.path().join("refract.toml"),
        format!("[limits]\ncompile_timeout_ms = {COMPILE_TIMEOUT_MS}\n"),
    )?;
    let output = Command::new(env!("CARGO_BIN_EXE_refract"))
        .current_dir(dir.path())
        .env_remove("REFRACT_CONFIG")
        .args(["test", "--plugin"])
        .arg(&component)
        .arg("one.jsonl")
        .output()?;
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}
