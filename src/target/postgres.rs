//! The PostgreSQL target: `merge` (upsert, newer wins), `delete_insert` (replace the batch's
//! range of `range_column`) and `append`.
//!
//! *Stage* bulk-loads the batch with binary `COPY` into an UNLOGGED staging table named after
//! the pipeline and run (`tidemark_stage_<pipeline>_<run_seq>`, in the target's schema), in
//! one transaction that first drops any earlier copy: re-staging replaces it, a crash leaves
//! nothing half-loaded.
//!
//! *Promote* is one transaction, serialised per pipeline by an advisory lock:
//! 1. the ledger table `tidemark_runs` (primary key pipeline + run_seq) already holds the run
//!    → return the recorded result, write nothing (a newer run there → a zombie: nothing);
//! 2. create the target from the batch schema when absent, else check the batch's columns
//!    against it (a mismatch is a non-retryable schema error);
//! 3. apply the batch;
//! 4. upsert the watermark into `tidemark_watermarks` and insert the ledger row;
//! 5. drop the staging table; COMMIT.
//!
//! A crash anywhere before COMMIT rolls everything back; after it, the ledger row makes the
//! retry a no-op and lets the next run reconcile the file watermark store.

use super::{CdcApply, CommittedRun, KindRules, Promoted, Staged, Target};
use crate::contract::{self, Resolution};
use crate::error::{EngineError, Result};
use crate::pg::{self, Values, qi, split_table};
use crate::state::watermark::Watermark;
use polars::prelude::*;
use std::path::Path;
use tidemark_workflows::payloads::{BatchFile, ColumnInfo, SchemaChange};
use tidemark_workflows::spec::{CDC_DELETED_COL, CDC_OP_COL, CDC_POS_COL};
use tidemark_workflows::spec::{ConnSpec, PipelineSpec, SchemaContract, WriteMode};
use tokio_postgres::binary_copy::BinaryCopyInWriter;

/// The target table and its connection.
pub struct PgTarget<'a> {
    /// How to reach the server.
    pub conn: &'a ConnSpec,
    /// `schema.table` or `table`.
    pub table: &'a str,
    /// The pipeline.
    pub pipeline: &'a str,
}

/// What a PostgreSQL target accepts.
pub static RULES: KindRules = KindRules {
    title: "PostgreSQL",
    name: "postgres",
    takes_path: false,
    default_mode: WriteMode::Merge,
    refuses: |mode| match mode {
        WriteMode::PartitionOverwrite => Some((
            "partition_overwrite is a mode of the Parquet dataset target".into(),
            "use mode = \"delete_insert\" with a range_column to replace a range of rows",
        )),
        WriteMode::Merge | WriteMode::Append | WriteMode::DeleteInsert => None,
    },
    partitions: false,
    partition_pruning: false,
    accepts_change_events: true,
    refuses_object_storage: None,
    deletion_vectors: false,
};

/// The PostgreSQL table of one pipeline.
pub struct PostgresTarget {
    spec: PipelineSpec,
    conn: ConnSpec,
    table: String,
}

impl PostgresTarget {
    /// The target of a spec whose `[target]` is a PostgreSQL table.
    pub fn of(spec: &PipelineSpec) -> Result<Self> {
        match (&spec.target.conn, &spec.target.table) {
            (Some(conn), Some(table)) => Ok(PostgresTarget {
                spec: spec.clone(),
                conn: conn.clone(),
                table: table.clone(),
            }),
            _ => Err(EngineError::Spec(
                "a PostgreSQL target needs `url` or `url_env`, and `table`".into(),
            )),
        }
    }

    /// The table as the SQL side sees it.
    pub fn pg(&self) -> PgTarget<'_> {
        PgTarget {
            conn: &self.conn,
            table: &self.table,
            pipeline: &self.spec.name,
        }
    }
}

#[async_trait::async_trait]
impl Target for PostgresTarget {
    fn describe(&self) -> String {
        format!("PostgreSQL table {}", self.table)
    }

    fn commits_every_batch(&self) -> bool {
        true
    }

    async fn committed_run(&self) -> Result<Option<CommittedRun>> {
        committed_run(&self.pg()).await
    }

    async fn stage(
        &self,
        batch: &BatchFile,
        _columns: &[ColumnInfo],
        run_seq: u64,
    ) -> Result<Staged> {
        let t = self.pg();
        let (path, sha) = (batch.path.clone(), batch.sha256.clone());
        let local = super::blocking(move || crate::storage::local_batch(&path, &sha)).await?;
        let rows = stage(&t, local.path(), run_seq).await?;
        Ok(Staged {
            locations: vec![format!("{}.{}", t.table, t.staging_name(run_seq))],
            bytes: rows,
        })
    }

    async fn promote(
        &self,
        batch: &BatchFile,
        columns: &[ColumnInfo],
        run_seq: u64,
        watermark_json: &str,
        cdc: Option<CdcApply>,
    ) -> Result<Promoted> {
        let t = self.pg();
        if !is_staged(&t, run_seq).await? {
            // Missing after a crash or a cleanup: stage again (a no-op when the run is
            // already promoted).
            self.stage(batch, columns, run_seq).await?;
        }
        let spec = &self.spec;
        promote(
            &t,
            run_seq,
            &Apply {
                mode: spec.target.mode,
                key: &spec.target.key,
                cursor: &spec.source.cursor,
                range_column: spec.target.range_column.as_deref(),
                staged_rows: batch.rows,
                watermark_json,
                cdc,
                contract: &spec.schema,
                columns,
            },
        )
        .await
    }

