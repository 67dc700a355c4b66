//! Uploads and export outputs as rows of chunks, so that any node can read them.
//!
//! An upload is written inside one transaction that also creates its job: a
//! client that goes away, or a node that dies, mid-upload leaves nothing. An
//! export's output is appended in the transaction of each batch, with its cursor.

use super::{jobs, PgStore};
use crate::store::{now_ms, Input, JobRow, NewJob, Reader, StoreError, Upload};
use deadpool_postgres::{GenericClient, Object};
use tokio::runtime::Handle;

/// Bytes per chunk row.
pub const CHUNK: usize = 1 << 20;

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
        self.client
            .as_ref()
            .ok_or_else(|| StoreError::Database("the upload's transaction has ended".into()))
    }

    async fn commit(mut self) -> Result<(), StoreError> {
        let Some(client) = self.client.take() else {
            return Err(StoreError::Database(
                "the upload's transaction has ended".into(),
            ));
        };
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

/// An upload being received, in its own transaction.
pub struct PgUpload {
    store: PgStore,
    tx: Option<OpenTx>,
    id: i64,
    /// Bytes not yet in a chunk row.
    buf: Vec<u8>,
    /// Bytes already in chunk rows.
    stored: u64,
}

impl PgUpload {
    pub fn create(store: PgStore) -> Result<PgUpload, StoreError> {
        let (tx, id) = store.run(async {
            let tx = OpenTx::begin(&store).await?;
            let row = tx
                .client()?
                .query_one(
                    "INSERT INTO jobd.uploads (bytes, created_at) VALUES (0, $1) RETURNING id",
                    &[&(now_ms() as i64)],
                )
                .await?;
            Ok::<_, StoreError>((tx, row.get::<_, i64>(0)))
        })?;
        Ok(PgUpload {
            store,
            tx: Some(tx),
            id,
            buf: Vec::with_capacity(CHUNK),
            stored: 0,
        })
    }

    /// Writes the buffered bytes as chunk rows: whole chunks only, unless `all`.
    fn flush(&mut self, all: bool) -> Result<(), StoreError> {
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| StoreError::Database("the upload's transaction has ended".into()))?;
        let (id, buf, stored) = (self.id, &mut self.buf, &mut self.stored);
        self.store.run(async {
            let client = tx.client()?;
            let stmt = client
                .prepare_cached(
                    "INSERT INTO jobd.upload_chunks (upload_id, pos, data) VALUES ($1, $2, $3)",
                )
                .await?;
            let mut start = 0;
            while buf.len() - start >= CHUNK || (all && start < buf.len()) {
                let end = (start + CHUNK).min(buf.len());
                client
                    .execute(&stmt, &[&id, &(*stored as i64), &&buf[start..end]])
                    .await?;
                *stored += (end - start) as u64;
                start = end;
            }
            buf.drain(..start);
            Ok(())
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

    fn create_job(mut self: Box<Self>, job: &NewJob<'_>) -> Result<JobRow, StoreError> {
        self.flush(true)?;
        let tx = self
            .tx
            .take()
            .ok_or_else(|| StoreError::Database("the upload's transaction has ended".into()))?;
        let (id, bytes) = (self.id, self.stored as i64);
        self.store.run(async move {
            let client = tx.client()?;
            client
                .execute(
                    "UPDATE jobd.uploads SET bytes = $2 WHERE id = $1",
                    &[&id, &bytes],
                )
                .await?;
            let row = jobs::insert(client, job, &id.to_string()).await?;
            tx.commit().await?;
            Ok(row)
        })
    }
}

/// What a [`ChunkReader`] reads: an upload's chunks or an output's.
#[derive(Clone, Copy)]
enum Blob {
    Upload(i64),
    Output(i64),
}

impl Blob {
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
        Ok(Box::new(ChunkReader {
            store: self.store.clone(),
            blob: Blob::Upload(self.id),
            pos: offset,
            end: self.len,
            chunk: Vec::new(),
            chunk_pos: 0,
        }))
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
        Ok(ChunkReader {
            store: store.clone(),
            blob: Blob::Output(seq),
            pos: 0,
            end: len as u64,
            chunk: Vec::new(),
            chunk_pos: 0,
        })
    }
}

/// Reads chunk rows in order from any offset, one row per round trip.
pub struct ChunkReader {
    store: PgStore,
    blob: Blob,
    pos: u64,
    end: u64,
    /// The chunk holding `pos`, which starts at `chunk_pos`.
    chunk: Vec<u8>,
    chunk_pos: u64,
}

impl Reader for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, StoreError> {
        if self.pos >= self.end || buf.is_empty() {
            return Ok(0);
        }
        let in_chunk =
            self.pos >= self.chunk_pos && self.pos < self.chunk_pos + self.chunk.len() as u64;
        if !in_chunk {
            let (blob, pos) = (self.blob, self.pos as i64);
            let (start, data) = self.store.run(async {
                let client = self.store.client().await?;
                let stmt = client.prepare_cached(blob.chunk_at_sql()).await?;
                let row = client
                    .query_opt(&stmt, &[&blob.key(), &pos])
                    .await?
                    .ok_or_else(|| StoreError::Corrupt(format!("no data at byte {pos}")))?;
                Ok::<_, StoreError>((row.get::<_, i64>(0), row.get::<_, Vec<u8>>(1)))
            })?;
            if start as u64 > self.pos || start as u64 + data.len() as u64 <= self.pos {
                return Err(StoreError::Corrupt(format!("no data at byte {pos}")));
            }
            self.chunk_pos = start as u64;
            self.chunk = data;
        }
        let from = (self.pos - self.chunk_pos) as usize;
        let avail = (self.chunk.len() - from).min((self.end - self.pos) as usize);
        let n = avail.min(buf.len());
        buf[..n].copy_from_slice(&self.chunk[from..from + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

/// Appends `bytes` to the job's output after its first `at` bytes, in the
/// caller's transaction; returns the new length.
pub async fn append_output(
    c: &impl GenericClient,
    seq: i64,
    at: u64,
    bytes: &[u8],
) -> Result<u64, StoreError> {
    let stmt = c
        .prepare_cached("INSERT INTO jobd.output_chunks (job_seq, pos, data) VALUES ($1, $2, $3)")
        .await?;
    let mut pos = at;
    for chunk in bytes.chunks(CHUNK) {
        c.execute(&stmt, &[&seq, &(pos as i64), &chunk]).await?;
        pos += chunk.len() as u64;
    }
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
