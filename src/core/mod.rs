//! The pure core: topology, plans, run state and health classification.
//!
//! Invariant: nothing under `core` does I/O, reads a clock, spawns a task or imports tokio, an
//! AWS SDK, the store or axum. `tests/architecture.rs` keeps this true.

pub mod decision;
pub mod detect;
pub mod health;
pub mod ids;
pub mod lease;
pub mod plan;
pub mod run;
pub mod time;
pub mod topology;
