//! Object storage: what a location string names (a local path, or an `s3://` / `gs://` /
//! `az://` / `abfss://` URL), a handle on one prefix of a bucket with the few blocking
//! operations tidemark needs (get with its ETag, conditional put, list, delete, upload and
//! download of a file), and local copies of remote files for the code that reads a path.
//!
//! Credentials are never ours to hold: each store is built, when an activity runs, from the
//! cloud's standard environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`, instance and web-identity
//! roles) plus the non-secret `storage_options` of the spec, which refuse secret-looking keys.
//!
//! The state store's trait is synchronous and is called from async activity code, so every
//! operation runs on this module's own runtime, driven from a scoped thread: blocking the
//! caller's thread, never nesting a runtime inside another.

use crate::error::{EngineError, Result};
use futures::StreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use url::Url;

/// The URL schemes tidemark reads and writes through `object_store`.
pub const SCHEMES: &[&str] = &["s3", "s3a", "gs", "az", "abfs", "abfss", "azure"];

/// The default of [`multipart_threshold`].
const SINGLE_PUT_BYTES: u64 = 16 << 20;

/// What a path or URL in a spec names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local (POSIX) path; `file://` URLs land here too.
    Local(PathBuf),
    /// An object-store URL (one of [`SCHEMES`]).
    Remote(Url),
}

/// Whether `s` is an object-store URL (not a local path or a `file://` URL).
pub fn is_remote(s: &str) -> bool {
    matches!(parse(s), Ok(Location::Remote(_)))
}

/// Parses a location: `scheme://…` for one of [`SCHEMES`] or `file://`, anything else a path.
pub fn parse(s: &str) -> Result<Location> {
    let Some((scheme, _)) = s.split_once("://") else {
        return Ok(Location::Local(PathBuf::from(s)));
    };
    let scheme = scheme.to_ascii_lowercase();
    let url = Url::parse(s).map_err(|e| EngineError::Spec(format!("{s:?} is not a URL: {e}")))?;
    if scheme == "file" {
        let path = url
            .to_file_path()
            .map_err(|_| EngineError::Spec(format!("{s:?} is not a local file URL")))?;
        return Ok(Location::Local(path));
    }
    if !SCHEMES.contains(&scheme.as_str()) {
        return Err(EngineError::Spec(format!(
            "{s:?}: unsupported URL scheme `{scheme}://` (tidemark reads and writes local paths, file://, s3://, gs://, az:// and abfss://)"
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(EngineError::Spec(format!(
            "{s:?} names no bucket or container"
        )));
    }
    Ok(Location::Remote(url))
}

/// `storage_options` keys that hold (or name) credentials: they belong in the worker's
/// environment, never in a spec (a spec travels into workflow inputs and histories).
pub fn secret_option(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "secret",
        "password",
        "token",
        "access_key",
        "account_key",
        "sas",
        "credential",
        "service_account",
        "client_id",
        "private",
    ]
    .iter()
    .any(|s| k.contains(s))
        || k.ends_with("_key")
        || k == "key"
}

/// The runtime object-store I/O runs on (see the module doc).
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tidemark-storage")
        .enable_all()
        .build()
        .expect("object-store runtime")
});

/// Runs `f` to completion on the storage runtime, blocking the calling thread (which may be
/// a worker thread of another runtime).
pub fn block_on<F>(f: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| RUNTIME.block_on(f))
            .join()
            .expect("object-store call panicked")
    })
}

/// What a conditional put found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    /// Written; the object's new ETag, when the store reports one.
    Written(Option<String>),
    /// Refused: a create-only put found the object, or an ETag-matched put found it changed.
    Refused,
}

/// One prefix of one bucket (or container).
#[derive(Clone)]
pub struct Remote {
    store: Arc<dyn ObjectStore>,
    root: ObjPath,
    url: Url,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Remote({})", self.url)
    }
}

