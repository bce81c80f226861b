//! Sources: read a window of rows into Polars. Only Parquet so far.

pub mod parquet;
pub mod postgres;
