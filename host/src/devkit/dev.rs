//! `refract dev`: the local loop. Rebuild on save, deploy the build as a shadow, show
//! its replay, **show what it changes in the read model**, then swap.
//!
//! Like `spin watch` and `wash dev`, a save triggers a debounced rebuild with the
//! project's own build command, and a failed build keeps the running version serving
//! and shows the compiler's message. Unlike them, a new version never goes live
//! unseen: it replays the whole log into a shadow read model while the active version
//! keeps serving, and the loop prints the difference, table by table (row counts,
//! checksums, sample rows that only one side has), before it swaps. With `manual`, the
//! swap waits for Enter, or for `refract promote`.
//!
//! The loop drives the engine only through its public API ([`Engine::deploy_as`],
//! [`Engine::projector`], [`Engine::promote`]), with the projector's promote mode set to
//! manual so that the engine never swaps before the diff is shown. It prints one line
//! per state change, through a callback, so the command line and tests see the same.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant, SystemTime};

use crate::data_dir::DataDir;
use crate::engine::control::{Control, Role};
use crate::engine::diff::{TableDiff, compare};
use crate::engine::{DeployOutcome, Engine, State};

use super::builder::{self, BuildError};
use super::manifest::Manifest;

/// The dev host's data folder inside the project, when none is named.
pub const DEFAULT_DEV_DIR: &str = ".refract-dev";

/// Quiet time after the last change to a watched file before the rebuild starts, so an
/// editor's save (often several writes) or a `git checkout` builds once.
pub const DEV_DEBOUNCE: Duration = Duration::from_millis(300);

/// How often the loop looks at the shadow when nothing else happens.
pub const DEV_POLL: Duration = Duration::from_millis(50);

/// The least time between two replay-progress lines.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Sample rows shown per table and side in a diff.
pub const DIFF_SAMPLE_ROWS: usize = 3;

/// What the loop reacts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevEvent {
    /// Watched files changed (debounced).
    Changed(Vec<PathBuf>),
    /// Enter was pressed: swap a waiting shadow (with `manual`).
    Enter,
    /// Stop the loop.
    Stop,
}

/// The version being brought in.
#[derive(Debug)]
struct Pending {
    version: String,
    started: Instant,
    last_progress: Option<Instant>,
    /// The diff was shown and, with `manual`, the swap waits for Enter.
    ready: bool,
    /// Last reported stall, so it is said once.
    stalled_at: Option<u64>,
    /// A host fault (full disk, busy database) was reported and not yet cleared.
    retrying: bool,
}

/// The loop over one project.
pub struct DevLoop<'a> {
    engine: &'a Engine,
    data: DataDir,
    manifest: Manifest,
    manual: bool,
    /// How an operator promotes from another terminal.
    promote_command: String,
    say: &'a mut dyn FnMut(&str),
    pending: Option<Pending>,
    /// The watched files as last built: a change event that leaves them as they were
    /// (a build reading `Cargo.toml`, an editor touching a file) starts no build.
    built_from: Sources,
}

/// Size and modification time of every file under the watched paths.
type Sources = BTreeMap<PathBuf, (u64, Option<SystemTime>)>;

/// Reads [`Sources`] for `paths`, folders recursively.
fn sources(paths: &[PathBuf]) -> Sources {
    fn walk(path: &Path, into: &mut Sources) {
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(path) {
                for entry in entries.flatten() {
                    walk(&entry.path(), into);
                }
            }
        } else {
            into.insert(path.to_owned(), (meta.len(), meta.modified().ok()));
        }
    }
    let mut found = Sources::new();
    for path in paths {
        walk(path, &mut found);
    }
    found
}

impl<'a> DevLoop<'a> {
    /// A loop that deploys `manifest`'s builds into `engine` (running on `data`), and
    /// reports through `say`, one line per state change (a line may carry an indented
    /// block below it: a compiler's error, a diff).
    pub fn new(
        engine: &'a Engine,
        data: DataDir,
        manifest: Manifest,
        manual: bool,
        promote_command: String,
        say: &'a mut dyn FnMut(&str),
    ) -> Self {
        Self {
            engine,
            data,
            manifest,
            manual,
            promote_command,
            say,
            pending: None,
            built_from: Sources::new(),
        }
    }

