//! The `[monitor]`, `[schedule]` and `[execution]` sections: alert thresholds, the Temporal
//! Schedule, and how a run's steps execute.

use super::SpecError;
use super::raw::{RawExecution, RawMaintenance, RawMonitor, RawSchedule};
use super::resolve::duration_ms;
use std::path::Path;
use tidemark_workflows::spec::{
    ExecutionSpec, LocalActivities, MaintenanceSpec, MonitorSpec, Overlap, ScheduleSpec,
};

pub(super) fn monitor_of(file: &Path, m: &RawMonitor) -> Result<MonitorSpec, SpecError> {
    let defaults = MonitorSpec::default();
    let max_lag_ms = match &m.max_lag {
        Some(t) => duration_ms(file, "monitor.max_lag", t)?,
        None => defaults.max_lag_ms,
    };
    let sla_ms = match &m.sla {
        Some(t) => duration_ms(file, "monitor.sla", t)?,
        None => defaults.sla_ms,
    };
    let spike_factor = match &m.spike_factor {
        None => defaults.spike_factor,
        Some(toml::Value::Integer(n)) if *n >= 0 => *n as f64,
        Some(toml::Value::Float(f)) if *f >= 0.0 && f.is_finite() => *f,
        Some(other) => {
            return Err(SpecError::at(
                file,
                "monitor.spike_factor",
                format!("{other} is not a non-negative number"),
                "give a factor such as 10 (0 turns the rule off)",
            ));
        }
    };
    if spike_factor > 0.0 && spike_factor <= 1.0 {
        return Err(SpecError::at(
            file,
            "monitor.spike_factor",
            format!("{spike_factor} would flag ordinary batches"),
            "give a factor above 1 (e.g. 10), or 0 to turn the rule off",
        ));
    }
    Ok(MonitorSpec {
        max_lag_ms,
        empty_runs_alert: m.empty_runs_alert.unwrap_or(defaults.empty_runs_alert),
        spike_factor,
        sla_ms,
        schema_change: m.schema_change.unwrap_or(defaults.schema_change),
    })
}

pub(super) fn execution_of(file: &Path, e: &RawExecution) -> Result<ExecutionSpec, SpecError> {
    let defaults = ExecutionSpec::default();
    let local_activities = match e.local_activities.as_deref() {
        None | Some("auto") => LocalActivities::Auto,
        Some("off") => LocalActivities::Off,
        Some(other) => {
            return Err(SpecError::at(
                file,
                "execution.local_activities",
                format!("{other:?} is not a mode"),
                "use \"auto\" (short steps run inside the workflow task; the default) or \"off\" (every step is a regular activity)",
            ));
        }
    };
    let local_max_rows = match e.local_max_rows {
        None => defaults.local_max_rows,
        Some(n) if n >= 0 => n as u64,
        Some(n) => {
            return Err(SpecError::at(
                file,
                "execution.local_max_rows",
                format!("{n} is negative"),
                "give a row count such as 100000 (0 keeps stage and promote regular activities)",
            ));
        }
    };
    let max_batches = match e.max_batches {
        None => defaults.max_batches,
        Some(n) if n >= 1 && n <= i64::from(u32::MAX) => n as u32,
        Some(n) => {
            return Err(SpecError::at(
                file,
                "execution.max_batches",
                format!("{n} is not a positive number of batches"),
                "give the batches one run may commit, e.g. max_batches = 1000 (the rest waits for the next run)",
            ));
        }
    };
    Ok(ExecutionSpec {
        local_activities,
        local_max_rows,
        max_batches,
    })
}

pub(super) fn schedule_of(file: &Path, s: &RawSchedule) -> Result<ScheduleSpec, SpecError> {
    schedule_in(file, "schedule", s)
}