    async fn promote_truncate(&self, run_seq: u64, watermark_json: &str) -> Result<Promoted> {
        promote_truncate(&self.pg(), run_seq, watermark_json).await
    }

    async fn cleanup(&self, run_seq: u64) -> Result<()> {
        cleanup(&self.pg(), run_seq).await
    }

    fn clear_staging_before(&self, _run_seq: u64) -> Result<()> {
        // Staging tables of a run are dropped by its cleanup and replaced by its re-stage.
        Ok(())
    }

    async fn truncate(&self) -> Result<Option<i64>> {
        self.pg().truncate().await?;
        Ok(None)
    }

    async fn maintain(
        &self,
        _id: &str,
        _m: &tidemark_workflows::spec::MaintenanceSpec,
        dry_run: bool,
        _retention_floor_ms: u64,
    ) -> Result<tidemark_workflows::payloads::MaintainReport> {
        let t = self.pg();
        let mut report = tidemark_workflows::payloads::MaintainReport {
            pipeline: t.pipeline.to_string(),
            target: self.describe(),
            dry_run,
            ..Default::default()
        };
        report.notes.push(
            "VACUUM (ANALYZE), index and statistics upkeep are PostgreSQL's own job (autovacuum); tidemark has no files to compact".into(),
        );
        // No run of the pipeline can be going (maintenance holds its id): a staging table
        // of it is debris of a run that died.
        let client = pg::connect(t.conn).await?;
        let (schema, _) = t.schema_table();
        let prefix = t.staging_name(0);
        let prefix = prefix.trim_end_matches('0');
        let rows = client
            .query(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = $1 AND starts_with(tablename, $2)",
                &[&schema, &prefix],
            )
            .await
            .map_err(t.err("list staging tables"))?;
        for r in &rows {
            let name: String = r.get(0);
            if !dry_run {
                client
                    .batch_execute(&format!(
                        "DROP TABLE IF EXISTS {}.{}",
                        qi(&schema),
                        qi(&name)
                    ))
                    .await
                    .map_err(t.err("drop a staging table"))?;
            }
            report.notes.push(format!(
                "{} staging table {name} of a run that died",
                if dry_run { "would drop" } else { "dropped" }
            ));
        }
        Ok(report)
    }

    async fn columns(&self) -> Result<Option<contract::Columns>> {
        let t = self.pg();
        let mut client = pg::connect(t.conn).await?;
        let tx = client
            .transaction()
            .await
            .map_err(t.err("begin a read transaction"))?;
        let (schema, table) = t.schema_table();
        let cols = columns_of(&tx, &schema, &table).await?;
        Ok((!cols.is_empty()).then(|| as_polars(&cols)))
    }

    async fn read_all(&self) -> Result<DataFrame> {
        let t = self.pg();
        let client = pg::connect(t.conn).await?;
        let sql = format!("SELECT * FROM {}", t.qualified());
        let stmt = match client.prepare(&sql).await {
            Ok(s) => s,
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
                return Ok(DataFrame::empty());
            }
            Err(e) => return Err(EngineError::pg("describe the target table", e)),
        };
        let cols: Vec<(String, tokio_postgres::types::Type)> = stmt
            .columns()
            .iter()
            .map(|c| (c.name().to_string(), c.type_().clone()))
            .collect();
        let (select, read_types) = pg::read_select(&cols, "");
        let rows = client
            .query(
                &format!("SELECT {} FROM {}", select.join(", "), t.qualified()),
                &[],
            )
            .await
            .map_err(|e| EngineError::pg("read the target table", e))?;
        pg::rows_to_frame(&read_types, &rows)
    }

    async fn run_commits(&self) -> Result<Vec<(i64, u64)>> {
        let t = self.pg();
        let client = pg::connect(t.conn).await?;
        let rows = match client
            .query(
                &format!(
                    "SELECT run_seq FROM {} WHERE pipeline = $1 ORDER BY run_seq",
                    t.ledger()
                ),
                &[&t.pipeline],
            )
            .await
        {
            Ok(rows) => rows,
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
                return Ok(Vec::new());
            }
            Err(e) => return Err(EngineError::pg("read the ledger table", e)),
        };
        Ok(rows
            .iter()
            .map(|r| {
                let s: i64 = r.get(0);
                (s, s as u64)
            })
            .collect())
    }

    async fn leftovers(&self) -> Result<Vec<String>> {
        let t = self.pg();
        let client = pg::connect(t.conn).await?;
        let (schema, _) = t.schema_table();
        let rows = client
            .query(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = $1 AND tablename LIKE 'tidemark_stage_%'",
                &[&schema],
            )
            .await
            .map_err(|e| EngineError::pg("list staging tables", e))?;
        Ok(rows
            .iter()
            .map(|r| format!("leftover staging table {}", r.get::<_, String>(0)))
            .collect())
    }
}

