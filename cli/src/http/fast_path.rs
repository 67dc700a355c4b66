//! `GET /updateTask` answered without the HTTP framework.
//!
//! Polling or probing ids with `GET /updateTask` is what the legacy API's
//! clients do most, and on a cached unknown id the shim's work is a hash lookup:
//! the rest is HTTP. Through hyper and the router that cost about 17 µs of CPU
//! per request here, a third of it in user space; parsed with `httparse` and
//! answered with a head written by hand, about 12 µs, nearly all of it the
//! kernel's (one `recvfrom` and one `sendto` per request): 56 k → 78 k requests
//! per second under `wrk -c32` (docs/BENCHMARKS.md, scenario `http`).
//!
//! Every connection starts here. Request heads are read and parsed as they come.
//! A request this file fully understands — `GET /updateTask` in HTTP/1.1, no
//! body, nothing asked of the connection but keep-alive or close — is answered
//! here with what the router's handler answers (both call
//! [`update_task::answer`]). The first request of any other shape hands the
//! connection, with every byte read and not yet answered, to the framework for
//! the rest of its life ([`Exit::Handoff`]): HTTP/1.0, `Expect`, `Upgrade`, a
//! body, another route, a head that does not parse or is longer than
//! [`MAX_HEAD`] all get exactly the framework's behaviour. So does a request that
//! the framework's [`super::guard`] would look at twice: one from a browser page
//! (`Origin`, `Sec-Fetch-Site`, a cookie) and, with tokens, one without a valid
//! bearer token (the guard answers 401).

use super::auth::Auth;
use super::log::Stats;
use super::reply::JSON_TYPE;
use super::{update_task, App};
use axum::body::Bytes;
use axum::http::uri::PathAndQuery;
use axum::http::StatusCode;
use bytes::{Buf, BytesMut};
use std::cell::RefCell;
use std::io::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

/// Heads still incomplete at this length are left to the framework (which has
/// its own, larger limit and its own answer to a head too long).
const MAX_HEAD: usize = 16 * 1024;

/// Headers a request answered here may have; more are left to the framework.
const MAX_HEADERS: usize = 32;

/// Room made in the read buffer before each read.
const READ_SIZE: usize = 4096;

/// The route served here.
const ROUTE: &str = "/updateTask";

/// How a connection left the fast path.
pub enum Exit<S> {
    /// Closed: by the client, an I/O error, `Connection: close`, or shutdown.
    Closed,
    /// A request not answered here: the connection, and the bytes read from it
    /// that no answer used, for the framework.
    Handoff(S, Bytes),
}

/// Serves `io` until it closes or holds a request for the framework. A
/// connection that completes no request head within `idle` of its start or of
/// its last answer is closed. Once `shutdown` turns true, the request in hand is
/// answered (with `connection: close`) and the connection closed.
pub async fn serve<S>(
    mut io: S,
    app: &App,
    stats: &'static Stats,
    idle: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> Exit<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(READ_SIZE);
    let mut out = Vec::with_capacity(256);
    let mut closing = false;
    // One timer for the connection: moving its deadline later costs no
    // re-registration (tokio only extends it).
    let timeout = tokio::time::sleep(idle);
    tokio::pin!(timeout);
    loop {
        // Answer every complete request read so far (pipelined ones in order).
        loop {
            let policy = Policy {
                auth: app.auth.as_deref(),
            };
            match parse_with(&buf, &policy) {
                Head::Partial => break,
                Head::Other => {
                    if io.write_all(&out).await.is_err() {
                        return Exit::Closed;
                    }
                    return Exit::Handoff(io, buf.freeze());
                }
                Head::UpdateTask { len, target, close } => {
                    let start = Instant::now();
                    let (status, body) = update_task::answer(app, target.query()).await;
                    let close = close || closing;
                    push_answer(&mut out, status, &body, close);
                    buf.advance(len);
                    let line = stats.take_line().then_some(("GET", ROUTE));
                    stats.record(status, start.elapsed(), line);
                    if close {
                        if io.write_all(&out).await.is_ok() {
                            let _ = io.shutdown().await;
                        }
                        return Exit::Closed;
                    }
                }
            }
        }
        if !out.is_empty() {
            if io.write_all(&out).await.is_err() {
                return Exit::Closed;
            }
            out.clear();
            timeout.as_mut().reset(tokio::time::Instant::now() + idle);
        }
        if closing && buf.is_empty() {
            return Exit::Closed;
        }
        buf.reserve(READ_SIZE);
        // Biased: a request already sent is read (and answered) before a
        // shutdown closes the connection.
        tokio::select! {
            biased;
            read = io.read_buf(&mut buf) => match read {
                Ok(0) | Err(_) => return Exit::Closed,
                Ok(_) => {}
            },
            _ = shutdown.wait_for(|down| *down), if !closing => closing = true,
            () = &mut timeout => return Exit::Closed,
        }
    }
}

