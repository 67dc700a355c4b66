//! Counting the data rows of an upload while it is spooled, so that a job has its
//! total from the start (a progress bar needs one).
//!
//! The count follows the parser the kinds read with (`csv_core` in its default
//! configuration, as [`crate::kinds`]' CSV input uses it): RFC 4180 quotes, so a
//! quoted newline is not a row; LF, CRLF and lone CR line ends; blank lines
//! skipped; a record too large to keep still counts, as the kinds make it a row
//! error. The first record is the header and is not counted. The count therefore
//! equals the units the job will handle.

use csv_core::{ReadRecordResult, Reader};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

/// Scratch space for fields; what they hold is thrown away.
const OUT: usize = 8 * 1024;
const ENDS: usize = 256;

/// Counts records in bytes fed piece by piece.
pub struct RowCounter {
    core: Reader,
    out: Box<[u8; OUT]>,
    ends: Box<[usize; ENDS]>,
    records: u64,
}

impl Default for RowCounter {
    fn default() -> Self {
        RowCounter::new()
    }
}

impl RowCounter {
    pub fn new() -> RowCounter {
        RowCounter {
            core: Reader::new(),
            out: Box::new([0; OUT]),
            ends: Box::new([0; ENDS]),
            records: 0,
        }
    }

    /// Counts the records that end in `data` (the next piece of the file).
    pub fn feed(&mut self, data: &[u8]) {
        self.run(data);
    }

    /// The number of data rows: records, the header excepted. A last record
    /// without a line end counts.
    pub fn finish(mut self) -> u64 {
        self.run(&[]);
        self.records.saturating_sub(1)
    }

    /// Runs the parser over `input`; empty input means the end of the file.
    fn run(&mut self, mut input: &[u8]) {
        loop {
            let (res, nin, _, _) =
                self.core
                    .read_record(input, &mut self.out[..], &mut self.ends[..]);
            input = &input[nin..];
            match res {
                ReadRecordResult::InputEmpty | ReadRecordResult::End => return,
                // The fields are not kept: the same buffers take what follows.
                ReadRecordResult::OutputFull | ReadRecordResult::OutputEndsFull => {}
                ReadRecordResult::Record => self.records += 1,
            }
        }
    }
}

/// Chunks a [`Counting`] thread may be behind the writes.
const BEHIND: usize = 4;

/// A [`RowCounter`] on a thread of its own, fed the chunks of an upload as they
/// are written: counting (about 450 MiB/s here) then overlaps receiving and
/// writing instead of adding to them.
pub struct Counting {
    tx: SyncSender<Vec<u8>>,
    thread: JoinHandle<u64>,
}

impl Counting {
    pub fn start() -> std::io::Result<Counting> {
        let (tx, rx) = sync_channel::<Vec<u8>>(BEHIND);
        let thread = std::thread::Builder::new()
            .name("jobd-rowcount".into())
            .spawn(move || {
                let mut c = RowCounter::new();
                for data in rx {
                    c.feed(&data);
                }
                c.finish()
            })?;
        Ok(Counting { tx, thread })
    }

    /// The next piece of the file. Blocks while the counter is [`BEHIND`] chunks
    /// behind: call it from a blocking thread.
    pub fn feed(&self, data: Vec<u8>) {
        let _ = self.tx.send(data);
    }

    /// The data rows (see [`RowCounter::finish`]); waits for the counter to
    /// catch up, so call it from a blocking thread. `None` if it died.
    pub fn finish(self) -> Option<u64> {
        drop(self.tx);
        self.thread.join().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(data: &[u8]) -> u64 {
        let mut c = RowCounter::new();
        c.feed(data);
        c.finish()
    }

    /// Fed a byte at a time, the count is the same.
    fn count_bytewise(data: &[u8]) -> u64 {
        let mut c = RowCounter::new();
        for b in data {
            c.feed(std::slice::from_ref(b));
        }
        c.finish()
    }

    #[test]
    fn dialect() {
        let cases: &[(&[u8], u64)] = &[
            (b"", 0),
            (b"date,a\n", 0),
            (b"date,a", 0),
            (b"date,a\n2024-01-01,x\n", 1),
            (b"date,a\n2024-01-01,x", 1),
            (b"date,a\r\n1,2\r\n3,4\r\n", 2),
            (b"date,a\r1,2\r3,4", 2),
            (b"date,a\n1,2\r\n3,4\r5,6\n", 3),
            (b"\xef\xbb\xbfdate,a\n1,2\n", 1),
            // A quoted newline is inside a field, not a row end.
            (b"date,a\n1,\"two\nlines\"\n3,\"x\r\ny\"\n", 2),
            (b"date,a\n1,\"a \"\"quoted\"\" word\"\n", 1),
            // Blank lines are not rows.
            (b"date,a\n\n1,2\n\n\r\n3,4\n\n", 2),
            // Ragged rows are rows (they become row errors).
            (b"a,b\nc,d,e\nf,g\n", 2),
            // A quote left open runs to the end: one last (malformed) row.
            (b"date,a\n1,\"open\n2,3\n", 1),
        ];
        for (data, rows) in cases {
            assert_eq!(count(data), *rows, "{:?}", String::from_utf8_lossy(data));
            assert_eq!(count_bytewise(data), *rows, "bytewise {data:?}");
        }
    }

    #[test]
    fn counting_on_a_thread() {
        let c = Counting::start().expect("thread");
        for piece in [&b"date,a\n1,\"x"[..], b"\ny\"\n2,", b"3\n"] {
            c.feed(piece.to_vec());
        }
        assert_eq!(c.finish(), Some(2));
    }

    #[test]
    fn records_larger_than_the_buffers_count_once() {
        let mut data = b"a,b\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', 3 * OUT));
        data.extend_from_slice(b",y\n");
        data.extend(std::iter::repeat_n(b',', 3 * ENDS));
        data.extend_from_slice(b"\nlast,row\n");
        assert_eq!(count(&data), 3);
    }
}
