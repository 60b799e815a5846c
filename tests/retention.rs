//! Retention over a real log, engine, consumer groups and archive, in this process, and
//! through the real `refract` binary.
//!
//! Covered: archive mode shrinks `events.db`, and a projector replayed afterwards (by the
//! engine and by `refract project`) builds a read model identical by checksum to one
//! built before; delete mode drops events and reads say `truncated_before`, with later
//! versions reported as built from partial history; the safety floor (a replaying
//! projector, a group that holds retention); the states a crash during archiving can
//! leave (a half-written segment, a segment whose events are still in the log) lose
//! and duplicate nothing; reads and counts (API, CLI, in process) see archived events
//! as before they were archived, by every filter, paged across the archive/live
//! boundary, within the per-request archive budget (a hostile request stops or fails,
//! named); a sparse page scans one window of the live log and says where to go on; a
//! missing or damaged segment is named, never skipped.

mod support;

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use refract::api::limits::ServerConfig;
use refract::config::Config;
use refract::data_dir::DataDir;
use refract::engine::{Engine, EngineOptions, LogCheck};
use refract::groups::{Groups, ResetTo};
use refract::log::{Durability, Event, EventLog, LogOptions, NewEvent, ReadQuery, StreamFilter};
use refract::retention::{Archive, Retention, RetentionStatus};
use support::cli::refract;
use support::guests::guest;
use support::host::{wait_until, wait_until_showing};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Generous liveness bound for anything a test waits on.
const LIVENESS: Duration = Duration::from_secs(90);

/// A host in this process: log (with its archive), engine, groups and retention.
struct Node {
    log: EventLog,
    engine: Arc<Engine>,
    groups: Arc<Groups>,
    retention: Arc<Retention>,
    _runtime: tokio::runtime::Runtime,
}

impl Node {
    fn start(data: &DataDir, config_text: &str) -> Result<Node> {
        let config = Config::parse(config_text, Path::new("refract.toml"))?;
        std::fs::create_dir_all(data.plugins())?;
        let log = open_log(data)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let engine = Arc::new(Engine::start(
            &EngineOptions {
                data_dir: data.clone(),
                plugins_dir: data.plugins(),
                config: config.clone(),
                log_check: LogCheck::Strict,
            },
            &log,
            runtime.handle(),
        )?);
        let groups = Groups::start(&log, &data.control_db(), engine.config())?;
        let retention = Arc::new(Retention::start(
            &log,
            data.root(),
            &config.retention,
            refract::retention::engine_holders(Arc::clone(&engine), Some(Arc::clone(&groups))),
        )?);
        Ok(Node {
            log,
            engine,
            groups,
            retention,
            _runtime: runtime,
        })
    }

    /// Deploys `component` and waits until its active version is live at the head;
    /// returns its read model's file.
    fn deploy_and_wait(&self, component: &str, projector: &str) -> Result<std::path::PathBuf> {
        self.engine.deploy(&std::fs::read(guest(component))?)?;
        let head = self.log.head()?;
        wait_until_showing(
            LIVENESS,
            "the projector to be live at the head",
            || {
                self.engine.projector(projector).is_some_and(|view| {
                    view.active_version.is_some()
                        && view.versions.iter().any(|v| {
                            v.status
                                .as_ref()
                                .is_some_and(|s| s.checkpoint >= head && s.state.name() == "live")
                        })
                })
            },
            || format!("{:#?}", self.engine.projector(projector)),
        );
        Ok(self
            .engine
            .read_model(projector)
            .ok_or("no read model")?
            .path)
    }

    /// Waits for two passes in a row that remove nothing more, and returns the status.
    fn settled(&self) -> RetentionStatus {
        let mut quiet = 0;
        let mut seen = 0;
        wait_until_showing(
            LIVENESS,
            "retention to settle",
            || {
                let status = self.retention.status();
                if status.passes > seen {
                    seen = status.passes;
                    let idle = status
                        .last_pass
                        .as_ref()
                        .is_some_and(|p| p.archived + p.deleted == 0 && p.complete);
                    quiet = if idle { quiet + 1 } else { 0 };
                }
                quiet >= 2
            },
            || format!("{:#?}", self.retention.status()),
        );
        self.retention.status()
    }

    /// Serves the HTTP API over this node on a loopback port.
    fn serve(&self) -> Result<Api> {
        self.serve_with(self.engine.config().server.clone())
    }

    /// [`serve`](Node::serve) with other `[server]` settings.
    fn serve_with(&self, server: ServerConfig) -> Result<Api> {
        let token = refract::api::Token::generate();
        let state = refract::api::ApiState::new(
            self.log.clone(),
            Arc::clone(&self.engine),
            server,
            token.clone(),
        );
        state.attach_groups(Arc::clone(&self.groups));
        state.attach_retention(Arc::clone(&self.retention));
        let listener = self
            ._runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let url = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        self._runtime
            .spawn(refract::api::serve(listener, state, async move {
                let _ = stopped.await;
            }));
        Ok(Api {
            url,
            bearer: format!("Bearer {}", token.secret()),
            _stop: stop,
        })
    }

