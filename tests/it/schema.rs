//! The schema contract (`[schema]`) and the audit checks (`[[checks]]`) against real tables —
//! a Delta table on disk, a PostgreSQL server, a hive-partitioned Parquet dataset — fed by
//! Parquet files, a PostgreSQL query and Debezium change events. The run steps are called
//! directly (as the workflow calls them, failure recording included); one test goes through
//! Temporal and the CLI.

use crate::harness::{pg_client, pg_url, queue, run, tidemark_cli, with_worker};
use std::path::{Path, PathBuf};
use tidemark::error::EngineError;
use tidemark::polars::prelude::*;
use tidemark::run_steps;
use tidemark::workflows::payloads::{
    CommitInput, FailureInput, Phase, ProcessManifest, PromoteOutput, RunIdentity, WatermarkInput,
};
use tidemark::workflows::spec::PipelineSpec;

/// Where a test pipeline writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum To {
    Delta,
    Postgres,
    Parquet,
}

const ALL: [To; 3] = [To::Delta, To::Postgres, To::Parquet];

/// A pipeline in a temporary directory: source files under `in/` (integer cursor `ts`, key
/// `id`), the target, and the given `[schema]` / extra lines.
struct Pipe {
    dir: tempfile::TempDir,
    spec: PipelineSpec,
    files: usize,
}

impl Pipe {
    fn new(name: &str, to: To, extra: &str) -> Pipe {
        Pipe::with_source(
            name,
            to,
            "kind = \"parquet\"\npath = \"in\"\ncursor = \"ts\"\n",
            extra,
        )
    }

    fn with_source(name: &str, to: To, source: &str, extra: &str) -> Pipe {
        let dir = tempfile::tempdir().expect("tempdir");
        let pg_table = format!("it_schema_{name}_{}.t", std::process::id());
        let target = match to {
            To::Delta => "kind = \"delta\"\npath = \"lake\"\nkey = [\"id\"]\n".to_string(),
            To::Parquet => {
                "kind = \"parquet\"\npath = \"ds\"\nkey = [\"id\"]\npartition_by = [\"day\"]\n"
                    .to_string()
            }
            To::Postgres => format!(
                "kind = \"postgres\"\nurl = \"{}\"\ntable = \"{pg_table}\"\nkey = [\"id\"]\n",
                pg_url()
            ),
        };
        let text = format!("name = \"{name}\"\n[source]\n{source}\n[target]\n{target}\n{extra}\n");
        let path = dir.path().join("p.toml");
        std::fs::write(&path, text).expect("write spec");
        let spec = tidemark::spec::load(&path).unwrap_or_else(|e| panic!("{e}"));
        Pipe {
            dir,
            spec,
            files: 0,
        }
    }

    fn spec_path(&self) -> PathBuf {
        self.dir.path().join("p.toml")
    }

    /// Writes the next source file.
    fn add(&mut self, mut df: DataFrame) -> PathBuf {
        let dir = self.dir.path().join("in");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("f{:03}.parquet", self.files));
        ParquetWriter::new(std::fs::File::create(&path).unwrap())
            .finish(&mut df)
            .unwrap();
        self.files += 1;
        path
    }

    /// One run through the steps, as the workflow makes it (a failure is recorded).
    async fn run(&self) -> Result<(ProcessManifest, Option<PromoteOutput>), EngineError> {
        steps(&self.spec).await
    }

    /// The target's rows sorted by id.
    async fn rows(&self) -> DataFrame {
        let df = tidemark::target::open(&self.spec)
            .unwrap()
            .read_all()
            .await
            .unwrap();
        if df.height() == 0 {
            return df;
        }
        df.sort(["id"], Default::default()).unwrap()
    }

    /// The target's columns and their types.
    async fn columns(&self) -> Vec<(String, DataType)> {
        tidemark::target::open(&self.spec)
            .unwrap()
            .columns()
            .await
            .unwrap()
            .unwrap_or_default()
    }

    fn watermark(&self) -> Option<i64> {
        tidemark::state::open(&self.spec)
            .unwrap()
            .read_watermark()
            .unwrap()
            .and_then(|w| w.value)
    }

    fn ledger(&self) -> Vec<tidemark::state::ledger::LedgerEntry> {
        tidemark::state::open(&self.spec)
            .unwrap()
            .read_ledger()
            .unwrap()
    }

    /// What changes in the target when a run fails: its row count and the target's version.
    async fn snapshot(&self) -> (usize, Vec<(i64, u64)>) {
        let t = tidemark::target::open(&self.spec).unwrap();
        (
            self.rows().await.height(),
            t.run_commits().await.unwrap_or_default(),
        )
    }
}

