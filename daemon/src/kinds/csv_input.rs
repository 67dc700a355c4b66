//! A CSV file read record by record from a byte offset, so a job can stop at any
//! record boundary and resume there with a fresh file handle.

use super::KindError;
use csv::{ByteRecord, Reader, ReaderBuilder};
use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::path::Path;

pub struct CsvInput {
    reader: Reader<BufReader<File>>,
    base: u64,
    record: ByteRecord,
}

impl CsvInput {
    pub fn open(path: &Path, offset: u64) -> Result<CsvInput, KindError> {
        let mut file = File::open(path)
            .map_err(|e| KindError::io(format!("cannot open {}", path.display()), e))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| KindError::io("cannot seek in the upload", e))?;
        let reader = ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .buffer_capacity(256 * 1024)
            .from_reader(BufReader::with_capacity(256 * 1024, file));
        Ok(CsvInput {
            reader,
            base: offset,
            record: ByteRecord::new(),
        })
    }

    /// The next record, or `None` at the end of the file.
    pub fn next(&mut self) -> Result<Option<&ByteRecord>, KindError> {
        match self.reader.read_byte_record(&mut self.record) {
            Ok(true) => Ok(Some(&self.record)),
            Ok(false) => Ok(None),
            Err(e) => Err(match e.into_kind() {
                csv::ErrorKind::Io(io) => KindError::io("cannot read the upload", io),
                other => KindError::Fatal(format!("unreadable CSV: {other:?}")),
            }),
        }
    }

    /// The header row's fields, with a leading UTF-8 BOM removed.
    pub fn header(&mut self) -> Result<Vec<String>, KindError> {
        let rec = self
            .next()?
            .ok_or_else(|| KindError::Fatal("the file is empty: no header row".into()))?;
        let mut fields = Vec::with_capacity(rec.len());
        for (i, f) in rec.iter().enumerate() {
            let f = if i == 0 {
                f.strip_prefix(b"\xef\xbb\xbf").unwrap_or(f)
            } else {
                f
            };
            let s = std::str::from_utf8(f).map_err(|_| {
                KindError::Fatal(format!("header field {} is not valid UTF-8", i + 1))
            })?;
            fields.push(s.trim().to_string());
        }
        Ok(fields)
    }

    /// Byte offset of the next record in the file.
    pub fn offset(&self) -> u64 {
        self.base + self.reader.position().byte()
    }
}