impl PgTarget<'_> {
    fn schema_table(&self) -> (String, String) {
        split_table(self.table)
    }

    fn qualified(&self) -> String {
        let (s, t) = self.schema_table();
        format!("{}.{}", qi(&s), qi(&t))
    }

    fn ledger(&self) -> String {
        format!("{}.tidemark_runs", qi(&self.schema_table().0))
    }

    fn watermarks(&self) -> String {
        format!("{}.tidemark_watermarks", qi(&self.schema_table().0))
    }

    /// Empties the target table (TRUNCATE, in one transaction with nothing else); the ledger
    /// and watermark tables stay. A missing table is not an error.
    pub async fn truncate(&self) -> Result<()> {
        let client = crate::pg::connect(self.conn).await?;
        let (schema, table) = self.schema_table();
        let exists = client
            .query_opt(
                "SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2",
                &[&schema, &table],
            )
            .await
            .map_err(|e| EngineError::pg("look up the target table", e))?
            .is_some();
        if exists {
            client
                .batch_execute(&format!("TRUNCATE {}", self.qualified()))
                .await
                .map_err(|e| EngineError::pg("truncate the target table", e))?;
        }
        Ok(())
    }

    /// The staging table's bare name (≤ 63 bytes: long pipeline names are hashed).
    pub fn staging_name(&self, run_seq: u64) -> String {
        let name = format!("tidemark_stage_{}_{run_seq}", self.pipeline.to_lowercase());
        if name.len() <= 63 {
            return name;
        }
        use sha2::Digest;
        let h = hex::encode(&sha2::Sha256::digest(self.pipeline.as_bytes())[..8]);
        format!("tidemark_stage_{h}_{run_seq}")
    }

    fn staging(&self, run_seq: u64) -> String {
        format!(
            "{}.{}",
            qi(&self.schema_table().0),
            qi(&self.staging_name(run_seq))
        )
    }

    fn err(&self, what: &str) -> impl Fn(tokio_postgres::Error) -> EngineError + '_ {
        let ctx = format!("{what} ({})", self.table);
        move |e| EngineError::pg(ctx.clone(), e)
    }
}

/// Serialises stage and promote of one pipeline (held until the transaction ends). A
/// backfill window (`<pipeline>@bf-...`) takes its pipeline's lock: windows and live runs of
/// one table never race to create it or to upsert the same keys.
async fn lock_pipeline(tx: &tokio_postgres::Transaction<'_>, pipeline: &str) -> Result<()> {
    let base = pipeline.split("@bf-").next().unwrap_or(pipeline);
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        &[&format!("tidemark:{base}")],
    )
    .await
    .map_err(|e| EngineError::pg("advisory lock", e))?;
    Ok(())
}

async fn ensure_ledger(tx: &tokio_postgres::Transaction<'_>, t: &PgTarget<'_>) -> Result<()> {
    let sql = format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {ledger} (
            pipeline text NOT NULL,
            run_seq bigint NOT NULL,
            committed_at timestamptz NOT NULL DEFAULT now(),
            rows_inserted bigint NOT NULL,
            rows_updated bigint NOT NULL,
            rows_deleted bigint NOT NULL DEFAULT 0,
            watermark text NOT NULL,
            PRIMARY KEY (pipeline, run_seq));
         CREATE TABLE IF NOT EXISTS {wms} (
            pipeline text PRIMARY KEY,
            run_seq bigint NOT NULL,
            watermark text NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now());",
        schema = qi(&t.schema_table().0),
        ledger = t.ledger(),
        wms = t.watermarks()
    );
    tx.batch_execute(&sql)
        .await
        .map_err(t.err("create the tidemark_runs / tidemark_watermarks tables"))
}

/// What the ledger says about a run.
enum Recorded {
    /// Not promoted yet.
    No,
    /// Promoted: (rows inserted, rows updated, rows deleted).
    This(u64, u64, u64),
    /// A later run is promoted: this attempt is a zombie.
    Superseded,
}

async fn recorded(
    tx: &tokio_postgres::Transaction<'_>,
    t: &PgTarget<'_>,
    run_seq: u64,
) -> Result<Recorded> {
    let seq = run_seq as i64;
    let this = tx
        .query_opt(
            &format!(
                "SELECT rows_inserted, rows_updated, rows_deleted FROM {} WHERE pipeline = $1 AND run_seq = $2",
                t.ledger()
            ),
            &[&t.pipeline, &seq],
        )
        .await
        .map_err(t.err("read the ledger"))?;
    if let Some(r) = this {
        return Ok(Recorded::This(
            r.get::<_, i64>(0) as u64,
            r.get::<_, i64>(1) as u64,
            r.get::<_, i64>(2) as u64,
        ));
    }
    let newest: Option<i64> = tx
        .query_one(
            &format!(
                "SELECT max(run_seq) FROM {} WHERE pipeline = $1",
                t.ledger()
            ),
            &[&t.pipeline],
        )
        .await
        .map_err(t.err("read the ledger"))?
        .get(0);
    Ok(match newest {
        Some(n) if n > seq => Recorded::Superseded,
        _ => Recorded::No,
    })
}

