//! S2 on object storage (`tidemark-bench merge-s3`): the steady merge of S2 with the Delta
//! table and tidemark's `state_dir` on a local S3-compatible server (moto, started here),
//! measured in the same run as the local-disk S2, so the two figures sit side by side.
//!
//! The source files stay on local disk for both sides. tidemark's worker and CLI reach the
//! server through the standard AWS environment only (no `storage_options` in the spec); the
//! peer (`seed_pipeline.py`) writes its table to the same server through `deltalake`, which
//! reads the same environment; its watermark file stays local (it has no object-store
//! state). Before every repetition the prepared table, state and peer table are restored by
//! server-side copies, so every run starts from the same objects.

use super::merge::{self, Bench, MergeBenchArgs, Point, Sample, med, range};
use super::{Machine, median};
use anyhow::Context;
use object_store::ObjectStoreExt;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use tidemark::storage::{Location, Remote};
use tidemark_testkit::s3server;

/// The bucket the benchmark creates on its server.
const BUCKET: &str = "tidemark-bench";
/// Where the runs work (restored from `base/` before each repetition).
const WORK: &str = "work";
/// The prepared table, state and peer table.
const BASE: &str = "base";

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectStoreBenchReport {
    /// Where and what.
    pub machine: Machine,
    /// The S3 server (program and version).
    pub server: String,
    /// S2 with table and state on local disk.
    pub local: Point,
    /// S2 with table and state on the S3 server.
    pub s3: Point,
}

/// Runs S2 on local disk, then on the S3 server, in one run (same data, same dev server).
pub async fn run(args: &MergeBenchArgs) -> anyhow::Result<ObjectStoreBenchReport> {
    let machine = Machine::current();
    let files = args.s2_loaded_files + 1;
    let (dir, src_all, server, b) =
        merge::set_up(&args.dir, args.rows_per_file, files, &args.bin).await?;
    eprintln!(
        "S2 on local disk: the new file merged after {} loaded files",
        files - 1
    );
    let local = merge::point(&b, &src_all, &dir, files, args.reps, 0)?;
    eprintln!("S2 on the S3 server");
    let moto = s3server::start()?;
    let s3 = s3_point(&b, &moto, &src_all, &dir, files, args.reps)?;
    drop(moto);
    drop(server);
    let _ = std::fs::remove_dir_all(&src_all);
    Ok(ObjectStoreBenchReport {
        machine,
        server: moto_version(),
        local,
        s3,
    })
}

