//! tidemark's integration tests: one binary, real parts. A real `temporal server start-dev`
//! (started once per test binary on a free port), real workers on per-test task queues, real
//! Delta tables on disk, checked against oracles computed independently in the tests.

mod architecture;
mod bad_input;
mod batches;
mod cdc;
mod deletion_vectors;
mod examples;
mod harness;
mod kafka_cdc;
mod kafka_tls;
mod local_steps;
mod object_store;
mod operations;
mod parquet_target;
mod pg_source;
mod pg_target;
mod pg_tls;
mod replay;
mod runs;
mod schema;
mod steps;
mod temporal_tls;