fn identity() -> RunIdentity {
    RunIdentity {
        workflow_id: "schema-test".into(),
        run_id: "schema-test".into(),
        started_at_ms: chrono::Utc::now().timestamp_millis(),
    }
}

/// process → stage → promote → update_watermark, recording a failure as the workflow does.
async fn steps(
    spec: &PipelineSpec,
) -> Result<(ProcessManifest, Option<PromoteOutput>), EngineError> {
    let m = match run_steps::process(spec.clone()).await {
        Ok(m) => m,
        Err(e) => {
            run_steps::record_failure(FailureInput {
                spec: spec.clone(),
                run: identity(),
                run_seq: None,
                phase: Phase::Process,
                message: e.to_string(),
            })
            .await
            .unwrap();
            return Err(e);
        }
    };
    let commit = CommitInput {
        spec: spec.clone(),
        run: identity(),
        manifest: m.clone(),
    };
    let mut phase = Phase::Stage;
    let result = async {
        let mut promoted = None;
        if m.has_rows() {
            run_steps::stage(commit.clone()).await?;
            phase = Phase::Promote;
            promoted = Some(run_steps::promote(commit.clone()).await?);
        }
        phase = Phase::UpdateWatermark;
        run_steps::update_watermark(WatermarkInput {
            commit: commit.clone(),
            promote: promoted.clone(),
            stage_ms: 0,
        })
        .await?;
        Ok::<_, EngineError>(promoted)
    }
    .await;
    match result {
        Ok(p) => Ok((m, p)),
        Err(e) => {
            run_steps::record_failure(FailureInput {
                spec: spec.clone(),
                run: identity(),
                run_seq: Some(m.run_seq),
                phase,
                message: e.to_string(),
            })
            .await
            .unwrap();
            Err(e)
        }
    }
}

/// Rows `ids` at cursor `ts`, day `day`: `id` int64, `ts` int64, `qty` int32, `price`
/// float32, `day` string.
fn base(ids: &[i64], ts: i64, day: &str) -> DataFrame {
    df!(
        "id" => ids,
        "ts" => vec![ts; ids.len()],
        "qty" => ids.iter().map(|i| *i as i32 * 10).collect::<Vec<i32>>(),
        "price" => ids.iter().map(|i| *i as f32 + 0.5).collect::<Vec<f32>>(),
        "day" => vec![day; ids.len()],
    )
    .unwrap()
}

/// `df` with a string column `note` = `n<id>`.
fn with_note(mut df: DataFrame) -> DataFrame {
    let notes: Vec<String> = df
        .column("id")
        .unwrap()
        .i64()
        .unwrap()
        .into_no_null_iter()
        .map(|i| format!("n{i}"))
        .collect();
    df.with_column(Column::new("note".into(), notes)).unwrap();
    df
}

/// `df` with `qty` as int64 and `price` as float64.
fn widened(df: DataFrame) -> DataFrame {
    df.lazy()
        .with_columns([
            col("qty").cast(DataType::Int64),
            col("price").cast(DataType::Float64),
        ])
        .collect()
        .unwrap()
}

fn strs(df: &DataFrame, column: &str) -> Vec<Option<String>> {
    df.column(column)
        .unwrap()
        .cast(&DataType::String)
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .map(|v| v.map(str::to_string))
        .collect()
}

fn ints(df: &DataFrame, column: &str) -> Vec<Option<i64>> {
    df.column(column)
        .unwrap()
        .cast(&DataType::Int64)
        .unwrap()
        .i64()
        .unwrap()
        .iter()
        .collect()
}

fn dtype(cols: &[(String, DataType)], name: &str) -> Option<DataType> {
    cols.iter().find(|(n, _)| n == name).map(|(_, t)| t.clone())
}

