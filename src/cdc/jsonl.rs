//! The `debezium-jsonl` reader: Debezium envelopes, one per line, from the files of a
//! directory (or an absolute glob), or the objects directly under an object-store prefix, in
//! name order. A file's position is the byte offset after its last consumed line (with its
//! line number, for messages); files may grow between runs (an object may be replaced by a
//! longer one). An unterminated last line is consumed only once it is a complete JSON
//! document (a writer may be in the middle of it). Objects are read from the position on by
//! ranged GETs of a bounded size, never whole.

use super::{Limits, Origin, ReadOutcome};
use crate::error::{EngineError, Result};
use crate::storage::{Location, Remote};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The position key holding a file's line count next to its byte offset.
fn line_key(file: &str) -> String {
    format!("{file}@line")
}

/// Whether a file name is an event file's.
fn is_event_file(name: &str) -> bool {
    matches!(
        Path::new(name).extension().and_then(|e| e.to_str()),
        Some("jsonl" | "ndjson" | "json")
    )
}

/// Lists the event files: `*.jsonl`, `*.ndjson` and `*.json` of a directory, or an absolute
/// glob's matches, sorted by name.
pub fn list_files(path: &str) -> Result<Vec<PathBuf>> {
    let p = Path::new(path);
    let mut files: Vec<PathBuf> = if p.is_dir() {
        std::fs::read_dir(p)
            .map_err(|e| EngineError::io(format!("list {path}"), e))?
            .flatten()
            .map(|e| e.path())
            .filter(|f| f.is_file() && is_event_file(&f.to_string_lossy()))
            .collect()
    } else if path.contains(['*', '?', '[']) {
        glob::glob(path)
            .map_err(|e| {
                EngineError::Spec(format!("source.path {path:?} is not a valid glob: {e}"))
            })?
            .flatten()
            .filter(|f| f.is_file())
            .collect()
    } else if p.is_file() {
        vec![p.to_path_buf()]
    } else {
        return Err(EngineError::SourceMissing(format!(
            "{path} does not exist (source.path of a debezium-jsonl source: a directory of *.jsonl files, or a glob)"
        )));
    };
    files.sort();
    if files.is_empty() {
        return Err(EngineError::SourceMissing(format!(
            "{path} holds no *.jsonl event files"
        )));
    }
    Ok(files)
}

/// The name a file's position is stored under: its name within the source directory (so the
/// directory may move), or its full path for a glob or a single file.
fn position_name(source: &str, file: &Path) -> String {
    if Path::new(source).is_dir()
        && let Some(name) = file.file_name()
    {
        return name.to_string_lossy().into_owned();
    }
    file.to_string_lossy().into_owned()
}

/// One event file, local or an object.
enum EventFile {
    Local(PathBuf),
    Object {
        remote: Remote,
        key: String,
        size: u64,
    },
}

impl EventFile {
    /// Its name in messages and event origins.
    fn name(&self) -> String {
        match self {
            EventFile::Local(p) => p.to_string_lossy().into_owned(),
            EventFile::Object { remote, key, .. } => remote.url_of(key),
        }
    }

    /// Its length now.
    fn len(&self) -> Result<u64> {
        match self {
            EventFile::Local(p) => std::fs::metadata(p)
                .map(|m| m.len())
                .map_err(|e| EngineError::io(format!("stat {}", p.display()), e)),
            EventFile::Object { size, .. } => Ok(*size),
        }
    }

    /// Its length now and a reader from byte `start` on.
    fn open_at(&self, start: u64) -> Result<(u64, Box<dyn BufRead>)> {
        let name = self.name();
        match self {
            EventFile::Local(p) => {
                let mut f = std::fs::File::open(p)
                    .map_err(|e| EngineError::io(format!("open {name}"), e))?;
                let len = f
                    .metadata()
                    .map_err(|e| EngineError::io(format!("stat {name}"), e))?
                    .len();
                if start <= len {
                    f.seek(SeekFrom::Start(start))
                        .map_err(|e| EngineError::io(format!("seek {name}"), e))?;
                }
                Ok((len, Box::new(BufReader::with_capacity(1 << 20, f))))
            }
            EventFile::Object { remote, key, size } => {
                let reader = remote.range_reader(key, start.min(*size)..*size);
                Ok((*size, Box::new(BufReader::with_capacity(1 << 20, reader))))
            }
        }
    }
}

/// The event files of `path` with their position names.
fn event_files(path: &str) -> Result<Vec<(String, EventFile)>> {
    let url = match crate::storage::parse(path)? {
        Location::Local(_) => {
            return Ok(list_files(path)?
                .into_iter()
                .map(|f| (position_name(path, &f), EventFile::Local(f)))
                .collect());
        }
        Location::Remote(url) => url,
    };
    if path.contains(['*', '?', '[']) {
        return Err(EngineError::Spec(format!(
            "source.path {path:?}: globs are not supported on object storage; give the prefix that holds the event files"
        )));
    }
    // A URL naming one event file reads that object; otherwise the objects directly under
    // the prefix, by name.
    let (prefix, only) = match url.path().rsplit_once('/') {
        Some((parent, name)) if is_event_file(name) => {
            let mut p = url.clone();
            p.set_path(parent);
            (p, Some(name.to_string()))
        }
        _ => (url.clone(), None),
    };
    let remote = Remote::open(&prefix, &Default::default())?;
    let files: Vec<(String, EventFile)> = remote
        .list_files("")?
        .into_iter()
        .filter(|(k, _)| match &only {
            Some(name) => k == name,
            None => is_event_file(k),
        })
        .map(|(key, size)| {
            let file = EventFile::Object {
                remote: remote.clone(),
                key: key.clone(),
                size,
            };
            (key, file)
        })
        .collect();
    if files.is_empty() {
        return Err(EngineError::SourceMissing(format!(
            "{path} holds no *.jsonl event objects"
        )));
    }
    Ok(files)
}

