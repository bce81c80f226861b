//! `tidemark-bench`: parses the arguments and runs a benchmark scenario (what
//! `tidemark bench ...` did before the runner left the product binary).

mod cli;

use anyhow::Result;
use clap::Parser;
use cli::Cli;
use std::path::PathBuf;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match rt.block_on(bench(cli.scenario)) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

fn init_tracing(cli: &Cli) {
    tidemark::logging::init(cli.verbose, matches!(cli.log_format, cli::LogFormat::Json));
}

async fn bench(scenario: cli::BenchCommand) -> Result<u8> {
    use tidemark_bench::{self as b, cdc, merge, merge_s3, overhead, scale};
    if cfg!(debug_assertions) {
        eprintln!(
            "note: a debug build; benchmark figures need `cargo build --release --bins && cargo run --release -p tidemark-bench -- ...`"
        );
    }
    let bin = b::tidemark_bin()?;
    match scenario {
        cli::BenchCommand::Overhead { reps, dir, report } => {
            let reps = if report.quick { 2 } else { reps.max(1) };
            let r = overhead::run(&dir, reps, &bin).await?;
            let md = overhead::publish(report.report_to().as_deref(), &r)?;
            print_report(report.json, &r, &md)?;
        }
        cli::BenchCommand::Cdc {
            rows,
            events,
            peer_events,
            reps,
            no_peer,
            dir,
            report,
        } => {
            let args = if report.quick {
                cdc::CdcBenchArgs::quick(dir, no_peer)
            } else {
                cdc::CdcBenchArgs {
                    rows,
                    events,
                    peer_events,
                    reps: reps.max(1),
                    dir,
                    no_peer,
                }
            };
            let r = cdc::run(&args).await?;
            let md = cdc::publish(report.report_to().as_deref(), &r)?;
            print_report(report.json, &r, &md)?;
        }
        cli::BenchCommand::Merge {
            files,
            sizes,
            dir,
            report,
        } => {
            let mut args = merge_args(&sizes, report.quick, dir, bin);
            if !report.quick {
                args.s1_files = files;
            }
            let r = merge::run(&args).await?;
            let md = merge::publish(report.report_to().as_deref(), &r)?;
            print_report(report.json, &r, &md)?;
        }
        cli::BenchCommand::Scale {
            files,
            rows,
            reps,
            max_batch_rows,
            dir,
            report,
        } => {
            let args = if report.quick {
                scale::ScaleArgs::quick(dir, bin)
            } else {
                scale::ScaleArgs {
                    files,
                    rows_per_file: rows,
                    reps: reps.max(1),
                    max_batch_rows,
                    ..scale::ScaleArgs::full(dir, bin)
                }
            };
            let r = scale::run(&args).await?;
            let md = scale::publish(report.report_to().as_deref(), &r)?;
            print_report(report.json, &r, &md)?;
        }
        cli::BenchCommand::MergeS3 { sizes, dir, report } => {
            let args = merge_args(&sizes, report.quick, dir, bin);
            let r = merge_s3::run(&args).await?;
            let md = merge_s3::publish(report.report_to().as_deref(), &r)?;
            print_report(report.json, &r, &md)?;
        }
        cli::BenchCommand::All { dir, out } => {
            let r =
                merge::run(&merge::MergeBenchArgs::full(dir.join("merge"), bin.clone())).await?;
            merge::publish(Some(&out), &r)?;
            let args = merge::MergeBenchArgs::full(dir.join("merge-s3"), bin.clone());
            let r = merge_s3::run(&args).await?;
            merge_s3::publish(Some(&out), &r)?;
            let r = cdc::run(&cdc::CdcBenchArgs::full(dir.join("cdc"))).await?;
            cdc::publish(Some(&out), &r)?;
            let r = overhead::run(&dir.join("overhead"), overhead::FULL_REPS, &bin).await?;
            overhead::publish(Some(&out), &r)?;
            let r = scale::run(&scale::ScaleArgs::full(dir.join("scale"), bin.clone())).await?;
            scale::publish(Some(&out), &r)?;
            b::plot(&out)?;
            eprintln!("wrote {} and its plots", out.display());
        }
    }
    Ok(0)
}

/// The merge scenarios' arguments: quick sizes, or the full ones with the flags' sizes.
fn merge_args(
    sizes: &cli::MergeSizes,
    quick: bool,
    dir: PathBuf,
    bin: PathBuf,
) -> tidemark_bench::merge::MergeBenchArgs {
    if quick {
        return tidemark_bench::merge::MergeBenchArgs::quick(dir, bin);
    }
    tidemark_bench::merge::MergeBenchArgs {
        rows_per_file: sizes.rows,
        s2_loaded_files: sizes.s2_loaded,
        reps: sizes.reps.max(1),
        ..tidemark_bench::merge::MergeBenchArgs::full(dir, bin)
    }
}

fn print_report<T: serde::Serialize>(json: bool, r: &T, md: &str) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
    } else {
        println!("{md}");
    }
    Ok(())
}