    fn stop(self) {
        self.retention.shutdown();
        self.groups.shutdown();
        self.engine.shutdown();
    }
}

/// The API of a [`Node`], until dropped.
struct Api {
    url: String,
    bearer: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Api {
    fn text(&self, path: &str) -> Result<String> {
        Ok(ureq::get(format!("{}{path}", self.url))
            .header("Authorization", &self.bearer)
            .call()?
            .into_body()
            .read_to_string()?)
    }

    fn get(&self, path: &str) -> Result<serde_json::Value> {
        let (status, body) = self.answer(path)?;
        if status != 200 {
            return Err(format!("GET {path}: {status} {body}").into());
        }
        Ok(body)
    }

    /// The status and JSON body of a request that may fail.
    fn answer(&self, path: &str) -> Result<(u16, serde_json::Value)> {
        let response = ureq::get(format!("{}{path}", self.url))
            .header("Authorization", &self.bearer)
            .config()
            .http_status_as_error(false)
            .build()
            .call()?;
        let status = response.status().as_u16();
        Ok((
            status,
            serde_json::from_str(&response.into_body().read_to_string()?)?,
        ))
    }

    /// Every event of `GET /v1/events?{filters}`, `limit` per page, following
    /// `next_from_offset` from offset 1; and how many pages the archive budget ended.
    fn read_pages(&self, filters: &str, limit: u64) -> Result<(Vec<serde_json::Value>, usize)> {
        let (mut events, mut budget_ended, mut from) = (Vec::new(), 0, 1);
        loop {
            let page = self.get(&format!(
                "/v1/events?{filters}&limit={limit}&from_offset={from}"
            ))?;
            events.extend(
                page["events"]
                    .as_array()
                    .ok_or("no events")?
                    .iter()
                    .cloned(),
            );
            if page["archive_budget_reached"] == true {
                budget_ended += 1;
            }
            match page["next_from_offset"].as_u64() {
                Some(next) => from = next,
                None => return Ok((events, budget_ended)),
            }
        }
    }

    /// `GET /v1/events/count?{filters}`, following `next_from_offset` and adding up;
    /// and how many answers the archive budget ended.
    fn count_all(&self, filters: &str) -> Result<(u64, usize)> {
        let (mut total, mut budget_ended, mut from) = (0, 0, 1);
        loop {
            let answer = self.get(&format!("/v1/events/count?{filters}&from_offset={from}"))?;
            total += answer["count"].as_u64().ok_or("no count")?;
            match answer["next_from_offset"].as_u64() {
                Some(next) => {
                    assert_eq!(answer["archive_budget_reached"], true, "{answer}");
                    budget_ended += 1;
                    from = next;
                }
                None => return Ok((total, budget_ended)),
            }
        }
    }
}

fn open_log(data: &DataDir) -> Result<EventLog> {
    let log = EventLog::open(
        &data.events_db(),
        LogOptions {
            durability: Durability::Normal,
            ..LogOptions::default()
        },
    )?;
    refract::retention::attach_archive(&log, data.root())?;
    Ok(log)
}

/// Appends `events` events of the balances workload (1000 account streams).
fn append_balances(data: &DataDir, events: usize) -> Result {
    let log = open_log(data)?;
    let all: Vec<_> = refract::workload::balances(7, events).collect();
    for chunk in all.chunks(1000) {
        log.append(chunk.to_vec())?;
    }
    Ok(())
}

/// `refract project` of the balances projector into a fresh file: its checksum.
fn project(dir: &Path, data: &DataDir, out: &str) -> Result<String> {
    let out = dir.join(out);
    let output = refract(
        dir,
        &[
            "--data-dir",
            &data.root().display().to_string(),
            "project",
            "--plugin",
            &guest("balances").display().to_string(),
            "--out",
            &out.display().to_string(),
        ],
    )
    .output()?;
    assert!(output.status.success(), "{}", support::cli::text(&output));
    Ok(refract::bench::checksum(&out)?.sha256)
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Every offset a full replay visits, through a reader with the archive attached.
fn replayed_offsets(log: &EventLog) -> Result<Vec<u64>> {
    let mut reader = log.reader()?;
    let mut offsets = Vec::new();
    let mut after = 0;
    loop {
        let scan = reader.read_batch(&ReadQuery::default(), after, 700, |event| {
            offsets.push(event.offset);
            ControlFlow::Continue(())
        })?;
        if scan.visited == 0 && scan.scanned_through == after {
            break;
        }
        after = scan.scanned_through;
        if after >= log.head()? {
            break;
        }
    }
    Ok(offsets)
}

const ARCHIVE_POLICY: &str = r#"
[retention]
interval_ms = 100
[retention.prefixes."account-"]
max_events_per_stream = 2
mode = "archive"
"#;

#[test]
fn archived_history_replays_to_the_same_read_model_and_the_log_shrinks() -> Result {
    let dir = tempfile::tempdir()?;
    let data = DataDir::new(dir.path().join("data"));
    const EVENTS: u64 = 12_000;
    append_balances(&data, EVENTS as usize)?;
    let before = project(dir.path(), &data, "before.db")?;
    let size_before = file_size(&data.events_db());

    let node = Node::start(&data, ARCHIVE_POLICY)?;
    let status = node.settled();
    let archived = status.horizon.archived_events;
    assert!(archived > EVENTS / 2, "too little archived: {status:#?}");
    assert!(
        status.archive_segments >= 1 && status.archive_bytes > 0,
        "{status:#?}"
    );
    assert!(status.horizon.reclaimed_bytes > 0, "{status:#?}");
    // The live log holds what remains; a full replay, a read and a count of both tiers
    // see everything, once each.
    assert_eq!(node.log.count(&ReadQuery::default())?, EVENTS - archived);
    assert_eq!(
        replayed_offsets(&node.log)?,
        (1..=EVENTS).collect::<Vec<_>>()
    );
    let counted = node.log.count_with_archive(&ReadQuery::default(), None)?;
    assert_eq!((counted.count, counted.complete_through), (EVENTS, None));
    let read: Vec<u64> = node
        .log
        .read_with_archive(&ReadQuery::default(), None)?
        .map(|event| event.map(|e| e.offset))
        .collect::<std::result::Result<_, _>>()?;
    assert_eq!(read, (1..=EVENTS).collect::<Vec<_>>());

    // A projector deployed now replays the archive, then the live log.
    let replayed = refract::bench::checksum(&node.deploy_and_wait("balances", "balances")?)?.sha256;
    assert_eq!(
        replayed, before,
        "the engine's replay differs from the unarchived one"
    );
    node.stop();

    assert!(
        file_size(&data.events_db()) < size_before,
        "events.db did not shrink: {} -> {}",
        size_before,
        file_size(&data.events_db())
    );
    assert_eq!(project(dir.path(), &data, "after.db")?, before);
    Ok(())
}

#[test]
fn delete_mode_drops_events_and_reads_say_so() -> Result {
    let dir = tempfile::tempdir()?;
    let data = DataDir::new(dir.path().join("data"));
    const EVENTS: u64 = 4_000;
    append_balances(&data, EVENTS as usize)?;
    // A version running while events are deleted has seen them all: deployed first,
    // it is running when the host starts again with the policy.
    let node = Node::start(&data, "")?;
    node.deploy_and_wait("balances", "balances")?;
    node.stop();
    let node = Node::start(
        &data,
        "[retention]\ninterval_ms = 100\n[retention.prefixes.\"account-\"]\nmax_events_per_stream = 1\nmode = \"delete\"\n",
    )?;
    let status = node.settled();
    let deleted = status.horizon.deleted_events;
    assert!(
        deleted > 0 && status.horizon.archived_events == 0,
        "{status:#?}"
    );
    assert!(status.partial_history.is_empty(), "{status:#?}");
    let remaining = EVENTS - deleted;
    assert_eq!(node.log.count(&ReadQuery::default())?, remaining);
    // Every stream keeps its newest event: 1000 accounts.
    assert_eq!(remaining, 1000);
    let truncated = status.truncated_before;
    assert!(truncated > 1, "{status:#?}");

    // The API says so too, and reports retention in status and metrics.
    let api = node.serve()?;
    let count = api.get("/v1/events/count")?;
    assert_eq!(count["count"], remaining, "{count}");
    assert_eq!(count["truncated_before"], truncated, "{count}");
    let page = api.get("/v1/events?limit=1")?;
    assert_eq!(page["truncated_before"], truncated, "{page}");
    let beyond = api.get(&format!("/v1/events?from_offset={truncated}&limit=1"))?;
    assert!(beyond.get("truncated_before").is_none(), "{beyond}");
    let shown = api.get("/v1/retention")?;
    assert_eq!(shown["horizon"]["deleted_events"], deleted, "{shown}");
    let metrics = api.text("/metrics")?;
    assert!(
        metrics.contains(&format!("refract_retention_deleted_events_total {deleted}")),
        "{metrics}"
    );
    assert!(
        metrics.contains("refract_retention_reclaimed_bytes_total"),
        "{metrics}"
    );
    drop(api);

    // A projector deployed after the deletion is built from partial history.
    node.deploy_and_wait("order-summary", "order-summary")?;
    let status = node.retention.status();
    assert!(
        status
            .partial_history
            .iter()
            .any(|v| v.starts_with("order-summary@")),
        "{status:#?}"
    );
    assert!(
        !status
            .partial_history
            .iter()
            .any(|v| v.starts_with("balances@")),
        "{status:#?}"
    );
    node.stop();

    // The command line counts what remains and says where the log was cut.
    let output = refract(
        dir.path(),
        &[
            "--data-dir",
            &data.root().display().to_string(),
            "events",
            "--count",
        ],
    )
    .output()?;
    let text = support::cli::text(&output);
    assert!(output.status.success(), "{text}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        remaining.to_string(),
        "{text}"
    );
    assert!(
        text.contains(&format!("truncated_before: {truncated}")),
        "{text}"
    );
    Ok(())
}

#[test]
fn nothing_leaves_the_log_before_a_replaying_projector_or_a_holding_group_is_past_it() -> Result {
    let dir = tempfile::tempdir()?;
    let data = DataDir::new(dir.path().join("data"));
    append_balances(&data, 6_000)?;
    let config = format!(
        "{ARCHIVE_POLICY}\n[groups.mailer]\nretention = \"hold\"\n\
         [projectors.balances]\nreplay_rate_limit = 2000\n"
    );
    let node = Node::start(&data, &config)?;
    // The group has committed nothing: nothing may go.
    wait_until(LIVENESS, "two passes", || {
        node.retention.status().passes >= 2
    });
    let status = node.retention.status();
    assert_eq!(status.horizon.archived_events, 0, "{status:#?}");
    let floor = status.floor.as_ref().ok_or("no floor")?;
    assert_eq!(
        (floor.offset, floor.held_by.as_deref()),
        (0, Some("group mailer"))
    );

    // A slow replay starts, then the group lets go of everything up to 5000: the
    // replay holds the floor as it moves.
    node.engine.deploy(&std::fs::read(guest("balances"))?)?;
    wait_until(LIVENESS, "the replay to start", || {
        !node.engine.status().is_empty()
    });
    node.groups.reset("mailer", ResetTo::Offset(5_001))?;
    let checkpoint = || {
        node.engine
            .status()
            .iter()
            .map(|s| s.checkpoint)
            .min()
            .unwrap_or(0)
    };
    let mut saw_progress_under_a_lagging_projector = false;
    wait_until_showing(
        LIVENESS,
        "the replay to finish with retention following it",
        || {
            let horizon = node.log.horizon().expect("horizon");
            let checkpoint = checkpoint();
            assert!(
                horizon.archived_through <= checkpoint,
                "archived through {} past the projector's checkpoint {checkpoint}",
                horizon.archived_through
            );
            assert!(
                horizon.archived_through <= 5_000,
                "past the group: {horizon:?}"
            );
            if horizon.archived_through > 0 && checkpoint < 5_000 {
                saw_progress_under_a_lagging_projector = true;
            }
            checkpoint >= 6_000
        },
        || format!("{:#?}", node.retention.status()),
    );
    let status = node.settled();
    assert!(status.horizon.archived_events > 0, "{status:#?}");
    assert!(status.horizon.archived_through <= 5_000, "{status:#?}");
    assert!(
        saw_progress_under_a_lagging_projector,
        "retention never ran while the projector replayed: {status:#?}"
    );
    node.stop();
    Ok(())
}

#[test]
fn a_crash_while_archiving_loses_and_duplicates_nothing() -> Result {
    let dir = tempfile::tempdir()?;
    let data = DataDir::new(dir.path().join("data"));
    const EVENTS: u64 = 3_000;
    append_balances(&data, EVENTS as usize)?;
    let log = open_log(&data)?;
    // The states a crash leaves: a half-written segment (its events never left the
    // log), and a whole segment whose events are still in the log.
    let archive_dir = refract::retention::archive_dir(data.root());
    let archive = Archive::open(&archive_dir)?;
    let chosen: Vec<_> = log
        .read(&ReadQuery {
            to_offset: Some(1_500),
            ..ReadQuery::default()
        })?
        .collect::<std::result::Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|e| e.offset.is_multiple_of(3) && e.offset > 1000)
        .collect();
    let segment = archive.write(&chosen)?;
    std::fs::write(
        archive_dir.join("seg-00000002-x.zst.tmp"),
        b"half a segment",
    )?;
    drop(archive);
    drop(log);

    // A replay at this point sees each offset once.
    let log = open_log(&data)?;
    let mut pruner = log.pruner()?;
    // Pretend the crash came after the first removal transaction of the segment.
    pruner.remove(
        &[chosen[0].offset],
        refract::log::Removal::Archived {
            segment: segment.seq,
            last_chunk: false,
        },
    )?;
    drop(pruner);
    assert_eq!(replayed_offsets(&log)?, (1..=EVENTS).collect::<Vec<_>>());
    drop(log);

    // The next start settles it: the rest of the segment leaves the log, the temporary
    // file goes, and still every offset is replayed once.
    let node = Node::start(&data, "")?;
    let horizon = node.log.horizon()?;
    assert_eq!(horizon.archived_events, chosen.len() as u64, "{horizon:?}");
    assert_eq!(horizon.settled_segment, segment.seq);
    assert_eq!(
        node.log.count(&ReadQuery::default())?,
        EVENTS - chosen.len() as u64
    );
    assert_eq!(
        replayed_offsets(&node.log)?,
        (1..=EVENTS).collect::<Vec<_>>()
    );
    let leftovers: BTreeSet<String> = std::fs::read_dir(&archive_dir)?
        .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    assert_eq!(leftovers, BTreeSet::from([segment.file_name()]));
    node.stop();
    Ok(())
}

/// Events of [`tiered_log`]: offsets 1..=3200 over ten streams `acct-0`..`acct-9`.
const TIERED_EVENTS: u64 = 3_200;

/// A log whose history is spread over both tiers, built with the `Archive::write` and
/// `Pruner::remove` a retention pass uses: offsets below 2401 that are not multiples of
/// 4 archived in eight segments of 225, in order; a ninth segment overlapping them all
/// (multiples of 8 up to 400, and of 4 from 2404 to 2440), as a later pass archiving a
/// stream's superseded old events makes; every other fourth offset live in between;
/// and 2441..=2600 deleted (but multiples of 4). Every 97th event is `Audited` (rare),
/// the rest `Deposited`. Returns every event as appended, and the deleted
/// offsets.
fn tiered_log(data: &DataDir) -> Result<(Vec<Event>, BTreeSet<u64>)> {
    let log = open_log(data)?;
    let events: Vec<NewEvent> = (1..=TIERED_EVENTS)
        .map(|n| {
            let kind = if n % 97 == 0 { "Audited" } else { "Deposited" };
            NewEvent::new(format!("acct-{}", n % 10), kind, format!(r#"{{"n":{n}}}"#))
        })
        .collect();
    for chunk in events.chunks(400) {
        log.append(chunk.to_vec())?;
    }
    let all: Vec<Event> = log
        .read(&ReadQuery::default())?
        .collect::<std::result::Result<_, _>>()?;
    let archive = Archive::open(&refract::retention::archive_dir(data.root()))?;
    let mut pruner = log.pruner()?;
    let event = |offset: u64| all[usize::try_from(offset - 1).expect("offset")].clone();
    let in_order: Vec<u64> = (1..=2_400).filter(|o| o % 4 != 0).collect();
    let mut segments: Vec<Vec<u64>> = in_order.chunks(225).map(<[u64]>::to_vec).collect();
    segments.push(
        (8..=400)
            .step_by(8)
            .chain((2_404..=2_440).step_by(4))
            .collect(),
    );
    assert_eq!(segments.len(), 9);
    for offsets in segments {
        let events: Vec<Event> = offsets.iter().map(|&o| event(o)).collect();
        let id = archive.write(&events)?;
        pruner.remove(
            &offsets,
            refract::log::Removal::Archived {
                segment: id.seq,
                last_chunk: true,
            },
        )?;
    }
    let deleted: BTreeSet<u64> = (2_441..=2_600).filter(|o| o % 4 != 0).collect();
    pruner.remove(
        &deleted.iter().copied().collect::<Vec<_>>(),
        refract::log::Removal::Deleted,
    )?;
    Ok((all, deleted))
}

fn json(events: &[&Event]) -> Result<Vec<serde_json::Value>> {
    Ok(events
        .iter()
        .map(serde_json::to_value)
        .collect::<std::result::Result<_, _>>()?)
}

#[test]
fn archived_events_read_and_count_as_before_within_a_budget() -> Result {
    let dir = tempfile::tempdir()?;
    let data = DataDir::new(dir.path().join("data"));
    let (all, deleted) = tiered_log(&data)?;
    let remaining: Vec<&Event> = all
        .iter()
        .filter(|e| !deleted.contains(&e.offset))
        .collect();
    let node = Node::start(&data, "")?;
    let horizon = node.log.horizon()?;
    assert_eq!(
        (horizon.archived_through, horizon.deleted_through),
        (2_440, 2_599)
    );

    // The hostile requests first, while no segment is decoded yet (a decoded segment in
    // the archive's cache costs no budget). With one segment a request, from offset 8
    // the ninth segment is needed along with the first: not even offset 8 can be
    // answered, and the request says so rather than decompress more.
    let one = node.serve_with(ServerConfig {
        archive_read_segments: 1,
        ..node.engine.config().server.clone()
    })?;
    // A count from 310 needs the ninth segment and the second (301..=600). Both may be
    // decompressed past the budget, as they reach the first offset asked for: the
    // request answers and moves on rather than being refused for good.
    for (path, from) in [
        ("/v1/events?from_offset=8&type=Audited", 8),
        ("/v1/events/count?from_offset=310", 310),
    ] {
        let (status, body) = one.answer(path)?;
        assert_eq!(status, 200, "{path}: {body}");
        if body["archive_budget_reached"] == true {
            let next = body["next_from_offset"]
                .as_u64()
                .ok_or("no next_from_offset")?;
            assert!(next > from, "{path} made no progress: {body}");
        }
    }
    drop(one);
    // With two, a count of the whole range and a sparse read over it (nine segments,
    // four of them cached at most) each stop where they are complete and say where to
    // go on; followed to the end, they add up to the right answers.
    let two = node.serve_with(ServerConfig {
        archive_read_segments: 2,
        ..node.engine.config().server.clone()
    })?;
    let (count, partial) = two.count_all("type=Deposited")?;
    let deposited = remaining
        .iter()
        .filter(|e| e.event_type == "Deposited")
        .count();
    assert_eq!(count, deposited as u64);
    assert!(partial >= 2, "the count was never cut by the budget");
    let audited: Vec<&Event> = remaining
        .iter()
        .copied()
        .filter(|e| e.event_type == "Audited")
        .collect();
    let (read, partial) = two.read_pages("type=Audited", 1_000)?;
    assert_eq!(read, json(&audited)?);
    assert!(partial >= 2, "the sparse read was never cut by the budget");
    drop(two);

    // Within the default budget: every filter, paged across the archive/live boundary,
    // reads back exactly what was appended, and counts agree.
    let api = node.serve()?;
    // A group commit gives its events one time: the bounds fall between groups.
    let (from_time, until_time) = (all[499].recorded_at, all[2_899].recorded_at);
    let cases: Vec<(String, Vec<&Event>)> = vec![
        (String::new(), remaining.clone()),
        (
            "stream=acct-3".to_owned(),
            remaining
                .iter()
                .copied()
                .filter(|e| e.stream == "acct-3")
                .collect(),
        ),
        (
            "stream_prefix=acct-7&type=Deposited".to_owned(),
            remaining
                .iter()
                .copied()
                .filter(|e| e.stream == "acct-7" && e.event_type == "Deposited")
                .collect(),
        ),
        ("type=Audited".to_owned(), audited.clone()),
        (
            format!("from_time={from_time}&until_time={until_time}"),
            remaining
                .iter()
                .copied()
                .filter(|e| e.recorded_at >= from_time && e.recorded_at < until_time)
                .collect(),
        ),
        (
            "to_offset=2450".to_owned(),
            remaining
                .iter()
                .copied()
                .filter(|e| e.offset <= 2_450)
                .collect(),
        ),
    ];
    for (filters, expected) in &cases {
        let (read, _) = api.read_pages(filters, 97)?;
        assert_eq!(read.len(), expected.len(), "{filters}");
        assert_eq!(read, json(expected)?, "{filters}");
        let (count, partial) = api.count_all(filters)?;
        assert_eq!((count, partial), (expected.len() as u64, 0), "{filters}");
    }
    // A page starting below the deletions says so; archived events are not missing.
    let page = api.get("/v1/events?from_offset=2000&limit=5")?;
    assert_eq!(page["truncated_before"], 2_600, "{page}");
    let offsets: Vec<u64> = page["events"]
        .as_array()
        .ok_or("no events")?
        .iter()
        .filter_map(|e| e["offset"].as_u64())
        .collect();
    assert_eq!(offsets, [2_000, 2_001, 2_002, 2_003, 2_004]);
    let count = api.get("/v1/events/count?from_offset=2600")?;
    assert!(count.get("truncated_before").is_none(), "{count}");
    drop(api);

    // In the process, by offset range and stream.
    let stream = node
        .log
        .read_with_archive(
            &ReadQuery {
                from_offset: 1_000,
                to_offset: Some(2_600),
                stream: StreamFilter::Exact("acct-4".to_owned()),
                batch_size: 7,
                ..ReadQuery::default()
            },
            None,
        )?
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let expected: Vec<Event> = remaining
        .iter()
        .filter(|e| e.stream == "acct-4" && (1_000..=2_600).contains(&e.offset))
        .map(|e| (*e).clone())
        .collect();
    assert_eq!(stream, expected);
    node.stop();

    // The command line reads the whole archive, and names only what was deleted.
    let cli = |args: &[&str]| -> Result<(String, String)> {
        let mut all_args = vec!["--data-dir", data.root().to_str().ok_or("path")?, "events"];
        all_args.extend_from_slice(args);
        let output = refract(dir.path(), &all_args).output()?;
        let text = support::cli::text(&output);
        assert!(output.status.success(), "{text}");
        Ok((String::from_utf8_lossy(&output.stdout).into_owned(), text))
    };
    let (count, text) = cli(&["--count"])?;
    assert_eq!(count.trim(), remaining.len().to_string(), "{text}");
    assert!(text.contains("truncated_before: 2600"), "{text}");
    let (lines, _) = cli(&["--type", "Audited"])?;
    let read: Vec<serde_json::Value> = lines
        .lines()
        .map(serde_json::from_str)
        .collect::<std::result::Result<_, _>>()?;
    assert_eq!(read, json(&audited)?);
    Ok(())
}

/// Pages `query` through both tiers, a request at a time with a fresh budget of
/// `segments`, as an API client does: the offsets read and the sum of the counts.
fn page_with_budget(log: &EventLog, segments: usize) -> Result<(Vec<u64>, u64)> {
    let budget = || Some(refract::log::ArchiveBudget::segments(segments));
    let (mut read, mut from) = (Vec::new(), 1);
    loop {
        let query = ReadQuery {
            from_offset: from,
            ..ReadQuery::default()
        };
        let mut page = log.read_with_archive(&query, budget())?;
        for event in page.by_ref() {
            read.push(event?.offset);
        }
        match page.stopped_at() {
            Some(at) => {
                assert!(at >= from, "a read from {from} made no progress");
                from = at + 1;
            }
            None => break,
        }
    }
    let (mut counted, mut from) = (0, 1);
    loop {
        let query = ReadQuery {
            from_offset: from,
            ..ReadQuery::default()
        };
        let count = log.count_with_archive(&query, budget())?;
        counted += count.count;
        match count.complete_through {
            Some(at) => {
                assert!(at >= from, "a count from {from} made no progress");
                from = at + 1;
            }
            None => break,
        }
    }
    Ok((read, counted))
}

/// Archives `segments` (offsets each) out of `log`, as a retention pass does, and
/// attaches the archive.
fn archive_segments(data: &DataDir, log: &EventLog, segments: &[Vec<u64>]) -> Result {
    let all: Vec<Event> = log
        .read(&ReadQuery::default())?
        .collect::<std::result::Result<_, _>>()?;
    let archive = Archive::open(&refract::retention::archive_dir(data.root()))?;
    let mut pruner = log.pruner()?;
    for offsets in segments {
        let events: Vec<Event> = offsets
            .iter()
            .map(|&o| all[usize::try_from(o - 1).expect("offset")].clone())
            .collect();
        let id = archive.write(&events)?;
        pruner.remove(
            offsets,
            refract::log::Removal::Archived {
                segment: id.seq,
                last_chunk: true,
            },
        )?;
    }
    // Opened before the archive existed, the log has none attached yet.
    refract::retention::attach_archive(log, data.root())?;
    Ok(())
}

#[test]
fn reads_and_counts_progress_over_an_overlap_deeper_than_the_budget_and_count_once() -> Result {
    let dir = tempfile::tempdir()?;
    // Twenty segments, segment i holding the offsets 1..=200 congruent to i + 1 modulo
    // 20: each `max_events_per_stream` pass can add one such. From offset 21 on, all
    // twenty reach every offset: five times a budget of 2 plus the 4 cached segments.
    let data = DataDir::new(dir.path().join("deep"));
    let log = open_log(&data)?;
    log.append(
        (1..=220)
            .map(|n| NewEvent::new("s", "E", format!(r#"{{"n":{n}}}"#)))
            .collect(),
    )?;
    let deep: Vec<Vec<u64>> = (1..=20)
        .map(|first| (first..=200).step_by(20).collect())
        .collect();
    archive_segments(&data, &log, &deep)?;
    let (read, counted) = page_with_budget(&log, 2)?;
    assert_eq!(read, (1..=220).collect::<Vec<_>>());
    assert_eq!(counted, 220);

    // Two segments holding the same offsets (written before `reconcile` existed, when a
    // pass failed between writing a segment and removing its events): each offset is
    // read and counted once, with or without a budget.
    let data = DataDir::new(dir.path().join("twice"));
    let log = open_log(&data)?;
    log.append(
        (1..=80)
            .map(|n| NewEvent::new("s", "E", format!(r#"{{"n":{n}}}"#)))
            .collect(),
    )?;
    let twice: Vec<u64> = (1..=50).collect();
    archive_segments(&data, &log, &[twice.clone(), twice])?;
    let read_all: Vec<u64> = log
        .read_with_archive(&ReadQuery::default(), None)?
        .map(|event| event.map(|e| e.offset))
        .collect::<std::result::Result<_, _>>()?;
    assert_eq!(read_all, (1..=80).collect::<Vec<_>>());
    let count = log.count_with_archive(&ReadQuery::default(), None)?;
    assert_eq!((count.count, count.complete_through), (80, None));
    let (read, counted) = page_with_budget(&log, 1)?;
    assert_eq!((read.len() as u64, counted), (80, 80));
    Ok(())
}

/// A sparse stream-prefix read over a live log longer than a scan window, with and
/// without an archive: one page examines one window (`SCAN_WINDOW` offsets) of the live
/// log, comes back short (here empty) with `next_from_offset`, not claiming the archive
/// budget, and paging on finds every match once, in order. (The VM steps of a page are
/// counted in `log::tiered::tests`.)
#[test]
fn a_sparse_page_stops_after_one_window_of_the_live_log() -> Result {
    let dir = tempfile::tempdir()?;
    let data = DataDir::new(dir.path().join("data"));
    let window = refract::log::SCAN_WINDOW;
    let events = window + window / 2;
    let rare = [3, events - 5];
    let log = open_log(&data)?;
    let all: Vec<NewEvent> = (1..=events)
        .map(|offset| {
            let stream = if rare.contains(&offset) {
                "rare-x"
            } else {
                "s"
            };
            NewEvent::new(stream, "E", "{}")
        })
        .collect();
    for chunk in all.chunks(4096) {
        log.append(chunk.to_vec())?;
    }
    let prefix = ReadQuery {
        stream: StreamFilter::Prefixes(vec!["rare-".to_owned()]),
        ..ReadQuery::default()
    };
    // No archive yet: the live log alone, in process.
    assert!(!log.has_cold_tier());
    let mut page = log.read_one_window(&prefix, None)?;
    let offsets: Vec<u64> = page
        .by_ref()
        .map(|e| e.map(|e| e.offset))
        .collect::<std::result::Result<_, _>>()?;
    assert_eq!(offsets, [3]);
    assert_eq!(
        page.stop(),
        Some((window, refract::log::StopReason::ScanWindow))
    );
    archive_segments(&data, &log, &[(1..=100).collect()])?;
    drop(log);

    let node = Node::start(&data, "")?;
    let api = node.serve()?;
    let first = api.get(&format!(
        "/v1/events?stream_prefix=rare-&limit=10&from_offset={}",
        rare[0] + 1
    ))?;
    assert_eq!(first["events"], serde_json::json!([]), "{first}");
    // The window is counted from the first live offset (101): the archived offsets
    // below it are read within the archive budget, not spent out of the window.
    assert_eq!(first["next_from_offset"], 101 + window, "{first}");
    assert!(first.get("archive_budget_reached").is_none(), "{first}");
    let (read, budget_ended) = api.read_pages("stream_prefix=rare-", 10)?;
    let offsets: Vec<u64> = read.iter().filter_map(|e| e["offset"].as_u64()).collect();
    assert_eq!((offsets.as_slice(), budget_ended), (rare.as_slice(), 0));
    assert_eq!(api.count_all("stream_prefix=rare-")?, (2, 0));
    drop(api);
    node.stop();
    Ok(())
}

#[test]
fn a_missing_or_damaged_archive_segment_is_named_not_skipped() -> Result {
    let dir = tempfile::tempdir()?;
    let data = DataDir::new(dir.path().join("data"));
    tiered_log(&data)?;
    let archive_dir = refract::retention::archive_dir(data.root());
    let segment = |seq: &str| -> Result<std::path::PathBuf> {
        Ok(std::fs::read_dir(&archive_dir)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .find(|path| {
                path.to_string_lossy()
                    .contains(&format!("seg-0000000{seq}-"))
            })
            .ok_or("no such segment")?)
    };
    // The fourth segment is damaged, the third gone.
    let fourth = segment("4")?;
    let mut bytes = std::fs::read(&fourth)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&fourth, &bytes)?;
    let fourth_name = fourth
        .file_name()
        .ok_or("name")?
        .to_string_lossy()
        .into_owned();

    // Damaged: the API names the file, a read below it fails rather than skip it.
    let node = Node::start(&data, "")?;
    let api = node.serve()?;
    let (status, body) = api.answer("/v1/events?from_offset=700&limit=1000")?;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "archive_unreadable", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(&fourth_name), "{message}");
    let (status, body) = api.answer("/v1/events/count")?;
    assert_eq!(
        (status, &body["error"]["code"]),
        (500, &"archive_unreadable".into()),
        "{body}"
    );
    drop(api);
    node.stop();

    // Missing: no read of the archive answers short, on the command line either.
    std::fs::remove_file(segment("3")?)?;
    for args in [
        &["events", "--count"][..],
        &["events", "--to-offset", "10"][..],
    ] {
        let mut all_args = vec!["--data-dir", data.root().to_str().ok_or("path")?];
        all_args.extend_from_slice(args);
        let output = refract(dir.path(), &all_args).output()?;
        let text = support::cli::text(&output);
        assert!(!output.status.success(), "{args:?}: {text}");
        assert!(
            text.contains("seg-00000003-*.zst") && text.contains("missing"),
            "{text}"
        );
    }
    Ok(())
}
