//! Uploads and export outputs as rows of chunks, so that any node can read them.
//!
//! An upload is written inside one transaction that also creates its job: a
//! client that goes away, or a node that dies, mid-upload leaves nothing. An
//! export's output is appended in the transaction of each batch, with its cursor.
//! Both are written with COPY, in chunks small enough to stay in their row
//! (PostgreSQL moves values over ~2 KiB out of line, at the cost of another table
//! and index), and read back in ranges of chunks, the next range fetched while
//! the reader works on this one.

use super::{jobs, PgStore};
use crate::store::{now_ms, Input, JobRow, NewJob, Reader, StoreError, Upload};
use deadpool_postgres::{GenericClient, Object};
use std::collections::VecDeque;
use std::pin::Pin;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

/// Bytes per chunk row.
pub const CHUNK: usize = 1900;

/// Chunk rows per read (about 1 MiB).
const RANGE: i64 = 512;

const CHUNK_TYPES: [Type; 3] = [Type::INT8, Type::INT8, Type::BYTEA];

/// A pooled connection holding a transaction open across calls. Dropped without
/// [`OpenTx::commit`], the transaction is rolled back.
struct OpenTx {
    client: Option<Object>,
    rt: Handle,
}

impl OpenTx {
    async fn begin(store: &PgStore) -> Result<OpenTx, StoreError> {
        let tx = OpenTx {
            client: Some(store.client().await?),
            rt: store.inner.rt.clone(),
        };
        tx.client()?.batch_execute("BEGIN").await?;
        Ok(tx)
    }

    fn client(&self) -> Result<&Object, StoreError> {
        self.client.as_ref().ok_or_else(ended)
    }

    async fn commit(mut self) -> Result<(), StoreError> {
        let client = self.client.take().ok_or_else(ended)?;
        match client.batch_execute("COMMIT").await {
            Ok(()) => Ok(()),
            Err(e) => {
                // The connection's state is unknown: it never goes back to the pool.
                let _ = Object::take(client);
                Err(e.into())
            }
        }
    }
}

impl Drop for OpenTx {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            self.rt.spawn(async move {
                if client.batch_execute("ROLLBACK").await.is_err() {
                    let _ = Object::take(client);
                }
            });
        }
    }
}

fn ended() -> StoreError {
    StoreError::Database("the upload's transaction has ended".into())
}

/// An upload being received: a COPY into its chunks, in its own transaction. The
/// chunks stream to the server as they come; nothing waits for it until the end.
pub struct PgUpload {
    store: PgStore,
    /// Dropped before the transaction: an unfinished COPY is abandoned first.
    copy: Option<Pin<Box<BinaryCopyInWriter>>>,
    tx: Option<OpenTx>,
    id: i64,
    /// Bytes not yet in a chunk row.
    buf: Vec<u8>,
    /// Bytes already in chunk rows.
    stored: u64,
}

impl PgUpload {
    pub fn create(store: PgStore) -> Result<PgUpload, StoreError> {
        let (tx, id, copy) = store.run(async {
            let tx = OpenTx::begin(&store).await?;
            let client = tx.client()?;
            let row = client
                .query_one(
                    "INSERT INTO jobd.uploads (bytes, created_at) VALUES (0, $1) RETURNING id",
                    &[&(now_ms() as i64)],
                )
                .await?;
            let sink = client
                .copy_in("COPY jobd.upload_chunks (upload_id, pos, data) FROM STDIN BINARY")
                .await?;
            let copy = Box::pin(BinaryCopyInWriter::new(sink, &CHUNK_TYPES));
            Ok::<_, StoreError>((tx, row.get::<_, i64>(0), copy))
        })?;
        Ok(PgUpload {
            store,
            copy: Some(copy),
            tx: Some(tx),
            id,
            buf: Vec::with_capacity(4 * CHUNK),
            stored: 0,
        })
    }

    /// Sends the buffered bytes as chunk rows: whole chunks only, unless `all`.
    fn flush(&mut self, all: bool) -> Result<(), StoreError> {
        let copy = self.copy.as_mut().ok_or_else(ended)?;
        let (id, buf, stored) = (self.id, &mut self.buf, &mut self.stored);
        self.store.run(async {
            let mut start = 0;
            while buf.len() - start >= CHUNK || (all && start < buf.len()) {
                let end = (start + CHUNK).min(buf.len());
                copy.as_mut()
                    .write(&[&id, &(*stored as i64), &&buf[start..end]])
                    .await?;
                *stored += (end - start) as u64;
                start = end;
            }
            buf.drain(..start);
            Ok::<_, StoreError>(())
        })
    }
}

