//! The schema contract (`[schema]`): how a batch whose columns differ from the table's — or
//! the files of one window that differ among themselves — is resolved into one schema
//! (columns added, types widened, columns written as null, columns ignored), or refused with
//! an error that names where the batch came from, the column, both types and the contract key
//! that would allow the change.
//!
//! Pure functions over Polars types: the sources use [`unify_inputs`] to make one batch of
//! the files they read, the targets use [`against_table`] inside their commit, under the same
//! table state (or transaction) as the token check, and apply the [`Resolution`] there, so the
//! schema moves with its data or not at all. Columns named `_tidemark_*` are tidemark's own
//! and outside the contract.

use crate::error::{EngineError, Result};
use polars::prelude::{DataType, TimeUnit};
use tidemark_workflows::payloads::{
    ColumnCount, ColumnInfo, ColumnType, SchemaChange, WidenedColumn,
};
use tidemark_workflows::spec::{MissingColumns, NewColumns, SchemaContract, TypeChanges};

/// Columns in order, with their types.
pub type Columns = Vec<(String, DataType)>;

/// One column of a batch, as the contract sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchColumn {
    /// Name.
    pub name: String,
    /// Type.
    pub dtype: DataType,
    /// Null values in the batch.
    pub nulls: u64,
    /// Where the column first appeared (a file, the query, an event).
    pub origin: Option<String>,
}

/// A batch: its columns, its rows and where it came from (for messages).
#[derive(Debug, Clone)]
pub struct Batch {
    /// Columns.
    pub columns: Vec<BatchColumn>,
    /// Rows.
    pub rows: u64,
    /// Where the rows came from, in words (`the files of run 4's window`).
    pub from: String,
    /// The batch carries only deletes of change events: the row columns it lacks are not
    /// missing (a delete's before image carries only the key).
    pub deletes_only: bool,
}

impl Batch {
    /// The batch a manifest describes; `from` says where it came from.
    pub fn of_manifest(
        schema: &[ColumnInfo],
        types: &Columns,
        rows: u64,
        from: String,
        deletes_only: bool,
    ) -> Batch {
        let columns = types
            .iter()
            .map(|(name, dtype)| {
                let info = schema.iter().find(|c| &c.name == name);
                BatchColumn {
                    name: name.clone(),
                    dtype: dtype.clone(),
                    nulls: info.map_or(0, |c| c.nulls),
                    origin: info.and_then(|c| c.origin.clone()),
                }
            })
            .collect();
        Batch {
            columns,
            rows,
            from,
            deletes_only,
        }
    }
}

/// What the contract decided for one batch against one table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resolution {
    /// The table's columns after the commit: its own (widened where widened), then the
    /// added ones.
    pub table: Columns,
    /// Columns added to the table.
    pub added: Columns,
    /// Columns widened: (name, old type, new type).
    pub widened: Vec<(String, DataType, DataType)>,
    /// Table columns the batch lacks, written as null.
    pub nulled: Vec<String>,
    /// Batch columns dropped.
    pub ignored: Vec<String>,
    /// The record of it, with counts, for the ledger.
    pub record: SchemaChange,
}

impl Resolution {
    /// The table's schema changes (columns added or widened).
    pub fn changes_table(&self) -> bool {
        !self.added.is_empty() || !self.widened.is_empty()
    }

    /// The batch columns that go into the table, in the table's order.
    pub fn written(&self) -> Vec<String> {
        self.table
            .iter()
            .map(|(n, _)| n.clone())
            .filter(|n| !self.nulled.contains(n))
            .collect()
    }
}

/// Whether `name` is one of tidemark's own columns, outside the contract.
pub fn is_own(name: &str) -> bool {
    name.starts_with("_tidemark_")
}

/// Compares a batch with the table it goes into (`table` in the table's column order;
/// `table_desc` names it) and applies the contract. Types that merely fit (a narrower
/// integer, another timestamp unit, a column null in every row) are no change: the target
/// casts them.
pub fn against_table(
    contract: &SchemaContract,
    table: &Columns,
    table_desc: &str,
    batch: &Batch,
) -> Result<Resolution> {
    against_table_named(contract, table, table_desc, &[], batch)
}