impl Remote {
    /// A handle on `url` (bucket and prefix), with the environment's credentials and
    /// `options` (settings such as region or endpoint; the spec loader has already refused
    /// credentials among a spec's options, see [`secret_option`]).
    ///
    /// Options registered for the URL's store by [`use_spec_options`] apply beneath
    /// `options`.
    pub fn open(url: &Url, options: &BTreeMap<String, String>) -> Result<Remote> {
        let mut merged = registered_options(url);
        merged.extend(options.iter().map(|(k, v)| (k.clone(), v.clone())));
        let store = build_store(url, &merged)?;
        let root = ObjPath::from_url_path(url.path()).map_err(|e| {
            EngineError::Spec(format!("{url}: the path is not a valid object key: {e}"))
        })?;
        Ok(Remote {
            store,
            root,
            url: url.clone(),
        })
    }

    /// A handle on a sub-prefix of this one.
    pub fn child(&self, rel: &str) -> Remote {
        Remote {
            store: self.store.clone(),
            root: self.key(rel),
            url: self
                .url_of(rel)
                .parse()
                .unwrap_or_else(|_| self.url.clone()),
        }
    }

    /// The URL of `rel` under this prefix (for manifests and messages).
    pub fn url_of(&self, rel: &str) -> String {
        let base = self.url.as_str().trim_end_matches('/');
        if rel.is_empty() {
            base.to_string()
        } else {
            format!("{base}/{rel}")
        }
    }