/// Stages a batch file into the run's staging table (replacing an earlier copy). Skips the
/// load when the run is already promoted.
pub async fn stage(t: &PgTarget<'_>, batch: &Path, run_seq: u64) -> Result<u64> {
    let df = read_batch(batch)?;
    let mut client = pg::connect(t.conn).await?;
    let tx = client
        .transaction()
        .await
        .map_err(t.err("begin the stage transaction"))?;
    lock_pipeline(&tx, t.pipeline).await?;
    ensure_ledger(&tx, t).await?;
    if !matches!(recorded(&tx, t, run_seq).await?, Recorded::No) {
        return Ok(0);
    }
    // Staging tables of earlier runs of this pipeline are debris of runs that died.
    let (schema, _) = t.schema_table();
    let prefix = t.staging_name(0);
    let prefix = prefix.trim_end_matches('0');
    let old = tx
        .query(
            "SELECT tablename FROM pg_tables WHERE schemaname = $1 AND starts_with(tablename, $2)",
            &[&schema, &prefix],
        )
        .await
        .map_err(t.err("list staging tables"))?;
    for r in old {
        let name: String = r.get(0);
        tx.batch_execute(&format!(
            "DROP TABLE IF EXISTS {}.{}",
            qi(&schema),
            qi(&name)
        ))
        .await
        .map_err(t.err("drop an old staging table"))?;
    }
    let mut types = Vec::with_capacity(df.width());
    let mut cols = Vec::with_capacity(df.width());
    for c in df.columns() {
        let ty = pg::pg_type(c.name(), c.dtype())?;
        cols.push(format!("{} {}", qi(c.name()), pg::sql_type(&ty)));
        types.push(ty);
    }
    tx.batch_execute(&format!(
        "CREATE UNLOGGED TABLE {} ({})",
        t.staging(run_seq),
        cols.join(", ")
    ))
    .await
    .map_err(t.err("create the staging table"))?;
    let values: Vec<Values> = df
        .columns()
        .iter()
        .map(Values::from_column)
        .collect::<Result<_>>()?;
    let sink = tx
        .copy_in(&format!(
            "COPY {} FROM STDIN (FORMAT binary)",
            t.staging(run_seq)
        ))
        .await
        .map_err(t.err("start COPY"))?;
    let writer = BinaryCopyInWriter::new(sink, &types);
    futures::pin_mut!(writer);
    let mut row: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::with_capacity(values.len());
    for i in 0..df.height() {
        row.clear();
        row.extend(values.iter().map(|v| v.at(i)));
        writer
            .as_mut()
            .write(&row)
            .await
            .map_err(t.err("COPY a row"))?;
        if i == df.height() / 2 {
            crate::crash::point("mid_stage");
        }
    }
    let n = writer.finish().await.map_err(t.err("finish COPY"))?;
    tx.commit().await.map_err(t.err("commit the staging"))?;
    Ok(n)
}

fn read_batch(path: &Path) -> Result<DataFrame> {
    let f = std::fs::File::open(path)
        .map_err(|e| EngineError::io(format!("open {}", path.display()), e))?;
    ParquetReader::new(f)
        .finish()
        .map_err(|e| EngineError::CorruptInput {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

/// Whether the run's staging table exists (or the run is already promoted).
pub async fn is_staged(t: &PgTarget<'_>, run_seq: u64) -> Result<bool> {
    let client = pg::connect(t.conn).await?;
    let (schema, _) = t.schema_table();
    let row = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("{}.{}", qi(&schema), qi(&t.staging_name(run_seq)))],
        )
        .await
        .map_err(t.err("look for the staging table"))?;
    Ok(row.get(0))
}

/// What a promote applies.
pub struct Apply<'a> {
    /// Merge, delete_insert or append.
    pub mode: WriteMode,
    /// Key columns (merge).
    pub key: &'a [String],
    /// Cursor column (merge's newer-wins condition).
    pub cursor: &'a str,
    /// delete_insert's range column.
    pub range_column: Option<&'a str>,
    /// Rows the staging table must hold.
    pub staged_rows: u64,
    /// The watermark document this run publishes.
    pub watermark_json: &'a str,
    /// A batch of change events: applied by position (see [`apply_changes`]).
    pub cdc: Option<CdcApply>,
    /// The schema contract.
    pub contract: &'a SchemaContract,
    /// The batch's columns as the manifest describes them (null counts, origins).
    pub columns: &'a [ColumnInfo],
}