/// [`against_table`] for a target whose types have names of their own (PostgreSQL's
/// `integer`, `text`): `native` gives them per column, and messages show both.
pub fn against_table_named(
    contract: &SchemaContract,
    table: &Columns,
    table_desc: &str,
    native: &[(String, String)],
    batch: &Batch,
) -> Result<Resolution> {
    let table_type = |name: &str, t: &DataType| match native.iter().find(|(n, _)| n == name) {
        Some((_, own)) if *own != type_name(t) => format!("{} ({own})", type_name(t)),
        _ => type_name(t),
    };
    let mut out = Resolution {
        table: table.clone(),
        ..Default::default()
    };
    let mut problems: Vec<String> = Vec::new();
    for c in batch.columns.iter().filter(|c| !is_own(&c.name)) {
        let origin = c
            .origin
            .as_deref()
            .map_or_else(|| batch.from.clone(), |o| o.to_string());
        let all_null = batch.rows > 0 && c.nulls >= batch.rows;
        match table.iter().position(|(n, _)| n == &c.name) {
            None => match contract.new_columns {
                NewColumns::Fail => problems.push(format!(
                    "column `{}` ({}) of {origin} is not in {table_desc}; set [schema] new_columns = \"add\" to add it (or \"ignore\" to drop it), or drop it in [transform]",
                    c.name,
                    type_name(&c.dtype)
                )),
                NewColumns::Add => {
                    out.added.push((c.name.clone(), c.dtype.clone()));
                    out.table.push((c.name.clone(), c.dtype.clone()));
                }
                NewColumns::Ignore => {
                    out.ignored.push(c.name.clone());
                    out.record.ignored.push(ColumnCount {
                        name: c.name.clone(),
                        rows: batch.rows.saturating_sub(c.nulls),
                    });
                }
            },
            Some(i) => {
                let t = &table[i].1;
                if all_null || fits(&c.dtype, t) {
                    continue;
                }
                if widens(t, &c.dtype) {
                    match contract.type_changes {
                        TypeChanges::Widen => {
                            out.widened
                                .push((c.name.clone(), t.clone(), c.dtype.clone()));
                            out.table[i].1 = c.dtype.clone();
                        }
                        TypeChanges::Fail => problems.push(format!(
                            "column `{}` is {} in {origin} but {} in {table_desc}; set [schema] type_changes = \"widen\" to widen the table's column, or cast it in [transform]",
                            c.name,
                            type_name(&c.dtype),
                            table_type(&c.name, t)
                        )),
                    }
                } else {
                    problems.push(format!(
                        "column `{}` is {} in {origin} but {} in {table_desc}, and {} → {} is not a lossless widening ([schema] type_changes = \"widen\" only widens int8→16→32→64, float32→64, int→decimal wide enough, decimal precision up, date→timestamp); cast it in [transform], or load into a new table",
                        c.name,
                        type_name(&c.dtype),
                        table_type(&c.name, t),
                        type_name(t),
                        type_name(&c.dtype)
                    ));
                }
            }
        }
    }
    if !batch.deletes_only {
        for (name, dtype) in table.iter().filter(|(n, _)| !is_own(n)) {
            if batch.columns.iter().any(|c| &c.name == name) {
                continue;
            }
            match contract.missing_columns {
                MissingColumns::Fail => problems.push(format!(
                    "column `{name}` ({}) of {table_desc} is missing from {}; set [schema] missing_columns = \"null\" to write it as null, or add it in [transform]",
                    table_type(name, dtype),
                    batch.from
                )),
                MissingColumns::Null => {
                    out.nulled.push(name.clone());
                    out.record.nulled.push(ColumnCount {
                        name: name.clone(),
                        rows: batch.rows,
                    });
                }
            }
        }
    }
    if let Some(first) = problems.first() {
        let more = match problems.len() {
            1 => String::new(),
            n => format!(" (and {} more schema problem(s))", n - 1),
        };
        return Err(EngineError::Schema(format!("{first}{more}")));
    }
    out.record.added = out
        .added
        .iter()
        .map(|(n, t)| ColumnType {
            name: n.clone(),
            dtype: type_name(t),
        })
        .collect();
    out.record.widened = out
        .widened
        .iter()
        .map(|(n, from, to)| WidenedColumn {
            name: n.clone(),
            from: type_name(from),
            to: type_name(to),
        })
        .collect();
    Ok(out)
}

