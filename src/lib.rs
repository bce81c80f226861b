//! tidemark: durable incremental data pipelines on Temporal.
//!
//! The side-effecting half of tidemark: the spec loader, the engine (source, transform,
//! target, state), the activity implementations, the worker, the client used by the CLI, and
//! the local dev-server launcher. The deterministic workflow lives in `tidemark-workflows`.

pub mod activities;
pub mod allocator;
pub mod backfill;
pub mod batch;
pub mod cdc;
pub mod checks;
pub mod client;
pub mod contract;
pub mod crash;
pub mod cursor;
pub mod demo;
pub mod devserver;
pub mod error;
pub mod logging;
pub mod maintain;
pub mod metrics;
pub mod monitor;
pub mod pg;
pub mod reset;
pub mod run_steps;
pub mod schedule;
pub mod schema_preview;
pub mod source;
pub mod spec;
pub mod state;
pub mod storage;
pub mod target;
pub mod worker;

pub use tidemark_workflows as workflows;

/// The Polars version tidemark is built with (for the chaos harness's oracle).
pub use polars;