/// A column added in a later file, under each `new_columns` policy, into every target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_added_in_a_later_file_is_added_ignored_or_refused_in_every_target() {
    for to in ALL {
        // add: earlier rows read null, new rows carry the values; recorded and alerted.
        let mut p = Pipe::new(
            &format!("add{to:?}").to_lowercase(),
            to,
            "[schema]\nnew_columns = \"add\"\n",
        );
        p.add(base(&[1, 2], 10, "d1"));
        p.run().await.unwrap();
        p.add(with_note(base(&[2, 3], 20, "d1")));
        let (_, promoted) = p.run().await.unwrap();
        let change = promoted.unwrap().schema_change.expect("a schema change");
        assert_eq!(change.added.len(), 1, "{to:?}: {change:?}");
        assert_eq!(change.added[0].name, "note");
        let rows = p.rows().await;
        assert_eq!(ints(&rows, "id"), vec![Some(1), Some(2), Some(3)], "{to:?}");
        assert_eq!(
            strs(&rows, "note"),
            vec![None, Some("n2".into()), Some("n3".into())],
            "{to:?}: earlier rows null, new rows valued\n{rows}"
        );
        let last = p.ledger().pop().unwrap();
        assert_eq!(last.schema.as_ref().unwrap().added[0].name, "note");
        assert!(
            last.alerts.iter().any(|a| a.rule == "schema_change"),
            "{to:?}: {:?}",
            last.alerts
        );

        // ignore: the column never reaches the table; the dropped values are counted.
        let mut p = Pipe::new(
            &format!("ign{to:?}").to_lowercase(),
            to,
            "[schema]\nnew_columns = \"ignore\"\n",
        );
        p.add(base(&[1, 2], 10, "d1"));
        p.run().await.unwrap();
        p.add(with_note(base(&[2, 3], 20, "d1")));
        p.run().await.unwrap();
        let change = p
            .ledger()
            .pop()
            .unwrap()
            .schema
            .expect("ignored columns are recorded");
        assert_eq!(change.ignored[0].name, "note");
        assert_eq!(change.ignored[0].rows, 2, "{to:?}: two values dropped");
        assert!(dtype(&p.columns().await, "note").is_none(), "{to:?}");
        assert_eq!(p.rows().await.height(), 3);

        // fail (the default): a clear error naming the file, the column and the key; the
        // target and the watermark stay as they were.
        let mut p = Pipe::new(&format!("fail{to:?}").to_lowercase(), to, "");
        p.add(base(&[1, 2], 10, "d1"));
        p.run().await.unwrap();
        let before = (p.snapshot().await, p.watermark());
        let file = p.add(with_note(base(&[2, 3], 20, "d1")));
        let e = p.run().await.unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("`note`")
                && text.contains(&file.display().to_string())
                && text.contains("new_columns"),
            "{to:?}: {text}"
        );
        assert!(!e.is_retryable());
        assert_eq!((p.snapshot().await, p.watermark()), before, "{to:?}");
        assert_eq!(p.ledger().last().unwrap().status, "failed");
    }
}