fn moto_version() -> String {
    let version = std::process::Command::new("python3")
        .args(["-c", "import moto; print(moto.__version__)"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match version {
        Some(v) if !v.is_empty() => format!("moto_server {v}"),
        _ => "moto_server".into(),
    }
}

/// The pipeline of S2 with the table and state in the bucket.
fn spec() -> String {
    merge::SPEC
        .replace(
            "state_dir = \"state\"",
            &format!("state_dir = \"s3://{BUCKET}/{WORK}/state\""),
        )
        .replace(
            "path = \"lake/orders\"",
            &format!("path = \"s3://{BUCKET}/{WORK}/orders\""),
        )
}

/// The bucket's root, for this process's own reads and copies.
fn bucket() -> anyhow::Result<Remote> {
    match tidemark::storage::parse(&format!("s3://{BUCKET}/"))? {
        Location::Remote(url) => Ok(Remote::open(&url, &Default::default())?),
        Location::Local(_) => anyhow::bail!("s3:// parsed as a local path"),
    }
}

/// Server-side copies of every object under `from/` to `to/`, leaving out tidemark's staging.
fn copy_prefix(root: &Remote, from: &str, to: &str) -> anyhow::Result<usize> {
    let keys: Vec<String> = root
        .list(from)?
        .into_iter()
        .filter(|k| k.starts_with(&format!("{from}/")) && !k.contains("/_tidemark_staging/"))
        .collect();
    tidemark::storage::block_on(async {
        for key in &keys {
            let dest = format!("{to}/{}", &key[from.len() + 1..]);
            root.store()
                .copy(&root.object_path(key), &root.object_path(&dest))
                .await
                .with_context(|| format!("copy {key} to {dest}"))?;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(keys.len())
}

/// (rows, Parquet bytes) of the live files of the table at `rel`, from its log's JSON commits.
fn table_size(root: &Remote, rel: &str) -> anyhow::Result<(u64, u64)> {
    let mut commits = Vec::new();
    for key in root.list(&format!("{rel}/_delta_log"))? {
        if key.ends_with(".json") {
            let (bytes, _) = root.get(&key)?.context("a commit listed a moment ago")?;
            commits.push(String::from_utf8(bytes)?);
        }
    }
    Ok(merge::live_size(commits.iter().map(String::as_str)))
}

fn s3_point(
    b: &Bench,
    moto: &s3server::S3Server,
    src_all: &Path,
    root: &Path,
    files: usize,
    reps: usize,
) -> anyhow::Result<Point> {
    s3server::create_bucket(&moto.endpoint, BUCKET)?;
    let env = moto.env();
    let work = root.join("s3-work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    std::fs::write(work.join("pipeline.toml"), spec())?;
    // This process reads the ledgers and both tables with the server's settings and keys,
    // registered for the bucket (the workers take them from their environment).
    let mut reader = tidemark::spec::load(&work.join("pipeline.toml"))?;
    reader.target.storage_options = env
        .iter()
        .filter(|(k, _)| *k != "AWS_EC2_METADATA_DISABLED")
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    tidemark::storage::use_spec_options(&reader);
    let store = bucket()?;
    let (table, peer_table) = (
        format!("s3://{BUCKET}/{WORK}/orders"),
        format!("s3://{BUCKET}/{WORK}/peer/orders"),
    );
    if files > 1 {
        merge::link_files(src_all, &work.join("src"), files - 1)?;
        eprintln!(
            "  preparing: tidemark loads {} files into the bucket",
            files - 1
        );
        b.run_through_worker(&work, &env)?;
        copy_prefix(
            &store,
            &format!("{WORK}/orders"),
            &format!("{WORK}/peer/orders"),
        )?;
        copy_prefix(&store, WORK, BASE)?;
    }
    merge::link_files(src_all, &work.join("src"), files)?;
    let (table_rows_before, table_bytes_before) = if files > 1 {
        table_size(&store, &format!("{BASE}/orders"))?
    } else {
        (0, 0)
    };
    let new_rows = merge::parquet_rows(&src_all.join(format!("part-{:05}.parquet", files - 1)))?;
    let mut point = Point {
        files,
        table_rows_before,
        table_bytes_before,
        new_rows,
        tidemark: Vec::new(),
        peer: Vec::new(),
        tables_equal: false,
        tidemark_dv: Vec::new(),
        dv_tables_equal: false,
        merge_on_read: None,
    };
    merge::measure(
        &mut point,
        reps,
        merge::Sides {
            label: "S3".into(),
            reset: &mut |_| {
                store.delete_prefix(WORK)?;
                if files > 1 {
                    copy_prefix(&store, BASE, WORK)?;
                    merge::write_peer_watermark(&work, src_all, files - 1)?;
                } else {
                    let _ = std::fs::remove_dir_all(work.join("peer"));
                }
                Ok(())
            },
            tidemark: &mut || tidemark_run(b, &work, &env),
            tidemark_dv: None,
            peer: &mut || b.peer_run_at(&work, &peer_table, &env),
            tables: (table.clone(), peer_table.clone()),
            table_dv: None,
        },
    )?;
    store.delete_prefix("")?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(point)
}

/// One tidemark run with table and state in the bucket; engine time from the ledger there.
fn tidemark_run(b: &Bench, work: &Path, env: &[(&str, String)]) -> anyhow::Result<Sample> {
    let (wall_s, rss) = b.run_through_worker(work, env)?;
    let ledger = tidemark::state::open_at(&format!("s3://{BUCKET}/{WORK}/state"), "orders")?
        .read_ledger()?;
    let last = ledger.last().context("a ledger entry for the run")?;
    Ok(Sample {
        engine_s: last.durations_ms.values().sum::<u64>() as f64 / 1000.0,
        wall_s,
        peak_rss_mib: rss,
        activities_ms: last.durations_ms.clone(),
        bytes_read: 0,
        bytes_written: 0,
        bytes_rewritten: 0,
        dv_bytes: 0,
    })
}

/// Writes the section into the report at `out` (when given: section, figures, summary
/// rows); returns its markdown.
pub fn publish(out: Option<&Path>, r: &ObjectStoreBenchReport) -> anyhow::Result<String> {
    let md = markdown(r);
    super::publish(out, &[("merge-s3", &md)], "merge-s3", r, &summary_rows(r))?;
    Ok(md)
}

/// The S2-on-S3 row of the summary table.
pub fn summary_rows(r: &ObjectStoreBenchReport) -> Vec<super::summary::Row> {
    let engine = |x: &Sample| x.engine_s;
    let (t, pe) = (med(&r.s3.tidemark, engine), med(&r.s3.peer, engine));
    let (lo, hi) = range(&r.s3.tidemark, engine);
    vec![super::summary::Row {
        scenario: "S2".into(),
        measure: format!(
            "engine time on the local S3 server, {} new rows into {} (tables equal: {}; on local disk {:.2} s)",
            r.s3.new_rows,
            r.s3.table_rows_before,
            if r.s3.tables_equal { "yes" } else { "no" },
            med(&r.local.tidemark, engine)
        ),
        tidemark: format!("{t:.2} s"),
        peer: format!("{pe:.2} s"),
        ratio: format!("{:.2}×", t / pe),
        min_max: format!("{lo:.2}–{hi:.2} s"),
        target: "≤ 0.5×".into(),
        met: Some(t / pe <= 0.5 && r.s3.tables_equal),
    }]
}

/// The section of `docs/benchmarks.md`.
pub fn markdown(r: &ObjectStoreBenchReport) -> String {
    let mut s = String::from("## S2 on object storage (`tidemark-bench merge-s3`)\n\n");
    s.push_str(&format!(
        "S2's steady merge ({} new rows into a {}-row Delta table, {} loaded files) twice in one run: table and `state_dir` on local disk, then both in a bucket of a local S3-compatible server ({}, loopback HTTP, started by the benchmark). The source files stay on local disk. tidemark's worker and CLI get the server only from the standard AWS environment; the peer writes its table to the same server with `deltalake` (same environment; its watermark file stays local). Before each repetition the prepared objects are restored by server-side copies. {} repetitions per side and store, alternating. {}\n\n",
        r.s3.new_rows,
        r.s3.table_rows_before,
        r.s3.files - 1,
        r.server,
        r.s3.tidemark.len(),
        merge::machine_line(&r.machine)
    ));
    s.push_str("| store | who | engine s (median) | min–max s | end to end s | peak RSS MiB | tidemark ÷ peer | tables equal |\n|---|---|---:|---:|---:|---:|---:|:---:|\n");
    for (store, p) in [("local disk", &r.local), ("S3 server", &r.s3)] {
        let ratio = med(&p.tidemark, |x| x.engine_s) / med(&p.peer, |x| x.engine_s);
        for (who, samples) in [("tidemark", &p.tidemark), ("peer", &p.peer)] {
            let (lo, hi) = range(samples, |x| x.engine_s);
            s.push_str(&format!(
                "| {store} | {who} | {:.3} | {lo:.3}–{hi:.3} | {:.3} | {:.0} | {} | {} |\n",
                med(samples, |x| x.engine_s),
                med(samples, |x| x.wall_s),
                med(samples, |x| x.peak_rss_mib),
                if who == "tidemark" {
                    format!("{ratio:.2}×")
                } else {
                    "".into()
                },
                if p.tables_equal { "yes" } else { "no" }
            ));
        }
    }
    let per_activity = |p: &Point| {
        let mut acts: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for x in &p.tidemark {
            for (k, v) in &x.activities_ms {
                acts.entry(k.clone()).or_default().push(*v as f64);
            }
        }
        acts.iter()
            .map(|(k, v)| format!("{k} {:.0}", median(v)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let t_local = med(&r.local.tidemark, |x| x.engine_s);
    let t_s3 = med(&r.s3.tidemark, |x| x.engine_s);
    let p_local = med(&r.local.peer, |x| x.engine_s);
    let p_s3 = med(&r.s3.peer, |x| x.engine_s);
    let ratio = t_s3 / p_s3;
    s.push_str(&format!(
        "\n- **On the S3 server, tidemark ÷ peer: {ratio:.2}×** (S2's target ≤ 0.5×): {}.\n- The store's cost: tidemark {:.2}× its local-disk time, the peer {:.2}×.\n- tidemark per activity (median ms), local disk: {}; S3 server: {}.\n- What the S3 figure does not show: a real bucket adds network latency per request (tens of ms to a region's endpoint) and bandwidth limits; moto answers over loopback from one Python process, so its requests are cheap in latency but slow in throughput.\n",
        if ratio <= 0.5 {
            "target met".to_string()
        } else {
            format!("**target missed** by {:.2}×", ratio - 0.5)
        },
        t_s3 / t_local,
        p_s3 / p_local,
        per_activity(&r.local),
        per_activity(&r.s3)
    ));
    if ratio > 0.5 {
        let act = |p: &Point, a: &str| {
            med(&p.tidemark, |x| {
                x.activities_ms.get(a).copied().unwrap_or(0) as f64 / 1000.0
            })
        };
        let added = t_s3 - t_local;
        let promote_added = act(&r.s3, "promote") - act(&r.local, "promote");
        s.push_str(&format!(
            "- What bounds it: of the {added:.2} s the bucket adds to tidemark's run, `promote` accounts for {promote_added:.2} s ({:.0}%): on object storage the MERGE is delta-rs's own (DataFusion), not tidemark's rewrite MERGE, which reads table files by local path (docs/targets.md, Object storage), and it reads the touched files and writes their replacements through the S3 API instead of the page cache. tidemark's worker peaks at {:.0} MiB here against {:.0} MiB on local disk (still under the peer's {:.0} MiB), which points at whole objects held in memory while they are read; not yet profiled further.\n",
            100.0 * promote_added / added.max(f64::EPSILON),
            med(&r.s3.tidemark, |x| x.peak_rss_mib),
            med(&r.local.tidemark, |x| x.peak_rss_mib),
            med(&r.s3.peer, |x| x.peak_rss_mib),
        ));
    }
    s
}
