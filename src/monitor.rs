//! Alert rules of the spec's `[monitor]` table, evaluated from the ledger and the watermark:
//! after every run (the `update_watermark` activity records them in the run's ledger line and
//! returns them to the workflow, which sets the `TidemarkAlert` search attribute) and by
//! `status` (which recomputes the watermark lag against the clock).
//!
//! Rules (a threshold of 0/off turns a rule off):
//! - `lag`: the committed watermark is older than `max_lag`. A timestamp cursor's lag is
//!   now − watermark value; an integer cursor has no clock, so its lag is the time since the
//!   watermark last moved.
//! - `empty_runs`: the last `empty_runs_alert` runs (failed runs aside) loaded nothing.
//! - `spike`: the batch is above `spike_factor` × the average batch of the previous (up to 10)
//!   runs, once at least 3 of them exist and their average is above zero.
//! - `sla`: the run took longer than `sla`.

use crate::cursor::format_cursor;
use crate::state::ledger::LedgerEntry;
use crate::state::watermark::Watermark;
use tidemark_workflows::cursor::CursorType;
use tidemark_workflows::spec::MonitorSpec;

/// Runs the spike rule averages over.
pub const SPIKE_HISTORY: usize = 10;
/// Previous runs the spike rule needs before it judges.
pub const SPIKE_MIN_HISTORY: usize = 3;

pub use crate::state::ledger::Alert;

/// Every rule name, for metrics that report a 0 when a rule is quiet.
pub const RULES: [&str; 4] = ["lag", "empty_runs", "spike", "sla"];

/// The watermark's lag behind `now_ms` (ms), when there is a committed watermark.
pub fn watermark_lag_ms(wm: Option<&Watermark>, now_ms: i64) -> Option<i64> {
    let wm = wm?;
    match (wm.value, wm.value_type) {
        (Some(v), CursorType::Timestamp) => Some((now_ms - v / 1000).max(0)),
        (Some(_), CursorType::Integer) => chrono::DateTime::parse_from_rfc3339(&wm.updated_at)
            .ok()
            .map(|t| (now_ms - t.timestamp_millis()).max(0)),
        (None, _) => None,
    }
}

/// The lag rule alone (what `status` re-evaluates against the clock).
pub fn lag_alert(monitor: &MonitorSpec, wm: Option<&Watermark>, now_ms: i64) -> Option<Alert> {
    let max = monitor.max_lag_ms? as i64;
    let lag = watermark_lag_ms(wm, now_ms)?;
    let wm = wm?;
    (lag > max).then(|| {
        Alert::fired(
            "lag",
            format!(
                "watermark {} is {} behind (max_lag {})",
                wm.value
                    .map(|v| format_cursor(v, wm.value_type))
                    .unwrap_or_default(),
                human_ms(lag as u64),
                human_ms(max as u64)
            ),
        )
    })
}

/// The runs that count for the run-history rules: finished runs that were not failures or
/// resets, oldest first.
fn finished(history: &[LedgerEntry]) -> impl DoubleEndedIterator<Item = &LedgerEntry> {
    history
        .iter()
        .filter(|e| matches!(e.status.as_str(), "succeeded" | "empty" | "reconciled"))
}

/// How many earlier finished runs [`evaluate`] looks back on at most.
pub fn history_needed(monitor: &MonitorSpec) -> usize {
    SPIKE_HISTORY.max(monitor.empty_runs_alert as usize)
}

/// Evaluates every rule for a run that just finished. `previous` is the ledger before this
/// run's line; `run` is its line (rows_batch, status, durations); `wm` the watermark now stored.
pub fn evaluate(
    monitor: &MonitorSpec,
    previous: &[LedgerEntry],
    run: &LedgerEntry,
    run_duration_ms: u64,
    wm: Option<&Watermark>,
    now_ms: i64,
) -> Vec<Alert> {
    let mut alerts = Vec::new();
    if let Some(a) = lag_alert(monitor, wm, now_ms) {
        alerts.push(a);
    }
    let n = monitor.empty_runs_alert as usize;
    if n > 0 && run.status == "empty" {
        let streak = 1 + finished(previous)
            .rev()
            .take_while(|e| e.status == "empty")
            .count();
        if streak >= n {
            alerts.push(Alert::fired(
                "empty_runs",
                format!("{streak} consecutive runs loaded no rows (empty_runs_alert {n})"),
            ));
        }
    }
    if monitor.spike_factor > 0.0 && run.rows_batch > 0 {
        let recent: Vec<u64> = finished(previous)
            .rev()
            .take(SPIKE_HISTORY)
            .map(|e| e.rows_batch)
            .collect();
        if recent.len() >= SPIKE_MIN_HISTORY {
            let avg = recent.iter().sum::<u64>() as f64 / recent.len() as f64;
            if avg > 0.0 && run.rows_batch as f64 > monitor.spike_factor * avg {
                alerts.push(Alert::fired(
                    "spike",
                    format!(
                        "batch of {} rows is {:.1}× the average of the last {} runs ({avg:.1}; spike_factor {})",
                        run.rows_batch,
                        run.rows_batch as f64 / avg,
                        recent.len(),
                        monitor.spike_factor
                    ),
                ));
            }
        }
    }
    if monitor.schema_change
        && let Some(change) = run.schema.as_ref().filter(|c| !c.is_empty())
    {
        alerts.push(Alert::fired(
            "schema_change",
            format!(
                "the schema contract changed the run's columns: {}",
                change.summary()
            ),
        ));
    }
    let warned: Vec<String> = run
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| {
            format!(
                "`{}` returned {} (expected {})",
                c.name,
                crate::checks::shown(c.value),
                c.expectation
            )
        })
        .collect();
    if !warned.is_empty() {
        alerts.push(Alert::fired(
            "check",
            format!(
                "check(s) failed, batch published (on_fail = \"warn\"): {}",
                warned.join("; ")
            ),
        ));
    }
    if let Some(sla) = monitor.sla_ms
        && run_duration_ms > sla
    {
        alerts.push(Alert::fired(
            "sla",
            format!(
                "run took {} (sla {})",
                human_ms(run_duration_ms),
                human_ms(sla)
            ),
        ));
    }
    alerts
}

