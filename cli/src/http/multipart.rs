//! Streaming a multipart upload into the daemon.
//!
//! The form is read part by part as it arrives. The first part named `file` that
//! carries a file name (what Go's `c.FormFile("file")` looks for) is sent to the
//! daemon in `Chunk` frames of up to [`CHUNK_SIZE`] bytes while it is still being
//! received: memory use stays at a couple of chunks whatever the file's size, and a
//! slow daemon slows the client down (the socket's back-pressure reaches TCP).
//!
//! The rest of the form is read to its end before the upload is committed with
//! `End`, since Go parsed the whole form before answering. If anything goes wrong
//! before `End` (a client that goes away, a malformed or truncated form), the daemon
//! connection is simply dropped: the daemon then discards its spool file and no job
//! exists.

use super::pool::Pool;
use axum::extract::multipart::{Field, Multipart};
use jobd_protocol::{Client, ClientError, JobInfo, Request, Response, UploadKind, CHUNK_SIZE};

/// Why an upload did not become a job.
#[derive(Debug)]
pub enum UploadFailure {
    /// No `file` part with a file name, or a form that is malformed or cut short.
    NotAccepted,
    /// A field before the file is missing or wrong (`POST /jobs`): why.
    BadField(&'static str),
    /// The daemon refused, or could not be reached.
    Daemon(ClientError),
}

/// Longest value of a plain field read before the file (`kind`, `rate`).
const MAX_FIELD: usize = 64;
/// Plain fields read or skipped before the file, at most.
const MAX_FIELDS: usize = 16;

/// Is this the part `c.FormFile("file")` would return?
fn is_file_part(field: &Field<'_>) -> bool {
    field.name() == Some("file") && field.file_name().is_some_and(|n| !n.is_empty())
}

/// Streams the form's `file` part to the daemon as a job of `kind`.
pub async fn upload(
    pool: &Pool,
    form: Multipart,
    kind: UploadKind,
    rate: Option<f64>,
) -> Result<JobInfo, UploadFailure> {
    upload_form(pool, form, Some(kind), rate).await
}

/// Streams the form's `file` part to the daemon. With `kind` `None` (`POST
/// /jobs`), the kind and rate are read from the fields `kind` (`baselineCSV` or
/// `bulkTeam`) and `rate`, which must come before the file: the file is sent to
/// the daemon as it arrives, and the daemon needs the kind first.
pub async fn upload_form(
    pool: &Pool,
    mut form: Multipart,
    mut kind: Option<UploadKind>,
    mut rate: Option<f64>,
) -> Result<JobInfo, UploadFailure> {
    let read_fields = kind.is_none();
    let mut seen = 0;
    let mut field = loop {
        match form.next_field().await {
            Ok(Some(f)) if is_file_part(&f) => break f,
            Ok(Some(f)) if read_fields => {
                seen += 1;
                if seen > MAX_FIELDS {
                    return Err(UploadFailure::BadField("too many fields before the file"));
                }
                match f.name() {
                    Some("kind") => {
                        kind = Some(match text(f).await?.as_str() {
                            "baselineCSV" => UploadKind::BaselineCsv,
                            "bulkTeam" => UploadKind::BulkTeam,
                            _ => {
                                return Err(UploadFailure::BadField(
                                    "kind must be baselineCSV or bulkTeam",
                                ))
                            }
                        })
                    }
                    Some("rate") => {
                        let value = text(f).await?;
                        rate = match value.trim() {
                            "" => None,
                            r => Some(r.parse().map_err(|_| {
                                UploadFailure::BadField("rate must be a number of units per second")
                            })?),
                        };
                    }
                    _ => {}
                }
            }
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return Err(UploadFailure::NotAccepted),
        }
    };
    let Some(kind) = kind else {
        return Err(UploadFailure::BadField(
            "a kind field must come before the file",
        ));
    };
    let (client, first) = pool
        .open(&Request::SubmitUpload { kind, rate })
        .await
        .map_err(UploadFailure::Daemon)?;
    match first {
        Response::Ready => {}
        Response::Error { code, message } => {
            pool.give_back(client);
            return Err(UploadFailure::Daemon(ClientError::Daemon { code, message }));
        }
        other => {
            return Err(UploadFailure::Daemon(ClientError::Unexpected(format!(
                "{other:?}"
            ))))
        }
    }
    let mut sender = ChunkSender {
        client,
        buf: Vec::with_capacity(CHUNK_SIZE),
        sent: 0,
    };
    loop {
        match field.chunk().await {
            Ok(Some(bytes)) => sender.push(&bytes).await?,
            Ok(None) => break,
            // The client went away or the part is cut short: dropping `sender`
            // closes the daemon connection and the daemon discards the upload.
            Err(_) => return Err(UploadFailure::NotAccepted),
        }
    }
    drop(field);
    loop {
        match form.next_field().await {
            Ok(Some(_)) => continue,
            Ok(None) => break,
            Err(_) => return Err(UploadFailure::NotAccepted),
        }
    }
    sender.finish(pool).await
}

/// A plain field's value, bounded.
async fn text(mut field: Field<'_>) -> Result<String, UploadFailure> {
    let mut value = Vec::new();
    loop {
        match field.chunk().await {
            Ok(Some(bytes)) if value.len() + bytes.len() <= MAX_FIELD => {
                value.extend_from_slice(&bytes)
            }
            Ok(Some(_)) => return Err(UploadFailure::BadField("a field is too long")),
            Ok(None) => break,
            Err(_) => return Err(UploadFailure::NotAccepted),
        }
    }
    String::from_utf8(value).map_err(|_| UploadFailure::BadField("a field is not UTF-8"))
}

/// Gathers the received bytes into full-sized `Chunk` frames.
struct ChunkSender {
    client: Client,
    buf: Vec<u8>,
    sent: u64,
}

impl ChunkSender {
    async fn push(&mut self, mut data: &[u8]) -> Result<(), UploadFailure> {
        while !data.is_empty() {
            let n = (CHUNK_SIZE - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == CHUNK_SIZE {
                self.flush().await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), UploadFailure> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let req = Request::Chunk {
            data: std::mem::take(&mut self.buf),
        };
        if let Err(e) = self.client.send(&req).await {
            // The daemon may have refused mid-upload (too large, disk full) and
            // closed; its reason is the frame waiting to be read.
            let reason = match self.client.recv().await {
                Ok(Response::Error { code, message }) => ClientError::Daemon { code, message },
                _ => e,
            };
            return Err(UploadFailure::Daemon(reason));
        }
        if let Request::Chunk { mut data } = req {
            self.sent += data.len() as u64;
            data.clear();
            self.buf = data;
        }
        Ok(())
    }

    /// Sends what is left and `End`; the job exists once the daemon answers.
    async fn finish(mut self, pool: &Pool) -> Result<JobInfo, UploadFailure> {
        self.flush().await?;
        let end = Request::End { bytes: self.sent };
        let answer = match self.client.send(&end).await {
            Ok(()) => self.client.recv().await,
            Err(e) => Err(e),
        };
        match answer {
            Ok(Response::Job(info)) => {
                pool.give_back(self.client);
                Ok(info)
            }
            Ok(Response::Error { code, message }) => {
                pool.give_back(self.client);
                Err(UploadFailure::Daemon(ClientError::Daemon { code, message }))
            }
            Ok(other) => Err(UploadFailure::Daemon(ClientError::Unexpected(format!(
                "{other:?}"
            )))),
            Err(e) => Err(UploadFailure::Daemon(e)),
        }
    }
}
