//! Delta deletion vectors (merge-on-read): which physical rows of a data file are deleted.
//!
//! A deletion vector (DV) is a set of 0-based Parquet row positions, stored in Delta's portable
//! `RoaringBitmapArray` format (a `RoaringTreemap` behind a magic number, with a big-endian
//! size prefix and CRC-32) in a `deletion_vector_<uuid>.bin` file at the table's root, and
//! referenced from the file's `add` action by a descriptor (storage type `u`: the z85-encoded
//! UUID; offset; size; cardinality). Several DVs of one commit share one file.
//!
//! Writing uses the Delta kernel's `StreamingDeletionVectorWriter` (`buoyant_kernel`, already
//! under delta-rs) over `roaring` treemaps; reading decodes what any writer (Databricks,
//! delta-rs, tidemark) stored, checking the size, magic and checksum. DV files are written
//! before the commit that references them: a crash in between leaves an unreferenced DV file,
//! which `vacuum` removes, never a referenced one that is missing.

use crate::error::{EngineError, Result};
use bytes::Bytes;
use delta_kernel::actions::deletion_vector_writer::{
    DeletionVector, StreamingDeletionVectorWriter,
};
use deltalake::kernel::{DeletionVectorDescriptor, StorageType};
use roaring::RoaringTreemap;
use std::collections::HashMap;

/// The magic number that opens every serialized DV (little-endian on disk).
const MAGIC: u32 = 1_681_511_377;

/// A treemap handed to the kernel's writer as it is (no re-collection).
struct Positions(RoaringTreemap);

impl DeletionVector for Positions {
    type IndexIterator = roaring::treemap::IntoIter;

    fn into_iter(self) -> Self::IndexIterator {
        self.0.into_iter()
    }

    fn cardinality(&self) -> u64 {
        self.0.len()
    }

    fn serialize(self) -> delta_kernel::DeltaResult<Bytes> {
        let mut out = Vec::with_capacity(self.0.serialized_size());
        self.0
            .serialize_into(&mut out)
            .map_err(|e| delta_kernel::Error::generic(format!("serialize a DV: {e}")))?;
        Ok(Bytes::from(out))
    }
}

/// One DV file's bytes and, for each treemap given, where its DV sits in it.
pub struct Encoded {
    /// The file's bytes.
    pub bytes: Vec<u8>,
    /// Per treemap, in order: (offset, size in bytes, cardinality).
    pub parts: Vec<(i32, i32, i64)>,
}

/// Encodes `dvs` into one DV file (the kernel's writer: version byte, then each DV's size,
/// magic, portable treemap and checksum).
pub fn encode(dvs: Vec<RoaringTreemap>) -> Result<Encoded> {
    let mut bytes = Vec::new();
    let mut parts = Vec::with_capacity(dvs.len());
    {
        let mut w = StreamingDeletionVectorWriter::new(&mut bytes);
        for t in dvs {
            let r = w
                .write_deletion_vector(Positions(t))
                .map_err(|e| EngineError::Integrity(format!("encode a deletion vector: {e}")))?;
            parts.push((r.offset, r.size_in_bytes, r.cardinality));
        }
        w.finalize()
            .map_err(|e| EngineError::Integrity(format!("encode a deletion vector: {e}")))?;
    }
    Ok(Encoded { bytes, parts })
}

/// A new DV file's name at the table's root and the `pathOrInlineDv` its descriptors carry.
pub fn new_file() -> (String, String) {
    let id = uuid::Uuid::new_v4();
    (
        format!("deletion_vector_{id}.bin"),
        z85::encode(id.as_bytes()),
    )
}

/// The descriptor of one DV of a file written by [`encode`] under `encoded_path`.
pub fn descriptor(
    encoded_path: &str,
    (offset, size, cardinality): (i32, i32, i64),
) -> DeletionVectorDescriptor {
    DeletionVectorDescriptor {
        storage_type: StorageType::UuidRelativePath,
        path_or_inline_dv: encoded_path.to_string(),
        offset: Some(offset),
        size_in_bytes: size,
        cardinality,
    }
}