    /// This prefix's URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    fn key(&self, rel: &str) -> ObjPath {
        rel.split('/')
            .filter(|p| !p.is_empty())
            .fold(self.root.clone(), |k, part| k.join(part))
    }

    /// The store itself, for callers that talk to it directly.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    fn err(&self, what: &str, rel: &str, e: object_store::Error) -> EngineError {
        EngineError::Storage {
            context: format!("{what} {}", self.url_of(rel)),
            source: e,
        }
    }

    /// The object's bytes and ETag; `None` when there is no such object.
    pub fn get(&self, rel: &str) -> Result<Option<(Vec<u8>, Option<String>)>> {
        let key = self.key(rel);
        block_on(async {
            match self.store.get(&key).await {
                Ok(r) => {
                    let etag = r.meta.e_tag.clone();
                    let bytes = r.bytes().await.map_err(|e| self.err("read", rel, e))?;
                    Ok(Some((bytes.to_vec(), etag)))
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.err("read", rel, e)),
            }
        })
    }

    /// Whether the object exists.
    pub fn exists(&self, rel: &str) -> Result<bool> {
        let key = self.key(rel);
        block_on(async {
            match self.store.head(&key).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(self.err("stat", rel, e)),
            }
        })
    }

    /// Puts `bytes` at `rel` (one PUT: a reader sees the old or the new object). `Create`
    /// writes only if absent; `Update` only if the object still has the given ETag.
    pub fn put(&self, rel: &str, bytes: &[u8], mode: PutMode) -> Result<PutOutcome> {
        let key = self.key(rel);
        let payload = PutPayload::from(bytes.to_vec());
        block_on(async {
            match self
                .store
                .put_opts(&key, payload, PutOptions::from(mode))
                .await
            {
                Ok(r) => Ok(PutOutcome::Written(r.e_tag)),
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) => Ok(PutOutcome::Refused),
                Err(e) => Err(self.err("write", rel, e)),
            }
        })
    }

    /// Replaces the object at `rel` unconditionally.
    pub fn put_overwrite(&self, rel: &str, bytes: &[u8]) -> Result<()> {
        self.put(rel, bytes, PutMode::Overwrite).map(|_| ())
    }

    /// The put mode that replaces an object only while it still has `etag`.
    pub fn if_etag(etag: Option<String>) -> PutMode {
        PutMode::Update(UpdateVersion {
            e_tag: etag,
            version: None,
        })
    }

    /// `location` relative to this prefix, `None` when it lies outside it.
    fn relative(&self, location: &ObjPath) -> Option<String> {
        let parts = location.prefix_match(&self.root)?;
        Some(
            parts
                .map(|p| p.as_ref().to_string())
                .collect::<Vec<_>>()
                .join("/"),
        )
    }

    /// One delimiter listing of `rel`: the objects directly under it and its sub-prefixes.
    fn list_one_level(&self, rel: &str) -> Result<object_store::ListResult> {
        let prefix = self.key(rel);
        block_on(self.store.list_with_delimiter(Some(&prefix)))
            .map_err(|e| self.err("list", rel, e))
    }

    /// Keys (relative to this prefix) of every object under `rel`, sorted.
    pub fn list(&self, rel: &str) -> Result<Vec<String>> {
        let prefix = self.key(rel);
        let mut keys = block_on(async {
            let mut out = Vec::new();
            let mut stream = self.store.list(Some(&prefix));
            while let Some(meta) = stream.next().await {
                let meta = meta.map_err(|e| self.err("list", rel, e))?;
                out.extend(self.relative(&meta.location));
            }
            Ok::<_, EngineError>(out)
        })?;
        keys.sort();
        Ok(keys)
    }

    /// Keys (relative to this prefix) and sizes of the objects directly under `rel` (one
    /// delimiter listing, no recursion), sorted by key.
    pub fn list_files(&self, rel: &str) -> Result<Vec<(String, u64)>> {
        let mut out: Vec<(String, u64)> = self
            .list_one_level(rel)?
            .objects
            .iter()
            .filter_map(|m| Some((self.relative(&m.location)?, m.size)))
            .collect();
        out.sort();
        Ok(out)
    }

    /// The store's path of `rel` under this prefix, for readers that talk to the store
    /// directly (a Parquet footer reader).
    pub fn object_path(&self, rel: &str) -> ObjPath {
        self.key(rel)
    }

    /// Names of the "directories" directly under `rel` (one delimiter listing), sorted.
    pub fn list_dirs(&self, rel: &str) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .list_one_level(rel)?
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Deletes the object at `rel` (absent is fine).
    pub fn delete(&self, rel: &str) -> Result<()> {
        let key = self.key(rel);
        block_on(async {
            match self.store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(self.err("delete", rel, e)),
            }
        })
    }

    /// Deletes every object under `rel`.
    pub fn delete_prefix(&self, rel: &str) -> Result<()> {
        let base = rel.trim_end_matches('/');
        for key in self.list(base)? {
            // `list` of `a/b` also matches `a/bc`: only whole path segments count.
            if key == base || key.starts_with(&format!("{base}/")) || base.is_empty() {
                self.delete(&key)?;
            }
        }
        Ok(())
    }

    /// Uploads the local file `local` to `rel`; returns its size. The object appears whole
    /// or not at all: one PUT up to [`multipart_threshold`] bytes, else a multipart upload
    /// of [`PART_BYTES`] parts (up to four in flight) that appears only when completed.
    /// `crash_point` fires once the first part is stored and before completion (a kill
    /// there leaves an unfinished upload, invisible to readers; before a single PUT for a
    /// small file).
    pub fn upload(
        &self,
        rel: &str,
        local: &Path,
        crash_point: Option<&'static str>,
    ) -> Result<u64> {
        let io = |e| EngineError::io(format!("read {}", local.display()), e);
        let size = std::fs::metadata(local).map_err(io)?.len();
        if size == 0 || size <= multipart_threshold() {
            let bytes = std::fs::read(local).map_err(io)?;
            if let Some(p) = crash_point {
                crate::crash::point(p);
            }
            self.put_overwrite(rel, &bytes)?;
            return Ok(size);
        }
        let mut file = std::fs::File::open(local).map_err(io)?;
        let key = self.key(rel);
        block_on(async {
            let mut upload = self
                .store
                .put_multipart(&key)
                .await
                .map_err(|e| self.err("upload", rel, e))?;
            let parts = async {
                let mut in_flight = futures::stream::FuturesUnordered::new();
                let mut stored = 0usize;
                loop {
                    let part = read_part(&mut file).map_err(io)?;
                    if part.is_empty() {
                        break;
                    }
                    in_flight.push(upload.put_part(PutPayload::from(part)));
                    while in_flight.len() >= 4 || (stored == 0 && !in_flight.is_empty()) {
                        if let Some(done) = in_flight.next().await {
                            done.map_err(|e| self.err("upload", rel, e))?;
                            stored += 1;
                            if stored == 1
                                && let Some(p) = crash_point
                            {
                                crate::crash::point(p);
                            }
                        }
                    }
                }
                while let Some(done) = in_flight.next().await {
                    done.map_err(|e| self.err("upload", rel, e))?;
                }
                Ok::<(), EngineError>(())
            }
            .await;
            match parts {
                Ok(()) => {
                    upload
                        .complete()
                        .await
                        .map_err(|e| self.err("upload", rel, e))?;
                    Ok(size)
                }
                Err(e) => {
                    // Best effort: an unfinished upload is invisible anyway, and a bucket
                    // lifecycle rule removes what an abort misses (docs/targets.md).
                    let _ = upload.abort().await;
                    Err(e)
                }
            }
        })
    }

    /// A reader of bytes `range` of object `rel`, fetched by ranged GETs of at most
    /// [`RANGE_CHUNK`] bytes as it is read (memory stays bounded whatever the object's size).
    pub fn range_reader(&self, rel: &str, range: std::ops::Range<u64>) -> RangeReader {
        RangeReader {
            remote: self.clone(),
            rel: rel.to_string(),
            next: range.start,
            end: range.end,
            chunk: std::io::Cursor::new(Vec::new()),
            chunk_size: RANGE_CHUNK,
        }
    }

    /// Downloads `rel` into the local file `dest` (created); `None` when there is no object.
    pub fn download(&self, rel: &str, dest: &Path) -> Result<Option<u64>> {
        let key = self.key(rel);
        let io = |e| EngineError::io(format!("write {}", dest.display()), e);
        block_on(async {
            let r = match self.store.get(&key).await {
                Ok(r) => r,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(self.err("read", rel, e)),
            };
            let mut file = std::fs::File::create(dest).map_err(io)?;
            let mut n = 0u64;
            let mut stream = r.into_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| self.err("read", rel, e))?;
                file.write_all(&chunk).map_err(io)?;
                n += chunk.len() as u64;
            }
            Ok(Some(n))
        })
    }
}

