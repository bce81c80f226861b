//! The `[target]` section (kind, location, write mode, key and partitions) and the `[late]`
//! section (late rows merged or quarantined beside the target). What each target kind
//! accepts (Delta, Parquet, PostgreSQL) is the target's own `target::KindRules`: this
//! module asks them and never matches on the kind.

use super::SpecError;
use super::raw::{RawSpec, RawTarget};
use super::resolve::{Paths, check_location, conn_of, valid_table_name};
use crate::target::{self, KindRules};
use std::path::Path;
use tidemark_workflows::spec::{ConnSpec, LatePolicy, LateSpec, SourceSpec, TargetSpec, WriteMode};

/// Validates and resolves `[target]` for the already resolved `source`.
pub(super) fn target_of(
    file: &Path,
    raw: &RawSpec,
    source: &SourceSpec,
    paths: &Paths,
) -> Result<TargetSpec, SpecError> {
    let s = &raw.source;
    let kind = source.kind;
    let lookback = &source.lookback;
    let t = &raw.target;
    let Some(target_kind) = target::kind_named(t.kind.as_str()) else {
        return Err(SpecError::at(
            file,
            "target.kind",
            format!("unsupported target kind {:?}", t.kind),
            "use kind = \"delta\", \"parquet\" or \"postgres\"",
        ));
    };
    // What the kind accepts comes from the target's own rules, never a match on the kind.
    let rules = target::rules(target_kind);
    let (target_path, target_conn, target_table) = if rules.takes_path {
        (file_target_path(file, t, paths)?, None, None)
    } else {
        let (conn, table) = table_target(file, t)?;
        (String::new(), Some(conn), Some(table))
    };
    if let Some((problem, fix)) = rules.refuses_object_storage
        && crate::storage::is_remote(&target_path)
    {
        return Err(SpecError::at(file, "target.path", problem, fix));
    }
    let storage_options = storage_options_of(file, t, &target_path)?;
    let mode = mode_of(file, t, rules.default_mode)?;
    if let Some((problem, fix)) = (rules.refuses)(mode) {
        return Err(SpecError::at(file, "target.mode", problem, fix));
    }
    let key = match (kind.is_cdc(), &t.key, &s.key) {
        (true, None, Some(k)) => k.clone(),
        _ => t.key.clone().unwrap_or_default(),
    };
    if kind.is_cdc() {
        check_cdc_target(file, rules, mode, &key, &s.key)?;
    }
    if mode == WriteMode::Merge && key.is_empty() {
        return Err(SpecError::at(
            file,
            "target.key",
            "is required for mode = \"merge\"",
            "list the key columns, e.g. key = [\"order_id\"]",
        ));
    }
    if let Some(k) = key.iter().find(|k| k.trim().is_empty()) {
        return Err(SpecError::at(
            file,
            "target.key",
            format!("{k:?} is not a column name"),
            "remove it",
        ));
    }
    if has_duplicate(&key) {
        return Err(SpecError::at(
            file,
            "target.key",
            "lists a column twice",
            "list each key column once",
        ));
    }
    let partition_by = t.partition_by.clone().unwrap_or_default();
    if has_duplicate(&partition_by) {
        return Err(SpecError::at(
            file,
            "target.partition_by",
            "lists a column twice",
            "list each partition column once",
        ));
    }
    if !rules.partitions && !partition_by.is_empty() {
        return Err(SpecError::at(
            file,
            "target.partition_by",
            format!("is not used by the {} target", rules.title),
            &format!(
                "remove it (partition the table in {} itself if you need to)",
                rules.title
            ),
        ));
    }
    let range_column = t.range_column.clone();
    match (mode, &range_column) {
        (WriteMode::DeleteInsert, None) => {
            return Err(SpecError::at(
                file,
                "target.range_column",
                "is required for mode = \"delete_insert\" (it names the range a run replaces)",
                "write range_column = \"order_date\"",
            ));
        }
        (m, Some(_)) if m != WriteMode::DeleteInsert => {
            return Err(SpecError::at(
                file,
                "target.range_column",
                "is only used with mode = \"delete_insert\"",
                "remove it, or set mode = \"delete_insert\"",
            ));
        }
        _ => {}
    }
    if mode == WriteMode::PartitionOverwrite && partition_by.is_empty() {
        return Err(SpecError::at(
            file,
            "target.partition_by",
            "is required for mode = \"partition_overwrite\" (it names what a run replaces)",
            "list the partition columns, e.g. partition_by = [\"order_date\"]",
        ));
    }
    let partition_stable = t.partition_stable.unwrap_or(false);
    if partition_stable {
        let why = if !rules.partition_pruning {
            Some("is only used by Delta targets")
        } else if partition_by.is_empty() {
            Some("needs partition_by (it promises each key stays in its partition)")
        } else if mode != WriteMode::Merge {
            Some("is only used with mode = \"merge\"")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(SpecError::at(
                file,
                "target.partition_stable",
                why,
                "remove it",
            ));
        }
    }
    if let Some(p) = partition_by.iter().find(|p| p.trim().is_empty()) {
        return Err(SpecError::at(
            file,
            "target.partition_by",
            format!("{p:?} is not a column name"),
            "remove it",
        ));
    }
    let deletion_vectors = t.deletion_vectors.unwrap_or(false);
    if deletion_vectors {
        let why = if !rules.deletion_vectors {
            Some(format!(
                "deletion vectors are a Delta table feature; a {} has none",
                rules.title
            ))
        } else if mode != WriteMode::Merge {
            Some(format!(
                "is only used with mode = \"merge\" (mode {:?} never replaces a row)",
                mode.as_str()
            ))
        } else {
            None
        };
        if let Some(why) = why {
            return Err(SpecError::at(
                file,
                "target.deletion_vectors",
                why,
                "remove it, or use a Delta target in merge mode",
            ));
        }
    }
    if mode == WriteMode::Append && !lookback.is_zero() {
        return Err(SpecError::at(
            file,
            "source.lookback",
            "a lookback re-reads rows, which append mode would load twice",
            "use mode = \"merge\" with a key, or set lookback = \"0s\"",
        ));
    }
    Ok(TargetSpec {
        kind: target_kind,
        path: target_path,
        mode,
        key,
        partition_by,
        partition_stable,
        conn: target_conn,
        table: target_table,
        range_column,
        storage_options,
        deletion_vectors,
    })
}