/// Where a descriptor's DV is stored: a file (relative to the table's root, or an absolute
/// URL), or inline.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    /// `deletion_vector_<uuid>.bin`, under an optional random prefix, relative to the root.
    Relative(String),
    /// An absolute URL.
    Absolute(String),
    /// The bytes in the log (`magic + treemap`, z85-encoded).
    Inline,
}

/// Where `d`'s DV is stored.
pub fn location(d: &DeletionVectorDescriptor) -> Result<Location> {
    match d.storage_type {
        StorageType::Inline => Ok(Location::Inline),
        StorageType::AbsolutePath => Ok(Location::Absolute(d.path_or_inline_dv.clone())),
        StorageType::UuidRelativePath => {
            let p = &d.path_or_inline_dv;
            if p.len() < 20 {
                return Err(EngineError::Integrity(format!(
                    "deletion vector path {p:?} is shorter than a z85 UUID"
                )));
            }
            let (prefix, encoded) = p.split_at(p.len() - 20);
            let raw = z85::decode(encoded).map_err(|e| {
                EngineError::Integrity(format!("deletion vector path {p:?}: {e:?}"))
            })?;
            let id = uuid::Uuid::from_slice(&raw)
                .map_err(|e| EngineError::Integrity(format!("deletion vector path {p:?}: {e}")))?;
            let name = format!("deletion_vector_{id}.bin");
            Ok(Location::Relative(if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            }))
        }
    }
}

/// Decodes the DV a descriptor points at inside `file` (the whole DV file's bytes), checking
/// the size prefix, the magic and the checksum.
pub fn decode(d: &DeletionVectorDescriptor, file: &[u8]) -> Result<RoaringTreemap> {
    let bad = |why: String| {
        EngineError::Integrity(format!(
            "deletion vector {} at {:?}: {why}",
            d.path_or_inline_dv, d.offset
        ))
    };
    let size = usize::try_from(d.size_in_bytes).map_err(|_| bad("negative size".into()))?;
    let start =
        usize::try_from(d.offset.unwrap_or(1)).map_err(|_| bad("negative offset".into()))?;
    let end = start + 4 + size + 4;
    if file.len() < end {
        return Err(bad(format!(
            "the file holds {} bytes, the DV needs {end}",
            file.len()
        )));
    }
    let stored = u32::from_be_bytes(file[start..start + 4].try_into().expect("4 bytes")) as usize;
    if stored != size {
        return Err(bad(format!(
            "its size prefix says {stored} bytes, the log {size}"
        )));
    }
    let body = &file[start + 4..start + 4 + size];
    let crc = u32::from_be_bytes(file[start + 4 + size..end].try_into().expect("4 bytes"));
    if crc32fast::hash(body) != crc {
        return Err(bad("checksum mismatch".into()));
    }
    treemap_of(body).map_err(bad)
}

/// The treemap of `magic + portable treemap` bytes.
fn treemap_of(body: &[u8]) -> std::result::Result<RoaringTreemap, String> {
    if body.len() < 4 || u32::from_le_bytes(body[..4].try_into().expect("4 bytes")) != MAGIC {
        return Err("not a RoaringBitmapArray (wrong magic)".into());
    }
    RoaringTreemap::deserialize_from(&body[4..]).map_err(|e| e.to_string())
}

/// Decodes an inline DV (`z85(magic + treemap)`).
pub fn decode_inline(d: &DeletionVectorDescriptor) -> Result<RoaringTreemap> {
    let raw = z85::decode(&d.path_or_inline_dv)
        .map_err(|e| EngineError::Integrity(format!("inline deletion vector: {e:?}")))?;
    let size = usize::try_from(d.size_in_bytes)
        .unwrap_or(raw.len())
        .min(raw.len());
    treemap_of(&raw[..size])
        .map_err(|why| EngineError::Integrity(format!("inline deletion vector: {why}")))
}

/// Reads DVs through a table's object store, each DV file once.
pub struct Reader {
    store: std::sync::Arc<dyn object_store::ObjectStore>,
    root: url::Url,
    files: HashMap<Location, Bytes>,
}

impl Reader {
    /// A reader over the table's store (rooted at the table).
    pub fn of(t: &deltalake::DeltaTable) -> Reader {
        Reader {
            store: t.log_store().object_store(None),
            root: t.table_url().clone(),
            files: HashMap::new(),
        }
    }

