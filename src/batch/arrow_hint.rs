//! The Arrow schema hint (`ARROW:schema` in the footer) of the Parquet files tidemark writes
//! with Polars, in plain types.
//!
//! Polars records its in-memory string and binary types, `Utf8View` and `BinaryView`, in the
//! hint. A reader that takes the hint mixes view and plain strings across a table's files,
//! and some cannot compare them: pyarrow's dataset scan (the Python `deltalake` package's
//! `to_pyarrow_table(filters=...)`) fails on an equality filter of a string column with
//! "Function 'equal' has no kernel matching input types (string, string_view)" as soon as one
//! data file came from Polars. The batch file becomes a table's data file as it is (write
//! once: adopted, or its row groups copied), and the Parquet target's files are Polars', so
//! [`make_plain`] rewrites the hint's view types to `Utf8` and `Binary`, the types delta-rs's
//! writer records. The data pages are not touched (the physical type of a string is a UTF-8
//! byte array either way): only the footer is written again, on the writer's temporary file,
//! before it is renamed into place.

use crate::error::{EngineError, Result};
use deltalake::arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema};
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use deltalake::parquet::file::metadata::{
    FileMetaData, KeyValue, ParquetMetaDataBuilder, ParquetMetaDataWriter,
};
use deltalake::parquet::file::properties::WriterProperties;
use std::io::{Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

/// The hint's key in the footer's key-value metadata.
const ARROW_SCHEMA: &str = "ARROW:schema";

/// Rewrites the footer of the Parquet file at `path` (not yet visible to anyone) so that its
/// Arrow schema hint has no view types; nothing when it has none.
pub fn make_plain(path: &Path) -> Result<()> {
    let unreadable = |e: String| EngineError::Integrity(format!("{}: {e}", path.display()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| EngineError::io(format!("open {}", path.display()), e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(
        file.try_clone()
            .map_err(|e| EngineError::io(format!("open {}", path.display()), e))?,
    )
    .map_err(|e| unreadable(e.to_string()))?;
    let hinted = reader.schema().clone();
    let meta = reader.metadata().as_ref().clone();
    drop(reader);
    let plain = plain_schema(&hinted);
    if plain == *hinted {
        return Ok(());
    }
    let fm = meta.file_metadata();
    let mut key_values: Vec<KeyValue> = fm
        .key_value_metadata()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|kv| kv.key != ARROW_SCHEMA)
        .collect();
    key_values.insert(0, encoded(&plain));
    let new_fm = FileMetaData::new(
        fm.version(),
        fm.num_rows(),
        fm.created_by().map(str::to_string),
        Some(key_values),
        fm.schema_descr_ptr(),
        fm.column_orders().cloned(),
    );
    // The row groups as they are; page indexes, if any, stay where they are in the file (the
    // column chunks point at them) and are not written again.
    let row_groups = ParquetMetaDataBuilder::new_from_metadata(meta).take_row_groups();
    let rebuilt = ParquetMetaDataBuilder::new(new_fm)
        .set_row_groups(row_groups)
        .build();
    // The footer starts after the data: file length - 8 (length, magic) - footer length.
    let len = file
        .metadata()
        .map_err(|e| EngineError::io(format!("stat {}", path.display()), e))?
        .len();
    let footer_len = footer_length(&file, len).map_err(|e| unreadable(e.to_string()))?;
    let footer_start = len - 8 - footer_len;
    file.set_len(footer_start)
        .map_err(|e| EngineError::io(format!("truncate {}", path.display()), e))?;
    let mut out = &file;
    out.seek(SeekFrom::Start(footer_start))
        .map_err(|e| EngineError::io(format!("seek {}", path.display()), e))?;
    ParquetMetaDataWriter::new(out, &rebuilt)
        .finish()
        .map_err(|e| unreadable(e.to_string()))?;
    Ok(())
}

/// The footer's length, from the 8 bytes at the end of the file.
fn footer_length(file: &std::fs::File, len: u64) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let mut tail = [0u8; 8];
    file.read_exact_at(&mut tail, len.saturating_sub(8))?;
    if &tail[4..] != b"PAR1" {
        return Err(std::io::Error::other("not a Parquet file"));
    }
    Ok(u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")) as u64)
}

/// The hint's encoded form, as arrow-rs's own writer records it.
fn encoded(schema: &Schema) -> KeyValue {
    let mut props = WriterProperties::builder().build();
    deltalake::parquet::arrow::add_encoded_arrow_schema_to_metadata(schema, &mut props);
    props
        .key_value_metadata()
        .and_then(|kvs| kvs.iter().find(|kv| kv.key == ARROW_SCHEMA).cloned())
        .expect("the writer records the schema")
}

/// `schema` with every view type (at any depth) replaced by its plain form.
pub fn plain_schema(schema: &Schema) -> Schema {
    Schema::new_with_metadata(plain_fields(schema.fields()), schema.metadata().clone())
}

fn plain_fields(fields: &Fields) -> Fields {
    fields.iter().map(plain_field).collect()
}

fn plain_field(f: &FieldRef) -> FieldRef {
    let dtype = plain_type(f.data_type());
    if &dtype == f.data_type() {
        return f.clone();
    }
    Arc::new(Field::clone(f).with_data_type(dtype))
}

fn plain_type(t: &DataType) -> DataType {
    match t {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::List(f) | DataType::ListView(f) => DataType::List(plain_field(f)),
        DataType::LargeList(f) | DataType::LargeListView(f) => DataType::LargeList(plain_field(f)),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(plain_field(f), *n),
        DataType::Struct(fields) => DataType::Struct(plain_fields(fields)),
        DataType::Map(f, sorted) => DataType::Map(plain_field(f), *sorted),
        DataType::Dictionary(k, v) => DataType::Dictionary(k.clone(), Box::new(plain_type(v))),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::{ParquetReader, ParquetWriter, SerReader, df};

    /// A Polars file's hint comes out in plain types, its rows and the rest of its footer
    /// unchanged, and pyarrow-style readers (arrow-rs here) see `Utf8`.
    #[test]
    fn the_hint_loses_its_view_types_and_the_rows_stay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.parquet");
        let mut df = df!(
            "id" => [1i64, 2, 3],
            "s" => [Some("a"), None, Some("c")],
            "n" => [1.5f64, 2.5, 3.5],
        )
        .unwrap();
        ParquetWriter::new(std::fs::File::create(&path).unwrap())
            .finish(&mut df)
            .unwrap();
        let hint = |p: &Path| {
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(p).unwrap())
                .unwrap()
                .schema()
                .clone()
        };
        assert_eq!(
            hint(&path).field_with_name("s").unwrap().data_type(),
            &DataType::Utf8View,
            "Polars records view types (else this module has nothing to do)"
        );
        make_plain(&path).unwrap();
        let after = hint(&path);
        assert_eq!(
            after.field_with_name("s").unwrap().data_type(),
            &DataType::Utf8
        );
        assert_eq!(
            after.field_with_name("id").unwrap().data_type(),
            &DataType::Int64
        );
        let back = ParquetReader::new(std::fs::File::open(&path).unwrap())
            .finish()
            .unwrap();
        assert!(back.equals_missing(&df), "{back}");
        // A second pass finds nothing to do and leaves the file as it is.
        let bytes = std::fs::read(&path).unwrap();
        make_plain(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }
}
