//! Upload spooling: an upload is written to its own file in the spool directory and
//! made durable (file and directory fsynced) before its job is created. A spool file
//! that never becomes a job is removed when dropped.

use std::io;
use std::path::{Path, PathBuf};
use tokio::fs::{File, OpenOptions};
use tokio::io::AsyncWriteExt;

pub struct SpoolFile {
    file: Option<File>,
    dir: PathBuf,
    name: String,
    written: u64,
    kept: bool,
}

impl SpoolFile {
    pub async fn create(dir: &Path) -> io::Result<SpoolFile> {
        let name = format!(
            "upload-{}-{:08x}.csv",
            crate::store::now_ms(),
            fastrand::u32(..)
        );
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.join(&name))
            .await?;
        Ok(SpoolFile {
            file: Some(file),
            dir: dir.to_path_buf(),
            name,
            written: 0,
            kept: false,
        })
    }

    pub async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let file = self.file.as_mut().ok_or_else(closed)?;
        file.write_all(data).await?;
        self.written += data.len() as u64;
        Ok(())
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Flushes and fsyncs the file and its directory; the file is then durable.
    pub async fn sync(&mut self) -> io::Result<()> {
        let mut file = self.file.take().ok_or_else(closed)?;
        file.flush().await?;
        file.sync_all().await?;
        drop(file);
        File::open(&self.dir).await?.sync_all().await
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file now belongs to a job: it is no longer removed on drop.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

fn closed() -> io::Error {
    io::Error::other("spool file already closed")
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(self.dir.join(&self.name));
        }
    }
}
