//! S7, scale: a first load of 2.5 M, 10 M and 40 M rows (`gen_orders.py`, 250,000 rows per
//! daily file) into an empty Delta table, tidemark against the peer (`seed_pipeline.py`):
//! peak RSS of tidemark's worker and of the peer's process (`VmHWM`), and run time. tidemark
//! reads the window in batches of the default budget (`[source] max_batch_rows`), each its own
//! commit; the peer reads everything at once. After the first repetition of every size both
//! tables are read back and compared row by row.

use super::merge::{Bench, SPEC, link_files, set_up};
use super::{Machine, summary};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// What to measure.
#[derive(Debug, Clone)]
pub struct ScaleArgs {
    /// Rows per daily file.
    pub rows_per_file: usize,
    /// Source sizes in files.
    pub files: Vec<usize>,
    /// Repetitions of each size.
    pub reps: usize,
    /// `[source] max_batch_rows` (None: the default budget).
    pub max_batch_rows: Option<u64>,
    /// Working directory (recreated).
    pub dir: PathBuf,
    /// The `tidemark` binary.
    pub bin: PathBuf,
}

impl ScaleArgs {
    /// 10, 40 and 160 files of 250,000 rows (2.5 M, 10 M, 40 M), once each, default budget.
    pub fn full(dir: PathBuf, bin: PathBuf) -> Self {
        ScaleArgs {
            rows_per_file: 250_000,
            files: vec![10, 40, 160],
            reps: 1,
            max_batch_rows: None,
            dir,
            bin,
        }
    }

    /// Tiny sizes with a budget that makes several batches.
    pub fn quick(dir: PathBuf, bin: PathBuf) -> Self {
        ScaleArgs {
            rows_per_file: 2_000,
            files: vec![2, 6],
            reps: 1,
            max_batch_rows: Some(3_000),
            dir,
            bin,
        }
    }
}

/// One side's first load.
#[derive(Debug, Clone, Serialize)]
pub struct Load {
    /// tidemark: seconds inside the activities of every batch; peer: its own measurement.
    pub engine_s: f64,
    /// tidemark: `tidemark run` start to exit; peer: the Python process.
    pub wall_s: f64,
    /// Peak resident set of tidemark's worker or the peer's process, MiB.
    pub peak_rss_mib: f64,
    /// tidemark: the batches the run committed.
    pub batches: usize,
    /// tidemark: seconds per step (process, stage, promote, …), summed over the batches.
    pub steps_s: std::collections::BTreeMap<String, f64>,
    /// tidemark: `promote`'s seconds in each batch, in order.
    pub promote_per_batch_s: Vec<f64>,
}

/// One source size.
#[derive(Debug, Clone, Serialize)]
pub struct ScalePoint {
    /// Source files.
    pub files: usize,
    /// Source rows.
    pub source_rows: u64,
    /// tidemark's loads (copy-on-write MERGE, the default).
    pub tidemark: Vec<Load>,
    /// tidemark's loads with `deletion_vectors = true` (merge-on-read).
    pub tidemark_dv: Vec<Load>,
    /// The peer's loads (empty when it failed, see `peer_error`).
    pub peer: Vec<Load>,
    /// Why the peer did not finish, if it did not.
    pub peer_error: Option<String>,
    /// Both tables were read back and are equal.
    pub tables_equal: bool,
    /// The merge-on-read table read back equals the copy-on-write one.
    pub dv_table_equal: bool,
    /// Rows in tidemark's table.
    pub table_rows: u64,
}

/// The scale scenario's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    /// Where and what.
    pub machine: Machine,
    /// Rows per daily file.
    pub rows_per_file: usize,
    /// The budget used (None: the default).
    pub max_batch_rows: Option<u64>,
    /// One point per size.
    pub points: Vec<ScalePoint>,
}

/// Runs the scenario.
pub async fn run(args: &ScaleArgs) -> anyhow::Result<ScaleReport> {
    let machine = Machine::current();
    let most = args.files.iter().copied().max().unwrap_or(1);
    let (dir, src_all, server, b) = set_up(&args.dir, args.rows_per_file, most, &args.bin).await?;
    let spec = match args.max_batch_rows {
        None => SPEC.to_string(),
        Some(n) => SPEC.replacen(
            "[source]\n",
            &format!("[source]\nmax_batch_rows = {n}\n"),
            1,
        ),
    };
    let mut points = Vec::new();
    for &files in &args.files {
        eprintln!(
            "scale: first load of {files} files ({} rows)",
            files * args.rows_per_file
        );
        points.push(point(&b, &src_all, &dir, files, args.reps, &spec)?);
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&src_all);
    Ok(ScaleReport {
        machine,
        rows_per_file: args.rows_per_file,
        max_batch_rows: args.max_batch_rows,
        points,
    })
}

