//! Audit checks (`[[checks]]`, write-audit-publish): each a Polars SQL query over the staged
//! batch (table `batch`) and, when it names it, the target as it is before this run's commit
//! (table `target`), returning one number that must meet the check's expectation.
//!
//! `promote` runs them after stage and before the commit (`run_steps::promote`), so a failed
//! `on_fail = "fail"` check publishes nothing: the run fails non-retryably naming the check,
//! its query and the value, the target and the watermark stay as they were, and the batch
//! stays staged for inspection until the next run. A failed `warn` check publishes and raises
//! the `check` alert. Results go into the ledger line and `status`.

use crate::error::{EngineError, Result};
use polars::prelude::*;
use polars::sql::SQLContext;
use std::path::Path;
use tidemark_workflows::payloads::CheckResult;
use tidemark_workflows::spec::{CheckSpec, OnCheckFail};

/// The tables a check may read.
pub const TABLES: [&str; 2] = ["batch", "target"];

/// Checks a query without data: it parses as one statement and reads only `batch` and
/// `target`. Returns whether it reads `target`.
pub fn validate(sql: &str) -> std::result::Result<bool, String> {
    let tables =
        polars::sql::extract_table_identifiers(sql, false, true).map_err(|e| format!("{e}"))?;
    let mut ctx = SQLContext::new();
    for t in TABLES {
        ctx.register(t, DataFrame::empty().lazy());
    }
    match ctx.execute(sql) {
        Ok(_) => {}
        // Without data the tables have no columns: a column the query names is checked
        // when the check runs.
        Err(PolarsError::ColumnNotFound(_)) => {}
        Err(e) if e.to_string().contains("no column named") => {}
        Err(e) => return Err(format!("{e}")),
    }
    Ok(tables.iter().any(|t| t.eq_ignore_ascii_case("target")))
}

/// Runs every check over the staged batch at `batch` (a local Parquet file) and, for checks
/// that read it, the target frame `target` gives.
pub fn run(
    checks: &[CheckSpec],
    batch: &Path,
    target: &dyn Fn() -> Result<LazyFrame>,
) -> Result<Vec<CheckResult>> {
    let path = batch.to_string_lossy().into_owned();
    let batch_frame = LazyFrame::scan_parquet(PlRefPath::new(path.as_str()), Default::default())?;
    let mut target_frame: Option<LazyFrame> = None;
    let mut out = Vec::with_capacity(checks.len());
    for check in checks {
        let mut ctx = SQLContext::new();
        ctx.register("batch", batch_frame.clone());
        if check.reads_target {
            if target_frame.is_none() {
                let mut t = target()?;
                // No table yet: the target is empty, in the batch's columns (the table is
                // created from the batch).
                if t.collect_schema()?.is_empty() {
                    t = batch_frame.clone().limit(0);
                }
                target_frame = Some(t);
            }
            ctx.register("target", target_frame.clone().expect("set above"));
        }
        let failed = |e: PolarsError| {
            EngineError::CheckFailed(format!(
                "check `{}` could not run: {e} (in its sql: {})",
                check.name, check.sql
            ))
        };
        let df = ctx
            .execute(&check.sql)
            .and_then(|lf| lf.collect())
            .map_err(failed)?;
        let value = first_value(&df).map_err(|why| {
            EngineError::CheckFailed(format!(
                "check `{}` must return one number (one row, one column): {why} (its sql: {})",
                check.name, check.sql
            ))
        })?;
        out.push(CheckResult {
            name: check.name.clone(),
            sql: check.sql.clone(),
            value,
            expectation: check.expectation(),
            passed: value.is_some_and(|v| check.passes(v)),
            on_fail: check.on_fail,
        });
    }
    Ok(out)
}

