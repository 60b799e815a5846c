//! Helpers shared by the integration tests.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the shared support"
)]

pub mod cluster;
pub mod guests;
pub mod guests_ts;
pub mod guests_py;
pub mod host;
pub mod nats;
pub mod tiny_disk;
pub mod js;