/// `target.storage_options`: non-secret settings of an object-store table's store. A key that
/// holds a credential is refused (a spec travels into workflow inputs and histories).
fn storage_options_of(
    file: &Path,
    t: &RawTarget,
    target_path: &str,
) -> Result<std::collections::BTreeMap<String, String>, SpecError> {
    let Some(opts) = &t.storage_options else {
        return Ok(Default::default());
    };
    if !crate::storage::is_remote(target_path) {
        return Err(SpecError::at(
            file,
            "target.storage_options",
            "applies to a table on object storage",
            "remove it, or give an s3://, gs:// or az:// path",
        ));
    }
    if let Some(k) = opts.keys().find(|k| crate::storage::secret_option(k)) {
        return Err(SpecError::at(
            file,
            &format!("target.storage_options.{k}"),
            "holds a credential, and a spec travels into workflow inputs and histories",
            "remove it and set the cloud's standard variable (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_ACCOUNT_KEY, …) in the worker's environment",
        ));
    }
    Ok(opts.clone())
}

/// A table target (PostgreSQL): a connection and a table name, no `path`.
fn table_target(file: &Path, t: &RawTarget) -> Result<(ConnSpec, String), SpecError> {
    if t.path.is_some() {
        return Err(SpecError::at(
            file,
            "target.path",
            "is a key of file targets",
            "remove it; a PostgreSQL target names its `table`",
        ));
    }
    let conn = conn_of(file, "target", &t.url, &t.url_env)?;
    let table = match &t.table {
        Some(tb) if valid_table_name(tb) => tb.clone(),
        Some(tb) => {
            return Err(SpecError::at(
                file,
                "target.table",
                format!("{tb:?} is not a table name"),
                "write table = \"schema.table\" or table = \"table\"",
            ));
        }
        None => {
            return Err(SpecError::at(
                file,
                "target.table",
                "is required for a PostgreSQL target",
                "write table = \"public.orders\"",
            ));
        }
    };
    Ok((conn, table))
}

