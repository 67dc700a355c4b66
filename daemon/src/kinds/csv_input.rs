//! An upload read as CSV record by record from a byte offset, so a job can stop at
//! any record boundary and resume there with a fresh reader.
//!
//! Built on `csv_core` with buffers of bounded size: a record larger than
//! [`MAX_RECORD_BYTES`] is skipped and reported as malformed instead of being held
//! in memory, however large it is. A quote left open at the end of the file is
//! reported too, instead of silently swallowing the rows after it.

use super::KindError;
use crate::store::{Input, Reader};
use csv_core::ReadRecordResult;

/// The largest record kept, in bytes and in fields; larger ones are row errors.
pub const MAX_RECORD_BYTES: usize = 16 << 20;
pub const MAX_FIELDS: usize = 1 << 20;
const READ_BUF: usize = 256 * 1024;

/// One record: its fields back to back in `buf`, each ending at `ends[i]`.
#[derive(Default)]
pub struct Record {
    buf: Vec<u8>,
    ends: Vec<usize>,
}

impl Record {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let field = &self.buf[start..end];
            start = end;
            field
        })
    }

    /// The fields as text, or a row error naming the first field that is not
    /// UTF-8. The record is checked once whole: every field is then valid if no
    /// field boundary falls inside a character.
    pub fn text(&self) -> Result<Text<'_>, String> {
        let whole = std::str::from_utf8(&self.buf)
            .ok()
            .filter(|t| self.ends.iter().all(|&e| t.is_char_boundary(e)));
        match whole {
            Some(text) => Ok(Text {
                text,
                ends: &self.ends,
            }),
            None => {
                let bad = self
                    .iter()
                    .position(|f| std::str::from_utf8(f).is_err())
                    .unwrap_or(0);
                Err(format!("field {} is not valid UTF-8", bad + 1))
            }
        }
    }
}

/// A record's fields, known to be UTF-8.
pub struct Text<'a> {
    text: &'a str,
    ends: &'a [usize],
}

impl<'a> Text<'a> {
    pub fn get(&self, i: usize) -> &'a str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.text[start..self.ends[i]]
    }

    pub fn iter(&self) -> impl Iterator<Item = &'a str> + '_ {
        (0..self.ends.len()).map(|i| self.get(i))
    }
}

/// What the next record is.
pub enum Row<'a> {
    Fields(&'a Record),
    /// Not a usable record; the message says why.
    Malformed(String),
}

pub struct CsvInput {
    input: Box<dyn Input>,
    reader: Box<dyn Reader>,
    core: csv_core::Reader,
    inbuf: Vec<u8>,
    pos: usize,
    filled: usize,
    eof: bool,
    /// Offset in the file of the next byte csv_core will see.
    offset: u64,
    file_len: u64,
    out: Vec<u8>,
    ends: Vec<usize>,
    record: Record,
}

impl CsvInput {
    pub fn open(input: Box<dyn Input>, offset: u64) -> Result<CsvInput, KindError> {
        let reader = input.open_at(offset)?;
        let file_len = input.size();
        Ok(CsvInput {
            input,
            reader,
            core: csv_core::Reader::new(),
            inbuf: vec![0; READ_BUF],
            pos: 0,
            filled: 0,
            eof: false,
            offset,
            file_len,
            out: vec![0; 4096],
            ends: vec![0; 64],
            record: Record::default(),
        })
    }

