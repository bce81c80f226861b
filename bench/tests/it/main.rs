//! tidemark-bench's integration tests: one binary. Each benchmark in quick mode, end to end
//! (a real dev server, real `tidemark` worker and CLI processes, the Python peer), so the
//! benchmark code cannot rot.
//!
//! The `tidemark` binary must be built in the same target directory first (`cargo build
//! --bins`; `cargo test --workspace` builds it anyway for the root crate's tests).

mod cdc;
mod merge;
mod overhead;
mod scale;

/// The `tidemark` binary the benchmarks drive (beside this test binary's directory).
fn tidemark_bin() -> std::path::PathBuf {
    tidemark_bench::tidemark_bin().unwrap_or_else(|e| panic!("{e:#}"))
}
