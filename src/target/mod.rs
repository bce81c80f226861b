//! Targets: stage a batch where no reader sees it, then promote it atomically and
//! idempotently. Only Delta Lake so far.

pub mod delta;