/// int32 → int64 and float32 → float64 are widened under `widen` (the table's column and
/// every value intact), refused by default; int64 → string is refused even under `widen`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossless_widenings_are_applied_and_other_type_changes_refused_in_every_target() {
    for to in ALL {
        let mut p = Pipe::new(
            &format!("widen{to:?}").to_lowercase(),
            to,
            "[schema]\ntype_changes = \"widen\"\n",
        );
        p.add(base(&[1, 2], 10, "d1"));
        p.add(base(&[5], 11, "d2"));
        p.run().await.unwrap();
        p.add(widened(base(&[2, 3], 20, "d1")));
        let (_, promoted) = p.run().await.unwrap();
        let change = promoted.unwrap().schema_change.expect("widened");
        let widened_cols: Vec<(&str, &str, &str)> = change
            .widened
            .iter()
            .map(|w| (w.name.as_str(), w.from.as_str(), w.to.as_str()))
            .collect();
        assert_eq!(
            widened_cols,
            vec![("qty", "int32", "int64"), ("price", "float32", "float64")],
            "{to:?}"
        );
        let cols = p.columns().await;
        assert_eq!(dtype(&cols, "qty"), Some(DataType::Int64), "{to:?}");
        assert_eq!(dtype(&cols, "price"), Some(DataType::Float64), "{to:?}");
        let rows = p.rows().await;
        assert_eq!(
            ints(&rows, "qty"),
            vec![Some(10), Some(20), Some(30), Some(50)],
            "{to:?}: every value intact\n{rows}"
        );
        if to == To::Delta {
            // Without the typeWidening feature every data file must store the new type: the
            // widening rewrote them all in its commit.
            for f in delta_files(&p.spec.target.path).await {
                let schema = ParquetReader::new(std::fs::File::open(&f).unwrap())
                    .schema()
                    .unwrap();
                let qty = schema.get("qty").unwrap();
                assert_eq!(
                    DataType::from_arrow_field(qty),
                    DataType::Int64,
                    "{}",
                    f.display()
                );
            }
        }

        // int64 → string is no widening: refused, naming both types; nothing changes.
        let before = p.snapshot().await;
        let text_qty = base(&[4], 30, "d1")
            .lazy()
            .with_column(col("qty").cast(DataType::String))
            .collect()
            .unwrap();
        p.add(text_qty);
        let e = p.run().await.unwrap_err().to_string();
        assert!(
            e.contains("`qty` is")
                && e.contains("string")
                && e.contains("int64")
                && e.contains("not a lossless widening"),
            "{to:?}: {e}"
        );
        assert_eq!(p.snapshot().await, before, "{to:?}");

        // The default contract refuses the widening itself.
        let mut p = Pipe::new(&format!("nowiden{to:?}").to_lowercase(), to, "");
        p.add(base(&[1], 10, "d1"));
        p.run().await.unwrap();
        p.add(widened(base(&[2], 20, "d1")));
        let e = p.run().await.unwrap_err().to_string();
        assert!(
            e.contains("`qty` is")
                && e.contains("int64")
                && e.contains("int32")
                && e.contains("type_changes = \"widen\""),
            "{to:?}: {e}"
        );
    }
}

/// The live data files of a local Delta table.
async fn delta_files(table: &str) -> Vec<PathBuf> {
    let t = tidemark::target::delta::open(table).await.unwrap().unwrap();
    t.get_file_uris()
        .unwrap()
        .map(|u| PathBuf::from(u.trim_start_matches("file://")))
        .collect()
}

/// A column that later files lack is written as null under `missing_columns = "null"` (an
/// update of an existing row too), refused by default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_missing_from_later_files_is_written_null_or_refused_in_every_target() {
    for to in ALL {
        let mut p = Pipe::new(
            &format!("null{to:?}").to_lowercase(),
            to,
            "[schema]\nmissing_columns = \"null\"\n",
        );
        p.add(with_note(base(&[1, 2], 10, "d1")));
        p.run().await.unwrap();
        p.add(base(&[2, 3], 20, "d1"));
        p.run().await.unwrap();
        let change = p.ledger().pop().unwrap().schema.expect("nulled");
        assert_eq!(change.nulled[0].name, "note", "{to:?}");
        let rows = p.rows().await;
        assert_eq!(
            strs(&rows, "note"),
            vec![Some("n1".into()), None, None],
            "{to:?}: the updated row and the new one are null\n{rows}"
        );

        let mut p = Pipe::new(&format!("miss{to:?}").to_lowercase(), to, "");
        p.add(with_note(base(&[1], 10, "d1")));
        p.run().await.unwrap();
        let before = p.snapshot().await;
        p.add(base(&[2], 20, "d1"));
        let e = p.run().await.unwrap_err().to_string();
        assert!(
            e.contains("`note`") && e.contains("missing_columns = \"null\""),
            "{to:?}: {e}"
        );
        assert_eq!(p.snapshot().await, before, "{to:?}");
    }
}

