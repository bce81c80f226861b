//! The summary table at the top of `docs/benchmarks.md`: one row per scenario (tidemark's
//! median, the peer's, the ratio, tidemark's min–max, the target and whether it was met).
//! Each benchmark saves its rows beside the report (`bench/summary-<name>.json`), and the
//! table is rebuilt from every saved file, so re-running one scenario keeps the others' rows.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// One row of the summary table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Row {
    /// `S1` … `S6` (the table is sorted by it, then by the order rows were given).
    pub scenario: String,
    /// What the row measures.
    pub measure: String,
    /// tidemark's median, with its unit.
    pub tidemark: String,
    /// The peer's median (or the reference the scenario compares with).
    pub peer: String,
    /// The ratio the target is about.
    pub ratio: String,
    /// tidemark's min–max.
    pub min_max: String,
    /// The target, as the issue states it.
    pub target: String,
    /// Met, missed, or `None` when the scenario has no pass/fail target.
    pub met: Option<bool>,
}

/// Saves `rows` as `name`'s part of the summary and rewrites the summary section of `report`.
pub fn publish(report: &Path, name: &str, rows: &[Row]) -> anyhow::Result<()> {
    let dir = super::figures_dir(report);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join(format!("summary-{name}.json")),
        serde_json::to_string_pretty(rows)?,
    )?;
    let mut all = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("summary-") && n.ends_with(".json"))
        })
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f)?;
        let rows: Vec<Row> = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{} is not a summary file: {e}", f.display()))?;
        all.extend(rows);
    }
    super::report::write_section_first(report, "summary", &markdown(&all))
}

/// The summary table, sorted by scenario (stable: a scenario's rows keep their order).
pub fn markdown(rows: &[Row]) -> String {
    let mut rows = rows.to_vec();
    rows.sort_by(|a, b| a.scenario.cmp(&b.scenario));
    let mut s = String::from(
        "## Summary\n\n| scenario | measure | tidemark (median) | peer (median) | ratio | tidemark min–max | target | met |\n|---|---|---:|---:|---:|---:|---|:---:|\n",
    );
    for r in &rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "–",
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {met} |\n",
            r.scenario, r.measure, r.tidemark, r.peer, r.ratio, r.min_max, r.target
        ));
    }
    s.push_str(
        "\nEach scenario's section below has the set-up, every size measured, and, for a missed target, what bounds it.\n",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(scenario: &str, met: Option<bool>) -> Row {
        Row {
            scenario: scenario.into(),
            measure: "m".into(),
            tidemark: "1 s".into(),
            peer: "2 s".into(),
            ratio: "0.50×".into(),
            min_max: "0.9–1.1 s".into(),
            target: "≤ 0.5×".into(),
            met,
        }
    }

    #[test]
    fn rows_from_every_scenario_file_are_merged_in_scenario_order() {
        let dir = tempfile::tempdir().unwrap();
        let report = dir.path().join("benchmarks.md");
        std::fs::write(
            &report,
            "# B\n\nintro\n<!-- bench:x -->\nx\n<!-- /bench:x -->\n",
        )
        .unwrap();
        publish(&report, "cdc", &[row("S3", Some(true))]).unwrap();
        publish(&report, "merge", &[row("S1", Some(false)), row("S2", None)]).unwrap();
        publish(&report, "cdc", &[row("S3", Some(false))]).unwrap();
        let text = std::fs::read_to_string(&report).unwrap();
        let (s1, s2, s3) = (
            text.find("| S1 |").unwrap(),
            text.find("| S2 |").unwrap(),
            text.find("| S3 |").unwrap(),
        );
        assert!(s1 < s2 && s2 < s3, "{text}");
        assert_eq!(text.matches("| S3 |").count(), 1, "{text}");
        assert!(text.contains("| **no** |\n| S2"), "{text}");
        // The summary goes before the first scenario's section, after the introduction.
        assert!(text.find("intro").unwrap() < s1 && s3 < text.find("bench:x").unwrap());
    }
}