/// Reads the events past `positions` up to the batch's `limits`, calling `each` for every
/// line in order.
pub fn read(
    path: &str,
    positions: &BTreeMap<String, i64>,
    limits: Limits,
    each: &mut dyn FnMut(Origin<'_>, &[u8]) -> Result<()>,
) -> Result<ReadOutcome> {
    let files = event_files(path)?;
    let mut out = ReadOutcome {
        positions: positions.clone(),
        sources: files.len() as u64,
        events: 0,
        limited: false,
    };
    let mut bytes = 0u64;
    let mut line = Vec::with_capacity(4096);
    for (i, (key, file)) in files.iter().enumerate() {
        if limits.reached(out.events, bytes) {
            // Full before this file: more remains if it (or a later one) has unread bytes.
            out.limited = files[i..].iter().any(|(k, f)| {
                f.len()
                    .is_ok_and(|len| len as i64 > positions.get(k).copied().unwrap_or(0))
            });
            break;
        }
        let name = file.name();
        let start = positions.get(key).copied().unwrap_or(0);
        let mut line_no = positions.get(&line_key(key)).copied().unwrap_or(0);
        let (len, mut r) = file.open_at(start.max(0) as u64)?;
        let len = len as i64;
        if len < start {
            return Err(EngineError::CorruptInput {
                path: PathBuf::from(&name),
                reason: format!(
                    "the file is {len} bytes but {start} were already consumed: event files may only grow (was it rewritten?)"
                ),
            });
        }
        if len == start {
            continue;
        }
        let mut offset = start;
        loop {
            if limits.reached(out.events, bytes) {
                out.limited = offset < len;
                break;
            }
            line.clear();
            let n = r
                .read_until(b'\n', &mut line)
                .map_err(|e| EngineError::io(format!("read {name}"), e))?;
            if n == 0 {
                break;
            }
            let terminated = line.last() == Some(&b'\n');
            let mut body: &[u8] = &line;
            while let Some((b'\n' | b'\r', rest)) = body.split_last() {
                body = rest;
            }
            if !terminated && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() {
                break; // a line still being written
            }
            offset += n as i64;
            line_no += 1;
            if body.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            out.events += 1;
            bytes += n as u64;
            each(
                Origin {
                    source: &name,
                    at: line_no,
                    unit: "line",
                },
                body,
            )?;
        }
        out.positions.insert(key.clone(), offset);
        out.positions.insert(line_key(key), line_no);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(
        path: &str,
        pos: &BTreeMap<String, i64>,
        max: u64,
    ) -> (Vec<(i64, String)>, ReadOutcome) {
        let mut seen = Vec::new();
        let limits = Limits {
            events: max,
            bytes: u64::MAX,
        };
        let out = read(path, pos, limits, &mut |o, b| {
            seen.push((o.at, String::from_utf8_lossy(b).into_owned()));
            Ok(())
        })
        .unwrap();
        (seen, out)
    }

    #[test]
    fn resumes_at_the_position_and_waits_for_a_partial_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.jsonl");
        std::fs::write(&f, "{\"n\":1}\n\n{\"n\":2}\n{\"n\":").unwrap();
        let d = dir.path().to_string_lossy().into_owned();
        let (seen, out) = collect(&d, &BTreeMap::new(), 10);
        assert_eq!(seen, vec![(1, "{\"n\":1}".into()), (3, "{\"n\":2}".into())]);
        assert_eq!(out.events, 2);
        // The writer finishes the line (without a newline yet) and adds nothing else.
        std::fs::write(&f, "{\"n\":1}\n\n{\"n\":2}\n{\"n\":3}").unwrap();
        let (seen, out2) = collect(&d, &out.positions, 10);
        assert_eq!(seen, vec![(4, "{\"n\":3}".into())]);
        let (seen, _) = collect(&d, &out2.positions, 10);
        assert!(seen.is_empty());
        // max_events bounds a batch, and says that more remains.
        let (seen, out) = collect(&d, &BTreeMap::new(), 1);
        assert_eq!(seen.len(), 1);
        assert!(out.limited);
        let (_, out) = collect(&d, &BTreeMap::new(), 3);
        assert!(!out.limited, "all read");
    }

    #[test]
    fn a_shrunken_file_is_refused_and_a_missing_path_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.jsonl");
        std::fs::write(&f, "{}\n{}\n").unwrap();
        let d = dir.path().to_string_lossy().into_owned();
        let (_, out) = collect(&d, &BTreeMap::new(), 10);
        std::fs::write(&f, "{}\n").unwrap();
        let ten = Limits {
            events: 10,
            bytes: u64::MAX,
        };
        let err = read(&d, &out.positions, ten, &mut |_, _| Ok(())).unwrap_err();
        assert!(err.to_string().contains("may only grow"), "{err}");
        let err = read("/nonexistent/x", &BTreeMap::new(), ten, &mut |_, _| Ok(())).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
}
