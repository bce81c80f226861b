//! The power-cut model: the states a power cut may leave after a recorded sequence of file
//! operations, under POSIX rules. A write not yet fsync'd may be lost or torn; a rename or a
//! creation not followed by an fsync of its directory may be undone.
//!
//! Tests record the operations of a real commit step with [`super::fsio::record`], enumerate
//! every crash state with [`crash_states`], materialise each one into a directory and run
//! recovery on it. The same enumeration with one fsync removed from the sequence must find a
//! bad state: that is how the model shows each fsync is needed.

use super::fsio::FsOp;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a file may hold after a crash.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Inode {
    durable: Vec<u8>,
    volatile: Vec<u8>,
}

/// A simulated directory tree: per directory, the durable and the volatile name → inode maps.
#[derive(Debug, Clone, Default)]
struct Model {
    inodes: Vec<Inode>,
    durable: BTreeMap<PathBuf, usize>,
    volatile: BTreeMap<PathBuf, usize>,
}

impl Model {
    fn from_disk(files: &BTreeMap<PathBuf, Vec<u8>>) -> Self {
        let mut m = Model::default();
        for (p, bytes) in files {
            m.inodes.push(Inode {
                durable: bytes.clone(),
                volatile: bytes.clone(),
            });
            m.durable.insert(p.clone(), m.inodes.len() - 1);
            m.volatile.insert(p.clone(), m.inodes.len() - 1);
        }
        m
    }

    fn apply(&mut self, op: &FsOp) {
        match op {
            FsOp::Create(p) => {
                self.inodes.push(Inode {
                    durable: Vec::new(),
                    volatile: Vec::new(),
                });
                self.volatile.insert(p.clone(), self.inodes.len() - 1);
            }
            FsOp::Write(p, b) => {
                if let Some(&i) = self.volatile.get(p) {
                    self.inodes[i].volatile = b.clone();
                }
            }
            FsOp::Append(p, b) => {
                if let Some(&i) = self.volatile.get(p) {
                    self.inodes[i].volatile.extend_from_slice(b);
                }
            }
            FsOp::Fsync(p) => {
                if let Some(&i) = self.volatile.get(p) {
                    self.inodes[i].durable = self.inodes[i].volatile.clone();
                }
            }
            FsOp::Rename(from, to) => {
                if let Some(i) = self.volatile.remove(from) {
                    self.volatile.insert(to.clone(), i);
                }
            }
            FsOp::FsyncDir(dir) => {
                self.durable
                    .retain(|p, _| p.parent() != Some(dir.as_path()));
                for (p, i) in &self.volatile {
                    if p.parent() == Some(dir.as_path()) {
                        self.durable.insert(p.clone(), *i);
                    }
                }
            }
        }
    }

    /// Every state a power cut may leave now: per directory, its durable or its volatile
    /// entries; per file whose data is not durable, the durable data, the volatile data, or
    /// the volatile data torn in half.
    fn crash_states(&self) -> Vec<BTreeMap<PathBuf, Vec<u8>>> {
        let dirs: Vec<PathBuf> = self
            .durable
            .keys()
            .chain(self.volatile.keys())
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut out = Vec::new();
        for dir_mask in 0..(1u32 << dirs.len()) {
            let mut entries: BTreeMap<PathBuf, usize> = BTreeMap::new();
            for (d, dir) in dirs.iter().enumerate() {
                let source = if dir_mask & (1 << d) == 0 {
                    &self.durable
                } else {
                    &self.volatile
                };
                for (p, i) in source {
                    if p.parent() == Some(dir.as_path()) {
                        entries.insert(p.clone(), *i);
                    }
                }
            }
            let dirty: Vec<usize> = entries
                .values()
                .copied()
                .filter(|i| self.inodes[*i].durable != self.inodes[*i].volatile)
                .collect();
            let choices = 3usize.pow(dirty.len() as u32);
            for mut c in 0..choices {
                let mut content: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
                for i in &dirty {
                    let n = &self.inodes[*i];
                    let data = match c % 3 {
                        0 => n.durable.clone(),
                        1 => n.volatile.clone(),
                        // Torn: only bytes not yet durable can be damaged. An append
                        // keeps the durable prefix and loses part of its tail.
                        _ if n.volatile.starts_with(&n.durable) => {
                            let extra = n.volatile.len() - n.durable.len();
                            n.volatile[..n.durable.len() + extra / 2].to_vec()
                        }
                        _ => n.volatile[..n.volatile.len() / 2].to_vec(),
                    };
                    content.insert(*i, data);
                    c /= 3;
                }
                out.push(
                    entries
                        .iter()
                        .map(|(p, i)| {
                            let data = content
                                .get(i)
                                .cloned()
                                .unwrap_or_else(|| self.inodes[*i].durable.clone());
                            (p.clone(), data)
                        })
                        .collect(),
                );
            }
        }
        out
    }
}

