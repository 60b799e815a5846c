//! The event log's library API: offsets, idempotency, optimistic concurrency, atomicity,
//! every read filter, schema refusal, and the replay path.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use refract::log::{
    Durability, Event, EventField, EventLog, LogError, LogOptions, NewEvent, ReadQuery,
    SCAN_WINDOW, SCHEMA_VERSION, StreamFilter,
};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// A fresh log in a temporary directory (kept alive by the returned guard).
fn fresh_log() -> Result<(tempfile::TempDir, EventLog)> {
    let dir = tempfile::tempdir()?;
    let log = EventLog::open(&dir.path().join("events.db"), LogOptions::default())?;
    Ok((dir, log))
}

/// Fast options for tests that append a lot: durability does not matter to them.
fn fast() -> LogOptions {
    LogOptions {
        durability: Durability::Normal,
        ..LogOptions::default()
    }
}

fn ev(stream: &str, ty: &str, data: &str) -> NewEvent {
    NewEvent::new(stream, ty, data)
}

fn all_events(log: &EventLog) -> Result<Vec<Event>> {
    Ok(log
        .read(&ReadQuery::default())?
        .collect::<std::result::Result<_, _>>()?)
}

fn read(log: &EventLog, query: &ReadQuery) -> Result<Vec<Event>> {
    Ok(log.read(query)?.collect::<std::result::Result<_, _>>()?)
}

fn offsets(events: &[Event]) -> Vec<u64> {
    events.iter().map(|e| e.offset).collect()
}

/// Asserts offsets are exactly 1..=n in order and every stream's versions are 1..=k in
/// offset order.
fn assert_gap_free(events: &[Event]) {
    let expected: Vec<u64> = (1..=events.len() as u64).collect();
    assert_eq!(offsets(events), expected, "offsets must be exactly 1..=N");
    let mut versions: BTreeMap<&str, u64> = BTreeMap::new();
    for event in events {
        let version = versions.entry(&event.stream).or_insert(0);
        *version += 1;
        assert_eq!(
            event.stream_version, *version,
            "stream {} at offset {}",
            event.stream, event.offset
        );
    }
}

/// Asserts the `streams` table (schema 4) holds exactly one row per stream of `events`,
/// with the stream's newest version as its head (for logs nothing was removed from).
fn assert_stream_heads_exact(path: &Path, events: &[Event]) -> Result {
    let mut newest: BTreeMap<String, u64> = BTreeMap::new();
    for event in events {
        newest.insert(event.stream.clone(), event.stream_version);
    }
    let conn = rusqlite::Connection::open(path)?;
    let mut stmt = conn.prepare("SELECT name, version FROM streams")?;
    let heads: BTreeMap<String, u64> = stmt
        .query_map([], |row| Ok((row.get(0)?, row.get::<_, i64>(1)? as u64)))?
        .collect::<std::result::Result<_, _>>()?;
    assert_eq!(heads, newest, "the stream heads match the events");
    Ok(())
}