/// Promotes the staged run in one transaction (see the module doc).
pub async fn promote(t: &PgTarget<'_>, run_seq: u64, a: &Apply<'_>) -> Result<Promoted> {
    let mut client = pg::connect(t.conn).await?;
    let tx = client
        .transaction()
        .await
        .map_err(t.err("begin the promote transaction"))?;
    lock_pipeline(&tx, t.pipeline).await?;
    ensure_ledger(&tx, t).await?;
    match recorded(&tx, t, run_seq).await? {
        Recorded::No => {}
        Recorded::This(inserted, updated, deleted) => {
            return Ok(Promoted {
                version: Some(run_seq as i64),
                already: true,
                inserted,
                updated,
                deleted,
                schema: None,
            });
        }
        Recorded::Superseded => {
            tracing::warn!(
                pipeline = t.pipeline,
                run_seq,
                "a later run is promoted: this attempt writes nothing"
            );
            return Ok(Promoted {
                version: None,
                already: true,
                ..Promoted::default()
            });
        }
    }
    let staging = t.staging(run_seq);
    let staged_cols = columns_of(&tx, &t.schema_table().0, &t.staging_name(run_seq)).await?;
    if staged_cols.is_empty() {
        return Err(EngineError::Integrity(format!(
            "staging table {staging} of run {run_seq} is missing"
        )));
    }
    let count: i64 = tx
        .query_one(&format!("SELECT count(*) FROM {staging}"), &[])
        .await
        .map_err(t.err("count the staged rows"))?
        .get(0);
    if count as u64 != a.staged_rows {
        return Err(EngineError::Integrity(format!(
            "staging table {staging} holds {count} rows, the batch has {}",
            a.staged_rows
        )));
    }
    let (schema, table) = t.schema_table();
    let mut target_cols = columns_of(&tx, &schema, &table).await?;
    if let Some(cdc) = a.cdc {
        let row_cols: Vec<(String, String)> = staged_cols
            .iter()
            .filter(|(n, _)| n != CDC_OP_COL)
            .cloned()
            .collect();
        let mut resolution = None;
        if target_cols.is_empty() {
            if cdc.upserts == 0 {
                // Deletes only, and no table yet: nothing to apply, and a table made from
                // key-only before images would lack every other column. Record the run.
                return finish_promote(
                    tx,
                    t,
                    run_seq,
                    a.watermark_json,
                    (0, 0, 0),
                    Some(&staging),
                    None,
                )
                .await;
            }
            create_target(&tx, t, &row_cols, a).await?;
            target_cols = row_cols.clone();
        } else {
            let r = resolve(t, &row_cols, &target_cols, a, cdc.upserts == 0)?;
            evolve(&tx, t, &r).await?;
            target_cols = columns_of(&tx, &schema, &table).await?;
            resolution = Some(r);
        }
        let write = Written::of(&row_cols, &target_cols, resolution.as_ref());
        let (inserted, updated, deleted) = apply_changes(&tx, t, &staging, &write, a, cdc).await?;
        return finish_promote(
            tx,
            t,
            run_seq,
            a.watermark_json,
            (inserted, updated, deleted),
            Some(&staging),
            resolution.map(|r| r.record),
        )
        .await;
    }
    let mut resolution = None;
    if target_cols.is_empty() {
        create_target(&tx, t, &staged_cols, a).await?;
        target_cols = staged_cols.clone();
    } else {
        let r = resolve(t, &staged_cols, &target_cols, a, false)?;
        evolve(&tx, t, &r).await?;
        target_cols = columns_of(&tx, &schema, &table).await?;
        check_key(&staged_cols, a)?;
        resolution = Some(r);
    }
    let write = Written::of(&staged_cols, &target_cols, resolution.as_ref());
    let list = write.names.join(", ");
    let select = write.select("").join(", ");
    let target = t.qualified();
    let (mut updated, mut deleted) = (0u64, 0u64);
    let inserted;
    match a.mode {
        WriteMode::Merge => {
            let keys: Vec<String> = a.key.iter().map(|k| qi(k)).collect();
            let others: Vec<&String> = write
                .columns
                .iter()
                .filter(|n| !a.key.contains(n))
                .collect();
            let c = qi(a.cursor);
            let set = others
                .iter()
                .map(|n| format!("{q} = EXCLUDED.{q}", q = qi(n)))
                .collect::<Vec<_>>()
                .join(", ");
            let changed = if others.is_empty() {
                "false".to_string()
            } else {
                format!(
                    "ROW({}) IS DISTINCT FROM ROW({})",
                    others
                        .iter()
                        .map(|n| format!("t.{}", qi(n)))
                        .collect::<Vec<_>>()
                        .join(", "),
                    others
                        .iter()
                        .map(|n| format!("EXCLUDED.{}", qi(n)))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            let action = if set.is_empty() {
                "DO NOTHING".to_string()
            } else {
                format!(
                    "DO UPDATE SET {set} WHERE t.{c} IS NULL OR EXCLUDED.{c} > t.{c} OR (EXCLUDED.{c} = t.{c} AND {changed})"
                )
            };
            let sql = format!(
                "WITH up AS (INSERT INTO {target} AS t ({list}) SELECT {select} FROM {staging}
                   ON CONFLICT ({keys}) {action} RETURNING (xmax = 0) AS inserted)
                 SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM up",
                keys = keys.join(", ")
            );
            let r = tx.query_one(&sql, &[]).await.map_err(|e| {
                if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_COLUMN_REFERENCE) {
                    EngineError::Schema(format!(
                        "{} has no primary key or unique index on ({}), which merge needs to match rows; add one (CREATE UNIQUE INDEX ON {} ({})) or use mode = \"delete_insert\"",
                        t.table,
                        a.key.join(", "),
                        target,
                        keys.join(", ")
                    ))
                } else {
                    t.err("merge the batch")(e)
                }
            })?;
            inserted = r.get::<_, i64>(0) as u64;
            updated = r.get::<_, i64>(1) as u64;
        }
        WriteMode::DeleteInsert => {
            let rc = qi(a
                .range_column
                .expect("validated: delete_insert has a range_column"));
            deleted = tx
                .execute(
                    &format!(
                        "DELETE FROM {target} WHERE {rc} >= (SELECT min({rc}) FROM {staging})
                                                AND {rc} <= (SELECT max({rc}) FROM {staging})"
                    ),
                    &[],
                )
                .await
                .map_err(t.err("delete the batch's range"))?;
            inserted = tx
                .execute(
                    &format!("INSERT INTO {target} ({list}) SELECT {select} FROM {staging}"),
                    &[],
                )
                .await
                .map_err(t.err("insert the batch"))?;
        }
        WriteMode::Append => {
            inserted = tx
                .execute(
                    &format!("INSERT INTO {target} ({list}) SELECT {select} FROM {staging}"),
                    &[],
                )
                .await
                .map_err(t.err("append the batch"))?;
        }
        WriteMode::PartitionOverwrite => {
            return Err(EngineError::Spec(
                "partition_overwrite is not a mode of the PostgreSQL target".into(),
            ));
        }
    }
    finish_promote(
        tx,
        t,
        run_seq,
        a.watermark_json,
        (inserted, updated, deleted),
        Some(&staging),
        resolution.map(|r| r.record),
    )
    .await
}

