//! The wire, spoken directly over the socket: handshake, version mismatch, frame
//! limits, garbage and truncated frames (the daemon survives all of them), and a
//! client that disconnects mid-upload (no job, no spool file).

use jobd_protocol::frame::{decode, encode};
use jobd_protocol::{ErrorCode, Request, Response, UploadKind, PROTOCOL_VERSION};
use jobd_tests::*;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

fn connect(d: &Daemon) -> UnixStream {
    let s = UnixStream::connect(&d.socket).expect("connect to jobd");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    s
}

fn send(s: &mut UnixStream, req: &Request) {
    s.write_all(&encode(req).expect("encode"))
        .expect("write frame");
}

/// The next response, or `None` at a clean end of the connection.
fn recv(s: &mut UnixStream) -> Option<Response> {
    let mut len = [0u8; 4];
    match s.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => return None,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => return None,
        Err(e) => panic!("reading a frame: {e}"),
    }
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).expect("frame body");
    Some(decode(&body).expect("decode response"))
}

fn hello(s: &mut UnixStream) {
    send(
        s,
        &Request::Hello {
            protocol_version: PROTOCOL_VERSION,
            client: "jobd-tests".into(),
        },
    );
    match recv(s) {
        Some(Response::Welcome {
            protocol_version,
            user,
            ..
        }) => {
            assert_eq!(protocol_version, PROTOCOL_VERSION);
            assert_eq!(user, current_user());
        }
        other => panic!("expected Welcome, got {other:?}"),
    }
}

/// Reads until the daemon closes the connection; returns the responses seen.
fn until_closed(s: &mut UnixStream) -> Vec<Response> {
    let mut seen = Vec::new();
    while let Some(r) = recv(s) {
        seen.push(r);
        assert!(seen.len() < 10, "the daemon keeps talking: {seen:?}");
    }
    seen
}

#[test]
fn handshake_then_ping() {
    let d = Daemon::start();
    let mut s = connect(&d);
    hello(&mut s);
    send(&mut s, &Request::Ping);
    assert_eq!(recv(&mut s), Some(Response::Pong));
}

#[test]
fn unsupported_protocol_version_is_refused() {
    let d = Daemon::start();
    let mut s = connect(&d);
    send(
        &mut s,
        &Request::Hello {
            protocol_version: 999,
            client: "jobd-tests".into(),
        },
    );
    match recv(&mut s) {
        Some(Response::Error { code, message }) => {
            assert_eq!(code, ErrorCode::UnsupportedProtocol, "{message}");
            assert!(
                message.contains("999"),
                "message names the versions: {message}"
            );
        }
        other => panic!("expected an error, got {other:?}"),
    }
    d.jobctl(&["ping"]).ok();
}

#[test]
fn oversized_frame_is_refused_before_reading_it() {
    let d = Daemon::start();
    let mut s = connect(&d);
    hello(&mut s);
    // Announce 1 GiB and send nothing more: the refusal must come at once.
    s.write_all(&(1u32 << 30).to_be_bytes())
        .expect("write length");
    let seen = until_closed(&mut s);
    assert!(
        matches!(
            seen.first(),
            Some(Response::Error {
                code: ErrorCode::FrameTooLarge,
                ..
            })
        ),
        "expected frame_too_large, got {seen:?}"
    );
    d.jobctl(&["ping"]).ok();
}

#[test]
fn garbage_and_truncated_frames_end_only_their_connection() {
    let d = Daemon::start();
    // Undecodable body.
    let mut s = connect(&d);
    hello(&mut s);
    s.write_all(&[0, 0, 0, 6, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
        .expect("write garbage");
    let seen = until_closed(&mut s);
    assert!(
        seen.iter().all(|r| matches!(r, Response::Error { .. })),
        "{seen:?}"
    );
    // Garbage instead of a Hello.
    let mut s = connect(&d);
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("write");
    until_closed(&mut s);
    // A frame cut short by the client going away.
    let mut s = connect(&d);
    hello(&mut s);
    s.write_all(&[0, 0, 0, 100, 1, 2, 3]).expect("write");
    drop(s);
    d.jobctl(&["ping"]).ok();
    assert!(d.status_all().is_empty());
}

fn disconnect_mid_upload_leaves_no_job_and_no_upload(b: Backend) {
    let d = Daemon::start_on(b);
    let mut s = connect(&d);
    hello(&mut s);
    send(
        &mut s,
        &Request::SubmitUpload {
            kind: UploadKind::BaselineCsv,
            rate: None,
        },
    );
    assert_eq!(recv(&mut s), Some(Response::Ready));
    send(
        &mut s,
        &Request::Chunk {
            data: b"date,v\n2024-01-01,1\n2024-01-02,2\n".to_vec(),
        },
    );
    // Make sure the daemon began the upload in its store before leaving.
    let deadline = Instant::now() + DEADLINE;
    while d.uploads() == 0 && Instant::now() < deadline {
        std::thread::sleep(POLL);
    }
    drop(s);
    wait_uploads_gone(&d);
    assert!(
        d.status_all().is_empty(),
        "a job exists after an aborted upload"
    );
}

fn upload_with_a_wrong_byte_count_is_refused(b: Backend) {
    let d = Daemon::start_on(b);
    let mut s = connect(&d);
    hello(&mut s);
    send(
        &mut s,
        &Request::SubmitUpload {
            kind: UploadKind::BaselineCsv,
            rate: None,
        },
    );
    assert_eq!(recv(&mut s), Some(Response::Ready));
    let data = b"date,v\n2024-01-01,1\n".to_vec();
    let n = data.len() as u64;
    send(&mut s, &Request::Chunk { data });
    send(&mut s, &Request::End { bytes: n + 1 });
    match recv(&mut s) {
        Some(Response::Error { code, .. }) => assert_eq!(code, ErrorCode::UploadIncomplete),
        other => panic!("expected upload_incomplete, got {other:?}"),
    }
    drop(s);
    wait_uploads_gone(&d);
    assert!(d.status_all().is_empty());
}

both_stores!(
    disconnect_mid_upload_leaves_no_job_and_no_upload,
    upload_with_a_wrong_byte_count_is_refused,
);
