//! Helpers shared by the integration tests.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the shared support"
)]

pub mod guests;
pub mod guests_py;
pub mod host;