/// Records the run (watermark row, ledger row), drops its staging table and commits.
async fn finish_promote(
    tx: tokio_postgres::Transaction<'_>,
    t: &PgTarget<'_>,
    run_seq: u64,
    watermark_json: &str,
    (inserted, updated, deleted): (u64, u64, u64),
    staging: Option<&str>,
    schema: Option<SchemaChange>,
) -> Result<Promoted> {
    tx.execute(
        &format!(
            "INSERT INTO {} (pipeline, run_seq, watermark, updated_at) VALUES ($1, $2, $3, now())
             ON CONFLICT (pipeline) DO UPDATE SET run_seq = EXCLUDED.run_seq,
               watermark = EXCLUDED.watermark, updated_at = now()
             WHERE {}.run_seq < EXCLUDED.run_seq",
            t.watermarks(),
            t.watermarks()
        ),
        &[&t.pipeline, &(run_seq as i64), &watermark_json],
    )
    .await
    .map_err(t.err("write the watermark"))?;
    tx.execute(
        &format!(
            "INSERT INTO {} (pipeline, run_seq, rows_inserted, rows_updated, rows_deleted, watermark)
             VALUES ($1, $2, $3, $4, $5, $6)",
            t.ledger()
        ),
        &[
            &t.pipeline,
            &(run_seq as i64),
            &(inserted as i64),
            &(updated as i64),
            &(deleted as i64),
            &watermark_json,
        ],
    )
    .await
    .map_err(t.err("record the run in the ledger"))?;
    if let Some(staging) = staging {
        tx.batch_execute(&format!("DROP TABLE IF EXISTS {staging}"))
            .await
            .map_err(t.err("drop the staging table"))?;
    }
    crate::crash::point("promote_before_commit");
    tx.commit().await.map_err(t.err("commit the promote"))?;
    let schema = schema.filter(|s| !s.is_empty()).map(|mut s| {
        if s.changes_table() {
            s.applied = Some("ALTER TABLE in the promote transaction".into());
        }
        s
    });
    Ok(Promoted {
        version: Some(run_seq as i64),
        already: false,
        inserted,
        updated,
        deleted,
        schema,
    })
}

/// Applies a staged batch of change events inside the promote transaction: a truncate empties
/// the table first; a change applies only when its position is newer than the row's
/// `_tidemark_pos` (after a truncate, always). Returns (inserted, updated, deleted).
async fn apply_changes(
    tx: &tokio_postgres::Transaction<'_>,
    t: &PgTarget<'_>,
    staging: &str,
    write: &Written,
    a: &Apply<'_>,
    cdc: CdcApply,
) -> Result<(u64, u64, u64)> {
    let target = t.qualified();
    let mut deleted = 0;
    if cdc.truncate {
        deleted += tx
            .execute(&format!("DELETE FROM {target}"), &[])
            .await
            .map_err(t.err("apply a truncate"))?;
    }
    let matches = a
        .key
        .iter()
        .map(|k| format!("t.{0} = s.{0}", qi(k)))
        .collect::<Vec<_>>()
        .join(" AND ");
    let pos = qi(CDC_POS_COL);
    let newer = format!("(t.{pos} IS NULL OR s.{pos} > t.{pos})");
    let op = qi(CDC_OP_COL);
    let mut updated = 0;
    if cdc.soft_delete {
        let del = qi(CDC_DELETED_COL);
        updated += tx
            .execute(
                &format!(
                    "UPDATE {target} AS t SET {del} = s.{del}, {pos} = s.{pos} FROM {staging} AS s
                      WHERE {matches} AND s.{op} = 'd' AND {newer}"
                ),
                &[],
            )
            .await
            .map_err(t.err("apply soft deletes"))?;
        // A delete of a row the table never held leaves a marked row too: its position keeps
        // an older change, delivered later, from bringing the row back.
        let keep = a
            .key
            .iter()
            .map(|k| qi(k))
            .chain([pos.clone(), del.clone()])
            .collect::<Vec<_>>();
        let cols = keep.join(", ");
        let from_s = keep
            .iter()
            .map(|c| format!("s.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        tx.execute(
            &format!(
                "INSERT INTO {target} ({cols}) SELECT {from_s} FROM {staging} AS s WHERE s.{op} = 'd'
                 ON CONFLICT DO NOTHING"
            ),
            &[],
        )
        .await
        .map_err(t.err("record soft deletes of unknown rows"))?;
    } else {
        deleted += tx
            .execute(
                &format!(
                    "DELETE FROM {target} AS t USING {staging} AS s
                      WHERE {matches} AND s.{op} = 'd' AND {newer}"
                ),
                &[],
            )
            .await
            .map_err(t.err("apply deletes"))?;
    }
    // Each column in the table's type (a column null in every event arrives as text).
    let list = write.names.join(", ");
    let select = write.select("s.").join(", ");
    let set = write
        .columns
        .iter()
        .filter(|n| !a.key.contains(n))
        .map(|n| format!("{q} = EXCLUDED.{q}", q = qi(n)))
        .collect::<Vec<_>>()
        .join(", ");
    let keys = a.key.iter().map(|k| qi(k)).collect::<Vec<_>>().join(", ");
    let sql = format!(
        "WITH up AS (INSERT INTO {target} AS t ({list}) SELECT {select} FROM {staging} AS s WHERE s.{op} = 'u'
           ON CONFLICT ({keys}) DO UPDATE SET {set}
           WHERE t.{pos} IS NULL OR EXCLUDED.{pos} > t.{pos}
           RETURNING (xmax = 0) AS inserted)
         SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM up"
    );
    let r = tx.query_one(&sql, &[]).await.map_err(|e| {
        if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_COLUMN_REFERENCE) {
            EngineError::Schema(format!(
                "{} has no primary key or unique index on ({keys}), which applying changes needs",
                t.table
            ))
        } else {
            t.err("apply upserts")(e)
        }
    })?;
    Ok((
        r.get::<_, i64>(0) as u64,
        updated + r.get::<_, i64>(1) as u64,
        deleted,
    ))
}