/// A schedule's keys in section `section` (`schedule`, or `maintenance` for the maintenance
/// schedule), named so in errors.
fn schedule_in(file: &Path, section: &str, s: &RawSchedule) -> Result<ScheduleSpec, SpecError> {
    let key = |k: &str| format!("{section}.{k}");
    let every_ms = match &s.every {
        Some(t) => match duration_ms(file, &key("every"), t)? {
            Some(ms) if ms >= 1000 => Some(ms),
            _ => {
                return Err(SpecError::at(
                    file,
                    &key("every"),
                    format!("{t:?} is shorter than a second"),
                    "give an interval of at least 1s (e.g. every = \"15m\")",
                ));
            }
        },
        None => None,
    };
    let cron = s.cron.as_ref().map(|c| c.trim().to_string());
    if let Some(c) = &cron
        && !c.starts_with('@')
        && !(5..=7).contains(&c.split_whitespace().count())
    {
        return Err(SpecError::at(
            file,
            &key("cron"),
            format!("{c:?} does not have 5 fields"),
            "write minute hour day-of-month month day-of-week, e.g. cron = \"*/15 * * * *\"",
        ));
    }
    if cron.is_some() == every_ms.is_some() {
        return Err(SpecError::at(
            file,
            section,
            "needs exactly one of `cron` and `every`",
            "e.g. cron = \"*/15 * * * *\" or every = \"15m\"",
        ));
    }
    let catchup_window_ms = match &s.catchup_window {
        Some(t) => duration_ms(file, &key("catchup_window"), t)?.unwrap_or(0),
        None => 60 * 60 * 1000,
    };
    if catchup_window_ms < 10_000 {
        return Err(SpecError::at(
            file,
            &key("catchup_window"),
            "is below Temporal's minimum of 10s",
            "give at least \"10s\" (default \"1h\")",
        ));
    }
    let overlap = match s.overlap.as_deref().unwrap_or("skip") {
        "skip" => Overlap::Skip,
        "buffer_one" => Overlap::BufferOne,
        other => {
            return Err(SpecError::at(
                file,
                &key("overlap"),
                format!("{other:?} would let two runs of one pipeline overlap or is unknown"),
                "use \"skip\" (default) or \"buffer_one\"",
            ));
        }
    };
    let jitter_ms = match &s.jitter {
        Some(t) => duration_ms(file, &key("jitter"), t)?,
        None => None,
    };
    Ok(ScheduleSpec {
        cron,
        every_ms,
        paused: s.paused.unwrap_or(false),
        catchup_window_ms,
        overlap,
        timezone: s.timezone.clone(),
        jitter_ms,
    })
}

