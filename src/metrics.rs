//! The worker's own Prometheus metrics, served beside the Temporal SDK's on `--metrics-addr`.
//!
//! The worker installs one meter (the SDK's Prometheus exporter) at start; the activities
//! record each finished run through [`record_run`]. Without `--metrics-addr` nothing is
//! installed and recording is a no-op.
//!
//! Per run, labelled by `pipeline`: `tidemark_runs{status}` (counter), `tidemark_batch_rows`
//! (last batch size), `tidemark_rows_promoted`, `tidemark_rows_late`,
//! `tidemark_rows_deduplicated` (counters), `tidemark_watermark_lag_seconds`,
//! `tidemark_records_per_second` (gauges), `tidemark_activity_seconds{activity}` and
//! `tidemark_run_seconds` (histograms), and `tidemark_alert{rule}` (1 firing, 0 quiet).

use crate::monitor::RULES;
use crate::state::ledger::LedgerEntry;
use std::sync::{Arc, OnceLock};
use temporalio_common::telemetry::metrics::{
    CoreMeter, Counter, Gauge, GaugeF64, HistogramF64, MetricKeyValue, MetricParameters,
    NewAttributes,
};

struct Instruments {
    meter: Arc<dyn CoreMeter>,
    runs: Counter,
    batch_rows: Gauge,
    rows_promoted: Counter,
    rows_late: Counter,
    rows_deduplicated: Counter,
    lag_seconds: GaugeF64,
    records_per_second: GaugeF64,
    activity_seconds: HistogramF64,
    run_seconds: HistogramF64,
    alert: Gauge,
}

static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();

fn params(name: &'static str, description: &'static str, unit: &'static str) -> MetricParameters {
    MetricParameters::builder()
        .name(name)
        .description(description)
        .unit(unit)
        .build()
}

/// Installs the meter the worker exports. Later calls are ignored.
pub fn install(meter: Arc<dyn CoreMeter>) {
    let m = &meter;
    let instruments = Instruments {
        runs: m.counter(params("tidemark_runs", "Finished runs by status", "")),
        batch_rows: m.gauge(params(
            "tidemark_batch_rows",
            "Rows in the last run's batch",
            "",
        )),
        rows_promoted: m.counter(params(
            "tidemark_rows_promoted",
            "Rows inserted or updated in the target",
            "",
        )),
        rows_late: m.counter(params(
            "tidemark_rows_late",
            "Rows at or below the previous watermark / event-time mark",
            "",
        )),
        rows_deduplicated: m.counter(params(
            "tidemark_rows_deduplicated",
            "Rows removed by the per-key dedup",
            "",
        )),
        lag_seconds: m.gauge_f64(params(
            "tidemark_watermark_lag_seconds",
            "Clock minus the committed watermark, at the end of the last run",
            "s",
        )),
        records_per_second: m.gauge_f64(params(
            "tidemark_records_per_second",
            "Batch rows over the last run's duration",
            "",
        )),
        activity_seconds: m.histogram_f64(params(
            "tidemark_activity_seconds",
            "Time per activity of a run",
            "s",
        )),
        run_seconds: m.histogram_f64(params("tidemark_run_seconds", "Time of a whole run", "s")),
        alert: m.gauge(params(
            "tidemark_alert",
            "1 while a [monitor] rule fires for the pipeline",
            "",
        )),
        meter,
    };
    let _ = INSTRUMENTS.set(instruments);
}

fn attrs(
    i: &Instruments,
    pairs: &[(&str, &str)],
) -> temporalio_common::telemetry::metrics::MetricAttributes {
    i.meter.new_attributes(NewAttributes {
        attributes: pairs
            .iter()
            .map(|(k, v)| MetricKeyValue::new(k.to_string(), v.to_string()))
            .collect(),
    })
}

/// Records a finished run from its ledger line.
pub fn record_run(pipeline: &str, e: &LedgerEntry) {
    let Some(i) = INSTRUMENTS.get() else { return };
    let p = attrs(i, &[("pipeline", pipeline)]);
    i.runs.add(
        1,
        &attrs(i, &[("pipeline", pipeline), ("status", &e.status)]),
    );
    i.batch_rows.record(e.rows_batch, &p);
    i.rows_promoted.add(e.rows_inserted + e.rows_updated, &p);
    i.rows_late.add(e.rows_late, &p);
    i.rows_deduplicated.add(e.rows_deduplicated, &p);
    if let Some(lag) = e.lag_ms {
        i.lag_seconds.record(lag as f64 / 1000.0, &p);
    }
    if let Some(ms) = e.run_ms {
        i.run_seconds.record(ms as f64 / 1000.0, &p);
        if ms > 0 {
            i.records_per_second
                .record(e.rows_batch as f64 * 1000.0 / ms as f64, &p);
        }
    }
    for (activity, ms) in &e.durations_ms {
        i.activity_seconds.record(
            *ms as f64 / 1000.0,
            &attrs(i, &[("pipeline", pipeline), ("activity", activity)]),
        );
    }
    for rule in RULES {
        let firing = e.alerts.iter().any(|a| a.rule == rule);
        i.alert.record(
            u64::from(firing),
            &attrs(i, &[("pipeline", pipeline), ("rule", rule)]),
        );
    }
}

/// Records a failed run.
pub fn record_failure(pipeline: &str) {
    let Some(i) = INSTRUMENTS.get() else { return };
    i.runs.add(
        1,
        &attrs(i, &[("pipeline", pipeline), ("status", "failed")]),
    );
}