impl Upload for PgUpload {
    fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush(false)?;
        }
        Ok(())
    }

    fn written(&self) -> u64 {
        self.stored + self.buf.len() as u64
    }

    /// The job row goes in under a savepoint: a taken id leaves the upload's
    /// transaction usable, for another try.
    fn create_job(&mut self, job: &NewJob<'_>) -> Result<JobRow, StoreError> {
        // Only once: a retry (its id was taken) finds the COPY already finished.
        if self.copy.is_some() {
            self.flush(true)?;
        }
        if let Some(mut copy) = self.copy.take() {
            self.store
                .run(async move { Ok::<_, StoreError>(copy.as_mut().finish().await?) })?;
        }
        let tx = self.tx.as_ref().ok_or_else(ended)?;
        let (id, bytes) = (self.id, self.stored as i64);
        let row = self.store.run(async {
            let client = tx.client()?;
            client
                .execute(
                    "UPDATE jobd.uploads SET bytes = $2 WHERE id = $1",
                    &[&id, &bytes],
                )
                .await?;
            client.batch_execute("SAVEPOINT job").await?;
            match jobs::insert(client, job, &id.to_string()).await {
                Ok(row) => Ok(row),
                Err(e) => {
                    client.batch_execute("ROLLBACK TO SAVEPOINT job").await?;
                    Err(e)
                }
            }
        })?;
        let tx = self.tx.take().ok_or_else(ended)?;
        self.store.run(tx.commit())?;
        Ok(row)
    }
}

impl Drop for PgUpload {
    fn drop(&mut self) {
        // An unfinished COPY fails when its writer goes; then the transaction
        // rolls back (OpenTx).
        self.copy = None;
        self.tx = None;
    }
}

/// What a [`ChunkReader`] reads: an upload's chunks or an output's.
#[derive(Clone, Copy)]
enum Blob {
    Upload(i64),
    Output(i64),
}

impl Blob {
    /// The chunk holding byte `$2`.
    fn chunk_at_sql(self) -> &'static str {
        match self {
            Blob::Upload(_) => {
                "SELECT pos, data FROM jobd.upload_chunks WHERE upload_id = $1 AND pos <= $2
                 ORDER BY pos DESC LIMIT 1"
            }
            Blob::Output(_) => {
                "SELECT pos, data FROM jobd.output_chunks WHERE job_seq = $1 AND pos <= $2
                 ORDER BY pos DESC LIMIT 1"
            }
        }
    }

    /// Chunks from byte `$2` on, in order, `$3` at most.
    fn range_sql(self) -> &'static str {
        match self {
            Blob::Upload(_) => {
                "SELECT pos, data FROM jobd.upload_chunks WHERE upload_id = $1 AND pos >= $2
                 ORDER BY pos LIMIT $3"
            }
            Blob::Output(_) => {
                "SELECT pos, data FROM jobd.output_chunks WHERE job_seq = $1 AND pos >= $2
                 ORDER BY pos LIMIT $3"
            }
        }
    }

    fn key(self) -> i64 {
        match self {
            Blob::Upload(id) | Blob::Output(id) => id,
        }
    }
}

/// An upload a job reads.
pub struct UploadInput {
    store: PgStore,
    id: i64,
    len: u64,
}

impl UploadInput {
    pub fn open(store: &PgStore, input: &str) -> Result<UploadInput, StoreError> {
        let id: i64 = input
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("upload reference {input:?}")))?;
        let len: i64 = store.run(async {
            let client = store.client().await?;
            let row = client
                .query_opt("SELECT bytes FROM jobd.uploads WHERE id = $1", &[&id])
                .await?
                .ok_or_else(|| StoreError::Corrupt(format!("upload {id} is missing")))?;
            Ok::<_, StoreError>(row.get(0))
        })?;
        Ok(UploadInput {
            store: store.clone(),
            id,
            len: len as u64,
        })
    }
}

impl Input for UploadInput {
    fn size(&self) -> u64 {
        self.len
    }

    fn open_at(&self, offset: u64) -> Result<Box<dyn Reader>, StoreError> {
        Ok(Box::new(ChunkReader::new(
            &self.store,
            Blob::Upload(self.id),
            offset,
            self.len,
        )))
    }
}

/// The committed output of an export.
pub struct OutputReader;

impl OutputReader {
    pub fn open(store: &PgStore, seq: i64) -> Result<ChunkReader, StoreError> {
        let len: i64 = store.run(async {
            let client = store.client().await?;
            Ok::<_, StoreError>(
                client
                    .query_one("SELECT output_len FROM jobd.jobs WHERE seq = $1", &[&seq])
                    .await?
                    .get(0),
            )
        })?;
        Ok(ChunkReader::new(store, Blob::Output(seq), 0, len as u64))
    }
}

type Chunks = Vec<(i64, Vec<u8>)>;

/// Reads chunk rows in order from any offset, a range of them per round trip; the
/// next range is on its way while this one is read.
pub struct ChunkReader {
    store: PgStore,
    blob: Blob,
    pos: u64,
    end: u64,
    /// Chunks at and after `pos`, the first starting at `first_pos`.
    chunks: VecDeque<(i64, Vec<u8>)>,
    /// Where the chunks fetched so far end.
    fetched_to: Option<u64>,
    next: Option<JoinHandle<Result<Chunks, StoreError>>>,
}