/// The files of one window that disagree are unified by the contract first; by default the
/// run names both files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_of_one_window_that_disagree_are_unified_or_refused() {
    let mut p = Pipe::new("window", To::Delta, "");
    let a = p.add(base(&[1, 2], 10, "d1"));
    let b = p.add(with_note(widened(base(&[3], 11, "d1"))));
    let e = p.run().await.unwrap_err().to_string();
    assert!(
        e.contains("schema drift")
            && e.contains(&a.display().to_string())
            && e.contains(&b.display().to_string()),
        "{e}"
    );
    assert!(p.rows().await.height() == 0 && p.watermark().is_none());

    let mut p = Pipe::new(
        "window2",
        To::Delta,
        "[schema]\nnew_columns = \"add\"\ntype_changes = \"widen\"\n",
    );
    p.add(base(&[1, 2], 10, "d1"));
    p.add(with_note(widened(base(&[3], 11, "d1"))));
    let (m, _) = p.run().await.unwrap();
    let resolution = m.schema_resolution.expect("the files were unified");
    assert_eq!(resolution.nulled[0].name, "note");
    assert_eq!(resolution.nulled[0].rows, 2, "the first file's two rows");
    let rows = p.rows().await;
    assert_eq!(strs(&rows, "note"), vec![None, None, Some("n3".into())]);
    assert_eq!(dtype(&p.columns().await, "qty"), Some(DataType::Int64));
    assert!(p.ledger().last().unwrap().schema.is_some());
}

/// A PostgreSQL source query whose columns change between runs: a column added, then one
/// dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_query_whose_columns_change_is_evolved_into_delta() {
    let client = pg_client().await;
    let table = format!("it_schema_src_{}.orders", std::process::id());
    let schema = table.split('.').next().unwrap();
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}; DROP TABLE IF EXISTS {table};
             CREATE TABLE {table} (id bigint PRIMARY KEY, ts bigint, qty integer, region text);
             INSERT INTO {table} VALUES (1, 10, 5, 'eu'), (2, 10, 6, 'us');"
        ))
        .await
        .unwrap();
    let source = format!(
        "kind = \"postgres\"\nurl = \"{}\"\ntable = \"{table}\"\ncursor = \"ts\"\n",
        pg_url()
    );
    let p = Pipe::with_source(
        "pgsrc",
        To::Delta,
        &source,
        "[schema]\nnew_columns = \"add\"\nmissing_columns = \"null\"\n",
    );
    p.run().await.unwrap();
    client
        .batch_execute(&format!(
            "ALTER TABLE {table} ADD COLUMN note text;
             INSERT INTO {table} VALUES (3, 20, 7, 'eu', 'hello');"
        ))
        .await
        .unwrap();
    let (m, promoted) = p.run().await.unwrap();
    assert!(m.schema.iter().any(|c| c.name == "note"));
    assert_eq!(
        promoted.unwrap().schema_change.unwrap().added[0].name,
        "note"
    );
    let rows = p.rows().await;
    assert_eq!(strs(&rows, "note"), vec![None, None, Some("hello".into())]);
    client
        .batch_execute(&format!(
            "ALTER TABLE {table} DROP COLUMN region;
             UPDATE {table} SET ts = 30 WHERE id = 1;"
        ))
        .await
        .unwrap();
    let (_, promoted) = p.run().await.unwrap();
    assert_eq!(
        promoted.unwrap().schema_change.unwrap().nulled[0].name,
        "region"
    );
    let rows = p.rows().await;
    // Row 1 changed; row 3 was re-read at the watermark (the window's lower bound is
    // inclusive) and merged too, now without the column: both read null.
    assert_eq!(strs(&rows, "region"), vec![None, Some("us".into()), None]);
}

