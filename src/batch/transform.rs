//! The optional SQL transform: Polars SQL over the extracted batch, registered as `batch`.
//! Pure: no I/O, no clock, no environment.

use crate::error::{EngineError, Result};
use polars::prelude::*;
use polars::sql::SQLContext;

/// Runs `sql` over `batch`.
pub fn apply_sql(batch: DataFrame, sql: &str) -> Result<DataFrame> {
    let mut ctx = SQLContext::new();
    ctx.register("batch", batch.lazy());
    let out = ctx
        .execute(sql)
        .and_then(|lf| lf.collect())
        .map_err(|e| EngineError::Transform(format!("{e} (in [transform] sql)")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_filters_the_batch_and_reports_bad_sql() {
        let df = df!("id" => [1i64, 2, 3], "status" => ["ok", "test", "ok"]).unwrap();
        let out = apply_sql(df.clone(), "SELECT * FROM batch WHERE status <> 'test'").unwrap();
        assert_eq!(out.height(), 2);
        let err = apply_sql(df, "SELEC nonsense").unwrap_err();
        assert!(matches!(err, EngineError::Transform(_)));
        assert!(!err.is_retryable());
    }
}