/// What the start of the buffer holds.
#[derive(Debug, PartialEq)]
enum Head {
    /// Not a whole head yet (and shorter than [`MAX_HEAD`]).
    Partial,
    /// A request for the framework.
    Other,
    /// `GET /updateTask` of `len` bytes; `close` if the client asked for it.
    UpdateTask {
        len: usize,
        target: PathAndQuery,
        close: bool,
    },
}

/// What the guard would check, for [`parse_with`].
struct Policy<'a> {
    auth: Option<&'a Auth>,
}

#[cfg(test)]
fn parse(buf: &[u8]) -> Head {
    parse_with(buf, &Policy { auth: None })
}

fn parse_with(buf: &[u8], policy: &Policy<'_>) -> Head {
    if buf.is_empty() {
        return Head::Partial;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Head::Partial,
        _ => return Head::Other,
    };
    if req.method != Some("GET") || req.version != Some(1) {
        return Head::Other;
    }
    let Some(path) = req.path else {
        return Head::Other;
    };
    match path.strip_prefix(ROUTE) {
        Some(rest) if rest.is_empty() || rest.starts_with('?') => {}
        _ => return Head::Other,
    }
    let mut close = false;
    let mut authorized = policy.auth.is_none();
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("authorization") {
            authorized = policy.auth.is_some_and(|a| a.check_bearer(h.value));
        } else if name.eq_ignore_ascii_case("origin")
            || name.eq_ignore_ascii_case("cookie")
            || name.eq_ignore_ascii_case("sec-fetch-site")
        {
            // A browser's request: the guard decides.
            return Head::Other;
        } else if name.eq_ignore_ascii_case("connection") {
            let Ok(value) = std::str::from_utf8(h.value) else {
                return Head::Other;
            };
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if !token.eq_ignore_ascii_case("keep-alive") {
                    return Head::Other;
                }
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            if h.value.trim_ascii() != b"0" {
                return Head::Other;
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("expect")
            || name.eq_ignore_ascii_case("upgrade")
        {
            return Head::Other;
        }
    }
    if !authorized {
        return Head::Other;
    }
    // The target as the framework would see it (or its refusal, by it).
    match PathAndQuery::try_from(path) {
        Ok(target) if target.path() == ROUTE => Head::UpdateTask { len, target, close },
        _ => Head::Other,
    }
}

/// Appends a whole JSON response.
fn push_answer(out: &mut Vec<u8>, status: StatusCode, body: &[u8], close: bool) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: ");
    out.extend_from_slice(JSON_TYPE.as_bytes());
    let _ = write!(out, "\r\ncontent-length: {}", body.len());
    if close {
        out.extend_from_slice(b"\r\nconnection: close");
    }
    out.extend_from_slice(b"\r\ndate: ");
    push_date(out);
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
}

thread_local! {
    /// The `Date` header of the current second, made once a second per thread.
    static DATE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
}