/// The alerts active now for `status`: the lag rule against the clock, and the last finished
/// run's run-history rules (empty streak, spike, sla) as it recorded them.
pub fn active(
    monitor: &MonitorSpec,
    ledger: &[LedgerEntry],
    wm: Option<&Watermark>,
    now_ms: i64,
) -> Vec<Alert> {
    let mut alerts: Vec<Alert> = lag_alert(monitor, wm, now_ms).into_iter().collect();
    if let Some(last) = ledger
        .iter()
        .rev()
        .find(|e| e.status == "succeeded" || e.status == "empty")
    {
        alerts.extend(last.alerts.iter().filter(|a| a.rule != "lag").cloned());
    }
    alerts
}

/// `90 ms`, `12.3 s`, `4 m 05 s`, `3 h 20 m`, `2 d 4 h`.
pub fn human_ms(ms: u64) -> String {
    let s = ms / 1000;
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} m {:02} s", s / 60, s % 60),
        3_600_000..86_400_000 => format!("{} h {:02} m", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(status: &str, rows: u64) -> LedgerEntry {
        LedgerEntry {
            status: status.into(),
            rows_batch: rows,
            ..Default::default()
        }
    }

    fn monitor() -> MonitorSpec {
        MonitorSpec::default()
    }

    fn rules(a: &[Alert]) -> Vec<&str> {
        a.iter().map(|a| a.rule.as_str()).collect()
    }

    #[test]
    fn empty_streak_fires_at_the_threshold_and_failures_do_not_break_it() {
        let m = monitor();
        let prev = vec![entry("succeeded", 5), entry("empty", 0), entry("failed", 0)];
        let run = entry("empty", 0);
        assert!(evaluate(&m, &prev, &run, 10, None, 0).is_empty());
        let prev = vec![entry("empty", 0), entry("failed", 0), entry("empty", 0)];
        assert_eq!(
            rules(&evaluate(&m, &prev, &run, 10, None, 0)),
            ["empty_runs"]
        );
        let off = MonitorSpec {
            empty_runs_alert: 0,
            ..m
        };
        assert!(evaluate(&off, &prev, &run, 10, None, 0).is_empty());
    }

    #[test]
    fn spike_needs_history_and_a_factor_above_the_average() {
        let m = monitor();
        let two = vec![entry("succeeded", 10), entry("succeeded", 10)];
        assert!(evaluate(&m, &two, &entry("succeeded", 1000), 1, None, 0).is_empty());
        let three = vec![
            entry("succeeded", 10),
            entry("empty", 0),
            entry("succeeded", 20),
        ];
        // average 10: 100 is 10× (not above), 101 is above.
        assert!(evaluate(&m, &three, &entry("succeeded", 100), 1, None, 0).is_empty());
        assert_eq!(
            rules(&evaluate(&m, &three, &entry("succeeded", 101), 1, None, 0)),
            ["spike"]
        );
    }

    #[test]
    fn lag_uses_the_cursor_value_for_timestamps_and_updated_at_for_integers() {
        let m = monitor();
        let hour_us = 3_600_000_000i64;
        let now_ms = 100 * 3_600_000;
        let ts = Watermark::sample(1, 97 * hour_us, CursorType::Timestamp);
        assert_eq!(watermark_lag_ms(Some(&ts), now_ms), Some(3 * 3_600_000));
        assert_eq!(
            rules(&evaluate(
                &m,
                &[],
                &entry("succeeded", 1),
                1,
                Some(&ts),
                now_ms
            )),
            ["lag"]
        );
        let fresh = Watermark::sample(1, 99 * hour_us, CursorType::Timestamp);
        assert!(lag_alert(&m, Some(&fresh), now_ms).is_none());
        let int = Watermark::sample(1, 12, CursorType::Integer);
        let updated = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .timestamp_millis();
        assert_eq!(watermark_lag_ms(Some(&int), updated + 5), Some(5));
    }

    #[test]
    fn sla_fires_only_above_the_limit() {
        let m = MonitorSpec {
            sla_ms: Some(1000),
            ..monitor()
        };
        assert!(evaluate(&m, &[], &entry("succeeded", 1), 1000, None, 0).is_empty());
        assert_eq!(
            rules(&evaluate(&m, &[], &entry("succeeded", 1), 1001, None, 0)),
            ["sla"]
        );
    }

    #[test]
    fn human_durations_read_well() {
        assert_eq!(human_ms(90), "90 ms");
        assert_eq!(human_ms(12_345), "12.3 s");
        assert_eq!(human_ms(245_000), "4 m 05 s");
        assert_eq!(human_ms(12_000_000), "3 h 20 m");
    }
}
