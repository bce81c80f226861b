//! `tidemark-chaos`: the crash-test harness.
//!
//! A [`fleet::Fleet`] runs a real Temporal dev server (SQLite, so it survives its own restart)
//! and N real `tidemark worker` processes. A [`case::Case`] is generated data (new rows,
//! updates, late rows inside and beyond the lookback, rows tied at the watermark, duplicate
//! keys in a batch) and faults (crash points on given attempts, random kills, a paused zombie
//! worker, a server restart, a run started twice). [`runner::run_case`] plays a case against
//! the fleet and [`oracle`] checks every invariant after every round against a model computed
//! independently from the generated data.
//!
//! Nothing in `tidemark` or `tidemark-workflows` depends on this crate.

pub mod case;
pub mod fleet;
pub mod oracle;
pub mod runner;
pub mod storeproxy;