/// Commits a truncate that no change follows in its batch (no staging table): empties the
/// table and records the run, in one transaction; nothing when the run is recorded.
pub async fn promote_truncate(
    t: &PgTarget<'_>,
    run_seq: u64,
    watermark_json: &str,
) -> Result<Promoted> {
    let mut client = pg::connect(t.conn).await?;
    let tx = client
        .transaction()
        .await
        .map_err(t.err("begin the promote transaction"))?;
    lock_pipeline(&tx, t.pipeline).await?;
    ensure_ledger(&tx, t).await?;
    match recorded(&tx, t, run_seq).await? {
        Recorded::No => {}
        Recorded::This(inserted, updated, deleted) => {
            return Ok(Promoted {
                version: Some(run_seq as i64),
                already: true,
                inserted,
                updated,
                deleted,
                schema: None,
            });
        }
        Recorded::Superseded => {
            return Ok(Promoted {
                already: true,
                ..Promoted::default()
            });
        }
    }
    let (schema, table) = t.schema_table();
    let mut deleted = 0;
    if !columns_of(&tx, &schema, &table).await?.is_empty() {
        deleted = tx
            .execute(&format!("DELETE FROM {}", t.qualified()), &[])
            .await
            .map_err(t.err("apply a truncate"))?;
    }
    finish_promote(tx, t, run_seq, watermark_json, (0, 0, deleted), None, None).await
}

/// (name, format_type) of a table's columns in order; empty when it does not exist.
async fn columns_of(
    tx: &tokio_postgres::Transaction<'_>,
    schema: &str,
    table: &str,
) -> Result<Vec<(String, String)>> {
    let rows = tx
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod)
               FROM pg_attribute a
               JOIN pg_class c ON c.oid = a.attrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attnum",
            &[&schema, &table],
        )
        .await
        .map_err(|e| EngineError::pg(format!("read the columns of {schema}.{table}"), e))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

async fn create_target(
    tx: &tokio_postgres::Transaction<'_>,
    t: &PgTarget<'_>,
    cols: &[(String, String)],
    a: &Apply<'_>,
) -> Result<()> {
    let mut defs: Vec<String> = cols
        .iter()
        .map(|(n, ty)| {
            let not_null = if a.key.contains(n) && a.mode == WriteMode::Merge {
                " NOT NULL"
            } else {
                ""
            };
            format!("{} {ty}{not_null}", qi(n))
        })
        .collect();
    if a.mode == WriteMode::Merge {
        defs.push(format!(
            "PRIMARY KEY ({})",
            a.key.iter().map(|k| qi(k)).collect::<Vec<_>>().join(", ")
        ));
    }
    tx.batch_execute(&format!(
        "CREATE TABLE {} ({})",
        t.qualified(),
        defs.join(", ")
    ))
    .await
    .map_err(t.err("create the target table"))
}

/// A table's columns (`format_type` spellings) as the schema contract sees them.
fn as_polars(cols: &[(String, String)]) -> contract::Columns {
    cols.iter()
        .map(|(n, t)| (n.clone(), pg::polars_type_of(t)))
        .collect()
}

/// The schema contract applied to the staged batch (`staged`, its PostgreSQL types) against
/// the table (`table`).
fn resolve(
    t: &PgTarget<'_>,
    staged: &[(String, String)],
    table: &[(String, String)],
    a: &Apply<'_>,
    deletes_only: bool,
) -> Result<Resolution> {
    let rows = a.staged_rows;
    let batch = contract::Batch::of_manifest(
        a.columns,
        &as_polars(staged),
        rows,
        "the batch".into(),
        deletes_only,
    );
    contract::against_table_named(
        a.contract,
        &as_polars(table),
        &format!("the PostgreSQL table {}", t.table),
        table,
        &batch,
    )
}