/// A crash state, tagged with how many of the recorded operations had happened.
#[derive(Debug, Clone)]
pub struct CrashState {
    /// Operations completed before the cut (`ops.len()` = the step had returned).
    pub completed: usize,
    /// Path → content of every file in the state.
    pub files: BTreeMap<PathBuf, Vec<u8>>,
}

/// Every state a power cut may leave at any point of `ops`, starting from the files `before`.
pub fn crash_states(before: &BTreeMap<PathBuf, Vec<u8>>, ops: &[FsOp]) -> Vec<CrashState> {
    let mut model = Model::from_disk(before);
    let mut out: Vec<CrashState> = model
        .crash_states()
        .into_iter()
        .map(|files| CrashState {
            completed: 0,
            files,
        })
        .collect();
    for (k, op) in ops.iter().enumerate() {
        model.apply(op);
        out.extend(model.crash_states().into_iter().map(|files| CrashState {
            completed: k + 1,
            files,
        }));
    }
    out
}

/// Reads every regular file under `dir` (the state before a step).
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(b) = std::fs::read(&p) {
                out.insert(p, b);
            }
        }
    }
    out
}

/// Replaces the content of `dir` with a crash state.
pub fn materialize(dir: &Path, files: &BTreeMap<PathBuf, Vec<u8>>) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("create state dir");
    for (p, b) in files {
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("create parent");
        }
        std::fs::write(p, b).expect("write state file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::fsio::record;
    use crate::state::ledger::{self, LedgerEntry};
    use crate::state::watermark::{self, Watermark};
    use tidemark_workflows::cursor::CursorType;

    fn wm(run_seq: u64, value: i64) -> Watermark {
        Watermark::sample(run_seq, value, CursorType::Integer)
    }

    /// Records one watermark advance from run 1 to run 2, and checks recovery from every
    /// crash state of `ops` (possibly with an fsync removed). Returns the violations.
    fn watermark_violations(drop_op: Option<fn(&FsOp) -> bool>) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("watermark.json");
        watermark::advance(&path, &wm(1, 10)).unwrap();
        let before = snapshot(dir.path());
        let (res, mut ops) = record(|| watermark::advance(&path, &wm(2, 20)));
        res.unwrap();
        if let Some(pred) = drop_op {
            let i = ops
                .iter()
                .position(pred)
                .expect("the operation to drop exists");
            ops.remove(i);
        }
        let mut bad = Vec::new();
        for s in crash_states(&before, &ops) {
            materialize(dir.path(), &s.files);
            let got = watermark::read(&path);
            let ok = match (&got, s.completed == ops.len()) {
                // After the step returned, the new watermark must be there.
                (Ok(Some(w)), true) => w.run_seq == 2,
                // Before, the old or the new one, never a torn or missing document.
                (Ok(Some(w)), false) => w.run_seq == 1 || w.run_seq == 2,
                _ => false,
            };
            if !ok {
                bad.push(format!("after {} ops: {got:?}", s.completed));
            }
        }
        bad
    }

    #[test]
    fn every_power_cut_during_a_watermark_write_recovers_old_or_new() {
        let bad = watermark_violations(None);
        assert!(bad.is_empty(), "{bad:#?}");
    }

    #[test]
    fn the_watermark_file_fsync_is_needed() {
        let bad = watermark_violations(Some(|op| matches!(op, FsOp::Fsync(_))));
        assert!(
            !bad.is_empty(),
            "without the file fsync a torn document must be possible"
        );
    }

    #[test]
    fn the_watermark_directory_fsync_is_needed() {
        let bad = watermark_violations(Some(|op| matches!(op, FsOp::FsyncDir(_))));
        assert!(
            !bad.is_empty(),
            "without the directory fsync the rename may be undone after return"
        );
    }

    fn entry(run_seq: u64) -> LedgerEntry {
        LedgerEntry {
            run_seq: Some(run_seq),
            status: "succeeded".into(),
            workflow_id: "w".into(),
            run_id: "r".into(),
            started_at: String::new(),
            finished_at: String::new(),
            window_low: None,
            window_high: None,
            rows_extracted: 1,
            rows_deduplicated: 0,
            rows_late: 0,
            rows_quarantined: 0,
            rows_inserted: 1,
            rows_updated: 0,
            watermark_before: None,
            watermark_after: None,
            target_version: None,
            durations_ms: Default::default(),
            error: None,
            ..Default::default()
        }
    }

    /// Appends run 2 (after run 1 when `existing`, else to a new ledger) and checks every
    /// crash state, with the operations matching `drop` removed.
    fn ledger_violations(existing: bool, drop: fn(&FsOp) -> bool) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        if existing {
            ledger::append(&path, &entry(1)).unwrap();
        }
        let before = snapshot(dir.path());
        let (res, mut ops) = record(|| ledger::append(&path, &entry(2)));
        res.unwrap();
        ops.retain(|op| !drop(op));
        let old: Vec<Option<u64>> = if existing { vec![Some(1)] } else { vec![] };
        let mut new = old.clone();
        new.push(Some(2));
        let mut bad = Vec::new();
        for s in crash_states(&before, &ops) {
            materialize(dir.path(), &s.files);
            let seqs: Vec<Option<u64>> = ledger::read_all(&path)
                .unwrap()
                .iter()
                .map(|e| e.run_seq)
                .collect();
            let ok = if s.completed == ops.len() {
                seqs == new
            } else {
                seqs == old || seqs == new
            };
            if !ok {
                bad.push(format!("after {} ops: {seqs:?}", s.completed));
            }
        }
        bad
    }

    #[test]
    fn every_power_cut_during_a_ledger_append_keeps_old_entries_and_drops_torn_lines() {
        for existing in [true, false] {
            let bad = ledger_violations(existing, |_| false);
            assert!(bad.is_empty(), "existing={existing}: {bad:#?}");
        }
    }

    #[test]
    fn the_ledger_fsync_is_needed() {
        assert!(!ledger_violations(true, |op| matches!(op, FsOp::Fsync(_))).is_empty());
    }

    #[test]
    fn the_ledger_directory_fsync_is_needed_when_the_ledger_is_created() {
        assert!(!ledger_violations(false, |op| matches!(op, FsOp::FsyncDir(_))).is_empty());
    }

    #[test]
    fn the_model_undoes_an_unsynced_rename() {
        let before = BTreeMap::new();
        let ops = vec![
            FsOp::Create("/d/a.tmp".into()),
            FsOp::Write("/d/a.tmp".into(), b"x".to_vec()),
            FsOp::Fsync("/d/a.tmp".into()),
            FsOp::Rename("/d/a.tmp".into(), "/d/a".into()),
        ];
        let states = crash_states(&before, &ops);
        assert!(
            states
                .iter()
                .any(|s| s.completed == 4 && !s.files.contains_key(Path::new("/d/a")))
        );
    }
}
