//! `tidemark demo` (placeholder until written).