/// One Debezium change event per line: key `id`, optional `note`.
fn event(id: i64, lsn: i64, note: Option<&str>) -> String {
    let note = note.map_or(String::new(), |n| format!(r#","note":"{n}""#));
    format!(
        r#"{{"before":null,"after":{{"id":{id},"qty":{q}{note}}},"source":{{"lsn":{lsn},"ts_ms":{ts}}},"op":"c","ts_ms":{ts}}}"#,
        q = id * 10,
        ts = 1_700_000_000_000i64 + lsn
    )
}

/// A change stream whose `after` images gain a column mid-stream: added to Delta and
/// PostgreSQL under `add`, refused by default naming the event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_stream_whose_after_image_gains_a_column_is_evolved() {
    for to in [To::Delta, To::Postgres] {
        for contract in ["[schema]\nnew_columns = \"add\"\n", ""] {
            let name = format!("cdc{to:?}{}", contract.len()).to_lowercase();
            let p = Pipe::with_source(
                &name,
                to,
                "kind = \"debezium-jsonl\"\npath = \"events\"\nkey = [\"id\"]\n",
                contract,
            );
            let events = p.dir.path().join("events");
            std::fs::create_dir_all(&events).unwrap();
            std::fs::write(
                events.join("0001.jsonl"),
                format!("{}\n{}\n", event(1, 1, None), event(2, 2, None)),
            )
            .unwrap();
            p.run().await.unwrap();
            // A stale change of key 1 (an older position) carries the new column too: it
            // must not apply, its value neither (delta-rs's schema merge would copy it).
            let file = events.join("0002.jsonl");
            std::fs::write(
                &file,
                format!(
                    "{}\n{}\n{}\n",
                    event(2, 3, Some("x")),
                    event(3, 4, Some("y")),
                    event(1, 0, Some("stale"))
                ),
            )
            .unwrap();
            let result = p.run().await;
            if contract.is_empty() {
                let e = result.unwrap_err().to_string();
                assert!(
                    e.contains("`note`")
                        && e.contains("change event at")
                        && e.contains(&file.display().to_string()),
                    "{to:?}: {e}"
                );
                continue;
            }
            let (_, promoted) = result.unwrap();
            assert_eq!(
                promoted.unwrap().schema_change.unwrap().added[0].name,
                "note"
            );
            let rows = p.rows().await;
            assert_eq!(
                strs(&rows, "note"),
                vec![None, Some("x".into()), Some("y".into())],
                "{to:?}\n{rows}"
            );
        }
    }
}

/// A Parquet dataset after a column was added and widened reads as the union through the
/// readers users have: pyarrow's dataset (unified schema) and Polars; a Delta table after
/// the same changes reads through the Python deltalake package and Polars.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evolved_tables_read_through_pyarrow_polars_and_deltalake() {
    let contract = "[schema]\nnew_columns = \"add\"\ntype_changes = \"widen\"\n";
    let mut ds = Pipe::new("readers_ds", To::Parquet, contract);
    let mut dl = Pipe::new("readers_dl", To::Delta, contract);
    for p in [&mut ds, &mut dl] {
        p.add(base(&[1, 2], 10, "d1"));
        p.add(base(&[5], 11, "d2"));
        p.run().await.unwrap();
        p.add(with_note(widened(base(&[2, 3], 20, "d1"))));
        p.run().await.unwrap();
    }
    let script = r#"
import sys, json
import pyarrow as pa, pyarrow.dataset as pads, pyarrow.parquet as pq, polars as pl
from deltalake import DeltaTable
ds, dl = sys.argv[1], sys.argv[2]
files = [f for f in pads.dataset(ds, format="parquet", partitioning="hive").files]
unified = pa.unify_schemas([pq.read_schema(f) for f in files], promote_options="permissive")
ta = pads.dataset(ds, format="parquet", partitioning="hive", schema=unified.append(pa.field("day", pa.string()))).to_table()
t = pl.from_arrow(ta).sort("id")
p = pl.scan_parquet(ds + "/**/*.parquet", hive_partitioning=True, missing_columns="insert",
                    cast_options=pl.ScanCastOptions(integer_cast="upcast", float_cast="upcast"),
                    schema={"id": pl.Int64, "ts": pl.Int64, "qty": pl.Int64, "price": pl.Float64, "note": pl.String}).collect().sort("id")
d = pl.from_arrow(DeltaTable(dl).to_pyarrow_table()).sort("id")
pd = pl.read_delta(dl).sort("id")
print(json.dumps({
  "pyarrow": {"note": t["note"].to_list(), "qty": t["qty"].to_list(), "qty_type": str(ta.schema.field("qty").type)},
  "polars": {"note": p["note"].to_list(), "qty": p["qty"].to_list()},
  "deltalake": {"note": d["note"].to_list(), "qty": d["qty"].to_list(), "qty_type": str(d.schema["qty"])},
  "polars_delta": {"note": pd["note"].to_list(), "qty": pd["qty"].to_list()},
}))
"#;
    let out =
        tidemark_testkit::python::run_python(script, &[&ds.spec.target.path, &dl.spec.target.path])
            .expect("the readers read the evolved tables");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let notes = serde_json::json!([null, "n2", "n3", null]);
    let qty = serde_json::json!([10, 20, 30, 50]);
    for reader in ["pyarrow", "polars", "deltalake", "polars_delta"] {
        assert_eq!(v[reader]["note"], notes, "{reader}: {v}");
        assert_eq!(v[reader]["qty"], qty, "{reader}: {v}");
    }
    assert_eq!(v["pyarrow"]["qty_type"], "int64");
    assert_eq!(v["deltalake"]["qty_type"], "Int64");
}

