//! The engine: plain functions with no Temporal types inside, unit-testable on their own.
//! `process` builds a run's batch; the target modules stage and promote it.

pub mod frame;
pub mod process;
pub mod transform;
