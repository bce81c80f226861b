//! Durable pipeline state: the [`StateStore`] interface (watermark document, run ledger, run
//! files, dead letters, backfill manifests), its local-file implementation, written with the
//! crash-safe file primitives of `fsio` and proven by the power-cut model, and its
//! object-store implementation (conditional PUTs, one object per ledger entry).

pub mod fsio;
pub mod ledger;
pub mod local;
pub mod powercut;
pub mod remote;
pub mod store;
pub mod watermark;

use crate::error::Result;
use crate::storage::{self, Location, Remote};
pub use local::LocalStore;
pub use remote::RemoteStore;
pub use store::StateStore;
use tidemark_workflows::spec::PipelineSpec;

/// The state store of a pipeline.
///
/// A state_dir on the same kind of object store as the target (both `s3://`, say) uses the
/// target's `storage_options` too (region, endpoint): one deployment, one store
/// ([`storage::use_spec_options`]).
pub fn open(spec: &PipelineSpec) -> Result<Box<dyn StateStore>> {
    storage::use_spec_options(spec);
    open_at(&spec.state_dir, &spec.name)
}

/// The state store of pipeline `name` under `state_dir` (a path, `file://` or an object-store
/// URL; the store's credentials come from the worker's environment).
pub fn open_at(state_dir: &str, name: &str) -> Result<Box<dyn StateStore>> {
    Ok(match storage::parse(state_dir)? {
        Location::Local(dir) => Box::new(LocalStore::at(&dir.to_string_lossy(), name)),
        Location::Remote(url) => Box::new(RemoteStore::at(
            &Remote::open(&url, &Default::default())?,
            name,
        )),
    })
}
