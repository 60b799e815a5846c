//! The projector author's side: project manifests, scaffolds, golden fixtures and the
//! local dev loop. Everything here drives the same runtime and engine the host runs;
//! none of it is on the host's own paths.
//!
//! # Layout
//! - [`manifest`]: `projector.toml`, the project manifest.
//! - [`template`]: `refract new`, projects from templates embedded at build time.
//! - [`builder`]: running a project's build command, capturing the compiler's output.
//! - [`fixture`]: golden fixtures (`refract test`): events in, expected rows out, the
//!   real component in the real sandbox, and a row diff on mismatch.
//! - [`dev`]: `refract dev`, the loop: watch, rebuild, deploy as a shadow, show the
//!   diff against the active version, swap.

pub mod builder;
pub mod dev;
pub mod fixture;
pub mod manifest;
pub mod template;
