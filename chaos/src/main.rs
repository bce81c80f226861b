//! `tidemark-chaos`: runs generated chaos cases against a real fleet and prints a report.
//! Every failure prints one line that reproduces it (`--replay`), then the shrunk case.

use clap::Parser;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use std::collections::BTreeMap;
use std::path::PathBuf;
use tidemark_chaos::case::{Case, Target, cases};
use tidemark_chaos::fleet::Fleet;
use tidemark_chaos::runner::{CaseReport, run_case};

/// Kill workers (and the server) mid-run and check that no row is lost or duplicated.
#[derive(Debug, Parser)]
#[command(name = "tidemark-chaos", version)]
struct Args {
    /// Number of generated cases.
    #[arg(long, default_value_t = 20)]
    cases: u32,
    /// Seed of the case generator (same seed, same cases).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Worker processes in the fleet.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Targets to exercise; cases take them in turn (postgres starts a throwaway cluster
    /// unless TIDEMARK_CHAOS_PG_URL names a server; delta-s3, a Delta table with its state_dir
    /// on a moto S3 server the harness starts). Default: delta,parquet,postgres,delta-s3; with
    /// --cdc, the targets that take change events (delta,postgres,delta-s3)
    #[arg(long, value_delimiter = ',')]
    targets: Option<Vec<String>>,
    /// Only change-event cases (`debezium-jsonl` sources), on targets that take them.
    #[arg(long)]
    cdc: bool,
    /// Working directory (server database, worker logs, cases).
    #[arg(long, default_value = "target/chaos")]
    dir: PathBuf,
    /// Replay one case from a failure line (its JSON).
    #[arg(long)]
    replay: Option<String>,
    /// Shrinking steps after a failure.
    #[arg(long, default_value_t = 40)]
    shrink_steps: u32,
    /// Self-test only: run the workers with a deliberately broken commit protocol
    /// (`skip-idempotency-check`); the harness must then report violations.
    #[arg(long, hide = true)]
    sabotage: Option<String>,
}

#[derive(Default)]
struct Totals {
    cases: u32,
    failed: u32,
    crashes: BTreeMap<String, u32>,
    rows: usize,
    reruns: u32,
    store_faulted: u64,
}

impl Totals {
    fn add(&mut self, r: &CaseReport) {
        self.cases += 1;
        self.failed += u32::from(!r.violations.is_empty());
        self.rows += r.rows_checked;
        self.store_faulted += r.store_faulted;
        self.reruns += r.reruns;
        for (p, n) in &r.crashes {
            *self.crashes.entry(p.clone()).or_default() += n;
        }
    }
}

fn commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn repro(seed: u64, index: u32, case: &Case) -> String {
    format!(
        "REPRO seed={seed} case={index} commit={} : tidemark-chaos --replay '{}'",
        commit(),
        serde_json::to_string(case).expect("case serialises")
    )
}

