//! Progress display: an indicatif bar on stderr when stderr is a terminal, nothing
//! otherwise (callers print plain lines where a command's output needs them).

use indicatif::{ProgressBar, ProgressStyle};
use jobd_protocol::JobInfo;
use std::cell::Cell;
use std::io::IsTerminal;
use std::time::Duration;

/// True when progress bars may be drawn (stderr is a terminal).
pub fn bars_enabled() -> bool {
    std::io::stderr().is_terminal()
}

/// True when both stdout and stderr are terminals: a bar can replace output lines.
pub fn interactive() -> bool {
    bars_enabled() && std::io::stdout().is_terminal()
}

/// A progress bar, or nothing. The flag remembers whether the job bar's style
/// currently shows a known total, so the style changes only when that does.
pub struct Bar(Option<ProgressBar>, Cell<Option<bool>>);

fn styled(bar: ProgressBar, template: &str) -> ProgressBar {
    match ProgressStyle::with_template(template) {
        Ok(style) => bar.with_style(style.progress_chars("=> ")),
        Err(_) => bar,
    }
}

impl Bar {
    pub fn hidden() -> Bar {
        Bar(None, Cell::new(None))
    }

    /// Bytes sent of an upload, `len` when the input's size is known.
    pub fn upload(len: Option<u64>) -> Bar {
        if !bars_enabled() {
            return Bar::hidden();
        }
        let bar = match len {
            Some(len) => styled(
                ProgressBar::new(len),
                "{spinner} uploading [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec}",
            ),
            None => styled(
                ProgressBar::no_length(),
                "{spinner} uploading {bytes} {binary_bytes_per_sec}",
            ),
        };
        bar.enable_steady_tick(Duration::from_millis(120));
        Bar(Some(bar), Cell::new(None))
    }

    /// Units handled by a job, labelled with its id.
    pub fn job(job: &JobInfo) -> Bar {
        if !bars_enabled() {
            return Bar::hidden();
        }
        let bar = ProgressBar::no_length().with_prefix(job.id.clone());
        bar.enable_steady_tick(Duration::from_millis(120));
        let bar = Bar(Some(bar), Cell::new(None));
        bar.update(job);
        bar
    }

    pub fn set_bytes(&self, sent: u64) {
        if let Some(bar) = &self.0 {
            bar.set_position(sent);
        }
    }

    /// Shows a job's state and counts.
    pub fn update(&self, job: &JobInfo) {
        let Some(bar) = &self.0 else { return };
        if let Some(total) = job.total {
            bar.set_length(total);
        }
        let known = job.total.is_some();
        if self.1.replace(Some(known)) != Some(known) {
            let template = if known {
                "{spinner} {prefix} {msg} [{bar:30}] {pos}/{len} eta {eta}"
            } else {
                "{spinner} {prefix} {msg} {pos} done"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
        }
        bar.set_position(job.processed + job.failed);
        bar.set_message(if job.failed > 0 {
            format!("{} ({} failed)", job.state, job.failed)
        } else {
            job.state.to_string()
        });
    }

    /// Removes the bar from the terminal.
    pub fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.finish();
    }
}