    /// Builds and deploys once, then reacts to `events` until [`DevEvent::Stop`] or until
    /// every sender is gone.
    pub fn run(&mut self, events: &Receiver<DevEvent>) {
        self.rebuild();
        // Events read ahead while coalescing changes, to be handled next.
        let mut queued = VecDeque::new();
        loop {
            let event = match queued.pop_front() {
                Some(event) => Ok(event),
                None => events.recv_timeout(DEV_POLL),
            };
            match event {
                Ok(DevEvent::Changed(_)) => {
                    // Changes that queued up during a build need only one more build.
                    while let Ok(next) = events.try_recv() {
                        if !matches!(next, DevEvent::Changed(_)) {
                            queued.push_back(next);
                        }
                    }
                    self.changed();
                }
                Ok(DevEvent::Enter) => self.promote_if_ready(),
                Ok(DevEvent::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            self.follow();
        }
    }

    /// Rebuilds if the watched files differ from the last build's. What changed is read
    /// from the files, not from the events: an editor that saves through a temporary
    /// file reports the temporary's name, and a build that only reads a watched file
    /// (cargo and `Cargo.toml`) reports an access.
    fn changed(&mut self) {
        let now = sources(&self.manifest.watch);
        if now == self.built_from {
            return;
        }
        let edited: Vec<PathBuf> = now
            .keys()
            .chain(self.built_from.keys())
            .filter(|path| now.get(*path) != self.built_from.get(*path))
            .cloned()
            .collect();
        self.say(&format!("change: {}", self.describe_changes(&edited)));
        self.rebuild();
    }

    fn say(&mut self, line: &str) {
        (self.say)(line);
    }

    fn name(&self) -> &str {
        &self.manifest.name
    }

    fn active_version(&self) -> Option<String> {
        self.engine
            .projector(self.name())
            .and_then(|view| view.active_version)
    }

    /// What keeps serving while a build or deploy fails.
    fn serving(&self) -> String {
        match self.active_version() {
            Some(version) => format!("version {version} keeps serving"),
            None => "nothing is serving yet".to_owned(),
        }
    }

    fn describe_changes(&self, paths: &[PathBuf]) -> String {
        let mut names: Vec<String> = paths
            .iter()
            .map(|path| {
                path.strip_prefix(&self.manifest.root)
                    .unwrap_or(path)
                    .display()
                    .to_string()
            })
            .collect();
        names.sort();
        names.dedup();
        if names.is_empty() {
            return "the watched files".to_owned();
        }
        let shown = names.len().min(3);
        let mut text = names[..shown].join(", ");
        if names.len() > shown {
            text.push_str(&format!(" and {} more", names.len() - shown));
        }
        text
    }

    /// Runs the build; on success deploys the component as a shadow.
    fn rebuild(&mut self) {
        self.built_from = sources(&self.manifest.watch);
        self.say(&format!("build: {}", self.manifest.build.join(" ")));
        let built = match builder::build(&self.manifest) {
            Ok(built) => built,
            Err(error) => {
                let serving = self.serving();
                let detail = match &error {
                    BuildError::Failed { output, .. } => indent(output),
                    other => indent(&other.to_string()),
                };
                self.say(&format!("build failed; {serving}:\n{detail}"));
                return;
            }
        };
        let wasm = match std::fs::read(&built.component) {
            Ok(wasm) => wasm,
            Err(error) => {
                let serving = self.serving();
                self.say(&format!(
                    "build failed; {serving}: cannot read {}: {error}",
                    built.component.display()
                ));
                return;
            }
        };
        let active = self.active_version();
        match self.engine.deploy_as(&self.manifest.name, &wasm) {
            Ok(deployment) => match deployment.outcome {
                DeployOutcome::Started => {
                    let head = self.engine.log().head().unwrap_or(0);
                    let role = if active.is_some() {
                        "as a shadow"
                    } else {
                        "(the first version)"
                    };
                    self.say(&format!(
                        "deploy: built in {:.1} s; version {} replaying {head} events {role}",
                        built.took.as_secs_f64(),
                        deployment.version
                    ));
                    self.pending = Some(Pending {
                        version: deployment.version,
                        started: Instant::now(),
                        last_progress: None,
                        ready: false,
                        stalled_at: None,
                        retrying: false,
                    });
                }
                DeployOutcome::AlreadyActive => {
                    self.say(&format!(
                        "deploy: unchanged build; version {} is already active",
                        deployment.version
                    ));
                    // The first version still being brought in is reported by
                    // `follow`; a shadow of other code is dropped, since the sources
                    // are back to what is active.
                    if let Some(pending) = self
                        .pending
                        .take_if(|pending| pending.version != deployment.version)
                    {
                        match self.engine.abort(&self.manifest.name) {
                            Ok(_) => self.say(&format!(
                                "deploy: shadow {} dropped; the sources build the active version again",
                                pending.version
                            )),
                            Err(error) => self.say(&format!(
                                "deploy: cannot drop shadow {}: {error}",
                                pending.version
                            )),
                        }
                    }
                }
                DeployOutcome::AlreadyDeploying => self.say(&format!(
                    "deploy: unchanged build; version {} is already replaying",
                    deployment.version
                )),
            },
            Err(error) => {
                let serving = self.serving();
                self.say(&format!("deploy refused; {serving}: {error}"));
            }
        }
    }

    /// Follows the pending version: progress, diff, swap or failure.
    fn follow(&mut self) {
        let Some(pending) = &self.pending else {
            return;
        };
        let version = pending.version.clone();
        let Some(view) = self.engine.projector(self.name()) else {
            return;
        };
        let Some(entry) = view.versions.iter().find(|entry| entry.version == version) else {
            return;
        };
        match (entry.role, &entry.status) {
            (Role::Active, _) => {
                let how = if pending.ready && self.manual {
                    " (promoted)"
                } else {
                    ""
                };
                let took = pending.started.elapsed();
                self.say(&format!(
                    "swap: version {version} is active{how}, {:.1} s after the deploy",
                    took.as_secs_f64()
                ));
                self.pending = None;
            }
            (Role::Shadow, Some(status)) => {
                let status = status.clone();
                let replay = entry.replay;
                match status.state {
                    State::CatchingUp => {
                        let due = pending
                            .last_progress
                            .is_none_or(|last| last.elapsed() >= PROGRESS_EVERY);
                        // A replay that has not looked at the log yet has nothing to say.
                        if due
                            && let Some(replay) = replay.filter(|r| r.total > 0 && r.done < r.total)
                        {
                            self.say(&format!(
                                "replay: {:.0}% ({}/{} events, {:.0} events/s)",
                                replay.percent, replay.done, replay.total, replay.events_per_second
                            ));
                            if let Some(pending) = &mut self.pending {
                                pending.last_progress = Some(Instant::now());
                            }
                        }
                    }
                    State::Live => {
                        let active_checkpoint = view
                            .versions
                            .iter()
                            .find(|entry| entry.role == Role::Active)
                            .and_then(|entry| entry.status.as_ref())
                            .map_or(0, |status| status.checkpoint);
                        // A first version (nothing active) is activated by the engine
                        // itself; a shadow is diffed, then swapped.
                        if !pending.ready
                            && status.checkpoint >= active_checkpoint
                            && let Some(active) = view.active_version.clone()
                        {
                            self.caught_up(&version, &active, status.checkpoint);
                        }
                    }
                    State::Stalled { at, message } => {
                        if pending.stalled_at != Some(at) {
                            self.say(&format!(
                                "stalled: version {version} fails at offset {at}; {}: {message}",
                                self.serving()
                            ));
                            if let Some(pending) = &mut self.pending {
                                pending.stalled_at = Some(at);
                            }
                        }
                    }
                    State::Retrying { attempts, message } => {
                        if !pending.retrying {
                            self.say(&format!(
                                "retrying: version {version} hit a host fault ({attempts} \
                                 so far) and resumes by itself once it is fixed: {message}"
                            ));
                            if let Some(pending) = &mut self.pending {
                                pending.retrying = true;
                            }
                        }
                    }
                    State::AheadOfLog { checkpoint, head } => self.failed(
                        &version,
                        &format!(
                            "its read model is at offset {checkpoint}, past the log's head \
                             {head}: the log was replaced under it; delete the dev data \
                             folder to start over"
                        ),
                    ),
                    State::Failed { message } => self.failed(&version, &message),
                    State::Retired => {}
                }
            }
            (Role::Failed | Role::Retired, _) => {
                let message = Control::open(&self.data.control_db())
                    .ok()
                    .and_then(|control| control.versions_of(self.name()).ok())
                    .and_then(|records| records.into_iter().find(|r| r.version == version))
                    .and_then(|record| record.last_error)
                    .unwrap_or_else(|| "see `refract status`".to_owned());
                self.failed(&version, &message);
            }
            _ => {}
        }
    }

    fn failed(&mut self, version: &str, message: &str) {
        let serving = self.serving();
        self.say(&format!(
            "shadow failed; {serving}: version {version}: {message}"
        ));
        self.pending = None;
    }

    /// The shadow has caught up with the active version: show the diff, then swap (or
    /// wait for Enter with `manual`).
    fn caught_up(&mut self, version: &str, active: &str, checkpoint: u64) {
        let took = self
            .pending
            .as_ref()
            .map_or(Duration::ZERO, |pending| pending.started.elapsed());
        self.say(&format!(
            "replay: version {version} caught up at offset {checkpoint} in {:.1} s",
            took.as_secs_f64()
        ));
        let active_db = self.data.version_db(self.name(), active);
        let shadow_db = self.data.version_db(self.name(), version);
        match compare(&active_db, &shadow_db, DIFF_SAMPLE_ROWS) {
            Ok(diffs) => {
                let text = render_diff(active, version, &diffs);
                self.say(&text);
            }
            Err(error) => self.say(&format!("diff: cannot compare the read models: {error}")),
        }
        if let Some(pending) = &mut self.pending {
            pending.ready = true;
        }
        if self.manual {
            let command = self.promote_command.clone();
            self.say(&format!(
                "waiting: press Enter to swap version {version} in, or run `{command}`"
            ));
        } else {
            self.promote_if_ready();
        }
    }

    fn promote_if_ready(&mut self) {
        let Some(pending) = &self.pending else {
            return;
        };
        if !pending.ready {
            return;
        }
        if let Err(error) = self.engine.promote(&self.manifest.name) {
            let serving = self.serving();
            self.say(&format!("swap refused; {serving}: {error}"));
            self.pending = None;
        }
        // The swap is reported by `follow` once the engine shows the new version active.
    }
}

/// The diff between two read models, one line per table, then the sample rows.
pub fn render_diff(active: &str, shadow: &str, diffs: &[TableDiff]) -> String {
    let changed = diffs.iter().filter(|diff| !diff.same()).count();
    let mut text = format!(
        "diff: active {active} → shadow {shadow}: {} of {} tables differ",
        changed,
        diffs.len()
    );
    let count = |rows: Option<u64>| rows.map_or_else(|| "no table".to_owned(), |n| n.to_string());
    let short = |checksum: &Option<String>| {
        checksum
            .as_deref()
            .map_or_else(|| "-".to_owned(), |sum| sum.chars().take(8).collect())
    };
    for diff in diffs {
        let verdict = if diff.same() {
            "same"
        } else if diff.schema_differs {
            "columns differ"
        } else {
            "rows differ"
        };
        text.push_str(&format!(
            "\n  {}: {} → {} rows, checksum {} → {}, {verdict}",
            diff.table,
            count(diff.base_rows),
            count(diff.other_rows),
            short(&diff.base_checksum),
            short(&diff.other_checksum),
        ));
        for row in &diff.only_in_base {
            text.push_str(&format!("\n    - ({})", row.join(", ")));
        }
        for row in &diff.only_in_other {
            text.push_str(&format!("\n    + ({})", row.join(", ")));
        }
    }
    text
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("    {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Watches the manifest's `watch` paths (folders recursively) and sends a
/// [`DevEvent::Changed`] per debounced burst of changes. Keep the returned watcher alive.
pub fn watch(
    paths: &[PathBuf],
    events: Sender<DevEvent>,
) -> Result<notify_debouncer_mini::Debouncer<notify::RecommendedWatcher>, String> {
    let mut debouncer = notify_debouncer_mini::new_debouncer(
        DEV_DEBOUNCE,
        move |result: notify_debouncer_mini::DebounceEventResult| {
            if let Ok(changes) = result {
                let paths = changes.into_iter().map(|change| change.path).collect();
                // The loop is gone only while shutting down.
                let _ = events.send(DevEvent::Changed(paths));
            }
        },
    )
    .map_err(|error| format!("cannot start the file watcher: {error}"))?;
    for path in paths {
        let mode = if path.is_dir() {
            notify::RecursiveMode::Recursive
        } else {
            notify::RecursiveMode::NonRecursive
        };
        debouncer
            .watcher()
            .watch(path, mode)
            .map_err(|error| watch_error(path, &error))?;
    }
    Ok(debouncer)
}

fn watch_error(path: &Path, error: &notify::Error) -> String {
    if path.exists() {
        format!("cannot watch {}: {error}", path.display())
    } else {
        format!(
            "cannot watch {}: it does not exist; fix `watch` in projector.toml",
            path.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diff_reads_as_one_line_per_table_with_samples() {
        let diffs = vec![
            TableDiff {
                table: "items".into(),
                base_rows: Some(3),
                other_rows: Some(3),
                base_checksum: Some("aaaaaaaaaaaa".into()),
                other_checksum: Some("bbbbbbbbbbbb".into()),
                schema_differs: false,
                only_in_base: vec![vec!["'cart-1'".into(), "2".into()]],
                only_in_other: vec![vec!["'cart-1'".into(), "20".into()]],
            },
            TableDiff {
                table: "same".into(),
                base_rows: Some(1),
                other_rows: Some(1),
                base_checksum: Some("cccccccccc".into()),
                other_checksum: Some("cccccccccc".into()),
                schema_differs: false,
                only_in_base: Vec::new(),
                only_in_other: Vec::new(),
            },
        ];
        let text = render_diff("11111111", "22222222", &diffs);
        assert_eq!(
            text,
            "diff: active 11111111 → shadow 22222222: 1 of 2 tables differ\n  \
             items: 3 → 3 rows, checksum aaaaaaaa → bbbbbbbb, rows differ\n    \
             - ('cart-1', 2)\n    + ('cart-1', 20)\n  \
             same: 1 → 1 rows, checksum cccccccc → cccccccc, same"
        );
    }
}