/// Non-secret `storage_options` by store (`scheme://bucket`), registered from the specs this
/// process runs: every handle on that store, however it is reached (a batch file named in a
/// manifest, a Delta table opened by delta-rs, a source prefix), gets the same settings.
static STORE_OPTIONS: std::sync::LazyLock<
    std::sync::Mutex<BTreeMap<String, BTreeMap<String, String>>>,
> = std::sync::LazyLock::new(Default::default);

/// The store a URL lives on: `scheme://bucket` (or container).
fn store_key(url: &Url) -> String {
    format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default())
}

/// Registers a spec's `[target] storage_options` for every store the spec names on the same
/// kind of store as the target (the table, the quarantine table, `state_dir`, the source):
/// one deployment, one store configuration. Called wherever a spec's stores are opened.
pub fn use_spec_options(spec: &tidemark_workflows::spec::PipelineSpec) {
    let options = &spec.target.storage_options;
    let Ok(Location::Remote(target)) = parse(&spec.target.path) else {
        return;
    };
    if options.is_empty() {
        return;
    }
    let named = [
        Some(&spec.target.path),
        spec.late.quarantine_path.as_ref(),
        Some(&spec.state_dir),
        Some(&spec.source.path),
    ];
    let mut map = STORE_OPTIONS.lock().expect("store options lock");
    for location in named.into_iter().flatten() {
        if let Ok(Location::Remote(url)) = parse(location)
            && url.scheme() == target.scheme()
        {
            map.insert(store_key(&url), options.clone());
        }
    }
}

/// The options registered for `url`'s store (empty when none).
pub fn registered_options(url: &Url) -> BTreeMap<String, String> {
    STORE_OPTIONS
        .lock()
        .expect("store options lock")
        .get(&store_key(url))
        .cloned()
        .unwrap_or_default()
}

/// The size of a multipart upload's parts (S3 wants at least 5 MiB but for the last).
pub const PART_BYTES: usize = 8 << 20;