/// The error of the first failed `fail` check (None: the batch may be published).
pub fn refusal(results: &[CheckResult]) -> Option<EngineError> {
    let failed: Vec<&CheckResult> = results
        .iter()
        .filter(|r| !r.passed && r.on_fail == OnCheckFail::Fail)
        .collect();
    let first = failed.first()?;
    let more = match failed.len() {
        1 => String::new(),
        n => format!(" ({} more check(s) failed too)", n - 1),
    };
    Some(EngineError::CheckFailed(format!(
        "check `{}` returned {} (expected {}); nothing was published, the batch stays staged until the next run; its sql: {}{more}",
        first.name,
        shown(first.value),
        first.expectation,
        first.sql
    )))
}

/// A check's value as a message shows it.
pub fn shown(v: Option<f64>) -> String {
    match v {
        None => "null".into(),
        Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{}", v as i64),
        Some(v) => format!("{v}"),
    }
}

/// The first column of the first row as a number (a boolean is 0 or 1).
fn first_value(df: &DataFrame) -> std::result::Result<Option<f64>, String> {
    if df.width() == 0 {
        return Err("it returned no column".into());
    }
    if df.height() != 1 {
        return Err(format!("it returned {} rows", df.height()));
    }
    let c = &df.columns()[0];
    let s = c.as_materialized_series();
    let as_f64 = match s.dtype() {
        DataType::Boolean => s
            .cast(&DataType::UInt8)
            .and_then(|s| s.cast(&DataType::Float64)),
        d if d.is_primitive_numeric() || d.is_decimal() => s.cast(&DataType::Float64),
        d => return Err(format!("its column `{}` is {d}, not a number", c.name())),
    }
    .map_err(|e| e.to_string())?;
    Ok(as_f64.f64().map_err(|e| e.to_string())?.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(sql: &str, expect: Option<f64>, max: Option<f64>) -> CheckSpec {
        CheckSpec {
            name: "c".into(),
            sql: sql.into(),
            expect,
            expect_min: None,
            expect_max: max,
            on_fail: OnCheckFail::Fail,
            reads_target: validate(sql).unwrap(),
        }
    }

    #[test]
    fn queries_are_validated_without_data() {
        assert_eq!(
            validate("SELECT count(*) FROM batch WHERE amount < 0"),
            Ok(false)
        );
        assert_eq!(
            validate("SELECT count(*) FROM batch b JOIN target t ON b.id = t.id"),
            Ok(true)
        );
        assert!(validate("SELEC count(*) FRM batch").is_err());
        let e = validate("SELECT count(*) FROM orders").unwrap_err();
        assert!(e.contains("orders"), "{e}");
    }

    #[test]
    fn checks_pass_fail_and_refuse_with_the_check_the_query_and_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.parquet");
        let mut df = df!("id" => [1i64, 2, 3], "amount" => [5.0, -1.0, -2.0]).unwrap();
        ParquetWriter::new(std::fs::File::create(&path).unwrap())
            .finish(&mut df)
            .unwrap();
        let target = || Ok(df!("id" => [1i64]).unwrap().lazy());
        let checks = vec![
            check(
                "SELECT count(*) FROM batch WHERE amount < 0",
                Some(0.0),
                None,
            ),
            check(
                "SELECT count(*) FROM batch b JOIN target t ON b.id = t.id",
                None,
                Some(1.0),
            ),
        ];
        let results = run(&checks, &path, &target).unwrap();
        assert_eq!(results[0].value, Some(2.0));
        assert!(!results[0].passed && results[1].passed);
        let e = refusal(&results).unwrap().to_string();
        assert!(
            e.contains("check `c` returned 2 (expected = 0)") && e.contains("amount < 0"),
            "{e}"
        );
        assert!(!refusal(&results).unwrap().is_retryable());
        let bad = vec![check("SELECT id FROM batch", Some(0.0), None)];
        let e = run(&bad, &path, &target).unwrap_err().to_string();
        assert!(e.contains("one number") && e.contains("3 rows"), "{e}");
    }
}
