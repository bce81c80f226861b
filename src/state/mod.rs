//! Durable pipeline state under `state_dir/<pipeline>/`: the watermark store, the run ledger,
//! and the per-run batch directories, written with the crash-safe file primitives of `fsio`.

pub mod fsio;
pub mod ledger;
pub mod powercut;
pub mod watermark;

use std::path::PathBuf;
use tidemark_workflows::spec::PipelineSpec;

/// Where a pipeline keeps its state.
#[derive(Debug, Clone)]
pub struct PipelineDirs {
    /// `state_dir/<pipeline>`.
    pub root: PathBuf,
}

impl PipelineDirs {
    /// The directories of a pipeline.
    pub fn of(spec: &PipelineSpec) -> Self {
        Self::at(&spec.state_dir, &spec.name)
    }

    /// The directories of pipeline `name` under `state_dir`.
    pub fn at(state_dir: &str, name: &str) -> Self {
        PipelineDirs {
            root: PathBuf::from(state_dir).join(name),
        }
    }

    /// The watermark document.
    pub fn watermark(&self) -> PathBuf {
        self.root.join("watermark.json")
    }

    /// The append-only run ledger.
    pub fn ledger(&self) -> PathBuf {
        self.root.join("ledger.jsonl")
    }

    /// The directory of one run's batch files.
    pub fn run_dir(&self, run_seq: u64) -> PathBuf {
        self.root.join("runs").join(format!("{run_seq:08}"))
    }
}
