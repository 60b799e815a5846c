//! Helpers shared by the integration tests.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the shared support"
)]

pub mod cli;
pub mod cluster;
pub mod guests;
pub mod guests_py;
pub mod guests_ts;
pub mod host;
pub mod js;
pub mod nats;
pub mod probe_values;
pub mod saga;
pub mod tiny_disk;