/// Checks run before the commit: a passing check publishes; a failing `fail` check
/// publishes nothing, names the check, the query and the value, leaves the watermark and
/// keeps the batch staged; a `warn` check publishes and raises the alert; a check that reads
/// the target sees it as it was before the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_gate_the_commit_and_warnings_alert() {
    let checks = r#"
[[checks]]
name = "no negative qty"
sql = "SELECT count(*) FROM batch WHERE qty < 0"
expect = 0
[[checks]]
name = "few new ids"
sql = "SELECT count(*) FROM batch b LEFT JOIN target t ON b.id = t.id WHERE t.id IS NULL"
expect_max = 2
on_fail = "warn"
"#;
    let mut p = Pipe::new("checks", To::Delta, checks);
    p.add(base(&[1, 2], 10, "d1"));
    let (_, promoted) = p.run().await.unwrap();
    let results = promoted.unwrap().checks;
    assert_eq!(results.len(), 2);
    assert!(results.iter().all(|c| c.passed), "{results:?}");
    assert_eq!(
        results[1].value,
        Some(2.0),
        "the target was empty before the run"
    );

    // Three new ids: the warn check fails, the batch is published, the alert fires.
    p.add(base(&[3, 4, 5], 20, "d1"));
    p.run().await.unwrap();
    assert_eq!(p.rows().await.height(), 5);
    let last = p.ledger().pop().unwrap();
    assert!(
        last.alerts.iter().any(|a| a.rule == "check"),
        "{:?}",
        last.alerts
    );
    assert!(!last.checks[1].passed);

    // A negative quantity: nothing is published, the batch stays staged.
    let before = (p.snapshot().await, p.watermark());
    let bad = base(&[6], 30, "d1")
        .lazy()
        .with_column(lit(-1i32).alias("qty"))
        .collect()
        .unwrap();
    p.add(bad);
    let e = p.run().await.unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("check `no negative qty` returned 1 (expected = 0)")
            && text.contains("qty < 0"),
        "{text}"
    );
    assert!(!e.is_retryable());
    assert_eq!((p.snapshot().await, p.watermark()), before);
    let failed = p.ledger().pop().unwrap();
    assert_eq!(failed.status, "failed");
    assert!(
        failed
            .checks
            .iter()
            .any(|c| !c.passed && c.name == "no negative qty")
    );
    let staging = Path::new(&p.spec.target.path).join("_tidemark_staging");
    assert!(
        staging
            .join("checks")
            .read_dir()
            .is_ok_and(|mut d| d.next().is_some()),
        "the refused batch stays staged for inspection"
    );
    // Status shows the refused checks.
    let status = tidemark_cli(
        &[
            "status",
            &p.spec_path().display().to_string(),
            "--json",
            "--address",
            "127.0.0.1:9",
        ],
        &[],
        &[],
    );
    let v: serde_json::Value = serde_json::from_str(&status.stdout).unwrap_or_default();
    assert_eq!(v["last_checks"]["status"], "failed", "{}", status.text());
    assert_eq!(v["last_schema_change"], serde_json::Value::Null);
}

/// `validate` refuses an invalid check query, and `--against-target` prints the change the
/// next run would apply (exit 0), or the error it would fail with (exit 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_refuses_bad_checks_and_previews_the_schema_change() {
    let bad = Pipe::new("badcheck", To::Delta, "");
    let spec = bad.spec_path();
    let text = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(
        &spec,
        format!("{text}\n[[checks]]\nname = \"broken\"\nsql = \"SELEC count(*) FRM batch\"\nexpect = 0\n"),
    )
    .unwrap();
    let out = tidemark_cli(&["validate", &spec.display().to_string()], &[], &[]);
    assert!(
        !out.success && out.stderr.contains("checks[0].sql"),
        "{}",
        out.text()
    );

    for (contract, ok) in [("[schema]\nnew_columns = \"add\"\n", true), ("", false)] {
        let mut p = Pipe::new(&format!("preview{}", contract.len()), To::Delta, contract);
        p.add(base(&[1], 10, "d1"));
        p.run().await.unwrap();
        p.add(with_note(base(&[2], 20, "d1")));
        let spec = p.spec_path().display().to_string();
        let out = tidemark_cli(&["validate", &spec, "--against-target"], &[], &[]);
        assert_eq!(out.success, ok, "{}", out.text());
        if ok {
            assert!(
                out.stdout.contains("would apply: added note (string)"),
                "{}",
                out.text()
            );
        } else {
            assert!(
                out.stdout.contains("REFUSED") && out.stdout.contains("new_columns"),
                "{}",
                out.text()
            );
        }
        let json = tidemark_cli(&["validate", &spec, "--against-target", "--json"], &[], &[]);
        let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
        assert_eq!(v["against_target"]["refused"].is_null(), ok, "{v}");
    }
}