    /// The next record, or `None` at the end of the file.
    pub fn next(&mut self) -> Result<Option<Row<'_>>, KindError> {
        let start = self.offset;
        let (mut nout, mut nends) = (0usize, 0usize);
        let mut too_large = false;
        loop {
            if self.pos == self.filled && !self.eof {
                self.filled = self.reader.read(&mut self.inbuf)?;
                self.pos = 0;
                self.eof = self.filled == 0;
            }
            let input = &self.inbuf[self.pos..self.filled];
            let (res, nin, o, e) =
                self.core
                    .read_record(input, &mut self.out[nout..], &mut self.ends[nends..]);
            self.pos += nin;
            self.offset += nin as u64;
            nout += o;
            nends += e;
            match res {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull if self.out.len() >= MAX_RECORD_BYTES => {
                    // Keep parsing to the record's end, dropping what it holds.
                    too_large = true;
                    nout = 0;
                    nends = 0;
                }
                ReadRecordResult::OutputFull => {
                    let len = self.out.len() * 2;
                    self.out.resize(len.min(MAX_RECORD_BYTES), 0);
                }
                ReadRecordResult::OutputEndsFull if too_large || self.ends.len() >= MAX_FIELDS => {
                    too_large = true;
                    nout = 0;
                    nends = 0;
                }
                ReadRecordResult::OutputEndsFull => {
                    let len = self.ends.len() * 2;
                    self.ends.resize(len.min(MAX_FIELDS), 0);
                }
                ReadRecordResult::Record => {
                    if too_large {
                        return Ok(Some(Row::Malformed(format!(
                            "the row is larger than {} MiB or has more than {MAX_FIELDS} fields",
                            MAX_RECORD_BYTES >> 20
                        ))));
                    }
                    if self.offset >= self.file_len && self.ends_in_open_quote(start)? {
                        return Ok(Some(Row::Malformed(
                            "a quoted field is never closed: its quote runs to the end of the file"
                                .into(),
                        )));
                    }
                    self.record.buf.clear();
                    self.record.buf.extend_from_slice(&self.out[..nout]);
                    self.record.ends.clear();
                    self.record.ends.extend_from_slice(&self.ends[..nends]);
                    return Ok(Some(Row::Fields(&self.record)));
                }
                ReadRecordResult::End => return Ok(None),
            }
        }
    }

    /// The header row's fields, with a leading UTF-8 BOM removed.
    pub fn header(&mut self) -> Result<Vec<String>, KindError> {
        let rec = match self.next()? {
            None => return Err(KindError::Fatal("the file is empty: no header row".into())),
            Some(Row::Malformed(why)) => {
                return Err(KindError::Fatal(format!("unreadable header row: {why}")))
            }
            Some(Row::Fields(rec)) => rec,
        };
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
        self.offset
    }

    /// Whether the last record, from `start` to the end of the file, ends inside a
    /// quoted field. Only the last record can: elsewhere a quote is closed or
    /// it would have run on to the end. Read again from the store; the record is bounded.
    fn ends_in_open_quote(&self, start: u64) -> Result<bool, KindError> {
        let mut r = self.input.open_at(start)?;
        let mut raw = vec![0; (self.file_len - start).min(MAX_RECORD_BYTES as u64 + 1) as usize];
        let mut filled = 0;
        while filled < raw.len() {
            match r.read(&mut raw[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        raw.truncate(filled);
        Ok(open_quote_at_end(&raw))
    }
}

/// Follows RFC 4180 quoting as csv_core does: a quote opens a field only at its
/// start; inside, `""` is a literal quote and a lone `"` closes it.
fn open_quote_at_end(raw: &[u8]) -> bool {
    let (mut in_quotes, mut at_field_start) = (false, true);
    let mut i = 0;
    while i < raw.len() {
        let c = raw[i];
        if in_quotes {
            if c == b'"' {
                if raw.get(i + 1) == Some(&b'"') {
                    i += 1;
                } else {
                    in_quotes = false;
                }
            }
        } else if c == b'"' && at_field_start {
            in_quotes = true;
        } else {
            at_field_start = matches!(c, b',' | b'\n' | b'\r');
            i += 1;
            continue;
        }
        at_field_start = false;
        i += 1;
    }
    in_quotes
}

#[cfg(test)]
mod tests {
    use super::{open_quote_at_end, Record};

    #[test]
    fn text_checks_every_field() {
        let rec = |buf: &[u8], ends: &[usize]| Record {
            buf: buf.to_vec(),
            ends: ends.to_vec(),
        };
        let ok = rec("aébc".as_bytes(), &[1, 3, 5]);
        let t = ok.text().expect("valid");
        assert_eq!(t.iter().collect::<Vec<_>>(), ["a", "é", "bc"]);
        // Valid as a whole, but the boundary cuts `é` in two: both halves are bad.
        let split = rec("é".as_bytes(), &[1, 2]);
        assert_eq!(
            split.text().err().as_deref(),
            Some("field 1 is not valid UTF-8")
        );
        let bad = rec(b"ok\xff", &[2, 3]);
        assert_eq!(
            bad.text().err().as_deref(),
            Some("field 2 is not valid UTF-8")
        );
    }

    #[test]
    fn open_quotes() {
        assert!(open_quote_at_end(b"2024-01-01,\"abc\n2024-01-02,x\n"));
        assert!(!open_quote_at_end(b"a,\"b\"\"c\",d\n"));
        assert!(!open_quote_at_end(b"a,b\"c,d\n"));
        assert!(open_quote_at_end(b"\"x\"\"\n"));
        assert!(!open_quote_at_end(b"\"\""));
    }
}