/// One input of a batch (a file, a query's result) and its columns.
#[derive(Debug, Clone)]
pub struct Input {
    /// Where it is (a path).
    pub origin: String,
    /// Its columns.
    pub columns: Columns,
}

/// How one input is read into the unified batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InputPlan {
    /// Columns of the unified schema the input lacks: read as null.
    pub missing: Vec<String>,
    /// Columns of the input outside the unified schema: dropped.
    pub dropped: Vec<String>,
}

/// The inputs of one window made into one batch schema.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Unified {
    /// The batch's columns: the first input's, widened where the contract widens, then new
    /// columns in the order they appear.
    pub columns: Columns,
    /// Where each column first appeared.
    pub origins: Vec<(String, String)>,
    /// Per input (same order), what reading it into the batch does.
    pub plans: Vec<InputPlan>,
    /// Columns widened among the inputs: (name, narrower, wider).
    pub widened: Vec<(String, DataType, DataType)>,
}

impl Unified {
    /// Whether the inputs disagreed at all.
    pub fn changed(&self) -> bool {
        !self.widened.is_empty()
            || self
                .plans
                .iter()
                .any(|p| !p.missing.is_empty() || !p.dropped.is_empty())
    }
}

/// Unifies the inputs of one window (files in arrival order) under the contract, the first
/// input being the reference: a column a later input adds is `new_columns`' business, a
/// column it lacks `missing_columns`', a type that differs `type_changes`'. With the default
/// contract any difference is refused, naming both inputs.
pub fn unify_inputs(contract: &SchemaContract, inputs: &[Input]) -> Result<Unified> {
    let Some(first) = inputs.first() else {
        return Ok(Unified::default());
    };
    let mut out = Unified {
        columns: first.columns.clone(),
        origins: first
            .columns
            .iter()
            .map(|(n, _)| (n.clone(), first.origin.clone()))
            .collect(),
        plans: vec![InputPlan::default()],
        widened: Vec::new(),
    };
    // The input that set each column's current type (for messages).
    let mut typed_by: Vec<String> = first.columns.iter().map(|_| first.origin.clone()).collect();
    for input in &inputs[1..] {
        let mut plan = InputPlan::default();
        for (name, dtype) in &input.columns {
            match out.columns.iter().position(|(n, _)| n == name) {
                None => match contract.new_columns {
                    NewColumns::Fail => {
                        return Err(EngineError::Schema(format!(
                            "schema drift: column `{name}` ({}) of {} is not in {} (an earlier file of the window); set [schema] new_columns = \"add\" to add it (earlier rows read null) or \"ignore\" to drop it",
                            type_name(dtype),
                            input.origin,
                            first.origin
                        )));
                    }
                    NewColumns::Add => {
                        out.columns.push((name.clone(), dtype.clone()));
                        out.origins.push((name.clone(), input.origin.clone()));
                        typed_by.push(input.origin.clone());
                        for p in out.plans.iter_mut() {
                            p.missing.push(name.clone());
                        }
                    }
                    NewColumns::Ignore => plan.dropped.push(name.clone()),
                },
                Some(i) => {
                    let current = out.columns[i].1.clone();
                    if *dtype == current {
                        continue;
                    }
                    let (widen_to, ok) = if widens(&current, dtype) {
                        (Some(dtype.clone()), true)
                    } else if widens(dtype, &current) {
                        (None, true)
                    } else {
                        (None, false)
                    };
                    if !ok || contract.type_changes == TypeChanges::Fail {
                        let hint = if ok {
                            "set [schema] type_changes = \"widen\" to read both as the wider type"
                        } else {
                            "this is not a lossless widening; convert the files, or cast the column in [transform] after reading them separately"
                        };
                        return Err(EngineError::Schema(format!(
                            "schema drift: column `{name}` is {} in {} but {} in {}; {hint}",
                            type_name(&current),
                            typed_by[i],
                            type_name(dtype),
                            input.origin
                        )));
                    }
                    if let Some(to) = widen_to {
                        out.widened.push((name.clone(), current, to.clone()));
                        out.columns[i].1 = to;
                        typed_by[i] = input.origin.clone();
                    }
                }
            }
        }
        for (name, dtype) in &out.columns {
            if input.columns.iter().any(|(n, _)| n == name) || plan.dropped.contains(name) {
                continue;
            }
            // Columns added by this very input are not missing from it.
            match contract.missing_columns {
                MissingColumns::Fail => {
                    return Err(EngineError::Schema(format!(
                        "schema drift: column `{name}` ({}) of {} is missing from {}; set [schema] missing_columns = \"null\" to read it as null there",
                        type_name(dtype),
                        first.origin,
                        input.origin
                    )));
                }
                MissingColumns::Null => plan.missing.push(name.clone()),
            }
        }
        out.plans.push(plan);
    }
    Ok(out)
}