/// Applies a resolution's changes to the table, inside the promote transaction: `ALTER
/// TABLE ... ADD COLUMN` (nullable) for added columns, `ALTER COLUMN ... TYPE` for widened
/// ones.
async fn evolve(
    tx: &tokio_postgres::Transaction<'_>,
    t: &PgTarget<'_>,
    r: &Resolution,
) -> Result<()> {
    let target = t.qualified();
    for (name, dtype) in &r.added {
        let ty = pg::sql_type(&pg::pg_type(name, dtype)?);
        tx.batch_execute(&format!(
            "ALTER TABLE {target} ADD COLUMN {} {ty}",
            qi(name)
        ))
        .await
        .map_err(t.err("add a column"))?;
    }
    for (name, _, to) in &r.widened {
        let ty = pg::sql_type(&pg::pg_type(name, to)?);
        let q = qi(name);
        tx.batch_execute(&format!(
            "ALTER TABLE {target} ALTER COLUMN {q} TYPE {ty} USING {q}::{ty}"
        ))
        .await
        .map_err(t.err("widen a column"))?;
    }
    Ok(())
}

/// The columns a promote writes and how each is selected from the staging table: the batch's
/// columns the table has (cast to the table's type where they differ: a column null in every
/// change event arrives as text), then the table's columns the batch lacks, as NULL (the
/// contract's `missing_columns = "null"`). Ignored columns are left out.
struct Written {
    /// Column names, in order.
    columns: Vec<String>,
    /// Quoted names, for the INSERT list.
    names: Vec<String>,
    /// (expression without the relation prefix, or None for NULL, table type).
    exprs: Vec<(Option<String>, String)>,
}

impl Written {
    fn of(
        staged: &[(String, String)],
        table: &[(String, String)],
        r: Option<&Resolution>,
    ) -> Written {
        let mut out = Written {
            columns: Vec::new(),
            names: Vec::new(),
            exprs: Vec::new(),
        };
        for (name, ty) in staged {
            if r.is_some_and(|r| r.ignored.contains(name)) {
                continue;
            }
            let Some((_, tt)) = table.iter().find(|(n, _)| n == name) else {
                continue;
            };
            out.columns.push(name.clone());
            out.names.push(qi(name));
            let cast = if tt != ty { tt.clone() } else { String::new() };
            out.exprs.push((Some(qi(name)), cast));
        }
        for name in r.map_or(&[][..], |r| &r.nulled[..]) {
            let tt = table
                .iter()
                .find(|(n, _)| n == name)
                .map_or("text".to_string(), |(_, t)| t.clone());
            out.columns.push(name.clone());
            out.names.push(qi(name));
            out.exprs.push((None, tt));
        }
        out
    }

    /// The SELECT list over the staging table aliased by `prefix` (`s.` or empty).
    fn select(&self, prefix: &str) -> Vec<String> {
        self.exprs
            .iter()
            .map(|(e, cast)| match (e, cast.is_empty()) {
                (Some(e), true) => format!("{prefix}{e}"),
                (Some(e), false) => format!("{prefix}{e}::{cast}"),
                (None, _) => format!("NULL::{cast}"),
            })
            .collect()
    }
}

/// A merge needs the key in the batch.
fn check_key(batch: &[(String, String)], a: &Apply<'_>) -> Result<()> {
    if a.mode == WriteMode::Merge {
        for k in a.key {
            if !batch.iter().any(|(n, _)| n == k) {
                return Err(EngineError::Schema(format!(
                    "key column `{k}` is missing from the batch"
                )));
            }
        }
    }
    Ok(())
}

/// The newest run of the pipeline the ledger table holds.
pub async fn committed_run(t: &PgTarget<'_>) -> Result<Option<CommittedRun>> {
    let client = pg::connect(t.conn).await?;
    let row = client
        .query_opt(
            &format!(
                "SELECT run_seq, watermark, rows_inserted, rows_updated, rows_deleted FROM {}
                  WHERE pipeline = $1 ORDER BY run_seq DESC LIMIT 1",
                t.ledger()
            ),
            &[&t.pipeline],
        )
        .await;
    let row = match row {
        Ok(r) => r,
        // No ledger table yet: nothing was ever promoted.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
            return Ok(None);
        }
        Err(e) => return Err(t.err("read the ledger")(e)),
    };
    Ok(row.map(|r| {
        let seq = r.get::<_, i64>(0) as u64;
        CommittedRun {
            run_seq: seq,
            version: seq as i64,
            watermark: Watermark::from_json(&r.get::<_, String>(1)).ok(),
            rows_inserted: r.get::<_, i64>(2) as u64,
            rows_updated: r.get::<_, i64>(3) as u64,
            rows_deleted: r.get::<_, i64>(4) as u64,
        }
    }))
}

/// Drops the run's staging table.
pub async fn cleanup(t: &PgTarget<'_>, run_seq: u64) -> Result<()> {
    let client = pg::connect(t.conn).await?;
    client
        .batch_execute(&format!("DROP TABLE IF EXISTS {}", t.staging(run_seq)))
        .await
        .map_err(t.err("drop the staging table"))
}
