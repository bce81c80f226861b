//! The `[schema]` contract and the `[[checks]]` entries: what a run does when the batch's
//! columns differ from the table's, and the audit queries run before a batch is published.

use super::SpecError;
use super::raw::{RawCheck, RawSchema};
use std::path::Path;
use tidemark_workflows::spec::{
    CheckSpec, MissingColumns, NewColumns, OnCheckFail, SchemaContract, TypeChanges,
};

pub(super) fn schema_of(file: &Path, s: &RawSchema) -> Result<SchemaContract, SpecError> {
    let new_columns = match s.new_columns.as_deref() {
        None | Some("fail") => NewColumns::Fail,
        Some("add") => NewColumns::Add,
        Some("ignore") => NewColumns::Ignore,
        Some(other) => {
            return Err(SpecError::at(
                file,
                "schema.new_columns",
                format!("{other:?} is not a policy"),
                "use \"fail\" (the default), \"add\" (add the column, nullable) or \"ignore\" (drop it from the batch)",
            ));
        }
    };
    let type_changes = match s.type_changes.as_deref() {
        None | Some("fail") => TypeChanges::Fail,
        Some("widen") => TypeChanges::Widen,
        Some(other) => {
            return Err(SpecError::at(
                file,
                "schema.type_changes",
                format!("{other:?} is not a policy"),
                "use \"fail\" (the default) or \"widen\" (lossless widenings only: int8→16→32→64, float32→64, int→decimal, decimal precision up, date→timestamp)",
            ));
        }
    };
    let missing_columns = match s.missing_columns.as_deref() {
        None | Some("fail") => MissingColumns::Fail,
        Some("null") => MissingColumns::Null,
        Some(other) => {
            return Err(SpecError::at(
                file,
                "schema.missing_columns",
                format!("{other:?} is not a policy"),
                "use \"fail\" (the default) or \"null\" (write the column as null)",
            ));
        }
    };
    Ok(SchemaContract {
        new_columns,
        type_changes,
        missing_columns,
    })
}