pub(super) fn maintenance_of(
    file: &Path,
    m: &RawMaintenance,
) -> Result<MaintenanceSpec, SpecError> {
    let defaults = MaintenanceSpec::default();
    let schedule = if m.cron.is_some() || m.every.is_some() {
        Some(schedule_in(
            file,
            "maintenance",
            &RawSchedule {
                cron: m.cron.clone(),
                every: m.every.clone(),
                paused: m.paused,
                catchup_window: None,
                overlap: None,
                timezone: m.timezone.clone(),
                jitter: m.jitter.clone(),
            },
        )?)
    } else {
        None
    };
    let deleted_fraction = match &m.deleted_fraction {
        None => defaults.deleted_fraction,
        Some(toml::Value::Float(f)) if *f > 0.0 && *f <= 1.0 => *f,
        Some(toml::Value::Integer(1)) => 1.0,
        Some(other) => {
            return Err(SpecError::at(
                file,
                "maintenance.deleted_fraction",
                format!("{other} is not a share in (0, 1]"),
                "give the share of a file's rows deleted that makes it worth rewriting, e.g. 0.2",
            ));
        }
    };
    let mib = |k: &str, v: Option<i64>, default: u64| -> Result<u64, SpecError> {
        match v {
            None => Ok(default),
            Some(n) if n >= 0 => Ok((n as u64) << 20),
            Some(n) => Err(SpecError::at(
                file,
                &format!("maintenance.{k}"),
                format!("{n} is negative"),
                "give a size in MiB (0 turns small-file compaction off)",
            )),
        }
    };
    let small_file_bytes = mib("small_file_mb", m.small_file_mb, defaults.small_file_bytes)?;
    let target_file_bytes = mib(
        "target_file_mb",
        m.target_file_mb,
        defaults.target_file_bytes,
    )?;
    if target_file_bytes == 0 {
        return Err(SpecError::at(
            file,
            "maintenance.target_file_mb",
            "is 0",
            "give the size compacted files aim at, e.g. 128",
        ));
    }
    let vacuum_retention_ms = match &m.vacuum_retention {
        None => defaults.vacuum_retention_ms,
        // "0s" is a retention too: the floor (the longest run) alone.
        Some(t) if crate::cursor::parse_duration_micros(t) == Some(0) => 0,
        Some(t) => duration_ms(file, "maintenance.vacuum_retention", t)?.unwrap_or(0),
    };
    Ok(MaintenanceSpec {
        schedule,
        deleted_fraction,
        small_file_bytes,
        target_file_bytes,
        vacuum_retention_ms,
        checkpoint: m.checkpoint.unwrap_or(defaults.checkpoint),
    })
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{GOOD, err};
    use super::super::parse;
    use std::path::Path;
    use tidemark_workflows::spec::{ExecutionSpec, LocalActivities, MonitorSpec, Overlap};

    #[test]
    fn the_execution_table_defaults_to_local_activities_and_names_bad_values() {
        let s = parse(GOOD, Path::new("/x/spec.toml")).unwrap();
        assert_eq!(s.execution, ExecutionSpec::default());
        assert_eq!(s.execution.local_activities, LocalActivities::Auto);
        let text = format!("{GOOD}[execution]\nlocal_activities = \"off\"\nlocal_max_rows = 10\n");
        let s = parse(&text, Path::new("/x/spec.toml")).unwrap();
        assert_eq!(s.execution.local_activities, LocalActivities::Off);
        assert_eq!(s.execution.local_max_rows, 10);
        for (extra, needle) in [
            (
                "[execution]\nlocal_activities = \"always\"\n",
                "execution.local_activities",
            ),
            (
                "[execution]\nlocal_max_rows = -1\n",
                "execution.local_max_rows",
            ),
            ("[execution]\nlocal = true\n", "unknown field"),
            ("[execution]\nmax_batches = 0\n", "execution.max_batches"),
        ] {
            let e = err(&format!("{GOOD}{extra}"));
            assert!(e.contains(needle), "{extra}: {e}");
        }
    }

    #[test]
    fn monitor_and_schedule_tables_resolve_with_defaults_and_name_bad_keys() {
        let s = parse(GOOD, Path::new("/x/spec.toml")).unwrap();
        assert_eq!(s.monitor, MonitorSpec::default());
        assert_eq!(s.schedule, None);
        let text = format!(
            "{GOOD}[monitor]\nmax_lag = \"off\"\nsla = \"90s\"\nspike_factor = 4.5\n[schedule]\nevery = \"15m\"\n"
        );
        let s = parse(&text, Path::new("/x/spec.toml")).unwrap();
        assert_eq!(s.monitor.max_lag_ms, None);
        assert_eq!(s.monitor.sla_ms, Some(90_000));
        assert_eq!(s.monitor.spike_factor, 4.5);
        assert_eq!(s.monitor.empty_runs_alert, 3);
        let sched = s.schedule.unwrap();
        assert_eq!(sched.every_ms, Some(900_000));
        assert_eq!(sched.overlap, Overlap::Skip);
        assert_eq!(sched.catchup_window_ms, 3_600_000);
        for (extra, needle) in [
            ("[schedule]\n", "exactly one of `cron` and `every`"),
            ("[schedule]\ncron = \"* *\"\n", "does not have 5 fields"),
            (
                "[schedule]\nevery = \"1m\"\noverlap = \"allow_all\"\n",
                "schedule.overlap",
            ),
            ("[schedule]\nevery = \"soon\"\n", "is not a duration"),
            ("[monitor]\nspike_factor = 1\n", "monitor.spike_factor"),
            ("[monitor]\nmax_lagg = \"1h\"\n", "unknown field"),
        ] {
            let e = err(&format!("{GOOD}{extra}"));
            assert!(e.contains(needle), "{extra}: {e}");
        }
    }
}
