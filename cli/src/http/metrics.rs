//! `GET /metrics`: the daemon's counters in the Prometheus text format
//! ([`crate::prom`]), from one `Metrics` request whatever the number of jobs.
//! A daemon that does not answer gives `jobd_up 0` (still 200: the scrape
//! worked, the daemon is down).

use super::Shared;
use crate::prom;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

pub async fn metrics(State(app): State<Shared>) -> Response {
    let snapshot = match app.pool.metrics().await {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::debug!(error = %e, "metrics: the daemon did not answer");
            None
        }
    };
    super::reply::with_type(
        StatusCode::OK,
        prom::CONTENT_TYPE,
        prom::render(snapshot.as_ref()),
    )
}