fn point(
    b: &Bench,
    src_all: &Path,
    root: &Path,
    files: usize,
    reps: usize,
    spec: &str,
) -> anyhow::Result<ScalePoint> {
    let work = root.join(format!("scale-{files}"));
    let mut point = ScalePoint {
        files,
        source_rows: 0,
        tidemark: Vec::new(),
        tidemark_dv: Vec::new(),
        peer: Vec::new(),
        peer_error: None,
        tables_equal: false,
        dv_table_equal: false,
        table_rows: 0,
    };
    for k in 0..files {
        point.source_rows +=
            super::merge::parquet_rows(&src_all.join(format!("part-{k:05}.parquet")))?;
    }
    for rep in 0..reps {
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)?;
        std::fs::write(work.join("pipeline.toml"), spec)?;
        link_files(src_all, &work.join("src"), files)?;
        // Alternate which side goes first.
        for side in [rep % 2, 1 - rep % 2] {
            if side == 0 {
                let l = tidemark_load(b, &work)?;
                eprintln!(
                    "  {files} files, rep {rep}: tidemark {:.2} s in {} batches (end to end {:.2} s), {:.0} MiB",
                    l.engine_s, l.batches, l.wall_s, l.peak_rss_mib
                );
                point.tidemark.push(l);
            } else if point.peer_error.is_none() {
                match peer_load(b, &work) {
                    Ok(l) => {
                        eprintln!(
                            "  {files} files, rep {rep}: peer {:.2} s, {:.0} MiB",
                            l.engine_s, l.peak_rss_mib
                        );
                        point.peer.push(l);
                    }
                    Err(e) => {
                        eprintln!("  {files} files: the peer did not finish: {e:#}");
                        point.peer_error = Some(format!("{e:#}"));
                    }
                }
            }
        }
        // The same load with merge-on-read, into its own empty table.
        let work_dv = root.join(format!("scale-{files}-dv"));
        let _ = std::fs::remove_dir_all(&work_dv);
        std::fs::create_dir_all(&work_dv)?;
        std::fs::write(
            work_dv.join("pipeline.toml"),
            spec.replacen("[target]\n", "[target]\ndeletion_vectors = true\n", 1),
        )?;
        link_files(src_all, &work_dv.join("src"), files)?;
        let l = tidemark_load(b, &work_dv)?;
        eprintln!(
            "  {files} files, rep {rep}: tidemark with deletion vectors {:.2} s in {} batches, {:.0} MiB",
            l.engine_s, l.batches, l.peak_rss_mib
        );
        point.tidemark_dv.push(l);
        if rep == 0 {
            let ours = tidemark::storage::block_on(super::merge::table_frame(
                &work.join("lake/orders").to_string_lossy(),
            ))?;
            let dv = tidemark::storage::block_on(super::merge::table_frame_scanned(
                &work_dv.join("lake/orders").to_string_lossy(),
            ))?;
            super::merge::ensure_same_table(
                &dv,
                &ours,
                &format!("{files} files: the merge-on-read table"),
                "the copy-on-write one",
            )?;
            point.dv_table_equal = true;
            point.table_rows = ours.height() as u64;
            if point.peer_error.is_none() {
                let theirs = tidemark::storage::block_on(super::merge::table_frame(
                    &work.join("peer/orders").to_string_lossy(),
                ))?;
                super::merge::ensure_same_table(
                    &ours,
                    &theirs,
                    &format!("{files} files: tidemark's table"),
                    "the peer's",
                )?;
                point.tables_equal = true;
            }
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    let _ = std::fs::remove_dir_all(root.join(format!("scale-{files}-dv")));
    Ok(point)
}

/// tidemark's first load of the source in `work` through a fresh worker.
fn tidemark_load(b: &Bench, work: &Path) -> anyhow::Result<Load> {
    let (wall_s, rss) = b.run_through_worker(work, &[])?;
    let ledger =
        tidemark::state::open_at(&work.join("state").to_string_lossy(), "orders")?.read_ledger()?;
    anyhow::ensure!(!ledger.is_empty(), "no ledger line for the load");
    let engine_ms: u64 = ledger
        .iter()
        .map(|e| e.durations_ms.values().sum::<u64>())
        .sum();
    let mut steps_s = std::collections::BTreeMap::new();
    for e in &ledger {
        for (step, ms) in &e.durations_ms {
            *steps_s.entry(step.clone()).or_insert(0.0) += *ms as f64 / 1000.0;
        }
    }
    Ok(Load {
        engine_s: engine_ms as f64 / 1000.0,
        wall_s,
        peak_rss_mib: rss,
        batches: ledger.iter().filter(|e| e.status == "succeeded").count(),
        steps_s,
        promote_per_batch_s: ledger
            .iter()
            .filter(|e| e.status == "succeeded")
            .map(|e| e.durations_ms.get("promote").copied().unwrap_or(0) as f64 / 1000.0)
            .collect(),
    })
}

/// The peer's first load of the source in `work` into `work/peer/orders`.
fn peer_load(b: &Bench, work: &Path) -> anyhow::Result<Load> {
    let sample = b.peer_run_at(work, &work.join("peer/orders").to_string_lossy(), &[])?;
    Ok(Load {
        engine_s: sample.engine_s,
        wall_s: sample.wall_s,
        peak_rss_mib: sample.peak_rss_mib,
        batches: 1,
        steps_s: Default::default(),
        promote_per_batch_s: Vec::new(),
    })
}

/// Peak RSS at the largest size ÷ at the smallest: at most this.
const RSS_FLAT: f64 = 1.2;
/// Time at the largest size ÷ at the smallest: at most this (16× the rows).
const TIME_LINEAR: f64 = 17.0;
/// First-load time ÷ the peer's at 10 M rows: at most this.
const FIRST_LOAD: f64 = 0.8;
/// Peak RSS ÷ the peer's at the largest size it finishes: at most this.
const RSS_VS_PEER: f64 = 0.5;

fn mib(l: &Load) -> f64 {
    l.peak_rss_mib
}

fn engine(l: &Load) -> f64 {
    l.engine_s
}

fn median_of(loads: &[Load], f: impl Fn(&Load) -> f64) -> f64 {
    super::median(&loads.iter().map(f).collect::<Vec<_>>())
}

/// The summary rows (S7): the default (copy-on-write) load, then the merge-on-read one.
pub fn summary_rows(r: &ScaleReport) -> Vec<summary::Row> {
    let mut rows = variant_rows(r, "", |p| &p.tidemark);
    if r.points.iter().all(|p| !p.tidemark_dv.is_empty()) {
        rows.extend(variant_rows(r, ", deletion vectors", |p| &p.tidemark_dv));
    }
    rows
}

/// The four S7 rows of one variant of tidemark's load (`loads` picks it from a point).
fn variant_rows(
    r: &ScaleReport,
    variant: &str,
    loads: fn(&ScalePoint) -> &Vec<Load>,
) -> Vec<summary::Row> {
    use summary::Row;
    let mut rows = Vec::new();
    let rows_m = |p: &ScalePoint| p.source_rows as f64 / 1e6;
    let (Some(first), Some(last)) = (r.points.first(), r.points.last()) else {
        return rows;
    };
    let rss = |p: &ScalePoint| median_of(loads(p), mib);
    let flat = rss(last) / rss(first);
    rows.push(Row {
        scenario: "S7".into(),
        measure: format!(
            "worker peak RSS at {:.1} M rows ÷ at {:.1} M (first load{variant})",
            rows_m(last),
            rows_m(first)
        ),
        tidemark: format!("{flat:.2}× ({:.0} → {:.0} MiB)", rss(first), rss(last)),
        peer: peer_growth(first, last, mib, "MiB"),
        ratio: format!("{flat:.2}× (tidemark's growth)"),
        min_max: span(loads(last), mib, " MiB"),
        target: format!("≤ {RSS_FLAT}× (flat)"),
        met: Some(flat <= RSS_FLAT),
    });
    let time = |p: &ScalePoint| median_of(loads(p), engine);
    let growth = time(last) / time(first);
    rows.push(Row {
        scenario: "S7".into(),
        measure: format!(
            "first-load time at {:.1} M rows ÷ at {:.1} M{variant}",
            rows_m(last),
            rows_m(first)
        ),
        tidemark: format!("{growth:.2}× ({:.2} → {:.2} s)", time(first), time(last)),
        peer: peer_growth(first, last, engine, "s"),
        ratio: format!("{growth:.2}× (tidemark's growth)"),
        min_max: span(loads(last), engine, " s"),
        target: format!("≤ {TIME_LINEAR}× (linear)"),
        met: Some(growth <= TIME_LINEAR),
    });
    // At 10 M rows (the size nearest it).
    if let Some(p) = r
        .points
        .iter()
        .filter(|p| !p.peer.is_empty())
        .min_by_key(|p| p.source_rows.abs_diff(10_000_000))
    {
        let (t, pe) = (time(p), median_of(&p.peer, engine));
        rows.push(Row {
            scenario: "S7".into(),
            measure: format!(
                "first-load time at {:.1} M rows{variant} (tables equal: {})",
                rows_m(p),
                p.tables_equal
            ),
            tidemark: format!("{t:.2} s"),
            peer: format!("{pe:.2} s"),
            ratio: format!("{:.2}×", t / pe),
            min_max: span(loads(p), engine, " s"),
            target: format!("≤ {FIRST_LOAD}×"),
            met: Some(t / pe <= FIRST_LOAD),
        });
    }
    if let Some(p) = r.points.iter().rev().find(|p| !p.peer.is_empty()) {
        let (t, pe) = (rss(p), median_of(&p.peer, mib));
        rows.push(Row {
            scenario: "S7".into(),
            measure: format!(
                "peak RSS at {:.1} M rows{variant} (the largest the peer finished)",
                rows_m(p)
            ),
            tidemark: format!("{t:.0} MiB"),
            peer: format!("{pe:.0} MiB"),
            ratio: format!("{:.2}×", t / pe),
            min_max: span(loads(p), mib, " MiB"),
            target: format!("≤ {RSS_VS_PEER}×"),
            met: Some(t / pe <= RSS_VS_PEER),
        });
    }
    rows
}

fn peer_growth(first: &ScalePoint, last: &ScalePoint, f: fn(&Load) -> f64, unit: &str) -> String {
    if first.peer.is_empty() || last.peer.is_empty() {
        return "—".into();
    }
    let (a, b) = (median_of(&first.peer, f), median_of(&last.peer, f));
    format!("{:.2}× ({a:.0} → {b:.0} {unit})", b / a)
}

fn span(loads: &[Load], f: fn(&Load) -> f64, unit: &str) -> String {
    let (lo, hi) = super::min_max(&loads.iter().map(f).collect::<Vec<_>>());
    format!("{lo:.2}–{hi:.2}{unit}")
}

/// The scale section.
pub fn markdown(r: &ScaleReport) -> String {
    let mut s = String::from(
        "## S7 — scale: a first load of any size in bounded memory\n\n\
         A first load of `gen_orders.py` files (250,000 rows each) into an empty Delta table \
         (merge on `order_id`, partitioned by `order_date`), through a dev server and a fresh \
         worker process. tidemark reads the window in batches of its budget \
         (`[source] max_batch_rows`",
    );
    match r.max_batch_rows {
        None => s.push_str(", the default 2,000,000"),
        Some(n) => s.push_str(&format!(" = {n}")),
    }
    s.push_str(
        "), each its own commit; the peer (`seed_pipeline.py`) reads everything at once. Peak \
         RSS is the worker's or the peer process's `VmHWM`; time is tidemark's engine time \
         (the activities of every batch, from the ledger) and the peer's own measurement. \
         The same load runs again with `[target] deletion_vectors = true` (merge-on-read) \
         into its own table. After each size the tables are read back and compared row by row: \
         tidemark's and the peer's through delta-rs, the merge-on-read one through tidemark's \
         own scan (delta-rs 1.1's scan deadlocks on a table with deletion vectors in this \
         many files: one blocking task per deletion vector exhausts tokio's blocking pool, \
         delta-io/delta-rs#4657).\n\n",
    );
    s.push_str(&super::merge::machine_line(&r.machine));
    s.push_str("\n\n| source rows | tidemark batches | tidemark time | tidemark end to end | tidemark peak RSS | with deletion vectors: time | peak RSS | peer time | peer peak RSS | tables equal |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n");
    for p in &r.points {
        let peer = if p.peer.is_empty() {
            (
                format!(
                    "did not finish: {}",
                    p.peer_error.as_deref().unwrap_or("not run")
                ),
                "—".to_string(),
            )
        } else {
            (
                format!("{:.2} s", median_of(&p.peer, engine)),
                format!("{:.0} MiB", median_of(&p.peer, mib)),
            )
        };
        let dv = if p.tidemark_dv.is_empty() {
            ("—".to_string(), "—".to_string())
        } else {
            (
                format!("{:.2} s", median_of(&p.tidemark_dv, engine)),
                format!("{:.0} MiB", median_of(&p.tidemark_dv, mib)),
            )
        };
        s.push_str(&format!(
            "| {} | {} | {:.2} s | {:.2} s | {:.0} MiB | {} | {} | {} | {} | {} |\n",
            p.source_rows,
            p.tidemark.first().map_or(0, |l| l.batches),
            median_of(&p.tidemark, engine),
            median_of(&p.tidemark, |l| l.wall_s),
            median_of(&p.tidemark, mib),
            dv.0,
            dv.1,
            peer.0,
            peer.1,
            match (p.tables_equal, p.dv_table_equal) {
                (true, true) => "yes (all three)",
                (true, false) => "yes",
                _ => "—",
            }
        ));
    }
    s.push_str("\n![peak RSS and time against rows](bench/s7_scale.png)\n\n");
    s.push_str(&notes(r));
    s
}

/// Where the time and the memory go, from the ledger's step durations: the text under the
/// table (what bounds a missed target).
fn notes(r: &ScaleReport) -> String {
    let mut s = String::new();
    let (Some(first), Some(last)) = (r.points.first(), r.points.last()) else {
        return s;
    };
    let Some(l) = last.tidemark.first() else {
        return s;
    };
    let step = |l: &Load, name: &str| l.steps_s.get(name).copied().unwrap_or(0.0);
    let rows_m = |p: &ScalePoint| p.source_rows as f64 / 1e6;
    let per_batch = |x: f64, l: &Load| x / l.batches.max(1) as f64;
    let peak_batch = |l: &Load| {
        l.promote_per_batch_s
            .iter()
            .copied()
            .enumerate()
            .fold(
                (0, 0.0f64),
                |m, (i, x)| if x > m.1 { (i + 1, x) } else { m },
            )
    };
    let p_first = l.promote_per_batch_s.first().copied().unwrap_or(0.0);
    let (k, p_peak) = peak_batch(l);
    s.push_str(&format!(
        "- Where the time goes (copy-on-write, the default, at {:.1} M rows): `process` {:.2} s \
         ({:.2} s a batch, flat), `stage` {:.2} s, `promote` {:.2} s ({:.0}% of {:.2} s). \
         `promote` takes {p_first:.2} s in the first batch (an empty table: inserts only) and \
         grows batch after batch, to {p_peak:.2} s in batch {k} of {}: every batch after the \
         first holds updates of orders an earlier batch loaded, in nearly every partition \
         (the generator updates 5% of its rows uniformly over all earlier orders), so its \
         MERGE reads the key column of nearly the whole table to find them (a MERGE keeps no \
         key index; file statistics cannot prune keys spread over every file) and, copy-on-write, \
         rewrites every partition's file holding one: nearly the whole table, every batch. \
         Each batch's cost grows with the table, so the run's grows with the square of its \
         rows; merge-on-read (below) avoids the rewrite, not the probe.\n",
        rows_m(last),
        step(l, "process"),
        per_batch(step(l, "process"), l),
        step(l, "stage"),
        step(l, "promote"),
        100.0 * step(l, "promote") / l.engine_s.max(1e-9),
        l.engine_s,
        l.batches,
    ));
    if let Some(l0) = first.tidemark.first() {
        let growth = l.peak_rss_mib / l0.peak_rss_mib.max(1e-9);
        let steps: Vec<String> = r
            .points
            .iter()
            .filter_map(|p| p.tidemark.first().map(|x| (p, x)))
            .map(|(p, x)| format!("{:.0} MiB at {:.1} M", x.peak_rss_mib, rows_m(p)))
            .collect();
        // From the second size on, every load has full-size MERGE batches (the smallest
        // has one full batch, an insert, and a short second one).
        let from_second = r
            .points
            .get(1)
            .filter(|_| r.points.len() > 2)
            .and_then(|p| p.tidemark.first().map(|x| (p, x)))
            .map(|(p, x)| {
                format!(
                    " From {:.1} M to {:.1} M rows the peak grows {:.2}×: it follows the batch, \
                     not the table.",
                    rows_m(p),
                    rows_m(last),
                    l.peak_rss_mib / x.peak_rss_mib.max(1e-9)
                )
            })
            .unwrap_or_default();
        s.push_str(&format!(
            "- Memory: {} rows ({growth:.2}× from the smallest to the largest). The batch \
             (extract, dedup, the batch file) is bounded by the budget; the MERGE's key probe reads \
             the table's keys a round of files at a time (4 M rows), and the copy-on-write \
             rewrite a file at a time per lane. The worker caps glibc's malloc arenas at two and \
             hands freed memory back after each activity (`src/allocator.rs`; with glibc's \
             default of one arena per thread the peak was 1605 MiB at 40 M rows, growing with \
             the batches by fragmentation). {}{from_second}\n",
            steps.join(", "),
            if growth <= RSS_FLAT {
                "The peak stays flat."
            } else {
                "What the smallest size lacks is a full-size MERGE batch: its peak is a first \
                 batch's (extract and write of the budget's rows, into an empty table); every \
                 later batch's MERGE holds the batch, the probe's matches and two rewrite lanes \
                 at once."
            }
        ));
    }
    if let (Some(d0), Some(d)) = (first.tidemark_dv.first(), last.tidemark_dv.first()) {
        s.push_str(&format!(
            "- With `deletion_vectors = true` a batch deletes the replaced rows by deletion \
             vector and writes only its own rows: {:.2} s and {:.0} MiB at {:.1} M rows, {:.2} s \
             and {:.0} MiB at {:.1} M ({:.2}× the time, {:.2}× the memory, for {:.0}× the rows); \
             `promote` {:.2} s in the first batch, {:.2} s at most. Nothing is rewritten, but the \
             key probe still reads the key column of nearly the whole table per batch, and the \
             deletion vectors of the files it touches are loaded and rewritten (one DV file per \
             commit holding every touched file's DV).\n",
            d0.engine_s,
            d0.peak_rss_mib,
            rows_m(first),
            d.engine_s,
            d.peak_rss_mib,
            rows_m(last),
            d.engine_s / d0.engine_s.max(1e-9),
            d.peak_rss_mib / d0.peak_rss_mib.max(1e-9),
            rows_m(last) / rows_m(first).max(1e-9),
            d.promote_per_batch_s.first().copied().unwrap_or(0.0),
            peak_batch(d).1,
        ));
    }
    if let Some(p) = r
        .points
        .iter()
        .filter(|p| !p.peer.is_empty())
        .min_by_key(|p| p.source_rows.abs_diff(10_000_000))
        && let (Some(l), Some(pe)) = (p.tidemark.first(), p.peer.first())
    {
        s.push_str(&format!(
            "- Against the peer at {:.1} M rows: tidemark {:.2} s (`process` {:.2} s, `promote` \
             {:.2} s, in {} batches), the peer {:.2} s. The peer reads every file once, \
             deduplicates in memory ({:.0} MiB) and writes the table once; tidemark reads the \
             window batch by batch (each batch's extract reads the cursor column to find the \
             cut, then its rows) and MERGEs every batch after the first into the table the \
             earlier ones made. Write once: the batch file is written grouped by \
             `order_date`, and each partition all of whose rows are new (every partition of \
             the first batch, the new days of each later one: most rows) is copied into the \
             table from its row groups, not encoded again; the partitions a batch updates are \
             rewritten, the batch's rows for them included.\n",
            rows_m(p),
            l.engine_s,
            step(l, "process"),
            step(l, "promote"),
            l.batches,
            pe.engine_s,
            pe.peak_rss_mib,
        ));
    }
    s
}

/// Writes the scale section into the report at `out` (when given); returns its markdown.
pub fn publish(out: Option<&Path>, r: &ScaleReport) -> anyhow::Result<String> {
    let md = markdown(r);
    super::publish(out, &[("scale", &md)], "scale", r, &summary_rows(r))?;
    Ok(md)
}