    /// The positions `d` deletes.
    pub async fn read(&mut self, d: &DeletionVectorDescriptor) -> Result<RoaringTreemap> {
        let loc = location(d)?;
        if loc == Location::Inline {
            return decode_inline(d);
        }
        if !self.files.contains_key(&loc) {
            let path = match &loc {
                Location::Relative(rel) => object_store::path::Path::from(rel.as_str()),
                Location::Absolute(url) => {
                    let u = url::Url::parse(url).map_err(|e| {
                        EngineError::Integrity(format!("deletion vector URL {url}: {e}"))
                    })?;
                    let root = self.root.path().trim_end_matches('/').to_string();
                    let rel = u.path().strip_prefix(&root).unwrap_or(u.path());
                    object_store::path::Path::from(rel.trim_start_matches('/'))
                }
                Location::Inline => unreachable!("handled above"),
            };
            use object_store::ObjectStoreExt;
            let bytes = self
                .store
                .get(&path)
                .await
                .map_err(|e| EngineError::Storage {
                    context: format!("read deletion vector {path} of {}", self.root),
                    source: e,
                })?
                .bytes()
                .await
                .map_err(|e| EngineError::Storage {
                    context: format!("read deletion vector {path} of {}", self.root),
                    source: e,
                })?;
            self.files.insert(loc.clone(), bytes);
        }
        decode(d, &self.files[&loc])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Databricks table of the shared test data (`../shared/testdata`), when present.
    fn databricks_table() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/testdata/delta/table-with-dv-small")
    }

    fn their_descriptor() -> DeletionVectorDescriptor {
        DeletionVectorDescriptor {
            storage_type: StorageType::UuidRelativePath,
            path_or_inline_dv: "vBn[lx{q8@P<9BNH/isA".into(),
            offset: Some(1),
            size_in_bytes: 36,
            cardinality: 2,
        }
    }

    /// The encoder reproduces, byte for byte, the DV Databricks wrote for the same
    /// positions, and the decoder reads it back.
    #[test]
    fn our_encoding_is_databricks_byte_for_byte() {
        let dir = databricks_table();
        let name = "deletion_vector_61d16c75-6994-46b7-a15b-8b538852e50e.bin";
        let theirs = std::fs::read(dir.join(name)).expect("../shared/testdata beside the checkout");
        let ours = encode(vec![[0u64, 9].into_iter().collect()]).unwrap();
        assert_eq!(ours.bytes, theirs, "the DV file's bytes");
        assert_eq!(ours.parts, vec![(1, 36, 2)], "offset, size, cardinality");
        let d = their_descriptor();
        assert_eq!(location(&d).unwrap(), Location::Relative(name.into()));
        let read = decode(&d, &theirs).unwrap();
        assert_eq!(read.iter().collect::<Vec<_>>(), vec![0, 9]);
        // The descriptor's path is the z85 form of the file's UUID.
        let id = uuid::Uuid::parse_str("61d16c75-6994-46b7-a15b-8b538852e50e").unwrap();
        assert_eq!(z85::encode(id.as_bytes()), d.path_or_inline_dv);
    }

    #[test]
    fn several_dvs_share_one_file_and_damage_is_refused() {
        let a: RoaringTreemap = (0u64..1000).step_by(7).collect();
        let b: RoaringTreemap = [5u64, 1 << 33].into_iter().collect();
        let e = encode(vec![a.clone(), b.clone()]).unwrap();
        let (_, path) = new_file();
        let da = descriptor(&path, e.parts[0]);
        let db = descriptor(&path, e.parts[1]);
        assert_eq!(decode(&da, &e.bytes).unwrap(), a);
        assert_eq!(decode(&db, &e.bytes).unwrap(), b);
        assert_eq!(db.cardinality, 2);
        let mut broken = e.bytes.clone();
        let at = e.parts[1].0 as usize + 9;
        broken[at] ^= 0xff;
        assert!(
            decode(&db, &broken)
                .unwrap_err()
                .to_string()
                .contains("checksum")
        );
        assert_eq!(decode(&da, &broken).unwrap(), a, "the other DV is intact");
    }
}