/// Files up to this size are uploaded with one PUT, larger ones in parts: 16 MiB, or
/// `TIDEMARK_MULTIPART_THRESHOLD` bytes (read once; the chaos harness sets 0 so that every
/// upload is a multipart one and a kill can land between its parts).
pub fn multipart_threshold() -> u64 {
    static BYTES: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *BYTES.get_or_init(|| {
        std::env::var("TIDEMARK_MULTIPART_THRESHOLD")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(SINGLE_PUT_BYTES)
    })
}

/// Reads the next part of a file: [`PART_BYTES`] bytes, fewer only at its end.
fn read_part(file: &mut std::fs::File) -> std::io::Result<Vec<u8>> {
    let mut part = Vec::with_capacity(PART_BYTES);
    Read::by_ref(file)
        .take(PART_BYTES as u64)
        .read_to_end(&mut part)?;
    Ok(part)
}

/// The largest ranged GET a [`RangeReader`] makes.
pub const RANGE_CHUNK: u64 = 8 << 20;

/// Reads a byte range of one object, a bounded ranged GET at a time.
pub struct RangeReader {
    remote: Remote,
    rel: String,
    next: u64,
    end: u64,
    chunk: std::io::Cursor<Vec<u8>>,
    chunk_size: u64,
}

impl RangeReader {
    /// The same reader with GETs of at most `bytes` (at least one byte).
    pub fn with_chunk(mut self, bytes: u64) -> Self {
        self.chunk_size = bytes.max(1);
        self
    }
}

impl std::io::Read for RangeReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let drained = self.chunk.position() as usize >= self.chunk.get_ref().len();
        if drained && self.next < self.end {
            let to = self.end.min(self.next + self.chunk_size);
            let (key, store, from) = (
                self.remote.key(&self.rel),
                self.remote.store.clone(),
                self.next,
            );
            let got = block_on(async move { store.get_range(&key, from..to).await })
                .map_err(|e| std::io::Error::other(self.remote.err("read", &self.rel, e)))?;
            self.chunk = std::io::Cursor::new(got.to_vec());
            self.next = to;
        }
        self.chunk.read(buf)
    }
}

/// Builds the store of `url`'s bucket from the cloud's standard environment and `options`.
fn build_store(url: &Url, options: &BTreeMap<String, String>) -> Result<Arc<dyn ObjectStore>> {
    let bad = |k: &str, e: object_store::Error| {
        EngineError::Spec(format!("storage option `{k}` for {url}: {e}"))
    };
    let built = match url.scheme() {
        "s3" | "s3a" => {
            let mut b = object_store::aws::AmazonS3Builder::from_env().with_url(url.as_str());
            for (k, v) in options {
                b = b.with_config(k.parse().map_err(|e| bad(k, e))?, v);
            }
            b.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
        }
        "gs" => {
            let mut b =
                object_store::gcp::GoogleCloudStorageBuilder::from_env().with_url(url.as_str());
            for (k, v) in options {
                b = b.with_config(k.parse().map_err(|e| bad(k, e))?, v);
            }
            b.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
        }
        _ => {
            let mut b =
                object_store::azure::MicrosoftAzureBuilder::from_env().with_url(url.as_str());
            for (k, v) in options {
                b = b.with_config(k.parse().map_err(|e| bad(k, e))?, v);
            }
            b.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
        }
    };
    built.map_err(|e| EngineError::Storage {
        context: format!("configure the store of {url}"),
        source: e,
    })
}

/// A remote object split into its store's root (`scheme://bucket`) and the key under it.
fn split(url: &Url) -> Result<(Remote, String)> {
    let mut root = url.clone();
    root.set_path("");
    root.set_query(None);
    let remote = Remote::open(&root, &BTreeMap::new())?;
    Ok((remote, url.path().trim_start_matches('/').to_string()))
}