/// Whether a batch column of type `batch` can be written into a table column of type
/// `table` as it is (cast by the target, no schema change): the same type, a narrower one of
/// the same family, another timestamp unit or zone awareness (naive is UTC), an integer into
/// a double, anything into a column type tidemark does not map (`Unknown`: the target casts).
pub fn fits(batch: &DataType, table: &DataType) -> bool {
    use DataType::*;
    if batch == table || widens(batch, table) {
        return true;
    }
    match (batch, table) {
        (Datetime(_, _), Datetime(_, _)) => true,
        (b, Float64) if b.is_integer() => true,
        (String, String) | (Null, _) | (_, Unknown(_)) => true,
        _ => false,
    }
}

/// Whether `to` holds every value of `from` exactly: a lossless widening (int8→16→32→64 and
/// the unsigned ones into wider ones, float32→64, an integer into a decimal with enough
/// integer digits, a decimal with more precision and no fewer fractional digits, a date into
/// a timestamp).
pub fn widens(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    if from == to {
        return false;
    }
    match (from, to) {
        (Float32, Float64) => true,
        (Date, Datetime(_, _)) => true,
        (Decimal(p1, s1), Decimal(p2, s2)) => s2 >= s1 && p2 - s2 >= p1 - s1,
        (f, Decimal(p, s)) if f.is_integer() => int_digits(f).is_some_and(|d| d <= p - s),
        (f, t) if f.is_integer() && t.is_integer() => match (int_bits(f), int_bits(t)) {
            (Some((fb, fs)), Some((tb, ts))) => (fs == ts && tb > fb) || (!fs && ts && tb > fb),
            _ => false,
        },
        _ => false,
    }
}

/// (bits, signed) of an integer type.
fn int_bits(t: &DataType) -> Option<(u32, bool)> {
    use DataType::*;
    Some(match t {
        Int8 => (8, true),
        Int16 => (16, true),
        Int32 => (32, true),
        Int64 => (64, true),
        UInt8 => (8, false),
        UInt16 => (16, false),
        UInt32 => (32, false),
        UInt64 => (64, false),
        _ => return None,
    })
}

/// Decimal digits an integer type needs.
fn int_digits(t: &DataType) -> Option<usize> {
    use DataType::*;
    Some(match t {
        Int8 | UInt8 => 3,
        Int16 | UInt16 => 5,
        Int32 | UInt32 => 10,
        Int64 => 19,
        UInt64 => 20,
        _ => return None,
    })
}

