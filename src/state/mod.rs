//! Durable pipeline state: the [`StateStore`] interface (watermark document, run ledger, run
//! files, dead letters, backfill manifests) and its local-file implementation, written with
//! the crash-safe file primitives of `fsio` and proven by the power-cut model.

pub mod fsio;
pub mod ledger;
pub mod local;
pub mod powercut;
pub mod store;
pub mod watermark;

pub use local::LocalStore;
pub use store::StateStore;
use tidemark_workflows::spec::PipelineSpec;

/// The state store of a pipeline.
pub fn open(spec: &PipelineSpec) -> Box<dyn StateStore> {
    open_at(&spec.state_dir, &spec.name)
}

/// The state store of pipeline `name` under `state_dir`.
pub fn open_at(state_dir: &str, name: &str) -> Box<dyn StateStore> {
    Box::new(LocalStore::at(state_dir, name))
}