/// A file readable at a local path: the file itself, or a private download of a remote one
/// that is deleted when this is dropped.
#[derive(Debug)]
pub struct LocalCopy {
    path: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl LocalCopy {
    /// A file that already is local.
    pub fn at(path: PathBuf) -> Self {
        LocalCopy { path, _dir: None }
    }

    /// The local path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A private scratch directory under the worker's `TMPDIR`, removed when dropped. Its name
/// carries the process id, so that [`sweep_dead_scratch`] can tell a killed worker's
/// leftovers (a SIGKILL runs no destructor) from a live one's.
pub fn scratch_dir() -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("tidemark-{}-", std::process::id()))
        .tempdir()
        .map_err(|e| EngineError::io("create a scratch directory in TMPDIR", e))
}

/// Removes the scratch directories in `TMPDIR` of tidemark processes that no longer run
/// (killed mid-step). Called when a worker starts; best effort, errors are only logged.
pub fn sweep_dead_scratch() {
    let tmp = std::env::temp_dir();
    let Ok(entries) = std::fs::read_dir(&tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("tidemark-")
            .and_then(|r| r.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let alive = Path::new("/proc").join(pid.to_string()).exists();
        if !alive && pid != std::process::id() {
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(path = %entry.path().display(), error = %e, "could not remove a dead worker's scratch");
            } else {
                tracing::info!(path = %entry.path().display(), "removed a dead worker's scratch");
            }
        }
    }
}

/// `location` (a path or an object URL) as a local file, checked against `sha256` when it
/// had to be downloaded. `Ok(None)` when a remote object is missing.
pub fn local_copy(location: &str, sha256: Option<&str>) -> Result<Option<LocalCopy>> {
    let url = match parse(location)? {
        Location::Local(path) => {
            return Ok(Some(LocalCopy { path, _dir: None }));
        }
        Location::Remote(url) => url,
    };
    let (remote, key) = split(&url)?;
    let dir = scratch_dir()?;
    let name = key.rsplit('/').next().unwrap_or("file");
    let path = dir.path().join(name);
    if remote.download(&key, &path)?.is_none() {
        return Ok(None);
    }
    if let Some(expected) = sha256 {
        let actual = crate::state::fsio::sha256_file(&path)?;
        if actual != expected {
            return Err(EngineError::Integrity(format!(
                "{location} has checksum {actual}, the manifest says {expected}"
            )));
        }
    }
    Ok(Some(LocalCopy {
        path,
        _dir: Some(dir),
    }))
}

/// [`local_copy`] of a batch file the manifest names: missing is an integrity error.
pub fn local_batch(location: &str, sha256: &str) -> Result<LocalCopy> {
    local_copy(location, Some(sha256))?.ok_or_else(|| {
        EngineError::Integrity(format!(
            "batch file {location} is missing: the run's files were removed before the run finished"
        ))
    })
}

/// Reads a whole remote object named by its URL; `None` when missing.
pub fn read_url(url: &Url) -> Result<Option<Vec<u8>>> {
    let (remote, key) = split(url)?;
    Ok(remote.get(&key)?.map(|(b, _)| b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_by_scheme() {
        assert_eq!(
            parse("/data/t").unwrap(),
            Location::Local(PathBuf::from("/data/t"))
        );
        assert_eq!(
            parse("file:///data/t").unwrap(),
            Location::Local(PathBuf::from("/data/t"))
        );
        assert!(is_remote("s3://bucket/prefix"));
        assert!(is_remote("abfss://c@acct.dfs.core.windows.net/p"));
        assert!(is_remote("gs://b/p"));
        let e = parse("ftp://host/x").unwrap_err().to_string();
        assert!(e.contains("unsupported URL scheme `ftp://`"), "{e}");
        assert!(parse("s3:///nobucket").is_err());
    }

    #[test]
    fn credentials_are_refused_as_storage_options() {
        for k in [
            "aws_secret_access_key",
            "AWS_ACCESS_KEY_ID",
            "aws_session_token",
            "azure_storage_account_key",
            "google_service_account_key",
            "azure_storage_sas_key",
        ] {
            assert!(secret_option(k), "{k}");
        }
        for k in ["aws_region", "aws_endpoint", "aws_allow_http", "region"] {
            assert!(!secret_option(k), "{k}");
        }
    }
}