/// The directory of a file target (Delta or Parquet), which takes no PostgreSQL keys.
fn file_target_path(file: &Path, t: &RawTarget, paths: &Paths) -> Result<String, SpecError> {
    for (key, set) in [
        ("target.url", t.url.is_some()),
        ("target.url_env", t.url_env.is_some()),
        ("target.table", t.table.is_some()),
        ("target.range_column", t.range_column.is_some()),
    ] {
        if set {
            return Err(SpecError::at(
                file,
                key,
                "is a key of kind = \"postgres\" targets",
                "remove it, or set kind = \"postgres\"",
            ));
        }
    }
    match t.path.as_deref() {
        Some(p) if !p.trim().is_empty() => {
            let resolved = paths.resolve(p);
            check_location(file, "target.path", &resolved)?;
            Ok(resolved)
        }
        _ => Err(SpecError::at(
            file,
            "target.path",
            "is required",
            "give the table's or dataset's directory, e.g. path = \"lake/orders\"",
        )),
    }
}

/// `target.mode`, or the kind's default.
fn mode_of(file: &Path, t: &RawTarget, default: WriteMode) -> Result<WriteMode, SpecError> {
    match t.mode.as_deref() {
        None => Ok(default),
        Some("merge") => Ok(WriteMode::Merge),
        Some("append") => Ok(WriteMode::Append),
        Some("partition_overwrite") => Ok(WriteMode::PartitionOverwrite),
        Some("delete_insert") => Ok(WriteMode::DeleteInsert),
        Some(other) => Err(SpecError::at(
            file,
            "target.mode",
            format!("unknown mode {other:?}"),
            "use \"merge\", \"append\", \"delete_insert\" (PostgreSQL) or \"partition_overwrite\" (Parquet)",
        )),
    }
}

fn has_duplicate(items: &[String]) -> bool {
    let mut seen = std::collections::BTreeSet::new();
    items.iter().any(|i| !seen.insert(i))
}

/// A CDC source applies to a Delta table or a PostgreSQL table, by key, in merge mode.
fn check_cdc_target(
    file: &Path,
    rules: &KindRules,
    mode: WriteMode,
    key: &[String],
    source_key: &Option<Vec<String>>,
) -> Result<(), SpecError> {
    if !rules.accepts_change_events {
        return Err(SpecError::at(
            file,
            "target.kind",
            format!("a {} cannot apply row-level changes", rules.title),
            "use kind = \"delta\" or kind = \"postgres\" for a change-event source",
        ));
    }
    if mode != WriteMode::Merge {
        return Err(SpecError::at(
            file,
            "target.mode",
            format!("{:?} does not apply change events", mode.as_str()),
            "remove `mode` (change events are merged by key)",
        ));
    }
    if let Some(sk) = source_key
        && sk.as_slice() != key
    {
        return Err(SpecError::at(
            file,
            "target.key",
            format!("{key:?} differs from source.key {sk:?}"),
            "remove target.key: a change-event source's key is the target's",
        ));
    }
    Ok(())
}

