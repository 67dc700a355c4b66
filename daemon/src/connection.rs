//! One client connection: frames in, frames out, with the configured frame limit.

use jobd_protocol::frame::{self, FrameError};
use jobd_protocol::{Request, Response};
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

pub struct Connection {
    reader: BufReader<OwnedReadHalf>,
    writer: BufWriter<OwnedWriteHalf>,
    max_frame: u32,
    idle_timeout: Duration,
}

/// Why a connection cannot go on.
#[derive(Debug)]
pub enum ConnError {
    Frame(FrameError),
    /// Nothing arrived within the idle timeout.
    Idle,
}

impl From<FrameError> for ConnError {
    fn from(e: FrameError) -> Self {
        ConnError::Frame(e)
    }
}

impl From<std::io::Error> for ConnError {
    fn from(e: std::io::Error) -> Self {
        ConnError::Frame(FrameError::Io(e))
    }
}

impl Connection {
    pub fn new(stream: UnixStream, max_frame: u32, idle_timeout: Duration) -> Connection {
        let (r, w) = stream.into_split();
        Connection {
            reader: BufReader::with_capacity(64 * 1024, r),
            writer: BufWriter::with_capacity(64 * 1024, w),
            max_frame,
            idle_timeout,
        }
    }

    /// The next request; `Ok(None)` when the client closed the connection cleanly.
    pub async fn read(&mut self) -> Result<Option<Request>, ConnError> {
        self.read_within(self.idle_timeout).await
    }

    pub async fn read_within(&mut self, limit: Duration) -> Result<Option<Request>, ConnError> {
        match tokio::time::timeout(limit, frame::read_message(&mut self.reader, self.max_frame))
            .await
        {
            Ok(r) => Ok(r?),
            Err(_) => Err(ConnError::Idle),
        }
    }

    /// Writes and flushes one response.
    pub async fn send(&mut self, resp: &Response) -> Result<(), ConnError> {
        self.queue(resp).await?;
        self.flush().await
    }

    /// Writes one response without flushing (for streams of frames).
    pub async fn queue(&mut self, resp: &Response) -> Result<(), ConnError> {
        frame::write_message(&mut self.writer, resp).await?;
        Ok(())
    }

    pub async fn flush(&mut self) -> Result<(), ConnError> {
        self.writer.flush().await?;
        Ok(())
    }

    /// Resolves when the client sends anything or goes away; used while a request
    /// waits on a job so that a vanished client does not keep the task alive.
    pub async fn closed(&mut self) {
        let _ = frame::read_frame(&mut self.reader, self.max_frame).await;
    }
}
