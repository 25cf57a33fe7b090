//! `dr`: a disaster-recovery failover orchestrator for multi-region AWS deployments.
//!
//! The crate is a pure core (`core`) surrounded by its edges: `config` reads the TOML file,
//! `provider` talks to AWS or the simulator, `store` keeps the checkpoint log, `engine` carries
//! plans out, `drill` runs scenarios, and `cli` is the `dr` command. See ARCHITECTURE.md.

pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
pub mod core;
pub mod daemon;
pub mod drill;
pub mod engine;
pub mod leader;
pub mod notify;
pub mod observe;
pub mod provider;
pub mod secret;
pub mod service;
pub mod store;