/// Validates and resolves `[late]`; a quarantine table must not be the target itself.
pub(super) fn late_of(
    file: &Path,
    raw: &RawSpec,
    target_path: &str,
    paths: &Paths,
) -> Result<LateSpec, SpecError> {
    let s = &raw.source;
    let late = match &raw.late {
        None => LateSpec {
            policy: LatePolicy::Merge,
            quarantine_path: None,
        },
        Some(l) => {
            let policy = match l.policy.as_deref() {
                None | Some("merge") => LatePolicy::Merge,
                Some("quarantine") => LatePolicy::Quarantine,
                Some(other) => {
                    return Err(SpecError::at(
                        file,
                        "late.policy",
                        format!("unknown policy {other:?}"),
                        "use \"merge\" or \"quarantine\"",
                    ));
                }
            };
            if s.event_time.is_none() {
                return Err(SpecError::at(
                    file,
                    "late",
                    "late rows are defined by an event time, and [source] has no `event_time`",
                    "add event_time = \"<column>\" to [source], or remove [late]",
                ));
            }
            if policy == LatePolicy::Quarantine && l.quarantine_path.is_none() {
                return Err(SpecError::at(
                    file,
                    "late.quarantine_path",
                    "is required for policy = \"quarantine\"",
                    "give the side Delta table's directory, e.g. quarantine_path = \"lake/orders_late\"",
                ));
            }
            if policy == LatePolicy::Merge && l.quarantine_path.is_some() {
                return Err(SpecError::at(
                    file,
                    "late.quarantine_path",
                    "is only used with policy = \"quarantine\"",
                    "set policy = \"quarantine\" or remove quarantine_path",
                ));
            }
            LateSpec {
                policy,
                quarantine_path: l.quarantine_path.as_deref().map(|p| paths.resolve(p)),
            }
        }
    };
    if let Some(q) = &late.quarantine_path {
        check_location(file, "late.quarantine_path", q)?;
    }
    if late.quarantine_path.as_deref() == Some(target_path) {
        return Err(SpecError::at(
            file,
            "late.quarantine_path",
            "is the target table itself",
            "give the quarantine table its own directory",
        ));
    }
    Ok(late)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{GOOD, err};
    use super::super::parse;
    use std::path::Path;
    use tidemark_workflows::spec::WriteMode;

    #[test]
    fn merge_without_key_is_refused_with_a_fix() {
        let e = err(&GOOD.replace("key = [\"order_id\"]", ""));
        assert!(
            e.contains("target.key") && e.contains("key = [\"order_id\"]"),
            "{e}"
        );
    }

    #[test]
    fn append_with_lookback_is_refused() {
        let e = err(&GOOD.replace("key = [", "mode = \"append\"\nkey = ["));
        assert!(e.contains("source.lookback") && e.contains("append"), "{e}");
    }

    #[test]
    fn partition_stable_needs_partitions_and_a_delta_merge() {
        let stable = GOOD.replace("key = [", "partition_stable = true\nkey = [");
        let e = err(&stable);
        assert!(
            e.contains("target.partition_stable") && e.contains("partition_by"),
            "{e}"
        );
        let with_parts = stable.replace("key = [", "partition_by = [\"order_date\"]\nkey = [");
        let s = parse(&with_parts, Path::new("/x/spec.toml")).unwrap();
        assert!(s.target.partition_stable);
        assert!(
            !parse(GOOD, Path::new("/x/spec.toml"))
                .unwrap()
                .target
                .partition_stable
        );
        let e = err(&with_parts.replace("key = [", "mode = \"append\"\nkey = ["));
        assert!(e.contains("target.partition_stable"), "{e}");
    }

    #[test]
    fn late_quarantine_needs_event_time_and_a_path() {
        let e = err(&format!("{GOOD}\n[late]\npolicy = \"quarantine\"\n"));
        assert!(e.contains("event_time"), "{e}");
        let with_event = GOOD.replace("lookback", "event_time = \"created_at\"\nlookback");
        let e = err(&format!("{with_event}\n[late]\npolicy = \"quarantine\"\n"));
        assert!(e.contains("late.quarantine_path"), "{e}");
    }

    #[test]
    fn the_parquet_target_defaults_to_partition_overwrite_and_needs_partitions() {
        let parquet = GOOD.replace("kind = \"delta\"", "kind = \"parquet\"");
        let e = err(&parquet);
        assert!(e.contains("target.partition_by"), "{e}");
        let s = parse(
            &format!("{parquet}partition_by = [\"order_date\"]\n"),
            Path::new("/x/spec.toml"),
        )
        .unwrap();
        assert_eq!(s.target.mode, WriteMode::PartitionOverwrite);
        let e = err(&parquet.replace("key = [", "mode = \"merge\"\nkey = ["));
        assert!(
            e.contains("target.mode") && e.contains("partition_overwrite"),
            "{e}"
        );
        let e = err(&GOOD.replace("key = [", "mode = \"partition_overwrite\"\nkey = ["));
        assert!(e.contains("kind = \"parquet\""), "{e}");
    }
}