fn push_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|date| {
        let mut date = date.borrow_mut();
        if date.0 != secs || date.1.is_empty() {
            *date = (secs, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(date.1.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::pool::Pool;
    use std::path::PathBuf;
    use std::sync::Arc;

    const IDLE: Duration = Duration::from_secs(60);

    fn is_fast(head: &str) -> bool {
        matches!(parse(head.as_bytes()), Head::UpdateTask { .. })
    }

    #[test]
    fn which_requests_are_answered_here() {
        for head in [
            "GET /updateTask?id=x&action=stop HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /updateTask HTTP/1.1\r\n\r\n",
            "GET /updateTask?id=x HTTP/1.1\r\nConnection: keep-alive\r\n\r\n",
            "GET /updateTask?id=x HTTP/1.1\r\nconnection: Keep-Alive, close\r\n\r\n",
            "GET /updateTask?id=x HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        ] {
            assert!(is_fast(head), "{head:?}");
        }
        for head in [
            "GET /updateTask?id=x HTTP/1.0\r\n\r\n",
            "HEAD /updateTask?id=x HTTP/1.1\r\n\r\n",
            "POST /updateTask?id=x HTTP/1.1\r\n\r\n",
            "GET /updateTask/?id=x HTTP/1.1\r\n\r\n",
            "GET /updateTaskX HTTP/1.1\r\n\r\n",
            "GET /jobs HTTP/1.1\r\n\r\n",
            "GET http://a/updateTask?id=x HTTP/1.1\r\n\r\n",
            "GET /updateTask?id=x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            "GET /updateTask?id=x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /updateTask?id=x HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET /updateTask?id=x HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n",
            "GET /updateTask?id=x HTTP/1.1\r\nBad Header\r\n\r\n",
            "GARBAGE\r\n\r\n",
        ] {
            assert_eq!(parse(head.as_bytes()), Head::Other, "{head:?}");
        }
        let close = parse(b"GET /updateTask HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(matches!(close, Head::UpdateTask { close: true, .. }));
        let too_many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: y\r\n")).collect();
        let head = format!("GET /updateTask HTTP/1.1\r\n{too_many}\r\n");
        assert_eq!(parse(head.as_bytes()), Head::Other);
    }

    /// Requests the guard must see are left to the framework.
    #[test]
    fn guarded_requests_are_handed_off() {
        let open = Policy { auth: None };
        let fast = |head: &str, p: &Policy<'_>| {
            matches!(parse_with(head.as_bytes(), p), Head::UpdateTask { .. })
        };
        assert!(fast(
            "GET /updateTask HTTP/1.1\r\nHost: 127.0.0.1:8081\r\n\r\n",
            &open
        ));
        assert!(fast(
            "GET /updateTask HTTP/1.1\r\nHost: localhost\r\n\r\n",
            &open
        ));
        assert!(fast("GET /updateTask HTTP/1.1\r\nHost: a\r\n\r\n", &open));
        for head in [
            "GET /updateTask HTTP/1.1\r\nSec-Fetch-Site: same-origin\r\n\r\n",
            "GET /updateTask HTTP/1.1\r\nOrigin: http://127.0.0.1:8081\r\n\r\n",
            "GET /updateTask HTTP/1.1\r\nSec-Fetch-Site: cross-site\r\n\r\n",
            "GET /updateTask HTTP/1.1\r\nCookie: a=b\r\n\r\n",
        ] {
            assert!(!fast(head, &open), "{head:?}");
        }
        let path = std::env::temp_dir().join(format!("jobd-fast-path-{}", std::process::id()));
        std::fs::write(&path, "fast-path-token-0123456789\n").expect("write");
        let mut perm = std::fs::metadata(&path).expect("meta").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o600);
        std::fs::set_permissions(&path, perm).expect("chmod");
        let auth = Auth::load(&path).expect("tokens");
        let _ = std::fs::remove_file(&path);
        let tokens = Policy { auth: Some(&auth) };
        assert!(fast(
            "GET /updateTask HTTP/1.1\r\nAuthorization: Bearer fast-path-token-0123456789\r\n\r\n",
            &tokens
        ));
        assert!(!fast("GET /updateTask HTTP/1.1\r\n\r\n", &tokens));
        assert!(!fast(
            "GET /updateTask HTTP/1.1\r\nAuthorization: Bearer nope-nope-nope-nope\r\n\r\n",
            &tokens
        ));
    }

    #[test]
    fn partial_heads_wait_until_they_are_too_long() {
        let head = b"GET /updateTask?id=x HTTP/1.1\r\nHost: a\r\n\r\n";
        for cut in 0..head.len() {
            assert_eq!(parse(&head[..cut]), Head::Partial, "{cut}");
        }
        let long = format!("GET /updateTask?id={} HTTP/1.1\r\n", "x".repeat(MAX_HEAD));
        assert_eq!(parse(long.as_bytes()), Head::Other);
    }

    #[test]
    fn answers_carry_status_type_length_and_date() {
        let mut out = Vec::new();
        push_answer(&mut out, StatusCode::NOT_FOUND, b"{}", true);
        let text = String::from_utf8(out).expect("utf-8");
        let (head, body) = text.split_once("\r\n\r\n").expect("head");
        let mut lines = head.split("\r\n");
        assert_eq!(lines.next(), Some("HTTP/1.1 404 Not Found"));
        let headers: Vec<&str> = lines.collect();
        assert!(headers.contains(&"content-type: application/json; charset=utf-8"));
        assert!(headers.contains(&"content-length: 2"));
        assert!(headers.contains(&"connection: close"));
        let date = headers
            .iter()
            .find_map(|h| h.strip_prefix("date: "))
            .expect("date");
        assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
        assert_eq!(body, "{}");
    }

    fn app() -> App {
        let (_tx, rx) = watch::channel(false);
        let pool = Arc::new(Pool::new(PathBuf::from("/nonexistent/jobd.sock"), 1));
        App {
            hub: crate::http::events::Hub::new(Arc::clone(&pool), rx.clone()),
            pool,
            default_rate: None,
            missing: None,
            shutdown: rx,
            auth: None,
            loopback_only: true,
            allowed_hosts: Vec::new(),
        }
    }

    /// Pipelined requests are answered in order; the first one for the framework
    /// comes back with every byte after the last answered request.
    #[tokio::test]
    async fn pipelined_requests_then_a_handoff() {
        let (server, mut client) = tokio::io::duplex(64 * 1024);
        let app = app();
        let (_tx, rx) = watch::channel(false);
        let sent = "GET /updateTask HTTP/1.1\r\n\r\n\
                    GET /updateTask?id=%20 HTTP/1.1\r\n\r\n\
                    GET /jobs HTTP/1.1\r\n\r\nGET /upd";
        client.write_all(sent.as_bytes()).await.expect("write");
        let exit = serve(server, &app, Stats::new(0), IDLE, rx).await;
        let Exit::Handoff(_, rest) = exit else {
            panic!("not handed off");
        };
        assert_eq!(&rest[..], b"GET /jobs HTTP/1.1\r\n\r\nGET /upd");
        let mut answers = vec![0u8; 4096];
        let n = client.read(&mut answers).await.expect("read");
        let answers = String::from_utf8_lossy(&answers[..n]);
        assert_eq!(answers.matches("HTTP/1.1 400 Bad Request\r\n").count(), 2);
        assert_eq!(answers.matches("{\"errorType\":\"invalid_id\"}").count(), 2);
    }

    /// A head arriving a byte at a time is answered once whole; the client's
    /// `Connection: close` closes the connection after the answer.
    #[tokio::test]
    async fn a_head_in_pieces_and_close() {
        let (server, mut client) = tokio::io::duplex(64);
        let app = Arc::new(app());
        let (_tx, rx) = watch::channel(false);
        let task = {
            let app = Arc::clone(&app);
            tokio::spawn(async move {
                matches!(
                    serve(server, &app, Stats::new(0), IDLE, rx).await,
                    Exit::Closed
                )
            })
        };
        for b in b"GET /updateTask?id= HTTP/1.1\r\nConnection: close\r\n\r\n" {
            client.write_all(&[*b]).await.expect("write");
        }
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.expect("read");
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
        assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
        assert!(task.await.expect("task"), "not closed");
    }

    /// A connection that sends no whole head in time is closed, whether it sent
    /// nothing or part of one.
    #[tokio::test(start_paused = true)]
    async fn connections_waiting_for_a_head_time_out() {
        let app = app();
        for sent in [&b""[..], b"GET /updateTask HTTP/1.1\r\n"] {
            let (server, mut client) = tokio::io::duplex(64);
            let (_tx, rx) = watch::channel(false);
            client.write_all(sent).await.expect("write");
            let start = tokio::time::Instant::now();
            let exit = serve(server, &app, Stats::new(0), IDLE, rx).await;
            assert!(matches!(exit, Exit::Closed));
            let waited = start.elapsed();
            assert!(
                waited >= IDLE && waited < IDLE + Duration::from_secs(1),
                "{waited:?}"
            );
        }
    }

    /// At shutdown an idle connection closes at once.
    #[tokio::test]
    async fn shutdown_closes_idle_connections() {
        let (server, _client) = tokio::io::duplex(64);
        let app = app();
        let (tx, rx) = watch::channel(false);
        let serving = serve(server, &app, Stats::new(0), IDLE, rx);
        tokio::pin!(serving);
        tokio::select! {
            _ = &mut serving => panic!("closed before shutdown"),
            _ = tokio::task::yield_now() => {}
        }
        tx.send(true).expect("send");
        assert!(matches!(serving.await, Exit::Closed));
    }
}
