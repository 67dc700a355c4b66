//! A job as the dashboard shows it: the figures of [`JobInfo`] turned into the
//! strings the templates print (the templates escape them).

use crate::jobctl::render::rfc3339_ms;
use jobd_protocol::{JobInfo, JobKind, JobState};

pub struct JobView {
    pub id: String,
    /// The id as a path segment.
    pub href: String,
    pub kind: &'static str,
    pub kind_label: &'static str,
    pub state: &'static str,
    pub owner: String,
    pub processed: u64,
    pub failed: u64,
    /// Units handled so far (the progress bar's value).
    pub handled: u64,
    pub total: Option<u64>,
    pub total_text: String,
    pub percent: String,
    pub rate_limit: String,
    pub throughput: String,
    pub eta: String,
    pub created: String,
    pub created_ms: u64,
    pub updated: String,
    pub updated_short: String,
    pub error: Option<String>,
    pub can_stop: bool,
    pub can_start: bool,
    pub can_terminate: bool,
    /// A finished upload or bulk-team job whose effects can still be undone.
    pub can_revert: bool,
    pub has_output: bool,
}

pub fn kind_label(kind: JobKind) -> &'static str {
    match kind {
        JobKind::BaselineCsv => "baseline",
        JobKind::BulkTeam => "bulk team",
        JobKind::CreateExport => "export",
    }
}

impl JobView {
    pub fn new(j: &JobInfo) -> JobView {
        let handled = j.processed + j.failed;
        let percent = match j.total {
            Some(0) => "100%".to_string(),
            Some(t) => format!("{}%", handled.min(t) * 100 / t),
            None => String::new(),
        };
        // The average since the job was created: a first figure, refined live
        // by the page from the changes it sees.
        let secs = j.updated_at.saturating_sub(j.created_at) as f64 / 1000.0;
        let moving = matches!(j.state, JobState::Running | JobState::Completed);
        let throughput = (secs > 0.0 && handled > 0 && moving).then(|| handled as f64 / secs);
        let eta = match (j.state, j.total, throughput) {
            (JobState::Running, Some(t), Some(r)) if r > 0.0 && t > handled => {
                duration(((t - handled) as f64 / r).round() as u64)
            }
            _ => "–".to_string(),
        };
        let updated = rfc3339_ms(j.updated_at);
        JobView {
            id: j.id.clone(),
            href: path_segment(&j.id),
            kind: j.kind.as_str(),
            kind_label: kind_label(j.kind),
            state: j.state.as_str(),
            owner: j.owner.clone(),
            processed: j.processed,
            failed: j.failed,
            handled,
            total: j.total,
            total_text: j.total.map_or_else(|| "?".to_string(), |t| t.to_string()),
            percent,
            rate_limit: j
                .rate
                .map_or_else(|| "none".to_string(), |r| format!("{r} per second")),
            throughput: throughput.map_or_else(|| "–".to_string(), rate),
            eta,
            created: rfc3339_ms(j.created_at),
            created_ms: j.created_at,
            updated_short: format!("{} {} UTC", &updated[..10], &updated[11..19]),
            updated,
            error: j.error.clone(),
            can_stop: matches!(j.state, JobState::Running | JobState::Queued),
            can_start: j.state == JobState::Paused,
            can_terminate: !j.state.is_finished(),
            can_revert: j.kind != JobKind::CreateExport
                && matches!(j.state, JobState::Completed | JobState::Failed),
            has_output: j.kind == JobKind::CreateExport && j.state == JobState::Completed,
        }
    }
}

fn rate(r: f64) -> String {
    if r >= 100.0 {
        format!("{}/s", r.round())
    } else {
        format!("{r:.1}/s")
    }
}

fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min {} s", s / 60, s % 60),
        s => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

/// `s` as one path segment: unreserved characters kept, the rest percent-encoded.
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(state: JobState, processed: u64, total: Option<u64>) -> JobInfo {
        JobInfo {
            id: "al ice-bulkTeam-1-2".into(),
            kind: JobKind::BulkTeam,
            state,
            owner: "al ice".into(),
            owner_uid: 1,
            processed,
            failed: 0,
            total,
            created_at: 1_000_000,
            updated_at: 1_010_000,
            error: None,
            rate: Some(20.0),
            node: None,
        }
    }

    #[test]
    fn figures() {
        let v = JobView::new(&job(JobState::Running, 100, Some(400)));
        assert_eq!(v.href, "al%20ice-bulkTeam-1-2");
        assert_eq!((v.percent.as_str(), v.total_text.as_str()), ("25%", "400"));
        assert_eq!(v.throughput, "10.0/s");
        assert_eq!(v.eta, "30 s");
        assert_eq!(v.updated_short, "1970-01-01 00:16:50 UTC");
        assert!(v.can_stop && !v.can_start && v.can_terminate && !v.has_output);
        let v = JobView::new(&job(JobState::Paused, 0, None));
        assert_eq!((v.percent.as_str(), v.total_text.as_str()), ("", "?"));
        assert_eq!((v.throughput.as_str(), v.eta.as_str()), ("–", "–"));
        assert!(!v.can_stop && v.can_start);
    }
}
