//! `jobctl metrics`: the daemon's counters in the Prometheus text format, as
//! jobd-http's `/metrics` serves them (`--json`: the numbers as the daemon sent
//! them).

use super::{print_line, Ctx, Error, Outcome};
use jobd_protocol::metrics::Histogram;
use jobd_protocol::Metrics;
use serde_json::{json, Value};
use std::io::Write;

pub async fn run(ctx: &Ctx) -> Result<Outcome, Error> {
    let mut client = ctx.connect().await?;
    let metrics = client.metrics().await?;
    if ctx.json {
        print_line(metrics_json(&metrics))?;
    } else {
        let text = crate::prom::render(Some(&metrics));
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|source| Error::Io {
                what: "cannot write to stdout".into(),
                source,
            })?;
    }
    Ok(Outcome::Success)
}

fn histogram_json(h: &Histogram) -> Value {
    json!({ "bounds": h.bounds, "counts": h.counts, "sum": h.sum, "count": h.count() })
}

/// `{"jobs": [{"kind","state","count"}], "units": [...], "controls": [...], "commits": {...}}`.
pub fn metrics_json(m: &Metrics) -> Value {
    json!({
        "jobs": m.jobs.iter().map(|j| json!({
            "kind": j.kind.as_str(), "state": j.state.as_str(), "count": j.count,
        })).collect::<Vec<_>>(),
        "units": m.units.iter().map(|u| json!({
            "kind": u.kind.as_str(), "applied": u.applied, "rejected": u.rejected,
        })).collect::<Vec<_>>(),
        "controls": m.controls.iter().map(|c| json!({
            "action": c.action.as_str(), "seconds": histogram_json(&c.seconds),
        })).collect::<Vec<_>>(),
        "commits": histogram_json(&m.commits),
    })
}