pub(super) fn checks_of(file: &Path, raw: &[RawCheck]) -> Result<Vec<CheckSpec>, SpecError> {
    let mut out: Vec<CheckSpec> = Vec::with_capacity(raw.len());
    for (i, c) in raw.iter().enumerate() {
        let at = |key: &str| format!("checks[{i}].{key}");
        let name = match c.name.as_deref().map(str::trim) {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => {
                return Err(SpecError::at(
                    file,
                    &at("name"),
                    "a check needs a name",
                    "give it one, e.g. name = \"no negative amounts\"",
                ));
            }
        };
        if out.iter().any(|o| o.name == name) {
            return Err(SpecError::at(
                file,
                &at("name"),
                format!("{name:?} names two checks"),
                "give each check its own name",
            ));
        }
        let sql = match c.sql.as_deref().map(str::trim) {
            Some(q) if !q.is_empty() => q.to_string(),
            _ => {
                return Err(SpecError::at(
                    file,
                    &at("sql"),
                    format!("check {name:?} has no query"),
                    "give a Polars SQL query returning one number, e.g. sql = \"SELECT count(*) FROM batch WHERE amount < 0\"",
                ));
            }
        };
        let reads_target = crate::checks::validate(&sql).map_err(|e| {
            SpecError::at(
                file,
                &at("sql"),
                format!("check {name:?}: the query is not valid Polars SQL over `batch` and `target`: {e}"),
                "fix the query (tables: `batch` = the staged batch, `target` = the target before the run's commit)",
            )
        })?;
        let number = |key: &str, v: &Option<toml::Value>| -> Result<Option<f64>, SpecError> {
            match v {
                None => Ok(None),
                Some(toml::Value::Integer(n)) => Ok(Some(*n as f64)),
                Some(toml::Value::Float(f)) if f.is_finite() => Ok(Some(*f)),
                Some(toml::Value::Boolean(b)) => Ok(Some(if *b { 1.0 } else { 0.0 })),
                Some(other) => Err(SpecError::at(
                    file,
                    &at(key),
                    format!("{other} is not a number"),
                    "give a number, e.g. expect = 0",
                )),
            }
        };
        let expect = number("expect", &c.expect)?;
        let expect_min = number("expect_min", &c.expect_min)?;
        let expect_max = number("expect_max", &c.expect_max)?;
        if expect.is_none() && expect_min.is_none() && expect_max.is_none() {
            return Err(SpecError::at(
                file,
                &at("expect"),
                format!("check {name:?} has no expectation"),
                "give expect = N, or expect_min and/or expect_max",
            ));
        }
        if expect.is_some() && (expect_min.is_some() || expect_max.is_some()) {
            return Err(SpecError::at(
                file,
                &at("expect"),
                format!("check {name:?} has both expect and a bound"),
                "give either expect = N, or expect_min and/or expect_max",
            ));
        }
        if let (Some(lo), Some(hi)) = (expect_min, expect_max)
            && lo > hi
        {
            return Err(SpecError::at(
                file,
                &at("expect_min"),
                format!("check {name:?}: expect_min {lo} is above expect_max {hi}"),
                "swap them",
            ));
        }
        let on_fail = match c.on_fail.as_deref() {
            None | Some("fail") => OnCheckFail::Fail,
            Some("warn") => OnCheckFail::Warn,
            Some(other) => {
                return Err(SpecError::at(
                    file,
                    &at("on_fail"),
                    format!("{other:?} is not a policy"),
                    "use \"fail\" (publish nothing; the default) or \"warn\" (publish and raise the `check` alert)",
                ));
            }
        };
        out.push(CheckSpec {
            name,
            sql,
            expect,
            expect_min,
            expect_max,
            on_fail,
            reads_target,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::spec::fixtures::err;
    use tidemark_workflows::spec::{MissingColumns, NewColumns, OnCheckFail, TypeChanges};

    fn spec(extra: &str) -> String {
        format!(
            "name = \"p\"\n[source]\nkind = \"parquet\"\npath = \"in\"\ncursor = \"c\"\n[target]\nkind = \"delta\"\npath = \"lake\"\nkey = [\"id\"]\n{extra}"
        )
    }

    fn load(extra: &str) -> tidemark_workflows::spec::PipelineSpec {
        crate::spec::parse(&spec(extra), std::path::Path::new("/x/p.toml")).unwrap()
    }

    #[test]
    fn the_schema_contract_defaults_to_fail_and_takes_each_policy() {
        let s = load("");
        assert!(s.schema.is_default());
        let s = load(
            "[schema]\nnew_columns = \"add\"\ntype_changes = \"widen\"\nmissing_columns = \"null\"\n",
        );
        assert_eq!(s.schema.new_columns, NewColumns::Add);
        assert_eq!(s.schema.type_changes, TypeChanges::Widen);
        assert_eq!(s.schema.missing_columns, MissingColumns::Null);
        assert_eq!(
            load("[schema]\nnew_columns = \"ignore\"\n")
                .schema
                .new_columns,
            NewColumns::Ignore
        );
        let e = err(&spec("[schema]\ntype_changes = \"coerce\"\n"));
        assert!(
            e.contains("schema.type_changes") && e.contains("widen"),
            "{e}"
        );
        let e = err(&spec("[schema]\nnew_column = \"add\"\n"));
        assert!(e.contains("new_column"), "{e}");
    }

    #[test]
    fn checks_are_validated_and_invalid_sql_is_refused() {
        let s = load(
            "[[checks]]\nname = \"no negative amounts\"\nsql = \"SELECT count(*) FROM batch WHERE amount < 0\"\nexpect = 0\n[[checks]]\nname = \"few new\"\nsql = \"SELECT count(*) FROM batch b LEFT JOIN target t ON b.id = t.id WHERE t.id IS NULL\"\nexpect_max = 100\non_fail = \"warn\"\n",
        );
        assert_eq!(s.checks.len(), 2);
        assert!(!s.checks[0].reads_target && s.checks[1].reads_target);
        assert_eq!(s.checks[1].on_fail, OnCheckFail::Warn);
        let e = err(&spec(
            "[[checks]]\nname = \"x\"\nsql = \"SELEC count(*) FRM batch\"\nexpect = 0\n",
        ));
        assert!(
            e.contains("checks[0].sql") && e.contains("not valid"),
            "{e}"
        );
        let e = err(&spec(
            "[[checks]]\nname = \"x\"\nsql = \"SELECT count(*) FROM orders\"\nexpect = 0\n",
        ));
        assert!(e.contains("orders"), "{e}");
        let e = err(&spec("[[checks]]\nname = \"x\"\nsql = \"SELECT 1\"\n"));
        assert!(e.contains("no expectation"), "{e}");
        let e = err(&spec(
            "[[checks]]\nname = \"x\"\nsql = \"SELECT 1\"\nexpect = 1\non_fail = \"ignore\"\n",
        ));
        assert!(e.contains("on_fail"), "{e}");
    }
}