/// Through Temporal and the CLI: a run that adds a column shows it in its summary and in
/// `status`; a run refused by a check exits non-zero naming the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_temporal_a_schema_change_shows_and_a_failed_check_fails_the_run() {
    let mut p = Pipe::new(
        "temporal-schema",
        To::Delta,
        "[schema]\nnew_columns = \"add\"\n[[checks]]\nname = \"qty positive\"\nsql = \"SELECT min(qty) FROM batch\"\nexpect_min = 1\n",
    );
    let q = queue("schema");
    p.add(base(&[1], 10, "d1"));
    with_worker(&q, run(&p.spec, &q)).await.unwrap();
    p.add(with_note(base(&[2], 20, "d1")));
    let s = with_worker(&q, run(&p.spec, &q)).await.unwrap();
    let change = s.progress.schema_change.expect("in the run summary");
    assert_eq!(change.added[0].name, "note");
    assert!(s.progress.alerts.contains(&"schema_change".to_string()));
    assert_eq!(s.progress.checks.len(), 1);
    p.add(with_note(
        base(&[3], 30, "d1")
            .lazy()
            .with_column(lit(0i32).alias("qty"))
            .collect()
            .unwrap(),
    ));
    let e = with_worker(&q, run(&p.spec, &q)).await.unwrap_err();
    assert!(
        e.contains("check `qty positive` returned 0 (expected >= 1)"),
        "{e}"
    );
    assert_eq!(p.rows().await.height(), 2);
}

/// A Delta table on object storage (the S3 test server) evolves too: an append adds a
/// column through tidemark's own commit; a widening, which would rewrite every file of the
/// table, is refused there with an error that says so, and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_table_on_object_storage_adds_columns_and_refuses_widening() {
    let endpoint = tidemark_testkit::s3_endpoint();
    let bucket = format!("schema-{}", std::process::id());
    tidemark_testkit::s3server::create_bucket(&endpoint, &bucket).expect("create the bucket");
    let mut p = Pipe::new(
        "s3append",
        To::Delta,
        "[schema]\nnew_columns = \"add\"\ntype_changes = \"widen\"\n",
    );
    p.spec.target.path = format!("s3://{bucket}/lake/t");
    p.spec.target.mode = tidemark::workflows::spec::WriteMode::Append;
    // This process reads and writes the bucket with the server's key pair (in process only:
    // a spec file refuses credentials).
    let options = &mut p.spec.target.storage_options;
    for (k, v) in tidemark_testkit::s3server::env_for(&endpoint) {
        if k.starts_with("AWS_") && k != "AWS_EC2_METADATA_DISABLED" {
            options.insert(k.to_ascii_lowercase(), v);
        }
    }
    options.insert("aws_endpoint".into(), endpoint.clone());
    tidemark::storage::use_spec_options(&p.spec);
    p.add(base(&[1, 2], 10, "d1"));
    p.run().await.unwrap();
    p.add(with_note(base(&[3], 20, "d1")));
    let (_, promoted) = p.run().await.unwrap();
    let change = promoted.unwrap().schema_change.expect("added");
    assert_eq!(change.added[0].name, "note");
    assert!(change.applied.unwrap().contains("metaData action"));
    let rows = p.rows().await;
    assert_eq!(strs(&rows, "note"), vec![None, None, Some("n3".into())]);
    let before = p.snapshot().await;
    p.add(widened(with_note(base(&[4], 30, "d1"))));
    let e = p.run().await.unwrap_err().to_string();
    assert!(
        e.contains("object storage") && e.contains("`qty` int32 → int64"),
        "{e}"
    );
    assert_eq!(p.snapshot().await, before);
}
