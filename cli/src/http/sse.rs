//! `GET /jobs/{id}/events`: a job's progress as Server-Sent Events, from the
//! daemon's `Watch`.
//!
//! Every step the daemon reports becomes one event whose data is the job as
//! `GET /jobs/{id}` shows it: `state` for the first event and whenever the state
//! changed, `progress` when only the counts moved, and `end` for the final state
//! (`completed`, `failed` or `terminated`), after which the stream closes. If the
//! daemon goes away mid-stream, one `error` event (`{"errorType":"daemon_unavailable"}`)
//! ends it. A comment line is sent every 15 s of silence to keep the connection
//! alive; the stream also ends when the shim shuts down.

use super::reply::{self, Routes};
use super::{Pool, Shared};
use crate::jobctl::render::job_json;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use jobd_protocol::{Client, ClientError, JobInfo, JobState, Request, Response as Answer};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::watch;

pub async fn events(State(app): State<Shared>, Path(id): Path<String>) -> Response {
    let (client, first) = match app.pool.open(&Request::Watch { id }).await {
        Ok(v) => v,
        Err(e) => return reply::client_error(Routes::Jobs, &e),
    };
    let first = match first {
        Answer::Job(info) => info,
        Answer::Error { code, message } => {
            app.pool.give_back(client);
            return reply::client_error(Routes::Jobs, &ClientError::Daemon { code, message });
        }
        other => {
            return reply::client_error(
                Routes::Jobs,
                &ClientError::Unexpected(format!("{other:?}")),
            )
        }
    };
    let state = WatchStream {
        client: Some(client),
        pool: Arc::clone(&app.pool),
        first: Some(first),
        last_state: None,
        shutdown: app.shutdown.clone(),
        done: false,
    };
    Sse::new(stream::unfold(state, WatchStream::next))
        .keep_alive(KeepAlive::default())
        .into_response()
}

struct WatchStream {
    client: Option<Client>,
    pool: Arc<Pool>,
    /// The answer to `Watch`, read before the response head was sent.
    first: Option<JobInfo>,
    last_state: Option<JobState>,
    shutdown: watch::Receiver<bool>,
    done: bool,
}

impl WatchStream {
    async fn next(mut self) -> Option<(Result<Event, Infallible>, WatchStream)> {
        if self.done {
            return None;
        }
        let info = match self.first.take() {
            Some(info) => info,
            None => {
                let mut client = self.client.take()?;
                let step = tokio::select! {
                    step = client.next_event() => step,
                    // Shutting down: end the stream (and the watch, by closing).
                    _ = self.shutdown.wait_for(|down| *down) => return None,
                };
                match step {
                    Ok(Some(info)) => {
                        self.client = Some(client);
                        info
                    }
                    Ok(None) => {
                        self.pool.give_back(client);
                        return None;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "watch ended by the daemon connection");
                        self.done = true;
                        let event = Event::default().event("error").data(format!(
                            "{{\"errorType\":\"{}\"}}",
                            reply::DAEMON_UNAVAILABLE
                        ));
                        return Some((Ok(event), self));
                    }
                }
            }
        };
        let name = if info.state.is_finished() {
            "end"
        } else if self.last_state != Some(info.state) {
            "state"
        } else {
            "progress"
        };
        self.last_state = Some(info.state);
        if info.state.is_finished() {
            self.done = true;
            // The daemon follows the final state with `End`; read it so that the
            // connection can serve again.
            if let Some(mut client) = self.client.take() {
                if let Ok(None) = client.next_event().await {
                    self.pool.give_back(client);
                }
            }
        }
        let event = Event::default()
            .event(name)
            .data(job_json(&info).to_string());
        Some((Ok(event), self))
    }
}