impl ChunkReader {
    fn new(store: &PgStore, blob: Blob, pos: u64, end: u64) -> ChunkReader {
        ChunkReader {
            store: store.clone(),
            blob,
            pos,
            end,
            chunks: VecDeque::new(),
            fetched_to: None,
            next: None,
        }
    }

    /// Starts fetching the range after what was fetched.
    fn prefetch(&mut self) {
        let Some(from) = self.fetched_to.filter(|&f| f < self.end) else {
            return;
        };
        let (store, blob) = (self.store.clone(), self.blob);
        self.next = Some(self.store.inner.rt.spawn(async move {
            let client = store.client().await?;
            let stmt = client.prepare_cached(blob.range_sql()).await?;
            let rows = client
                .query(&stmt, &[&blob.key(), &(from as i64), &RANGE])
                .await?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        }));
    }

    /// Makes the chunk holding `pos` the first, fetching as needed.
    fn fill(&mut self) -> Result<(), StoreError> {
        let corrupt = |pos: u64| StoreError::Corrupt(format!("no data at byte {pos}"));
        loop {
            while let Some((start, data)) = self.chunks.front() {
                let (start, len) = (*start as u64, data.len() as u64);
                if start > self.pos {
                    return Err(corrupt(self.pos));
                }
                if start + len > self.pos {
                    return Ok(());
                }
                self.chunks.pop_front();
            }
            let got: Chunks = match self.next.take() {
                Some(handle) => self.store.run(async {
                    handle
                        .await
                        .map_err(|e| StoreError::Database(format!("a read failed: {e}")))?
                })?,
                None => {
                    // The first read, at any byte: from the chunk that holds it.
                    let (blob, pos) = (self.blob, self.pos as i64);
                    self.store.run(async {
                        let client = self.store.client().await?;
                        let stmt = client.prepare_cached(blob.chunk_at_sql()).await?;
                        let rows = client.query(&stmt, &[&blob.key(), &pos]).await?;
                        Ok::<_, StoreError>(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
                    })?
                }
            };
            let Some((last, data)) = got.last() else {
                return Err(corrupt(self.pos));
            };
            self.fetched_to = Some(*last as u64 + data.len() as u64);
            self.chunks.extend(got);
            self.prefetch();
        }
    }
}

impl Reader for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, StoreError> {
        if self.pos >= self.end || buf.is_empty() {
            return Ok(0);
        }
        self.fill()?;
        let Some((start, data)) = self.chunks.front() else {
            return Ok(0);
        };
        let from = (self.pos - *start as u64) as usize;
        let avail = (data.len() - from).min((self.end - self.pos) as usize);
        let n = avail.min(buf.len());
        buf[..n].copy_from_slice(&data[from..from + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Drop for ChunkReader {
    fn drop(&mut self) {
        if let Some(next) = self.next.take() {
            next.abort();
        }
    }
}

/// Appends `bytes` to the job's output after its first `at` bytes, in the
/// caller's transaction; returns the new length.
pub async fn append_output(
    tx: &deadpool_postgres::Transaction<'_>,
    seq: i64,
    at: u64,
    bytes: &[u8],
) -> Result<u64, StoreError> {
    let sink = tx
        .copy_in("COPY jobd.output_chunks (job_seq, pos, data) FROM STDIN BINARY")
        .await?;
    let writer = BinaryCopyInWriter::new(sink, &CHUNK_TYPES);
    futures_util::pin_mut!(writer);
    let mut pos = at;
    for chunk in bytes.chunks(CHUNK) {
        writer
            .as_mut()
            .write(&[&seq, &(pos as i64), &chunk])
            .await?;
        pos += chunk.len() as u64;
    }
    writer.finish().await?;
    Ok(pos)
}

/// Deletes the upload a job read (if it is an upload's job).
pub async fn drop_input(c: &impl GenericClient, seq: i64) -> Result<(), StoreError> {
    let stmt = c
        .prepare_cached(
            "WITH u AS (SELECT input::bigint AS id FROM jobd.jobs
                         WHERE seq = $1 AND kind <> 'createExport'),
                  gone AS (DELETE FROM jobd.upload_chunks WHERE upload_id IN (SELECT id FROM u))
             DELETE FROM jobd.uploads WHERE id IN (SELECT id FROM u)",
        )
        .await?;
    c.execute(&stmt, &[&seq]).await?;
    Ok(())
}

/// Deletes a job's output (a failed or terminated export is half-done).
pub async fn drop_output(c: &impl GenericClient, seq: i64) -> Result<(), StoreError> {
    let stmt = c
        .prepare_cached("DELETE FROM jobd.output_chunks WHERE job_seq = $1")
        .await?;
    c.execute(&stmt, &[&seq]).await?;
    let stmt = c
        .prepare_cached("UPDATE jobd.jobs SET output_len = 0 WHERE seq = $1")
        .await?;
    c.execute(&stmt, &[&seq]).await?;
    Ok(())
}
