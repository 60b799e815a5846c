//! Snapshots: consistent copies of read models, and application snapshots of streams.
//!
//! A read model is derived from the log, so it can always be rebuilt by replaying the
//! log from offset 1; snapshots make that replay start late instead. A read-model
//! snapshot is a whole, consistent copy of one version's database at one checkpoint,
//! taken with `VACUUM INTO` from a read transaction on a connection of its own: the
//! worker keeps writing (WAL) and readers keep reading meanwhile.
//!
//! - [`policy`]: `[projectors.<name>.snapshots]` and `[snapshots]` in `refract.toml`.
//! - [`store`]: the files, `<data-dir>/snapshots/<name>/<version>/<checkpoint>.db`, and
//!   each projector's `manifest.json`: taking, listing, verifying, pruning, and seeding
//!   a read model from a snapshot.
//! - [`schedule`]: the thread that takes policy snapshots of active read models.
//! - [`recovery`]: what the engine calls: seeding a lost, damaged or pruned read model
//!   from its newest good snapshot.
//! - [`point_in_time`]: a read model as it was at a past offset, materialised from the
//!   newest snapshot at or before it and a bounded replay.
//! - [`streams`]: stream snapshots (the write side): `{version, state}` per stream, and
//!   loading a stream as its latest snapshot plus the events after it.
//!
//! The engine calls in at four places and knows nothing else of this room: before a
//! swap (a snapshot of the version being replaced), when a read model is lost or damaged
//! (recovery seeds the rebuild from the newest good snapshot), when a rollback targets
//! a version whose read model was pruned, and when versions are retired.

pub mod point_in_time;
pub mod policy;
pub mod recovery;
pub mod schedule;
pub mod store;
pub mod streams;

pub use policy::{SnapshotPolicy, SnapshotsConfig};
pub use store::{Reason, SnapshotEntry, SnapshotError, VersionSummary};
