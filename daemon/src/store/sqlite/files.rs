//! The files of the embedded store: uploads spooled to `spool/` (written and
//! fsynced before their job exists) and export outputs in `exports/<id>.csv`.

use super::{jobs, Dirs, SqliteStore};
use crate::store::{Input, JobRow, NewJob, Reader, StoreError, StoredState, Upload};
use jobd_protocol::{JobKind, JobState};
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// An upload being written to its own spool file; removed if it never becomes a job.
pub struct SpoolUpload {
    store: SqliteStore,
    file: File,
    path: PathBuf,
    name: String,
    written: u64,
    kept: bool,
}

impl SpoolUpload {
    pub fn create(store: SqliteStore) -> Result<SpoolUpload, StoreError> {
        let name = format!(
            "upload-{}-{:08x}.csv",
            crate::store::now_ms(),
            fastrand::u32(..)
        );
        let path = store.inner.dirs.spool.join(&name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| StoreError::io("cannot create a spool file", e))?;
        Ok(SpoolUpload {
            store,
            file,
            path,
            name,
            written: 0,
            kept: false,
        })
    }
}

impl Upload for SpoolUpload {
    fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.file
            .write_all(data)
            .map_err(|e| StoreError::io("cannot write the upload", e))?;
        self.written += data.len() as u64;
        Ok(())
    }

    fn written(&self) -> u64 {
        self.written
    }

    /// The file and its directory are fsynced before the job's row is committed:
    /// a job never exists without its whole input.
    fn create_job(&mut self, job: &NewJob<'_>) -> Result<JobRow, StoreError> {
        let sync = |what| move |e| StoreError::io(format!("cannot sync the {what}"), e);
        self.file.sync_all().map_err(sync("upload"))?;
        File::open(&self.store.inner.dirs.spool)
            .and_then(|d| d.sync_all())
            .map_err(sync("spool directory"))?;
        let name = self.name.clone();
        let row = self.store.write(|conn| {
            let seq = jobs::insert(conn, job, &name)?;
            jobs::load(conn, seq)
        })?;
        self.kept = true;
        Ok(row)
    }
}

impl Drop for SpoolUpload {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A spooled upload, read from any offset.
pub struct FileInput {
    path: PathBuf,
    len: u64,
}

impl FileInput {
    pub fn open(spool: &Path, name: &str) -> Result<FileInput, StoreError> {
        let path = spool.join(name);
        let len = std::fs::metadata(&path)
            .map_err(|e| StoreError::io(format!("cannot open {}", path.display()), e))?
            .len();
        Ok(FileInput { path, len })
    }
}

impl Input for FileInput {
    fn size(&self) -> u64 {
        self.len
    }

    fn open_at(&self, offset: u64) -> Result<Box<dyn Reader>, StoreError> {
        let mut file = File::open(&self.path)
            .map_err(|e| StoreError::io(format!("cannot open {}", self.path.display()), e))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| StoreError::io("cannot seek in the upload", e))?;
        Ok(Box::new(FileReader {
            file,
            what: "the upload",
        }))
    }
}

pub struct FileReader {
    file: File,
    what: &'static str,
}

impl Reader for FileReader {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, StoreError> {
        self.file
            .read(buf)
            .map_err(|e| StoreError::io(format!("cannot read {}", self.what), e))
    }
}

fn export_file(dirs: &Dirs, job_id: &str) -> PathBuf {
    dirs.exports.join(format!("{job_id}.csv"))
}

/// Appends `bytes` to the export's file after its first `committed` bytes (a
/// longer file holds the uncommitted tail of a crash, which goes), and makes them
/// durable. Returns the new length.
pub fn append_output(
    dirs: &Dirs,
    job_id: &str,
    committed: u64,
    bytes: &[u8],
) -> Result<u64, StoreError> {
    let path = export_file(dirs, job_id);
    let io = |what: &str| {
        let what = format!("{what} {}", path.display());
        move |e| StoreError::io(what, e)
    };
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io("cannot open"))?;
    file.set_len(committed).map_err(io("cannot truncate"))?;
    file.seek(SeekFrom::Start(committed))
        .map_err(io("cannot seek in"))?;
    file.write_all(bytes).map_err(io("cannot write"))?;
    file.sync_data().map_err(io("cannot sync"))?;
    Ok(committed + bytes.len() as u64)
}

pub fn open_output(dirs: &Dirs, job_id: &str) -> Result<FileReader, StoreError> {
    let path = export_file(dirs, job_id);
    let file = File::open(&path).map_err(|e| StoreError::io("cannot open the output", e))?;
    Ok(FileReader {
        file,
        what: "the output",
    })
}

/// Removes the upload a job read, once it no longer needs it.
pub fn remove_input(dirs: &Dirs, kind: JobKind, input: &str) {
    if kind != JobKind::CreateExport {
        remove_files(&[dirs.spool.join(input)]);
    }
}

/// Removes an export's output (failed or terminated: it is half-done).
pub fn remove_output(dirs: &Dirs, kind: JobKind, job_id: &str) {
    if kind == JobKind::CreateExport {
        remove_files(&[export_file(dirs, job_id)]);
    }
}

/// Removes files, ignoring those already gone.
fn remove_files(files: &[PathBuf]) {
    for f in files {
        if let Err(e) = std::fs::remove_file(f) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(file = %f.display(), error = %e, "cannot remove file");
            }
        }
    }
}

/// Removes the files no job needs: spool files of uploads cut short or of ended
/// jobs, export files of failed or terminated exports (a crash can leave them
/// between a job's end and their removal).
pub fn remove_strays(dirs: &Dirs, rows: &[JobRow]) {
    let mut live_spool = HashSet::new();
    let mut live_exports = HashSet::new();
    for row in rows {
        let ended_badly = matches!(
            row.state,
            StoredState::Terminating | StoredState::Public(JobState::Failed | JobState::Terminated)
        );
        let finished = matches!(row.state, StoredState::Public(s) if s.is_finished());
        match row.kind {
            JobKind::CreateExport if !ended_badly => {
                live_exports.insert(format!("{}.csv", row.id));
            }
            JobKind::CreateExport => {}
            _ if !finished => {
                live_spool.insert(row.input.clone());
            }
            _ => {}
        }
    }
    remove_unlisted(&dirs.spool, &live_spool);
    remove_unlisted(&dirs.exports, &live_exports);
}

fn remove_unlisted(dir: &Path, live: &HashSet<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !live.contains(&name) {
            tracing::info!(file = %entry.path().display(), "removing a stray file");
            remove_files(&[entry.path()]);
        }
    }
}