/// The targets cases take in turn: the named ones (or every one), and with `--cdc` only those
/// that take change events — a named one that does not is refused, so a CDC report never
/// counts cases that ran as something else.
fn case_targets(named: Option<&[String]>, cdc: bool) -> anyhow::Result<Vec<Target>> {
    let all = ["delta", "parquet", "postgres", "delta-s3"].map(String::from);
    let explicit = named.is_some();
    let mut targets = Vec::new();
    for t in named.unwrap_or(&all) {
        let target = Target::parse(t).ok_or_else(|| {
            anyhow::anyhow!("unknown target {t:?} (available: delta, postgres, parquet, delta-s3)")
        })?;
        if cdc && !target.accepts_change_events() {
            if explicit {
                anyhow::bail!(
                    "--cdc: target {t:?} does not take change events; use --targets delta,postgres"
                );
            }
            continue;
        }
        targets.push(target);
    }
    anyhow::ensure!(!targets.is_empty(), "--targets names no target");
    Ok(targets)
}

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    let args = Args::parse();
    let targets = case_targets(args.targets.as_deref(), args.cdc)?;
    let dir = std::path::absolute(&args.dir)?;
    let mut fleet = Fleet::start(&dir, args.workers, args.sabotage.as_deref()).await?;
    let mut totals = Totals::default();

    if let Some(json) = &args.replay {
        let case: Case = serde_json::from_str(json)?;
        let r = run_case(&mut fleet, &case, &dir.join("replay")).await?;
        totals.add(&r);
        for v in &r.violations {
            println!("VIOLATION {v}");
        }
    } else {
        let mut seed_bytes = [0u8; 32];
        seed_bytes[..8].copy_from_slice(&args.seed.to_le_bytes());
        let mut runner = TestRunner::new_with_rng(
            Config::default(),
            TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
        );
        let strategy = cases();
        for i in 0..args.cases {
            let mut tree = strategy
                .new_tree(&mut runner)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            // Cases take the targets in turn.
            let target = targets[i as usize % targets.len()];
            let cdc = args.cdc;
            let with_target = |mut c: Case| {
                if cdc {
                    c.mode = tidemark_chaos::case::Mode::Cdc;
                }
                c.mode = target.mode_for(c.mode);
                c.target = target;
                c
            };
            let case = with_target(tree.current());
            let r = run_case(&mut fleet, &case, &dir.join(format!("case-{i}"))).await?;
            totals.add(&r);
            eprintln!(
                "case {i} [{target:?}]: {} ({} runs, {} rows, {:?}, {} ms)",
                if r.violations.is_empty() {
                    "ok"
                } else {
                    "VIOLATION"
                },
                r.runs,
                r.rows_checked,
                r.crashes,
                r.duration_ms
            );
            if r.violations.is_empty() {
                continue;
            }
            println!("{}", repro(args.seed, i, &case));
            for v in &r.violations {
                println!("  {v}");
            }
            // Shrink: keep simplifying while the case still fails.
            let mut smallest = case;
            for _ in 0..args.shrink_steps {
                if !tree.simplify() {
                    break;
                }
                let candidate = with_target(tree.current());
                let r = run_case(&mut fleet, &candidate, &dir.join("shrink")).await?;
                if r.violations.is_empty() {
                    if !tree.complicate() {
                        break;
                    }
                } else {
                    smallest = candidate;
                }
            }
            println!("SHRUNK {}", repro(args.seed, i, &smallest));
        }
    }

    let s = &fleet.stats;
    println!(
        "\ntidemark-chaos report (seed {}, commit {})",
        args.seed,
        commit()
    );
    println!("  cases              {}", totals.cases);
    println!("  violations         {}", totals.failed);
    println!("  rows checked       {}", totals.rows);
    println!("  reruns             {}", totals.reruns);
    println!("  worker restarts    {}", s.worker_restarts);
    println!("  SIGKILLs           {}", s.kills);
    println!("  zombies            {}", s.pauses);
    println!("  server restarts    {}", s.server_restarts);
    println!("  store faulted      {} connections", totals.store_faulted);
    println!("  kills per crash point:");
    for p in tidemark::crash::POINTS
        .iter()
        .chain(tidemark::crash::MAINTAIN_POINTS)
    {
        println!(
            "    {:<24} {}",
            p,
            totals.crashes.get(*p).copied().unwrap_or(0)
        );
    }
    Ok(if totals.failed == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdc_cases_take_only_targets_that_accept_change_events() {
        let all = case_targets(None, false).unwrap();
        assert_eq!(
            all,
            [
                Target::Delta,
                Target::Parquet,
                Target::Postgres,
                Target::DeltaS3
            ]
        );
        let cdc = case_targets(None, true).unwrap();
        assert_eq!(cdc, [Target::Delta, Target::Postgres, Target::DeltaS3]);
        let named = ["parquet".to_string()];
        let err = case_targets(Some(&named), true).unwrap_err().to_string();
        assert!(
            err.contains("\"parquet\" does not take change events"),
            "{err}"
        );
        assert!(case_targets(Some(&["nosuch".to_string()]), false).is_err());
    }
}