/// A type in tidemark's words: `int32`, `float64`, `string`, `decimal(12,2)`, `date`,
/// `timestamp[us, UTC]`, `timestamp[us]` (naive).
pub fn type_name(t: &DataType) -> String {
    use DataType::*;
    match t {
        Boolean => "bool".into(),
        Int8 => "int8".into(),
        Int16 => "int16".into(),
        Int32 => "int32".into(),
        Int64 => "int64".into(),
        UInt8 => "uint8".into(),
        UInt16 => "uint16".into(),
        UInt32 => "uint32".into(),
        UInt64 => "uint64".into(),
        Float32 => "float32".into(),
        Float64 => "float64".into(),
        Decimal(p, s) => format!("decimal({p},{s})"),
        String => "string".into(),
        Binary => "binary".into(),
        Date => "date".into(),
        Datetime(unit, zone) => {
            let u = match unit {
                TimeUnit::Nanoseconds => "ns",
                TimeUnit::Microseconds => "us",
                TimeUnit::Milliseconds => "ms",
            };
            match zone {
                Some(z) => format!("timestamp[{u}, {z}]"),
                None => format!("timestamp[{u}]"),
            }
        }
        Null => "null".into(),
        other => other.to_string(),
    }
}

/// The record of a unification among inputs, with per-column row counts (`rows_of(input
/// index)` gives the rows each input contributed).
pub fn unified_record(u: &Unified, rows_of: impl Fn(usize) -> u64) -> SchemaChange {
    let mut record = SchemaChange::default();
    for (i, plan) in u.plans.iter().enumerate() {
        let rows = rows_of(i);
        let part = SchemaChange {
            nulled: plan
                .missing
                .iter()
                .map(|n| ColumnCount {
                    name: n.clone(),
                    rows,
                })
                .collect(),
            ignored: plan
                .dropped
                .iter()
                .map(|n| ColumnCount {
                    name: n.clone(),
                    rows,
                })
                .collect(),
            ..Default::default()
        };
        record.absorb(&part);
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;
    use DataType::*;

    fn cols(list: &[(&str, DataType)]) -> Columns {
        list.iter()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect()
    }

    fn batch(list: &[(&str, DataType)], rows: u64) -> Batch {
        Batch {
            columns: list
                .iter()
                .map(|(n, t)| BatchColumn {
                    name: n.to_string(),
                    dtype: t.clone(),
                    nulls: 0,
                    origin: Some("file b.parquet".into()),
                })
                .collect(),
            rows,
            from: "the batch".into(),
            deletes_only: false,
        }
    }

    fn contract(new: NewColumns, types: TypeChanges, missing: MissingColumns) -> SchemaContract {
        SchemaContract {
            new_columns: new,
            type_changes: types,
            missing_columns: missing,
        }
    }

    #[test]
    fn lossless_widenings_and_only_those() {
        assert!(widens(&Int8, &Int16) && widens(&Int16, &Int32) && widens(&Int32, &Int64));
        assert!(widens(&UInt32, &Int64) && !widens(&Int32, &UInt64));
        assert!(widens(&Float32, &Float64) && !widens(&Float64, &Float32));
        assert!(widens(&Int32, &Decimal(12, 2)) && !widens(&Int32, &Decimal(10, 2)));
        assert!(widens(&Decimal(10, 2), &Decimal(12, 2)));
        assert!(widens(&Decimal(10, 2), &Decimal(12, 4)));
        assert!(!widens(&Decimal(10, 2), &Decimal(12, 1)));
        assert!(widens(
            &Date,
            &Datetime(TimeUnit::Microseconds, Some(polars::prelude::TimeZone::UTC))
        ));
        assert!(!widens(&Int64, &String) && !widens(&Int64, &Int32) && !widens(&Int64, &Float64));
    }

    #[test]
    fn the_default_contract_refuses_every_change_naming_column_types_and_key() {
        let table = cols(&[("id", Int64), ("qty", Int32)]);
        let c = SchemaContract::default();
        let e = against_table(
            &c,
            &table,
            "the table t",
            &batch(&[("id", Int64), ("qty", Int32), ("note", String)], 2),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("`note` (string) of file b.parquet is not in the table t")
                && e.contains("new_columns = \"add\""),
            "{e}"
        );
        let e = against_table(
            &c,
            &table,
            "the table t",
            &batch(&[("id", Int64), ("qty", Int64)], 2),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("`qty` is int64 in file b.parquet but int32 in the table t")
                && e.contains("type_changes = \"widen\""),
            "{e}"
        );
        let e = against_table(&c, &table, "the table t", &batch(&[("id", Int64)], 2))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`qty` (int32) of the table t is missing from the batch")
                && e.contains("missing_columns = \"null\""),
            "{e}"
        );
        // A narrower type fits: no change, no error.
        let r = against_table(&c, &table, "t", &batch(&[("id", Int32), ("qty", Int8)], 2)).unwrap();
        assert!(!r.changes_table() && r.record.is_empty());
    }

    #[test]
    fn an_evolving_contract_adds_widens_nulls_and_ignores() {
        let table = cols(&[("id", Int64), ("qty", Int32), ("region", String)]);
        let add = contract(NewColumns::Add, TypeChanges::Widen, MissingColumns::Null);
        let r = against_table(
            &add,
            &table,
            "t",
            &batch(&[("id", Int64), ("qty", Int64), ("note", String)], 5),
        )
        .unwrap();
        assert_eq!(
            r.table,
            cols(&[
                ("id", Int64),
                ("qty", Int64),
                ("region", String),
                ("note", String)
            ])
        );
        assert_eq!(r.added, cols(&[("note", String)]));
        assert_eq!(r.nulled, vec!["region".to_string()]);
        assert_eq!(
            r.record.summary(),
            "added note (string); widened qty int32 → int64; nulled region (5 rows)"
        );
        assert_eq!(r.written(), vec!["id", "qty", "note"]);
        let ignore = contract(NewColumns::Ignore, TypeChanges::Widen, MissingColumns::Null);
        let r = against_table(
            &ignore,
            &table,
            "t",
            &batch(
                &[
                    ("id", Int64),
                    ("qty", Int32),
                    ("region", String),
                    ("note", String),
                ],
                5,
            ),
        )
        .unwrap();
        assert!(!r.changes_table());
        assert_eq!(r.ignored, vec!["note".to_string()]);
        // A change that is no widening is refused even when widening is allowed.
        let e = against_table(
            &add,
            &table,
            "t",
            &batch(&[("id", String), ("qty", Int32), ("region", String)], 1),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("int64 → string is not a lossless widening"),
            "{e}"
        );
    }

    #[test]
    fn inputs_unify_under_the_contract_and_drift_is_refused_by_default() {
        let a = Input {
            origin: "a.parquet".into(),
            columns: cols(&[("id", Int64), ("qty", Int32), ("gone", String)]),
        };
        let b = Input {
            origin: "b.parquet".into(),
            columns: cols(&[("id", Int64), ("qty", Int64), ("note", String)]),
        };
        let e = unify_inputs(&SchemaContract::default(), &[a.clone(), b.clone()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("schema drift") && e.contains("a.parquet") && e.contains("b.parquet"),
            "{e}"
        );
        let all = contract(NewColumns::Add, TypeChanges::Widen, MissingColumns::Null);
        let u = unify_inputs(&all, &[a.clone(), b.clone()]).unwrap();
        assert_eq!(
            u.columns,
            cols(&[
                ("id", Int64),
                ("qty", Int64),
                ("gone", String),
                ("note", String)
            ])
        );
        assert_eq!(u.plans[0].missing, vec!["note".to_string()]);
        assert_eq!(u.plans[1].missing, vec!["gone".to_string()]);
        let rec = unified_record(&u, |i| [3, 4][i]);
        assert_eq!(
            rec.nulled,
            vec![
                ColumnCount {
                    name: "note".into(),
                    rows: 3
                },
                ColumnCount {
                    name: "gone".into(),
                    rows: 4
                }
            ]
        );
        let ignore = contract(NewColumns::Ignore, TypeChanges::Widen, MissingColumns::Null);
        let u = unify_inputs(&ignore, &[a, b]).unwrap();
        assert_eq!(u.plans[1].dropped, vec!["note".to_string()]);
        assert!(!u.columns.iter().any(|(n, _)| n == "note"));
    }
}