#[test]
fn offsets_are_gap_free_with_eight_concurrent_appenders() -> Result {
    let (_dir, log) = fresh_log()?;
    let threads = 8;
    let calls = 60;
    let returned: Vec<Vec<u64>> = thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let log = log.clone();
                scope.spawn(move || {
                    let mut mine = Vec::new();
                    for call in 0..calls {
                        // Batches of 1 to 3 events, on a private and a shared stream.
                        let batch = (0..=(call % 3))
                            .map(|i| {
                                let stream = if i == 1 {
                                    "shared".to_owned()
                                } else {
                                    format!("s-{t}")
                                };
                                ev(
                                    &stream,
                                    "Tick",
                                    &format!(r#"{{"t":{t},"call":{call},"i":{i}}}"#),
                                )
                            })
                            .collect();
                        mine.extend(log.append(batch).expect("append"));
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });

    let events = all_events(&log)?;
    let total: usize = returned.iter().map(Vec::len).sum();
    assert_eq!(events.len(), total);
    assert_gap_free(&events);
    let mut all_returned: Vec<u64> = returned.concat();
    all_returned.sort_unstable();
    assert_eq!(
        all_returned,
        offsets(&events),
        "every offset returned exactly once"
    );
    for (t, mine) in returned.iter().enumerate() {
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "thread {t} saw its offsets increase"
        );
    }
    assert_eq!(log.head()?, total as u64);
    assert_eq!(*log.watch_head().borrow(), total as u64);
    assert_stream_heads_exact(log.path(), &events)?;
    Ok(())
}

#[test]
fn async_appends_from_many_tasks_are_gap_free_and_atomic() -> Result {
    let (_dir, log) = fresh_log()?;
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    // 64 tasks on ONE thread: each awaits its group commit without holding the thread.
    let offsets = runtime.block_on(async {
        let tasks: Vec<_> = (0..64)
            .map(|task| {
                let log = log.clone();
                tokio::spawn(async move {
                    let batch = (0..3)
                        .map(|n| ev(&format!("async-{task}"), "t", &format!("{{\"n\":{n}}}")))
                        .collect();
                    log.append_async(batch).await
                })
            })
            .collect();
        let mut offsets = Vec::new();
        for task in tasks {
            offsets.push(task.await.map_err(|e| e.to_string())??);
        }
        Ok::<_, Box<dyn std::error::Error>>(offsets)
    })?;
    for batch in &offsets {
        assert_eq!(batch.len(), 3);
        assert!(
            batch.windows(2).all(|pair| pair[1] == pair[0] + 1),
            "a batch stays contiguous: {batch:?}"
        );
    }
    let events = all_events(&log)?;
    assert_eq!(events.len(), 64 * 3);
    assert_gap_free(&events);
    // An invalid event fails the whole batch before anything is queued.
    let bad = vec![ev("s", "t", "{}"), ev("s", "t", "not json")];
    let error = runtime
        .block_on(log.append_async(bad))
        .expect_err("invalid JSON must fail");
    assert!(error.to_string().contains("event 2 of 2"), "{error}");
    assert_eq!(log.head()?, 64 * 3);
    Ok(())
}

#[test]
fn a_second_log_on_the_same_file_appending_concurrently_stays_gap_free() -> Result {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("events.db");
    let first = EventLog::open(&path, LogOptions::default())?;
    let second = EventLog::open(&path, LogOptions::default())?;
    thread::scope(|scope| {
        for (n, log) in [&first, &second, &first, &second].into_iter().enumerate() {
            scope.spawn(move || {
                for i in 0..40 {
                    let batch = vec![
                        ev("both", "E", &format!("[{n},{i}]")),
                        ev(&format!("w{n}"), "E", "{}"),
                    ];
                    log.append(batch).expect("append");
                }
            });
        }
    });
    let events = all_events(&first)?;
    assert_eq!(events.len(), 4 * 40 * 2);
    assert_gap_free(&events);
    // Each handle sees the other's appends in `head`, and times never go backwards.
    assert_eq!(first.head()?, 320);
    assert_eq!(second.head()?, 320);
    assert_stream_heads_exact(&path, &events)?;
    assert!(
        events
            .windows(2)
            .all(|w| w[0].recorded_at <= w[1].recorded_at)
    );
    Ok(())
}

#[test]
fn stream_versions_stay_exact_when_the_writer_keeps_them_between_groups() -> Result {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("events.db");
    let first = EventLog::open(&path, LogOptions::default())?;
    // Group after group on one handle: the kept versions go on counting.
    for version in 0..3 {
        first.append(vec![ev("acct", "E", "{}").with_expected_version(version)])?;
    }
    // Another writer on the same file (another process) moves the stream on; the first
    // handle must notice rather than trust what it kept.
    let second = EventLog::open(&path, LogOptions::default())?;
    second.append(vec![ev("acct", "E", "{}").with_expected_version(3)])?;
    let err = first
        .append(vec![ev("acct", "E", "{}").with_expected_version(3)])
        .unwrap_err();
    assert!(
        matches!(
            err,
            LogError::VersionConflict {
                expected: 3,
                actual: 4,
                ..
            }
        ),
        "{err:?}"
    );
    // A request that rolls back leaves nothing of its versions behind.
    let err = first
        .append(vec![
            ev("acct", "E", "{}").with_expected_version(4),
            ev("acct", "E", "{}").with_expected_version(9),
        ])
        .unwrap_err();
    assert!(matches!(err, LogError::VersionConflict { .. }), "{err:?}");
    first.append(vec![ev("acct", "E", "{}").with_expected_version(4)])?;
    second.append(vec![ev("acct", "E", "{}").with_expected_version(5)])?;
    first.append(vec![ev("acct", "E", "{}"), ev("other", "E", "{}")])?;
    let events = all_events(&first)?;
    assert_eq!(events.len(), 8);
    assert_gap_free(&events);

    // With the cache off, the same appends give the same log.
    let off = dir.path().join("off.db");
    let log = EventLog::open(
        &off,
        LogOptions {
            stream_version_cache: false,
            ..LogOptions::default()
        },
    )?;
    for version in 0..3 {
        log.append(vec![ev("acct", "E", "{}").with_expected_version(version)])?;
    }
    assert_gap_free(&all_events(&log)?);
    Ok(())
}

#[test]
fn checkpoint_pages_bound_the_wal_and_lose_nothing() -> Result {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("events.db");
    let options = LogOptions {
        checkpoint_pages: 64,
        ..fast()
    };
    let log = EventLog::open(&path, options)?;
    let payload = format!(r#"{{"pad":"{}"}}"#, "x".repeat(300));
    for batch in 0..300 {
        log.append(
            (0..20)
                .map(|i| ev(&format!("s{}", (batch * 7 + i) % 50), "E", &payload))
                .collect(),
        )?;
    }
    let wal = dir.path().join("events.db-wal");
    let wal_bytes = std::fs::metadata(&wal)?.len();
    assert!(
        wal_bytes < 1024 * 1024,
        "the WAL is {wal_bytes} bytes after 6000 events of ~330 bytes with checkpoints every 64 pages"
    );
    let events = all_events(&log)?;
    assert_eq!(events.len(), 6000);
    assert_gap_free(&events);
    drop(log);
    let log = EventLog::open(&path, fast())?;
    assert_eq!(log.head()?, 6000);
    Ok(())
}

#[test]
fn appending_an_existing_id_is_a_no_op_returning_the_original_offset() -> Result {
    let (_dir, log) = fresh_log()?;
    log.append(vec![ev("a", "E", "1")])?;
    let first = log.append(vec![ev("a", "E", "2").with_id("evt-1")])?;
    assert_eq!(first, vec![2]);
    let again = log.append(vec![ev("a", "Other", "99").with_id("evt-1")])?;
    assert_eq!(again, vec![2], "a retry returns the original offset");
    assert_eq!(log.head()?, 2, "and appends nothing");

    // Retrying a whole batch: same offsets, nothing new, and the stale expected versions of
    // the duplicates are not checked.
    let batch = || {
        vec![
            ev("b", "E", "1").with_id("b-1").with_expected_version(0),
            ev("b", "E", "2").with_id("b-2").with_expected_version(1),
            ev("b", "E", "3").with_id("b-3").with_expected_version(2),
        ]
    };
    let offsets = log.append(batch())?;
    assert_eq!(offsets, vec![3, 4, 5]);
    let mut watch = log.watch_head();
    watch.mark_unchanged();
    assert_eq!(log.append(batch())?, offsets);
    assert_eq!(log.head()?, 5);
    assert!(!watch.has_changed()?, "a pure no-op publishes no new head");

    // A batch mixing duplicates and new events, and an id repeated inside one batch.
    let mixed = log.append(vec![
        ev("b", "E", "2").with_id("b-2"),
        ev("c", "E", r#""x""#).with_id("c-1"),
        ev("c", "E", r#""y""#).with_id("c-1"),
    ])?;
    assert_eq!(mixed, vec![4, 6, 6]);
    let events = all_events(&log)?;
    assert_gap_free(&events);
    assert_eq!(events.len(), 6);
    assert_eq!(
        events[5].data, r#""x""#,
        "the first of two same-id events wins"
    );
    Ok(())
}

#[test]
fn generated_ids_are_time_ordered_uuid_v7() -> Result {
    let (_dir, log) = fresh_log()?;
    log.append((0..5).map(|i| ev("s", "E", &i.to_string())).collect())?;
    log.append(vec![ev("s", "E", "5")])?;
    let events = all_events(&log)?;
    let ids: Vec<uuid::Uuid> = events
        .iter()
        .map(|e| uuid::Uuid::parse_str(&e.id))
        .collect::<std::result::Result<_, _>>()?;
    assert!(ids.iter().all(|id| id.get_version_num() == 7));
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids grow with offsets: {ids:?}"
    );
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
    Ok(())
}

#[test]
fn expected_version_conflicts_fail_the_whole_batch() -> Result {
    let (_dir, log) = fresh_log()?;
    assert_eq!(
        log.append(vec![ev("acct", "Opened", "{}").with_expected_version(0)])?,
        vec![1]
    );
    log.append(vec![ev("acct", "Deposited", "{}").with_expected_version(1)])?;

    let err = log
        .append(vec![
            ev("other", "E", "{}"),
            ev("acct", "Withdrawn", "{}").with_expected_version(1),
        ])
        .unwrap_err();
    match &err {
        LogError::VersionConflict {
            stream,
            expected,
            actual,
        } => {
            assert_eq!((stream.as_str(), *expected, *actual), ("acct", 1, 2));
        }
        other => panic!("expected a version conflict, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "version conflict on stream `acct`: expected version 1, but it is at 2"
    );
    assert_eq!(
        log.head()?,
        2,
        "the event before the conflict was not appended either"
    );
    assert_eq!(
        log.count(&ReadQuery {
            stream: StreamFilter::Exact("other".into()),
            ..ReadQuery::default()
        })?,
        0
    );

    // 0 means "must not exist yet".
    let err = log
        .append(vec![ev("acct", "Opened", "{}").with_expected_version(0)])
        .unwrap_err();
    assert!(
        matches!(
            err,
            LogError::VersionConflict {
                expected: 0,
                actual: 2,
                ..
            }
        ),
        "{err:?}"
    );

    // Versions advance within a batch.
    let offsets = log.append(vec![
        ev("acct", "A", "{}").with_expected_version(2),
        ev("acct", "B", "{}").with_expected_version(3),
        ev("new", "C", "{}").with_expected_version(0),
    ])?;
    assert_eq!(offsets, vec![3, 4, 5]);
    let err = log
        .append(vec![
            ev("acct", "A", "{}").with_expected_version(4),
            ev("acct", "B", "{}").with_expected_version(4),
        ])
        .unwrap_err();
    assert!(
        matches!(
            err,
            LogError::VersionConflict {
                expected: 4,
                actual: 5,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(log.head()?, 5);
    assert_gap_free(&all_events(&log)?);
    Ok(())
}

#[test]
fn a_failing_request_does_not_fail_the_others_in_its_group() -> Result {
    let (_dir, log) = fresh_log()?;
    log.append(vec![ev("hot", "E", "{}")])?;
    // Many threads race, several rounds each; half of the requests insist, in their second
    // event, on a version that is long gone (so their first event was already written when
    // they fail). Whatever the grouping, each request succeeds or fails on its own merits,
    // and a failed one leaves no gap.
    let results: Vec<(usize, std::result::Result<Vec<u64>, LogError>)> = thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let log = log.clone();
                scope.spawn(move || {
                    let mut second = ev(&format!("t{i}"), "E", "{}");
                    if i % 2 == 0 {
                        second = ev("hot", "E", "{}").with_expected_version(0);
                    }
                    let mut last = None;
                    for _ in 0..20 {
                        let result =
                            log.append(vec![ev(&format!("s{i}"), "E", "{}"), second.clone()]);
                        let failed = result.is_err();
                        last = Some(result);
                        if failed != (i % 2 == 0) {
                            break;
                        }
                    }
                    (i, last.expect("at least one round"))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    for (i, result) in &results {
        if i % 2 == 0 {
            assert!(
                matches!(result, Err(LogError::VersionConflict { .. })),
                "request {i}: {result:?}"
            );
        } else {
            assert_eq!(
                result.as_ref().map(Vec::len).ok(),
                Some(2),
                "request {i}: {result:?}"
            );
        }
    }
    let events = all_events(&log)?;
    assert_eq!(events.len(), 1 + 8 * 20 * 2);
    assert_gap_free(&events);
    // Requests rolled back inside a group left no stream head behind.
    assert_stream_heads_exact(log.path(), &events)?;
    Ok(())
}

#[test]
fn a_batch_with_a_bad_fifth_event_appends_nothing_and_names_it() -> Result {
    let (_dir, log) = fresh_log()?;
    let batch = |bad: NewEvent| {
        let mut events: Vec<NewEvent> = (0..10)
            .map(|i| ev("s", "E", &format!(r#"{{"i":{i}}}"#)))
            .collect();
        events[4] = bad;
        events
    };
    let long = "x".repeat(201);
    let cases = [
        (
            ev("s", "E", "{not json"),
            EventField::Data,
            "is not valid JSON",
        ),
        (
            ev("s", "E", r#"{"a":1} trailing"#),
            EventField::Data,
            "is not valid JSON",
        ),
        (ev("", "E", "{}"), EventField::Stream, "must not be empty"),
        (ev(&long, "E", "{}"), EventField::Stream, "201 characters"),
        (
            ev("a\nb", "E", "{}"),
            EventField::Stream,
            "control characters",
        ),
        (ev("s", "", "{}"), EventField::Type, "must not be empty"),
        (ev("s", &long, "{}"), EventField::Type, "201 characters"),
        (
            ev("s", "E", "{}").with_id(""),
            EventField::Id,
            "must not be empty",
        ),
        (
            ev("s", "E", "{}").with_metadata("nope"),
            EventField::Metadata,
            "is not valid JSON",
        ),
        (
            ev("s", "E", &format!("\"{}\"", "x".repeat(1024 * 1024))),
            EventField::Data,
            "the limit is 1048576 bytes",
        ),
    ];
    for (bad, field, reason) in cases {
        let err = log.append(batch(bad)).unwrap_err();
        match &err {
            LogError::InvalidEvent {
                position,
                batch_len,
                field: f,
                ..
            } => {
                assert_eq!((*position, *batch_len, *f), (5, 10, field), "{err}");
            }
            other => panic!("expected InvalidEvent, got {other:?}"),
        }
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("event 5 of 10: {field} ")),
            "{message}"
        );
        assert!(message.contains(reason), "{message}");
    }
    assert_eq!(log.head()?, 0, "nothing of any bad batch was appended");

    // Exactly at the limits is fine.
    let at_limit = ev(&"s".repeat(200), &"t".repeat(200), "{}").with_id("i".repeat(200));
    assert_eq!(log.append(vec![at_limit])?, vec![1]);
    Ok(())
}

#[test]
fn size_limits_are_configurable() -> Result {
    let dir = tempfile::tempdir()?;
    let options = LogOptions {
        max_data_bytes: 10,
        max_metadata_bytes: 5,
        ..LogOptions::default()
    };
    let log = EventLog::open(&dir.path().join("events.db"), options)?;
    log.append(vec![ev("s", "E", "[1,2,3,4]").with_metadata("[1,2]")])?;
    let err = log.append(vec![ev("s", "E", "[1,2,3,4,5]")]).unwrap_err();
    assert!(
        err.to_string()
            .contains("data is 11 bytes; the limit is 10 bytes"),
        "{err}"
    );
    let err = log
        .append(vec![ev("s", "E", "1").with_metadata("[1,22]")])
        .unwrap_err();
    assert!(
        matches!(
            err,
            LogError::InvalidEvent {
                field: EventField::Metadata,
                ..
            }
        ),
        "{err}"
    );
    Ok(())
}

/// A log with a variety of streams, types and times, and every event read back.
fn fixture() -> Result<(tempfile::TempDir, EventLog, Vec<Event>)> {
    let (dir, log) = fresh_log()?;
    let streams = [
        "order-1", "order-2", "orderly", "order", "user-1", "ünï-1", "ünï", "z",
    ];
    let types = ["Created", "Updated", "Deleted"];
    for round in 0..6 {
        let batch = (0..9)
            .map(|i| {
                let stream = streams[(round * 3 + i) % streams.len()];
                let ty = types[(round + i * i) % types.len()];
                ev(stream, ty, &format!(r#"{{"round":{round},"i":{i}}}"#))
                    .with_metadata(r#"{"corr":"c"}"#)
            })
            .collect();
        log.append(batch)?;
        // Distinct recorded_at per round, so time ranges have something to cut.
        thread::sleep(Duration::from_millis(3));
    }
    let events = all_events(&log)?;
    assert_eq!(events.len(), 54);
    Ok((dir, log, events))
}

/// What `query` must return, computed the slow obvious way.
fn expected(all: &[Event], query: &ReadQuery) -> Vec<u64> {
    all.iter()
        .filter(|e| e.offset >= query.from_offset)
        .filter(|e| query.to_offset.is_none_or(|to| e.offset <= to))
        .filter(|e| query.from_time.is_none_or(|t| e.recorded_at >= t))
        .filter(|e| query.until_time.is_none_or(|t| e.recorded_at < t))
        .filter(|e| query.types.is_empty() || query.types.contains(&e.event_type))
        .filter(|e| match &query.stream {
            StreamFilter::Any => true,
            StreamFilter::Exact(s) => &e.stream == s,
            StreamFilter::Prefixes(ps) => ps.iter().any(|p| e.stream.starts_with(p.as_str())),
        })
        .map(|e| e.offset)
        .take(query.limit.map_or(usize::MAX, |l| l as usize))
        .collect()
}

#[test]
fn every_read_filter_and_combination_matches_a_plain_filter() -> Result {
    let (_dir, log, all) = fixture()?;
    // Cut points in time: the recorded_at of a few events (inclusive for from, exclusive
    // for until), plus instants between and outside them.
    let t = |offset: usize| all[offset - 1].recorded_at;
    let times = [
        None,
        Some(t(1)),
        Some(t(20)),
        Some(t(40) + Duration::from_micros(1)),
        // Sub-microsecond instants: the log stores microseconds, the query must not round
        // an event into or out of the range.
        Some(t(20) + Duration::from_nanos(1)),
        Some(t(30) - Duration::from_nanos(1)),
        Some(t(54)),
        Some(t(54) + Duration::from_secs(1)),
        Some(t(1) - Duration::from_secs(1)),
    ];
    let type_sets: [&[&str]; 4] = [
        &[],
        &["Created"],
        &["Updated", "Deleted"],
        &["Created", "Nope", "Created"],
    ];
    let stream_filters = [
        StreamFilter::Any,
        StreamFilter::Exact("order-1".into()),
        StreamFilter::Exact("ünï".into()),
        StreamFilter::Exact("missing".into()),
        StreamFilter::Prefixes(vec!["order-".into()]),
        StreamFilter::Prefixes(vec!["order".into(), "order-".into(), "z".into()]),
        StreamFilter::Prefixes(vec!["ünï".into(), "user".into()]),
        StreamFilter::Prefixes(vec![String::new()]),
    ];
    let offset_ranges = [
        (0, None),
        (1, Some(54)),
        (7, None),
        (13, Some(41)),
        (60, None),
        (30, Some(10)),
    ];
    let mut checked = 0;
    for &(from_offset, to_offset) in &offset_ranges {
        for from_time in times {
            for until_time in [None, times[2], times[3], times[4], times[5], times[7]] {
                for types in type_sets {
                    for stream in &stream_filters {
                        for (limit, batch_size) in
                            [(None, 0), (Some(3), 2), (None, 1), (Some(100), 4)]
                        {
                            let query = ReadQuery {
                                from_offset,
                                to_offset,
                                from_time,
                                until_time,
                                types: types.iter().map(|s| (*s).to_owned()).collect(),
                                stream: stream.clone(),
                                limit,
                                batch_size,
                            };
                            let want = expected(&all, &query);
                            let got = read(&log, &query)?;
                            assert_eq!(offsets(&got), want, "{query:?}");
                            for event in &got {
                                assert_eq!(
                                    event,
                                    &all[event.offset as usize - 1],
                                    "events come back whole"
                                );
                            }
                            assert_eq!(log.count(&query)?, want.len() as u64, "count of {query:?}");
                            checked += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(checked > 1000);
    Ok(())
}

#[test]
fn time_ranges_are_half_open() -> Result {
    let (_dir, log, all) = fixture()?;
    let first_round = &all[..9];
    let start = first_round[0].recorded_at;
    let end = all[9].recorded_at;
    assert!(
        first_round.iter().all(|e| e.recorded_at == start),
        "one batch, one time"
    );
    assert!(end > start);
    let query = ReadQuery {
        from_time: Some(start),
        until_time: Some(end),
        ..ReadQuery::default()
    };
    assert_eq!(offsets(&read(&log, &query)?), (1..=9).collect::<Vec<_>>());
    let empty = ReadQuery {
        from_time: Some(end),
        until_time: Some(end),
        ..ReadQuery::default()
    };
    assert_eq!(log.count(&empty)?, 0);
    Ok(())
}

#[test]
fn reads_page_through_a_sparse_filter_on_a_log_larger_than_a_scan_window() -> Result {
    let dir = tempfile::tempdir()?;
    let log = EventLog::open(&dir.path().join("events.db"), fast())?;
    let total = SCAN_WINDOW as usize * 2 + 5000;
    // A matching event at the very start, in the middle and at the end; noise in between.
    let rare = [1, SCAN_WINDOW as usize + 17, total];
    for chunk in (1..=total).collect::<Vec<_>>().chunks(4000) {
        let batch = chunk
            .iter()
            .map(|&n| {
                if rare.contains(&n) {
                    ev(&format!("rare-{n}"), "Rare", "{}")
                } else {
                    ev(&format!("noise-{}", n % 50), "Noise", "{}")
                }
            })
            .collect();
        log.append(batch)?;
    }
    let queries = [
        ReadQuery {
            stream: StreamFilter::Prefixes(vec!["rare-".into()]),
            ..ReadQuery::default()
        },
        ReadQuery {
            types: vec!["Rare".into(), "Missing".into()],
            ..ReadQuery::default()
        },
        ReadQuery {
            types: vec!["Rare".into()],
            stream: StreamFilter::Prefixes(vec!["rare".into()]),
            batch_size: 1,
            ..ReadQuery::default()
        },
    ];
    for query in &queries {
        let got = offsets(&read(&log, query)?);
        assert_eq!(
            got,
            rare.iter().map(|&n| n as u64).collect::<Vec<_>>(),
            "{query:?}"
        );
        assert_eq!(log.count(query)?, 3);
    }
    let noise = ReadQuery {
        stream: StreamFilter::Exact("noise-7".into()),
        from_offset: 20_000,
        batch_size: 10,
        ..ReadQuery::default()
    };
    let got = read(&log, &noise)?;
    assert!(
        got.iter()
            .all(|e| e.stream == "noise-7" && e.offset >= 20_000)
    );
    assert_eq!(got.len() as u64, log.count(&noise)?);
    assert_eq!(
        got.len(),
        (20_000..=total)
            .filter(|n| n % 50 == 7 && !rare.contains(n))
            .count()
    );
    Ok(())
}

#[test]
fn reads_see_the_log_as_of_the_call() -> Result {
    let (_dir, log) = fresh_log()?;
    log.append((0..5).map(|i| ev("s", "E", &i.to_string())).collect())?;
    let mut iter = log.read(&ReadQuery {
        batch_size: 2,
        ..ReadQuery::default()
    })?;
    assert_eq!(iter.next().transpose()?.map(|e| e.offset), Some(1));
    log.append(vec![ev("s", "E", r#""later""#)])?;
    let rest: Vec<u64> = iter
        .map(|e| e.map(|e| e.offset))
        .collect::<std::result::Result<_, _>>()?;
    assert_eq!(rest, vec![2, 3, 4, 5]);
    Ok(())
}

#[test]
fn filters_are_answered_from_indexes() -> Result {
    let (_dir, log, _all) = fixture()?;
    let at = jiff::Timestamp::now();
    let queries = [
        ReadQuery {
            from_time: Some(at - Duration::from_secs(60)),
            until_time: Some(at),
            ..ReadQuery::default()
        },
        ReadQuery {
            from_time: Some(at),
            types: vec!["A".into(), "B".into()],
            ..ReadQuery::default()
        },
        ReadQuery {
            until_time: Some(at),
            stream: StreamFilter::Exact("order-1".into()),
            ..ReadQuery::default()
        },
        ReadQuery {
            from_time: Some(at),
            stream: StreamFilter::Prefixes(vec!["order-".into(), "user".into()]),
            ..ReadQuery::default()
        },
        ReadQuery {
            stream: StreamFilter::Exact("order-1".into()),
            types: vec!["A".into()],
            ..ReadQuery::default()
        },
    ];
    for query in &queries {
        let plan = log.explain(query)?;
        assert!(!plan.is_empty());
        for line in &plan {
            assert!(
                !line.starts_with("SCAN events"),
                "{query:?} scans the table: {plan:#?}"
            );
        }
        if query.from_time.is_some() || query.until_time.is_some() {
            assert!(
                plan.iter()
                    .any(|l| l.starts_with("SEARCH events USING INTEGER PRIMARY KEY")),
                "time bounds are searched by offset, one rowid lookup a step: {plan:#?}"
            );
        }
    }
    // A type filter pages along the (type, offset) index without sorting.
    let plan = log.explain(&ReadQuery {
        types: vec!["A".into()],
        ..ReadQuery::default()
    })?;
    assert!(
        plan.iter()
            .any(|l| l.contains("INDEX events_type_offset (type=? AND offset>? AND offset<?)")),
        "{plan:#?}"
    );
    assert!(!plan.iter().any(|l| l.contains("TEMP B-TREE")), "{plan:#?}");
    // Several types: one ordered, limited probe of that index per type, reading offsets
    // from the index alone (each arm is then sorted for the merge, which costs O(page),
    // not O(log)); the page's rows are then fetched by offset.
    let plan = log.explain(&ReadQuery {
        types: vec!["A".into(), "B".into(), "C".into()],
        ..ReadQuery::default()
    })?;
    let probes = plan.iter().filter(|l| {
        l.starts_with(
            "SEARCH events USING COVERING INDEX events_type_offset (type=? AND offset>? AND offset<?)",
        )
    });
    // Three probes in the page query, plus the count query's (run once per type).
    assert_eq!(probes.count(), 3 + 1, "{plan:#?}");
    assert!(
        plan.iter()
            .any(|l| l.starts_with("SEARCH events USING INTEGER PRIMARY KEY (rowid=?)")),
        "{plan:#?}"
    );
    // An exact stream pages along the stream index's key, fetches rows by offset, and
    // reads the unindexed tail as an offset range: never a scan of either table.
    for types in [vec![], vec!["A".to_owned()]] {
        let plan = log.explain(&ReadQuery {
            stream: StreamFilter::Exact("s".into()),
            types,
            ..ReadQuery::default()
        })?;
        assert!(
            plan.iter()
                .any(|l| l
                    .contains("SEARCH i USING PRIMARY KEY (stream=? AND version>? AND version<?)")),
            "{plan:#?}"
        );
        assert!(
            plan.iter()
                .any(|l| l.starts_with("SEARCH events USING INTEGER PRIMARY KEY (rowid>?")),
            "{plan:#?}"
        );
        // The two parts are co-routines read as they yield (`SCAN (subquery-N)`), each
        // in its index's own order: no table scan and no sort.
        assert!(
            !plan.iter().any(|l| l.starts_with("SCAN")
                && !l.starts_with("SCAN CONSTANT ROW")
                && !l.starts_with("SCAN (subquery-")),
            "{plan:#?}"
        );
        assert!(!plan.iter().any(|l| l.contains("TEMP B-TREE")), "{plan:#?}");
    }
    // Prefix counts: the streams' index entries, and the tail as an offset range.
    let plan = log.explain(&ReadQuery {
        stream: StreamFilter::Prefixes(vec!["order-".into(), "user".into()]),
        ..ReadQuery::default()
    })?;
    assert!(
        plan.iter()
            .any(|l| l.starts_with("SEARCH i USING PRIMARY KEY (stream=?)")),
        "{plan:#?}"
    );
    assert!(
        plan.iter()
            .any(|l| l.starts_with("SEARCH events USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)")),
        "{plan:#?}"
    );
    Ok(())
}

#[test]
fn read_batch_reports_how_far_it_scanned() -> Result {
    let (_dir, log) = fresh_log()?;
    // Offsets 1..=10; types alternate A (odd offsets) and B (even offsets).
    log.append(
        (1..=10)
            .map(|i| {
                ev(
                    &format!("s{}", i % 3),
                    if i % 2 == 1 { "A" } else { "B" },
                    &format!(r#"{{"n":{i}}}"#),
                )
            })
            .collect(),
    )?;
    let mut reader = log.reader()?;
    let only_b = ReadQuery {
        types: vec!["B".into()],
        ..ReadQuery::default()
    };

    // Fewer matches than max_events: scanned through the head, past unsubscribed events.
    let mut seen = Vec::new();
    let scan = reader.read_batch(&only_b, 0, 100, |e| {
        seen.push((e.offset, e.event_type.to_owned(), e.data.to_owned()));
        ControlFlow::Continue(())
    })?;
    assert_eq!(scan.visited, 5);
    assert_eq!(scan.scanned_through, 10);
    assert_eq!(
        seen.iter().map(|s| s.0).collect::<Vec<_>>(),
        vec![2, 4, 6, 8, 10]
    );
    assert_eq!(seen[0].2, r#"{"n":2}"#);

    // max_events reached: the last visited event.
    let scan = reader.read_batch(&only_b, 0, 2, |_| ControlFlow::Continue(()))?;
    assert_eq!((scan.visited, scan.scanned_through), (2, 4));
    let scan = reader.read_batch(&only_b, 4, 2, |_| ControlFlow::Continue(()))?;
    assert_eq!((scan.visited, scan.scanned_through), (2, 8));

    // The visitor breaks: the event it broke on counts.
    let scan = reader.read_batch(&ReadQuery::default(), 3, 100, |e| {
        if e.offset == 6 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    assert_eq!((scan.visited, scan.scanned_through), (3, 6));

    // Nothing after `after`: nothing visited, scanned through the head.
    let scan = reader.read_batch(&only_b, 10, 100, |_| panic!("nothing to visit"))?;
    assert_eq!((scan.visited, scan.scanned_through), (0, 10));
    let scan = reader.read_batch(&only_b, 9, 100, |_| ControlFlow::Continue(()))?;
    assert_eq!((scan.visited, scan.scanned_through), (1, 10));

    // Borrowed rows carry everything.
    let mut first = None;
    reader.read_batch(
        &ReadQuery {
            stream: StreamFilter::Exact("s1".into()),
            ..ReadQuery::default()
        },
        0,
        1,
        |e| {
            first = Some(e.to_event());
            ControlFlow::Continue(())
        },
    )?;
    let all = all_events(&log)?;
    assert_eq!(first.as_ref(), Some(&all[0]));

    // A later append by the log is visible to the next batch.
    log.append(vec![ev("s", "B", "{}")])?;
    assert_eq!(reader.head()?, 11);
    let scan = reader.read_batch(&only_b, 10, 100, |_| ControlFlow::Continue(()))?;
    assert_eq!((scan.visited, scan.scanned_through), (1, 11));
    Ok(())
}

/// A type filter is read as a sequential scan where it matches most rows and as index
/// probes where it matches few; whichever plan each batch takes, batches visit exactly
/// the matching events, in order, once, and never claim to have scanned past one.
#[test]
fn read_batch_by_type_is_exact_on_dense_and_sparse_stretches() -> Result {
    let (_dir, log) = fresh_log()?;
    // Dense: offsets 1..=3000 alternate A, B, C. Sparse: then one A in every 3000
    // offsets among Z, over more than one scan window. Dense again at the end.
    let dense = |from: u64, to: u64| {
        (from..=to)
            .map(|i| ev("d", ["A", "B", "C"][(i % 3) as usize], "{}"))
            .collect::<Vec<_>>()
    };
    log.append(dense(1, 3000))?;
    let sparse_len = SCAN_WINDOW + 6000;
    log.append(
        (1..=sparse_len)
            .map(|i| ev("s", if i % 3000 == 0 { "A" } else { "Z" }, "{}"))
            .collect(),
    )?;
    let head = log.head()?;
    log.append(dense(head + 1, head + 2000))?;
    let all = all_events(&log)?;
    let head = log.head()?;
    for types in [vec!["A"], vec!["A", "B"], vec!["C", "A", "B"], vec!["Z"]] {
        let query = ReadQuery {
            types: types.iter().map(|t| (*t).to_owned()).collect(),
            ..ReadQuery::default()
        };
        let want: Vec<u64> = all
            .iter()
            .filter(|e| types.contains(&e.event_type.as_str()))
            .map(|e| e.offset)
            .collect();
        // With the sequential scan allowed (the default) and without it: the same events.
        for (max_events, scan) in [(1, true), (7, true), (1000, true), (7, false)] {
            // A fresh reader per run, so each starts from the sampled statistic.
            let mut reader = if scan {
                log.reader()?
            } else {
                EventLog::open(
                    log.path(),
                    LogOptions {
                        sequential_scan: false,
                        ..LogOptions::default()
                    },
                )?
                .reader()?
            };
            let (mut after, mut got) = (0, Vec::new());
            while after < head {
                let scan = reader.read_batch(&query, after, max_events, |e| {
                    got.push(e.offset);
                    ControlFlow::Continue(())
                })?;
                assert!(scan.visited <= max_events);
                assert!(
                    scan.scanned_through > after,
                    "{types:?}/{max_events}: stuck at {after}"
                );
                after = scan.scanned_through;
            }
            assert_eq!(after, head);
            assert_eq!(got, want, "{types:?}, {max_events} per batch, scan {scan}");
        }
    }
    Ok(())
}

#[test]
fn events_serialize_as_json_with_embedded_data() -> Result {
    let (_dir, log) = fresh_log()?;
    log.append(vec![
        ev("s", "Made", r#" {"a": [1, 2]} "#)
            .with_metadata(r#"{"corr":"x"}"#)
            .with_id("e-1"),
        ev("s", "Bare", "7"),
    ])?;
    let events = all_events(&log)?;
    let json: serde_json::Value = serde_json::to_value(&events[0])?;
    assert_eq!(json["offset"], 1);
    assert_eq!(json["id"], "e-1");
    assert_eq!(json["stream"], "s");
    assert_eq!(json["stream_version"], 1);
    assert_eq!(json["type"], "Made");
    assert_eq!(json["data"], serde_json::json!({"a": [1, 2]}));
    assert_eq!(json["metadata"], serde_json::json!({"corr": "x"}));
    let recorded = json["recorded_at"]
        .as_str()
        .ok_or("recorded_at is a string")?;
    assert_eq!(recorded.parse::<jiff::Timestamp>()?, events[0].recorded_at);
    assert!(
        recorded.ends_with('Z') && recorded.len() == "2025-01-01T00:00:00.000000Z".len(),
        "{recorded}"
    );
    let json: serde_json::Value = serde_json::to_value(&events[1])?;
    assert_eq!(json["data"], 7);
    assert!(json["metadata"].is_null());
    Ok(())
}

#[test]
fn reopening_keeps_events_and_continues_offsets_and_times() -> Result {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("nested/deeper/events.db");
    {
        let log = EventLog::open(&path, LogOptions::default())?;
        log.append(vec![ev("s", "E", "1"), ev("s", "E", "2")])?;
    }
    let log = EventLog::open(&path, LogOptions::default())?;
    assert_eq!(log.head()?, 2);
    assert_eq!(*log.watch_head().borrow(), 2);
    assert_eq!(
        log.append(vec![ev("s", "E", "3").with_expected_version(2)])?,
        vec![3]
    );
    let events = all_events(&log)?;
    assert_gap_free(&events);
    assert!(
        events
            .windows(2)
            .all(|w| w[0].recorded_at <= w[1].recorded_at)
    );
    Ok(())
}

#[test]
fn watch_head_follows_commits() -> Result {
    let (_dir, log) = fresh_log()?;
    let mut watch = log.watch_head();
    assert_eq!(*watch.borrow_and_update(), 0);
    log.append(vec![ev("s", "E", "1"), ev("s", "E", "2")])?;
    assert!(watch.has_changed()?);
    assert_eq!(*watch.borrow_and_update(), 2);
    // A failed append publishes nothing.
    let _ = log.append(vec![ev("s", "E", "3").with_expected_version(0)]);
    assert!(!watch.has_changed()?);
    Ok(())
}

#[test]
fn a_log_written_by_a_newer_schema_is_refused_and_left_alone() -> Result {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("events.db");
    EventLog::open(&path, LogOptions::default())?.append(vec![ev("s", "E", "{}")])?;
    {
        let conn = rusqlite::Connection::open(&path)?;
        conn.pragma_update(None, "user_version", 7)?;
    }
    let before = std::fs::read(&path)?;
    let err = EventLog::open(&path, LogOptions::default()).unwrap_err();
    match &err {
        LogError::NewerSchema {
            found,
            supported,
            path: p,
        } => {
            assert_eq!((*found, *supported), (7, SCHEMA_VERSION));
            assert_eq!(p, &path);
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains(&format!("was written by a newer Refract (schema 7, this build supports {SCHEMA_VERSION}); upgrade refract")), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert_eq!(std::fs::read(&path)?, before, "the file is not altered");
    let version: i64 =
        rusqlite::Connection::open(&path)?
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
    assert_eq!(version, 7);
    Ok(())
}

fn assert_refused(path: &Path, check: impl Fn(&LogError) -> bool) -> Result {
    let before = std::fs::read(path)?;
    let err = EventLog::open(path, LogOptions::default())
        .err()
        .ok_or("opening should have failed")?;
    assert!(check(&err), "unexpected error: {err:?}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "the error names the file: {err}"
    );
    assert_eq!(
        std::fs::read(path)?,
        before,
        "a refused file is not altered"
    );
    Ok(())
}

#[test]
fn files_that_are_not_refract_logs_are_refused() -> Result {
    let dir = tempfile::tempdir()?;

    let text: PathBuf = dir.path().join("text.db");
    std::fs::write(
        &text,
        "this is not a database, just some text that is long enough",
    )?;
    assert_refused(&text, |e| matches!(e, LogError::NotSqlite { .. }))?;
    let short = dir.path().join("short.db");
    std::fs::write(&short, "SQLite")?;
    assert_refused(&short, |e| matches!(e, LogError::NotSqlite { .. }))?;

    let foreign = dir.path().join("foreign.db");
    rusqlite::Connection::open(&foreign)?.execute_batch("CREATE TABLE people (name TEXT)")?;
    assert_refused(&foreign, |e| matches!(e, LogError::NotRefractLog { .. }))?;

    let other_app = dir.path().join("other-app.db");
    rusqlite::Connection::open(&other_app)?.pragma_update(None, "application_id", 1234)?;
    assert_refused(&other_app, |e| matches!(e, LogError::NotRefractLog { .. }))?;

    let err = EventLog::open(dir.path(), LogOptions::default()).unwrap_err();
    assert!(
        matches!(err, LogError::Open { .. }),
        "a directory is not a log file: {err:?}"
    );

    // An empty file is an empty database: it becomes a log.
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, "")?;
    assert_eq!(
        EventLog::open(&empty, LogOptions::default())?.append(vec![ev("s", "E", "1")])?,
        vec![1]
    );
    Ok(())
}

#[test]
fn invalid_queries_are_errors() -> Result {
    let (_dir, log) = fresh_log()?;
    let query = ReadQuery {
        stream: StreamFilter::Prefixes(Vec::new()),
        ..ReadQuery::default()
    };
    assert!(matches!(
        log.read(&query).unwrap_err(),
        LogError::InvalidQuery { .. }
    ));
    assert!(matches!(
        log.count(&query).unwrap_err(),
        LogError::InvalidQuery { .. }
    ));
    let many = ReadQuery {
        types: (0..500).map(|i| i.to_string()).collect(),
        ..ReadQuery::default()
    };
    assert!(matches!(
        log.read(&many).unwrap_err(),
        LogError::InvalidQuery { .. }
    ));
    Ok(())
}

#[test]
fn the_log_is_send_sync_and_cheap_to_clone() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<EventLog>();
    fn assert_send<T: Send>() {}
    assert_send::<refract::log::LogReader>();
    assert_send::<refract::log::EventIter>();
}

// ---- the log as a cluster node's mirror ------------------------------------------------

mod mirror {
    use super::*;
    use refract::log::{MirrorBatch, OrderedMessage, OrderedRequest};

    fn block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
            .block_on(future)
    }

    fn request(recorded_at: i64, events: Vec<NewEvent>) -> OrderedRequest {
        OrderedRequest {
            recorded_at,
            events,
        }
    }

    fn with_id(id: &str, stream: &str, expected: Option<u64>) -> NewEvent {
        let mut event = NewEvent::new(stream, "T", format!(r#"{{"id":"{id}"}}"#)).with_id(id);
        event.expected_version = expected;
        event
    }

    /// Messages 1..=4: two plain requests, a conflicting one, a retry of the first
    /// (duplicate ids), and one whose time is earlier than the one before.
    fn messages() -> Vec<OrderedMessage> {
        vec![
            OrderedMessage {
                position: 1,
                requests: vec![
                    request(
                        100,
                        vec![with_id("a", "s1", Some(0)), with_id("b", "s1", None)],
                    ),
                    request(200, vec![with_id("c", "s2", None)]),
                ],
            },
            OrderedMessage {
                position: 2,
                requests: vec![request(300, vec![with_id("d", "s1", Some(0))])],
            },
            OrderedMessage {
                position: 3,
                requests: vec![request(
                    400,
                    vec![with_id("a", "s1", Some(0)), with_id("b", "s1", None)],
                )],
            },
            OrderedMessage {
                position: 4,
                requests: vec![request(50, vec![with_id("e", "s1", Some(2))])],
            },
        ]
    }

    fn apply(log: &EventLog, messages: Vec<OrderedMessage>) -> Result<refract::log::MirrorOutcome> {
        Ok(block_on(log.apply_ordered(MirrorBatch {
            source: "STREAM@1".into(),
            messages,
        }))?)
    }

    #[test]
    fn replicated_requests_apply_like_local_appends_and_identically_everywhere() -> Result {
        let (_a, first) = fresh_log()?;
        let (_b, second) = fresh_log()?;
        // One node applies everything at once, the other message by message.
        let outcome = apply(&first, messages())?;
        let mut one_by_one = Vec::new();
        for message in messages() {
            one_by_one.extend(apply(&second, vec![message])?);
        }
        let offsets = |outcome: &refract::log::MirrorOutcome| -> Vec<Vec<std::result::Result<Vec<u64>, String>>> {
            outcome
                .iter()
                .map(|m| {
                    m.iter()
                        .map(|r| match r {
                            Ok(offsets) => Ok(offsets.clone()),
                            Err(error) => Err(error.to_string()),
                        })
                        .collect()
                })
                .collect()
        };
        assert_eq!(offsets(&outcome), offsets(&one_by_one));
        assert_eq!(outcome[0][0].as_ref().ok(), Some(&vec![1, 2]));
        assert_eq!(outcome[0][1].as_ref().ok(), Some(&vec![3]));
        assert!(
            matches!(
                &outcome[1][0],
                Err(LogError::VersionConflict {
                    expected: 0,
                    actual: 2,
                    ..
                })
            ),
            "{:?}",
            outcome[1][0]
        );
        // A retry of the first request is answered with its original offsets.
        assert_eq!(outcome[2][0].as_ref().ok(), Some(&vec![1, 2]));
        assert_eq!(outcome[3][0].as_ref().ok(), Some(&vec![4]));

        let events = all_events(&first)?;
        assert_gap_free(&events);
        assert_eq!(events, all_events(&second)?);
        let times: Vec<i64> = events
            .iter()
            .map(|e| refract::log::timestamp_to_micros(e.recorded_at))
            .collect();
        // The publisher's times, never decreasing along offsets.
        assert_eq!(times, vec![100, 100, 200, 200]);
        let position = first.mirror_position()?.ok_or("a mirror position")?;
        assert_eq!((position.position, position.head), (4, 4));
        assert_eq!(first.head()?, 4);
        assert_eq!(first.watch_head().borrow().to_owned(), 4);
        // The refused request (message 2) left no head behind on either node.
        assert_stream_heads_exact(first.path(), &events)?;
        assert_stream_heads_exact(second.path(), &events)?;
        Ok(())
    }

    #[test]
    fn a_mirror_refuses_local_appends_gaps_and_foreign_writes() -> Result {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("events.db");
        let log = EventLog::open(&path, LogOptions::default())?;
        apply(&log, messages()[..1].to_vec())?;
        let refused = log.append(vec![ev("s", "T", "{}")]).unwrap_err();
        assert!(matches!(refused, LogError::Mirror { .. }), "{refused}");
        assert!(
            refused
                .to_string()
                .contains("append through a running cluster node")
        );
        // Reopened, it still knows it is a mirror.
        drop(log);
        let log = EventLog::open(&path, LogOptions::default())?;
        assert!(matches!(
            log.append(vec![ev("s", "T", "{}")]),
            Err(LogError::Mirror { .. })
        ));
        // Position 3 after 1: a gap.
        let gap = apply(&log, messages()[2..3].to_vec()).unwrap_err();
        assert!(gap.to_string().contains("messages are missing"), "{gap}");
        // Another source.
        let other = block_on(log.apply_ordered(MirrorBatch {
            source: "OTHER@2".into(),
            messages: messages()[1..2].to_vec(),
        }))
        .unwrap_err();
        assert!(other.to_string().contains("mirrors `STREAM@1`"), "{other}");
        // Someone writes behind the mirror's back.
        drop(log);
        let conn = rusqlite::Connection::open(&path)?;
        conn.execute(
            r#"INSERT INTO events ("offset", id, stream, stream_version, type, data, recorded_at)
               VALUES (4, 'x', 'sx', 1, 'T', '{}', 0)"#,
            [],
        )?;
        drop(conn);
        let log = EventLog::open(&path, LogOptions::default())?;
        let foreign = apply(&log, messages()[1..2].to_vec()).unwrap_err();
        assert!(
            foreign.to_string().contains("something else wrote to it"),
            "{foreign}"
        );
        Ok(())
    }

    #[test]
    fn a_single_node_log_becomes_a_mirror_only_by_hand_over() -> Result {
        let (_dir, log) = fresh_log()?;
        log.append(vec![ev("s", "T", "{}"), ev("s", "T", "{}")])?;
        let refused = apply(&log, messages()[..1].to_vec()).unwrap_err();
        assert!(
            refused.to_string().contains("refract cluster init --from"),
            "{refused}"
        );
        block_on(log.start_mirror("STREAM@1".into(), 1))?;
        let position = log.mirror_position()?.ok_or("a mirror position")?;
        assert_eq!((position.position, position.head), (1, 2));
        assert!(block_on(log.start_mirror("STREAM@1".into(), 1)).is_err());
        let outcome = apply(&log, messages()[1..2].to_vec())?;
        // `d` expects a new stream s1: it does not exist in this log, so it applies.
        assert_eq!(outcome[0][0].as_ref().ok(), Some(&vec![3]));
        Ok(())
    }
}

/// The migration from an older log format, on a real file written by an older Refract
/// (`tests/fixtures/log-v3/`, see its README).
mod migration {
    use super::*;

    /// The fixture: a log of schema version 3, written by `refract` at commit 5d56a1a.
    const FIXTURE_V3: &str = "tests/fixtures/log-v3/events.db";

    fn repo_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("host/ has a parent")
            .to_path_buf()
    }

    /// Every event of a log file, read with plain SQL (not through the code under test).
    fn raw_events(path: &Path) -> Result<Vec<Event>> {
        let conn = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        let mut stmt = conn.prepare(
            r#"SELECT "offset", id, stream, stream_version, type, data, metadata, recorded_at
               FROM events ORDER BY "offset""#,
        )?;
        let rows = stmt.query_map([], |row| {
            let micros: i64 = row.get(7)?;
            let number = |index: usize| -> rusqlite::Result<u64> {
                Ok(u64::try_from(row.get::<_, i64>(index)?).unwrap_or(u64::MAX))
            };
            Ok(Event {
                offset: number(0)?,
                id: row.get(1)?,
                stream: row.get(2)?,
                stream_version: number(3)?,
                event_type: row.get(4)?,
                data: row.get(5)?,
                metadata: row.get(6)?,
                recorded_at: refract::log::micros_to_timestamp(micros),
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// The `streams` table (schema 4): (id, name, head version), by id.
    fn stream_heads(path: &Path) -> Result<Vec<(i64, String, u64)>> {
        let conn = rusqlite::Connection::open(path)?;
        let mut stmt = conn.prepare("SELECT id, name, version FROM streams ORDER BY id")?;
        let rows = stmt.query_map([], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get::<_, i64>(2)? as u64))
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// (stream index entries, watermark), after checking `events_stream_version` is gone.
    fn stream_index_state(path: &Path) -> Result<(u64, u64)> {
        let conn = rusqlite::Connection::open(path)?;
        let old_index: i64 = conn.query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name = 'events_stream_version'",
            [],
            |row| row.get(0),
        )?;
        assert_eq!(old_index, 0, "schema 5 drops events_stream_version");
        Ok(conn.query_row(
            "SELECT (SELECT count(*) FROM stream_index), \
                    (SELECT indexed_through FROM stream_indexed)",
            [],
            |row| Ok((row.get::<_, i64>(0)? as u64, row.get::<_, i64>(1)? as u64)),
        )?)
    }

    fn user_version(path: &Path) -> Result<i64> {
        Ok(rusqlite::Connection::open(path)?
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    #[test]
    fn a_schema_3_log_written_by_an_older_refract_migrates_intact() -> Result {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("events.db");
        std::fs::copy(repo_root().join(FIXTURE_V3), &path)?;
        assert_eq!(user_version(&path)?, 3, "the fixture is a schema-3 log");
        let before = raw_events(&path)?;
        // What the fixture was made with (see its README): a guard against an empty or
        // truncated fixture making every comparison below trivially true.
        assert_eq!(before.len(), 202);
        let streams: HashSet<&str> = before.iter().map(|e| e.stream.as_str()).collect();
        assert_eq!(streams.len(), 10);
        assert!(before.iter().filter(|e| e.metadata.is_some()).count() > 50);
        assert!(before.iter().any(|e| e.id.starts_with("fixture-")));
        assert!(before.iter().any(|e| uuid::Uuid::parse_str(&e.id).is_ok()));

        let log = EventLog::open(&path, LogOptions::default())?;
        // The migration filled the stream heads from the events, ids in first-event order.
        let mut firsts: Vec<(&str, u64)> = Vec::new();
        for event in &before {
            match firsts.iter_mut().find(|(s, _)| *s == event.stream) {
                Some(entry) => entry.1 = event.stream_version,
                None => firsts.push((&event.stream, event.stream_version)),
            }
        }
        let expected_heads: Vec<(i64, String, u64)> = firsts
            .iter()
            .enumerate()
            .map(|(i, (s, v))| (i as i64 + 1, (*s).to_owned(), *v))
            .collect();
        assert_eq!(stream_heads(&path)?, expected_heads);
        // Schema 5: the stream index was filled from the events, and the UNIQUE index it
        // replaces is gone.
        assert_eq!(stream_index_state(&path)?, (202, 202));
        // Every event, field by field.
        assert_eq!(all_events(&log)?, before);
        assert_eq!(log.head()?, 202);

        // Stream, type and time reads return what the old file holds.
        for stream in &streams {
            let query = ReadQuery {
                stream: StreamFilter::Exact((*stream).to_owned()),
                ..ReadQuery::default()
            };
            assert_eq!(
                read(&log, &query)?,
                expected_events(&before, &query),
                "{stream}"
            );
            assert_eq!(
                log.count(&query)?,
                expected_events(&before, &query).len() as u64
            );
            let paged = ReadQuery {
                from_offset: 50,
                to_offset: Some(150),
                batch_size: 3,
                ..query
            };
            assert_eq!(
                read(&log, &paged)?,
                expected_events(&before, &paged),
                "{stream}"
            );
        }
        let by_type = ReadQuery {
            types: vec!["Shipped".into(), "Closed".into()],
            ..ReadQuery::default()
        };
        assert_eq!(read(&log, &by_type)?, expected_events(&before, &by_type));
        let prefixed = ReadQuery {
            stream: StreamFilter::Prefixes(vec!["account-".into()]),
            ..ReadQuery::default()
        };
        assert_eq!(read(&log, &prefixed)?, expected_events(&before, &prefixed));
        assert_eq!(
            log.count(&prefixed)?,
            expected_events(&before, &prefixed).len() as u64
        );
        let middle = before[100].recorded_at;
        let later = before[170].recorded_at;
        let timed = ReadQuery {
            from_time: Some(middle),
            until_time: Some(later),
            ..ReadQuery::default()
        };
        let timed_events = read(&log, &timed)?;
        assert!(!timed_events.is_empty());
        assert_eq!(timed_events, expected_events(&before, &timed));

        // Versions continue where the old file left them, and conflicts are still caught.
        let version_of = |stream: &str| {
            before
                .iter()
                .filter(|e| e.stream == stream)
                .map(|e| e.stream_version)
                .max()
                .unwrap_or(0)
        };
        let head_1 = version_of("order-1");
        let stale = ev("order-1", "Updated", "{}").with_expected_version(head_1 - 1);
        assert!(matches!(
            log.append(vec![stale]),
            Err(LogError::VersionConflict { expected, actual, .. }) if expected == head_1 - 1 && actual == head_1
        ));
        let fresh =
            ev("order-1", "Updated", r#"{"after":"migration"}"#).with_expected_version(head_1);
        assert_eq!(
            log.append(vec![
                fresh,
                ev("account-α", "Updated", "{}"),
                ev("brand-new", "Created", "{}")
            ])?,
            vec![203, 204, 205]
        );
        // An id stored by the old Refract is still a no-op repeat.
        assert_eq!(
            log.append(vec![ev("order-2", "X", "{}").with_id("fixture-0004")])?,
            vec![
                before
                    .iter()
                    .find(|e| e.id == "fixture-0004")
                    .map_or(0, |e| e.offset)
            ]
        );
        let after = all_events(&log)?;
        assert_eq!(after[..202], before[..]);
        // Stream reads and counts over the migrated index and the new, possibly
        // unindexed, tail.
        for stream in streams.iter().copied().chain(["brand-new"]) {
            for from_offset in [0, 100, 203] {
                let query = ReadQuery {
                    stream: StreamFilter::Exact(stream.to_owned()),
                    from_offset,
                    batch_size: 2,
                    ..ReadQuery::default()
                };
                let want = expected_events(&after, &query);
                assert_eq!(read(&log, &query)?, want, "{stream}");
                assert_eq!(log.count(&query)?, want.len() as u64, "{stream}");
            }
        }
        // Time ranges over the migrated events (schema 6 has no index on time: the
        // bounds are binary searches over offsets), at every recorded instant.
        for event in after.iter().step_by(17) {
            let at = event.recorded_at;
            for query in [
                ReadQuery {
                    from_time: Some(at),
                    ..ReadQuery::default()
                },
                ReadQuery {
                    until_time: Some(at),
                    ..ReadQuery::default()
                },
            ] {
                let want = expected_events(&after, &query);
                assert_eq!(read(&log, &query)?, want, "{query:?}");
                assert_eq!(log.count(&query)?, want.len() as u64, "{query:?}");
            }
        }
        let tail: Vec<(&str, u64)> = after[202..]
            .iter()
            .map(|e| (e.stream.as_str(), e.stream_version))
            .collect();
        assert_eq!(
            tail,
            vec![
                ("order-1", head_1 + 1),
                ("account-α", version_of("account-α") + 1),
                ("brand-new", 1)
            ]
        );
        drop(log);
        // The writer indexed the new events at the latest when it shut down.
        assert_eq!(stream_index_state(&path)?, (205, 205));
        let heads = stream_heads(&path)?;
        assert_eq!(heads.len(), 11);
        assert_eq!(heads[10].1, "brand-new");
        for (_, name, version) in &heads {
            let newest = after
                .iter()
                .filter(|e| &e.stream == name)
                .map(|e| e.stream_version)
                .max();
            assert_eq!(Some(*version), newest, "the head of {name}");
        }

        // The file says it has the new schema, and no index on time; opening it again
        // changes nothing.
        assert_eq!(user_version(&path)?, SCHEMA_VERSION);
        let time_indexes: i64 = rusqlite::Connection::open(&path)?.query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND sql LIKE '%recorded_at%'",
            [],
            |row| row.get(0),
        )?;
        assert_eq!(
            time_indexes, 0,
            "migration 6 drops the index on recorded_at"
        );
        let migrated = std::fs::read(&path)?;
        let log = EventLog::open(&path, LogOptions::default())?;
        assert_eq!(all_events(&log)?, after);
        drop(log);
        assert_eq!(user_version(&path)?, SCHEMA_VERSION);
        assert!(
            std::fs::read(&path)? == migrated,
            "a second open of a migrated log writes nothing"
        );
        Ok(())
    }

    /// The events of `all` that `query` selects, by a plain filter.
    fn expected_events(all: &[Event], query: &ReadQuery) -> Vec<Event> {
        let wanted: HashSet<u64> = expected(all, query).into_iter().collect();
        all.iter()
            .filter(|e| wanted.contains(&e.offset))
            .cloned()
            .collect()
    }
}

#[test]
fn a_stream_whose_events_were_all_removed_continues_its_versions() -> Result {
    let (_dir, log) = fresh_log()?;
    log.append(vec![
        ev("gone", "E", "{}"),
        ev("gone", "E", "{}"),
        ev("gone", "E", "{}"),
        ev("other", "E", "{}"),
    ])?;
    // New streams get ids in order of their first event, whatever their names hash to.
    let many: Vec<NewEvent> = (0..50)
        .map(|i| ev(&format!("new-{}", 49 - i), "E", "{}"))
        .collect();
    log.append(many)?;
    let conn = rusqlite::Connection::open(log.path())?;
    let names: Vec<String> = conn
        .prepare("SELECT name FROM streams ORDER BY id")?
        .query_map([], |row| row.get(0))?
        .collect::<std::result::Result<_, _>>()?;
    let mut expected_names = vec!["gone".to_owned(), "other".to_owned()];
    expected_names.extend((0..50).map(|i| format!("new-{}", 49 - i)));
    assert_eq!(names, expected_names);
    drop(conn);
    // Retention's pass never chooses a stream's newest event; the pruner itself removes
    // whatever it is handed, and the stream's head must survive even that.
    let mut pruner = log.pruner()?;
    assert_eq!(pruner.stream_version("gone")?, 3);
    assert_eq!(
        pruner.remove(&[1, 2, 3], refract::log::Removal::Deleted)?,
        3
    );
    let gone = ReadQuery {
        stream: StreamFilter::Exact("gone".into()),
        ..ReadQuery::default()
    };
    assert!(read(&log, &gone)?.is_empty());
    assert_eq!(log.count(&gone)?, 0);
    assert_eq!(
        pruner.stream_version("gone")?,
        3,
        "the head outlives the events"
    );
    // Version 1 is taken (and was removed): expecting an empty stream is a conflict.
    assert!(matches!(
        log.append(vec![ev("gone", "E", "{}").with_expected_version(0)]),
        Err(LogError::VersionConflict {
            expected: 0,
            actual: 3,
            ..
        })
    ));
    assert_eq!(
        log.append(vec![ev("gone", "E", "{}").with_expected_version(3)])?,
        vec![55]
    );
    let events = read(&log, &gone)?;
    assert_eq!(
        events
            .iter()
            .map(|e| (e.offset, e.stream_version))
            .collect::<Vec<_>>(),
        vec![(55, 4)]
    );
    // A second handle (a fresh writer with no cache) sees the same head.
    drop(log);
    let log = EventLog::open(&_dir.path().join("events.db"), LogOptions::default())?;
    assert_eq!(log.append(vec![ev("gone", "E", "{}")])?, vec![56]);
    assert_eq!(read(&log, &gone)?.last().map(|e| e.stream_version), Some(5));
    Ok(())
}

#[test]
fn stream_heads_stay_exact_when_a_real_appender_is_killed_mid_batch() -> Result {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("batch.jsonl");
    let batch_len = 20_000;
    let mut lines = String::new();
    for i in 0..batch_len {
        lines.push_str(&format!(
            "{{\"stream\":\"s-{}\",\"type\":\"E\",\"data\":{{\"i\":{i}}}}}\n",
            i % 97
        ));
    }
    std::fs::write(&file, lines)?;
    let data_dir = dir.path().join("data");
    let append = || {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_refract"));
        command
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("append")
            .arg("--file")
            .arg(&file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        command
    };
    // One complete append says how long one takes; then `kill -9` at fractions of that,
    // so the kills land before, during and after the commit (the commit is at the end).
    let started = std::time::Instant::now();
    assert!(append().status()?.success(), "a first, complete append");
    let whole = started.elapsed();
    for percent in [40, 80, 90, 95, 100, 105, 115] {
        let mut child = append().spawn()?;
        thread::sleep(whole * percent / 100);
        child.kill()?;
        child.wait()?;
    }
    assert!(append().status()?.success(), "a last, complete append");
    let path = data_dir.join("events.db");
    let log = EventLog::open(&path, LogOptions::default())?;
    let events = all_events(&log)?;
    // Each batch is atomic: whole batches only, at least the last one.
    assert!(
        !events.is_empty() && events.len() % batch_len == 0,
        "{}",
        events.len()
    );
    assert_gap_free(&events);
    assert_stream_heads_exact(&path, &events)?;
    // Kills landed between a commit and its stream-index pass too: whatever the file
    // holds, the reopened log's tail is within the bound and stream reads are exact.
    let through: i64 = rusqlite::Connection::open(&path)?.query_row(
        "SELECT indexed_through FROM stream_indexed",
        [],
        |row| row.get(0),
    )?;
    assert!(
        (events.len() as u64) - (through as u64) < refract::log::DEFAULT_STREAM_INDEX_CHUNK,
        "{through} of {}",
        events.len()
    );
    for stream in ["s-0", "s-5", "s-96"] {
        let query = ReadQuery {
            stream: StreamFilter::Exact(stream.to_owned()),
            from_offset: 7,
            ..ReadQuery::default()
        };
        assert_eq!(offsets(&read(&log, &query)?), expected(&events, &query));
    }
    // And the next append continues every stream from its head.
    let head_of = |stream: &str| {
        events
            .iter()
            .filter(|e| e.stream == stream)
            .map(|e| e.stream_version)
            .max()
            .unwrap_or(0)
    };
    let next = ev("s-5", "E", "{}").with_expected_version(head_of("s-5"));
    assert_eq!(log.append(vec![next])?, vec![events.len() as u64 + 1]);
    Ok(())
}

// ---- the deferred stream index (schema 5) ----------------------------------------------

mod stream_index {
    use super::*;
    use refract::log::{DEFAULT_STREAM_INDEX_CHUNK, Removal};

    /// Options that keep a tail unindexed: a small chunk, no idle or shutdown pass.
    fn chunked(chunk: u64) -> LogOptions {
        LogOptions {
            stream_index_chunk: chunk,
            stream_index_when_idle: false,
            ..fast()
        }
    }

    /// (head, watermark, index entries), read from the file with plain SQL in one
    /// snapshot (the writer may be indexing meanwhile).
    fn index_state(path: &Path) -> Result<(u64, u64, u64)> {
        let conn = rusqlite::Connection::open(path)?;
        Ok(conn.query_row(
            r#"SELECT (SELECT coalesce(max("offset"), 0) FROM events),
                      (SELECT indexed_through FROM stream_indexed),
                      (SELECT count(*) FROM stream_index)"#,
            [],
            |row| {
                let number = |i| row.get::<_, i64>(i).map(|n| n as u64);
                Ok((number(0)?, number(1)?, number(2)?))
            },
        )?)
    }

    /// Waits (a liveness timeout, not a measurement) until the whole log is indexed.
    fn wait_until_indexed(path: &Path) -> Result<(u64, u64, u64)> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let state = index_state(path)?;
            if state.1 == state.0 {
                return Ok(state);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the writer did not index the tail: {state:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every exact-stream read and count shape of `streams`, against a plain filter of
    /// `all`: whole streams, offset ranges that start and end on either side of the
    /// watermark, types, small pages, limits.
    fn assert_stream_reads_exact(log: &EventLog, all: &[Event], streams: &[&str]) -> Result {
        let head = all.last().map_or(0, |e| e.offset);
        let cuts = [0, 1, head / 3, head / 2, head.saturating_sub(5), head];
        for stream in streams {
            for &from in &cuts {
                for &to in &cuts {
                    for types in [
                        vec![],
                        vec!["B".to_owned()],
                        vec!["A".to_owned(), "B".to_owned(), "C".to_owned()],
                    ] {
                        let query = ReadQuery {
                            stream: StreamFilter::Exact((*stream).to_owned()),
                            from_offset: from,
                            to_offset: (to < head).then_some(to),
                            types,
                            batch_size: 4,
                            ..ReadQuery::default()
                        };
                        let want = expected(all, &query);
                        assert_eq!(offsets(&read(log, &query)?), want, "{query:?}");
                        assert_eq!(log.count(&query)?, want.len() as u64, "{query:?}");
                    }
                }
            }
            let limited = ReadQuery {
                stream: StreamFilter::Exact((*stream).to_owned()),
                limit: Some(3),
                ..ReadQuery::default()
            };
            assert_eq!(offsets(&read(log, &limited)?), expected(all, &limited));
        }
        let prefixed = ReadQuery {
            stream: StreamFilter::Prefixes(vec!["s-1".into(), "t".into()]),
            from_offset: head / 4,
            ..ReadQuery::default()
        };
        assert_eq!(log.count(&prefixed)?, expected(all, &prefixed).len() as u64);
        Ok(())
    }

    fn batch(round: usize, len: usize) -> Vec<NewEvent> {
        (0..len)
            .map(|i| {
                let stream = ["s-1", "s-2", "s-10", "t"][(round + i * i) % 4];
                ev(
                    stream,
                    ["A", "B"][(round + i) % 2],
                    &format!(r#"{{"r":{round}}}"#),
                )
            })
            .collect()
    }

    #[test]
    fn stream_reads_are_exact_while_the_tail_is_partly_unindexed_and_stay_bounded() -> Result {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("events.db");
        let chunk = 7;
        let log = EventLog::open(&path, chunked(chunk))?;
        let (mut saw_tail, mut saw_index) = (false, false);
        for round in 0..24 {
            let len = 1 + round % 5;
            log.append(batch(round, len))?;
            let (head, through, entries) = index_state(&path)?;
            // The writer indexes once the tail reaches the chunk, right after the group
            // that reached it: a reader never sees more than the chunk plus one group.
            assert!(
                head - through < chunk + len as u64,
                "tail {} at round {round}",
                head - through
            );
            assert_eq!(
                entries, through,
                "every event up to the watermark is indexed"
            );
            // What status and metrics show of it, read the same way by the log itself.
            let shown = log.unindexed_tail()?;
            assert!(
                shown < chunk + len as u64,
                "unindexed_tail {shown} at round {round}"
            );
            saw_tail |= head > through;
            saw_index |= through > 0;
            if round % 6 == 5 {
                let all = all_events(&log)?;
                assert_stream_reads_exact(&log, &all, &["s-1", "s-2", "s-10", "t", "none"])?;
            }
        }
        assert!(saw_tail && saw_index, "both states were read");
        Ok(())
    }

    #[test]
    fn a_tail_left_far_behind_is_indexed_at_open_before_serving() -> Result {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("events.db");
        // A writer that never indexes (a huge chunk, no idle or shutdown pass) leaves the
        // same file as one killed between chunks.
        let log = EventLog::open(&path, chunked(u64::MAX))?;
        for round in 0..40 {
            log.append(batch(round, 50))?;
        }
        let all = all_events(&log)?;
        drop(log);
        assert_eq!(index_state(&path)?, (2000, 0, 0));
        // Read by a log that leaves the tail alone: every read scans it, exactly.
        let log = EventLog::open(&path, chunked(u64::MAX))?;
        assert_stream_reads_exact(&log, &all, &["s-1", "t"])?;
        drop(log);
        // A log with a smaller chunk indexes the tail before it serves anything.
        let log = EventLog::open(&path, chunked(500))?;
        assert_eq!(index_state(&path)?, (2000, 2000, 2000));
        assert_stream_reads_exact(&log, &all, &["s-2", "s-10"])?;
        Ok(())
    }

    #[test]
    fn an_idle_writer_indexes_the_tail_soon_and_at_shutdown() -> Result {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("events.db");
        let options = LogOptions {
            stream_index_chunk: DEFAULT_STREAM_INDEX_CHUNK,
            ..fast()
        };
        let log = EventLog::open(&path, options)?;
        log.append(batch(0, 10))?;
        assert_eq!(wait_until_indexed(&path)?, (10, 10, 10));
        // Appended and closed at once: the shutdown pass indexes it.
        log.append(batch(1, 5))?;
        drop(log);
        assert_eq!(index_state(&path)?, (15, 15, 15));
        Ok(())
    }

    #[test]
    fn retention_of_indexed_and_unindexed_events_leaves_streams_exact() -> Result {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("events.db");
        let log = EventLog::open(&path, chunked(16))?;
        for round in 0..11 {
            log.append(batch(round, 3))?;
        }
        // One pass at 18 events (done before the next group was taken); 15 since.
        let (head, through, _) = index_state(&path)?;
        assert_eq!((head, through), (33, 18));
        let all = all_events(&log)?;
        // Every third event below and above the watermark, but never a stream's newest
        // (retention's rule).
        let newest: HashSet<u64> = {
            let mut last: BTreeMap<&str, u64> = BTreeMap::new();
            for e in &all {
                last.insert(&e.stream, e.offset);
            }
            last.into_values().collect()
        };
        let removed: Vec<u64> = all
            .iter()
            .map(|e| e.offset)
            .filter(|o| o % 3 == 0 && !newest.contains(o))
            .collect();
        assert!(removed.iter().any(|&o| o <= through) && removed.iter().any(|&o| o > through));
        let mut pruner = log.pruner()?;
        let bytes_before = pruner.prefix_bytes("s-1")?;
        assert_eq!(
            pruner.remove(&removed, Removal::Deleted)?,
            removed.len() as u64
        );
        let mut left: Vec<Event> = all
            .iter()
            .filter(|e| !removed.contains(&e.offset))
            .cloned()
            .collect();
        let text = |events: &[Event], prefix: &str| -> u64 {
            events
                .iter()
                .filter(|e| e.stream.starts_with(prefix))
                .map(|e| (e.data.len() + e.metadata.as_ref().map_or(0, String::len)) as u64)
                .sum()
        };
        assert_eq!(bytes_before, text(&all, "s-1"));
        assert_eq!(pruner.prefix_bytes("s-1")?, text(&left, "s-1"));
        assert_eq!(all_events(&log)?, left);
        assert_stream_reads_exact(&log, &left, &["s-1", "s-2", "s-10", "t"])?;
        // The writer's next passes index what is left of the tail, and only that.
        for round in 12..20 {
            log.append(batch(round, 3))?;
        }
        left = all_events(&log)?;
        let (head, through, entries) = index_state(&path)?;
        let tail = left.iter().filter(|e| e.offset > through).count() as u64;
        assert_eq!(entries + tail, left.len() as u64, "{head} {through}");
        assert_stream_reads_exact(&log, &left, &["s-1", "s-2", "s-10", "t"])?;
        // Versions continue from each stream's head.
        let last_t = left
            .iter()
            .rev()
            .find(|e| e.stream == "t")
            .map(|e| e.stream_version);
        let next = ev("t", "A", "{}").with_expected_version(last_t.unwrap_or(0));
        assert_eq!(log.append(vec![next])?, vec![head + 1]);
        Ok(())
    }

    #[test]
    fn mirrored_appends_are_indexed_like_local_ones() -> Result {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("events.db");
        let log = EventLog::open(&path, chunked(2))?;
        let runtime = tokio::runtime::Builder::new_current_thread().build()?;
        for position in 1..=6u64 {
            let events: Vec<NewEvent> = (0..3)
                .map(|i| ev(["m-1", "m-2"][i % 2], "A", "{}").with_id(format!("id-{position}-{i}")))
                .collect();
            runtime.block_on(log.apply_ordered(refract::log::MirrorBatch {
                source: "STREAM@1".into(),
                messages: vec![refract::log::OrderedMessage {
                    position,
                    requests: vec![refract::log::OrderedRequest {
                        recorded_at: 1,
                        events,
                    }],
                }],
            }))?;
            let (head, through, entries) = index_state(&path)?;
            assert_eq!(head, position * 3);
            assert!(
                head - through < 2 + 3 && entries == through,
                "{head} {through}"
            );
        }
        assert_eq!(wait_until_indexed(&path)?, (18, 18, 18));
        let all = all_events(&log)?;
        assert_stream_reads_exact(&log, &all, &["m-1", "m-2"])?;
        Ok(())
    }
}
