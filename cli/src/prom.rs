//! The daemon's counters ([`jobd_protocol::Metrics`]) in the Prometheus text
//! format, written by `prometheus-client`: `GET /metrics` of jobd-http and
//! `jobctl metrics` print the same text.
//!
//! The numbers are the daemon's; a scrape only renders the one answer it got, so
//! it costs one round trip whatever the number of jobs. `jobd_up` says whether
//! the daemon answered at all (0: nothing else is written).

use jobd_protocol::metrics::Histogram;
use jobd_protocol::Metrics;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// What `GET /metrics` answers with: the classic text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The text for a scrape; `None` when the daemon did not answer.
pub fn render(metrics: Option<&Metrics>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot(metrics.cloned())));
    let mut out = String::new();
    // Writing into a String cannot fail; an encoder error would be a bug here.
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry) {
        tracing::error!("cannot encode metrics: {e}");
    }
    out
}

#[derive(Debug)]
struct Snapshot(Option<Metrics>);

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let up = ConstGauge::new(i64::from(self.0.is_some()));
        let m = enc.encode_descriptor(
            "jobd_up",
            "Whether the daemon answered this scrape",
            None,
            up.metric_type(),
        )?;
        up.encode(m)?;
        let Some(s) = &self.0 else {
            return Ok(());
        };

        let mut m = enc.encode_descriptor(
            "jobd_jobs",
            "Jobs known to the daemon, by kind and state",
            None,
            MetricType::Gauge,
        )?;
        for j in &s.jobs {
            let labels = [("kind", j.kind.as_str()), ("state", j.state.as_str())];
            let gauge = ConstGauge::new(i64::try_from(j.count).unwrap_or(i64::MAX));
            gauge.encode(m.encode_family(&labels)?)?;
        }

        let mut m = enc.encode_descriptor(
            "jobd_units",
            "Units (rows or dates) committed since the daemon started, by kind and outcome",
            None,
            MetricType::Counter,
        )?;
        for u in &s.units {
            for (outcome, n) in [("applied", u.applied), ("rejected", u.rejected)] {
                let labels = [("kind", u.kind.as_str()), ("outcome", outcome)];
                m.encode_family(&labels)?
                    .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(&n, None)?;
            }
        }

        let mut m = enc.encode_descriptor(
            "jobd_control_seconds",
            "Time from a control request to its answer (a stop answers once the job is parked)",
            None,
            MetricType::Histogram,
        )?;
        for c in &s.controls {
            let labels = [("action", c.action.as_str())];
            histogram(m.encode_family(&labels)?, &c.seconds)?;
        }

        let m = enc.encode_descriptor(
            "jobd_commit_seconds",
            "Time a batch commit takes (effects, counts and cursor in one transaction)",
            None,
            MetricType::Histogram,
        )?;
        histogram(m, &s.commits)
    }
}

fn histogram(
    mut m: prometheus_client::encoding::MetricEncoder<'_>,
    h: &Histogram,
) -> Result<(), std::fmt::Error> {
    let buckets: Vec<(f64, u64)> = h
        .bounds
        .iter()
        .copied()
        .chain(std::iter::once(f64::INFINITY))
        .zip(h.counts.iter().copied())
        .collect();
    m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(h.sum, h.count(), &buckets, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobd_protocol::metrics::{ControlTimes, JobCount, UnitCount};
    use jobd_protocol::{Action, JobKind, JobState};

    #[test]
    fn text() {
        assert_eq!(
            render(None),
            "# HELP jobd_up Whether the daemon answered this scrape\n\
             # TYPE jobd_up gauge\njobd_up 0\n"
        );
        let m = Metrics {
            jobs: vec![JobCount {
                kind: JobKind::BulkTeam,
                state: JobState::Running,
                count: 2,
            }],
            units: vec![UnitCount {
                kind: JobKind::BaselineCsv,
                applied: 300,
                rejected: 1,
            }],
            controls: vec![ControlTimes {
                action: Action::Stop,
                seconds: Histogram {
                    bounds: vec![0.5, 1.0],
                    counts: vec![3, 1, 0],
                    sum: 1.25,
                },
            }],
            commits: Histogram {
                bounds: vec![],
                counts: vec![7],
                sum: 0.5,
            },
        };
        let text = render(Some(&m));
        for line in [
            "jobd_up 1",
            "jobd_jobs{kind=\"bulkTeam\",state=\"running\"} 2",
            "jobd_units_total{kind=\"baselineCSV\",outcome=\"applied\"} 300",
            "jobd_units_total{kind=\"baselineCSV\",outcome=\"rejected\"} 1",
            "jobd_control_seconds_count{action=\"stop\"} 4",
            "jobd_control_seconds_bucket{action=\"stop\",le=\"0.5\"} 3",
            "jobd_control_seconds_bucket{action=\"stop\",le=\"1\"} 4",
            "jobd_control_seconds_bucket{action=\"stop\",le=\"+Inf\"} 4",
            "jobd_commit_seconds_count 7",
            "jobd_commit_seconds_sum 0.5",
            "# TYPE jobd_commit_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
