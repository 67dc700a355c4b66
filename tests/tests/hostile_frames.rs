//! Hostile frames, property style: arbitrary bytes, mutated and truncated frames,
//! length prefixes up to 4 GiB, unknown variants, and valid frames in an invalid
//! order. For every case the daemon answers with valid error frames or closes that
//! connection; it never dies (its process is checked and a ping on another
//! connection is answered after every case), and its memory stays bounded under a
//! burst of huge length prefixes.
//!
//! The random cases come from a seed (printed; `JOBD_HOSTILE_SEED=N` replays it) and
//! their number is `JOBD_HOSTILE_CASES` (default 1000 per property).

use jobd_protocol::frame::encode;
use jobd_protocol::{ErrorCode, Request, Response, UploadKind, DEFAULT_MAX_FRAME};
use jobd_tests::crash::*;
use jobd_tests::*;
use std::thread;
use std::time::{Duration, Instant};

fn cases() -> u64 {
    env_number("JOBD_HOSTILE_CASES", 1000)
}

fn random_bytes(rng: &mut Rng, max: u64) -> Vec<u8> {
    let n = rng.below(max + 1) as usize;
    (0..n).map(|_| rng.next_u64() as u8).collect()
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

fn body(req: &Request) -> Vec<u8> {
    encode(req).expect("encode")[4..].to_vec()
}

/// A request of every variant, with random contents.
fn random_request(rng: &mut Rng) -> Request {
    let s = |rng: &mut Rng| -> String {
        (0..rng.below(12))
            .map(|_| char::from(b'a' + rng.below(26) as u8))
            .collect()
    };
    let rate = |rng: &mut Rng| match rng.below(4) {
        0 => None,
        1 => Some(f64::from_bits(rng.next_u64())),
        2 => Some(-1.0),
        _ => Some(1e6),
    };
    match rng.below(14) {
        0 => Request::Hello {
            protocol_version: rng.below(3) as u32,
            client: s(rng),
        },
        1 => Request::Ping,
        2 => Request::SubmitUpload {
            kind: if rng.chance(50) {
                UploadKind::BaselineCsv
            } else {
                UploadKind::BulkTeam
            },
            rate: rate(rng),
        },
        3 => Request::Chunk {
            data: random_bytes(rng, 64),
        },
        4 => Request::End {
            bytes: rng.below(100),
        },
        5 => Request::SubmitExport {
            from: s(rng),
            to: "2024-01-0".to_string() + &rng.below(10).to_string(),
            rate: rate(rng),
        },
        6 => Request::Control {
            id: s(rng),
            action: rng.pick(&["stop", "start", "terminate", "x"]).to_string(),
        },
        7 => Request::Status {
            ids: (0..rng.below(3)).map(|_| s(rng)).collect(),
        },
        8 => Request::Watch { id: s(rng) },
        9 => Request::Wait {
            ids: (0..1 + rng.below(2)).map(|_| s(rng)).collect(),
        },
        10 => Request::Output { id: s(rng) },
        11 => Request::Revert {
            id: s(rng),
            dry_run: rng.chance(50),
        },
        12 => Request::PreviewTerminate { id: s(rng) },
        _ => Request::Errors { id: s(rng) },
    }
}

/// A valid body, damaged: bytes flipped, cut, extended or spliced.
fn mutate(rng: &mut Rng, mut b: Vec<u8>) -> Vec<u8> {
    for _ in 0..1 + rng.below(3) {
        match rng.below(5) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len() as u64) as usize;
                b[i] = rng.next_u64() as u8;
            }
            1 if !b.is_empty() => {
                let n = rng.below(b.len() as u64) as usize;
                b.truncate(n);
            }
            2 => b.extend(random_bytes(rng, 8)),
            3 => {
                // A varint-looking marker somewhere: claims of huge lengths.
                let i = rng.below(b.len() as u64 + 1) as usize;
                let marker = *rng.pick(&[0xfbu8, 0xfc, 0xfd, 0xfe, 0xff]);
                b.insert(i, marker);
            }
            _ => b.insert(0, rng.below(256) as u8),
        }
    }
    b
}

/// The checks after every case: the daemon lives and answers on another connection.
struct Observer<'a> {
    d: &'a Daemon,
    wire: Wire,
}

impl<'a> Observer<'a> {
    fn new(d: &'a Daemon) -> Observer<'a> {
        Observer {
            d,
            wire: Wire::hello(d),
        }
    }

    #[track_caller]
    fn check(&mut self, case: &str) {
        assert_alive(self.d);
        let t0 = Instant::now();
        self.wire.ping();
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "ping took {:?} after {case}",
            t0.elapsed()
        );
    }
}

/// Sends `bytes`, ends the stream, and reads what comes back until the daemon closes.
/// Every frame must be a valid response; any refusal must be an `Error`.
#[track_caller]
fn throw(d: &Daemon, hello: bool, bytes: &[u8], case: &str) -> Vec<Response> {
    let mut w = if hello {
        Wire::hello(d)
    } else {
        Wire::connect(d)
    };
    // The daemon may close before reading everything (a refusal): that is fine.
    let _ = w.send_raw(bytes);
    w.finish();
    let seen = w.until_closed(2_000);
    if !hello {
        if let Some(first) = seen.first() {
            assert!(
                matches!(first, Response::Welcome { .. } | Response::Error { .. }),
                "{case}: first answer before a handshake: {first:?}"
            );
        }
    }
    seen
}

#[test]
fn arbitrary_bytes_and_mutated_frames_never_hurt_the_daemon() {
    let seed = Seed::from_env("JOBD_HOSTILE_SEED", "arbitrary_bytes_and_mutated_frames");
    let mut rng = seed.rng(1);
    let d = Daemon::start();
    let mut obs = Observer::new(&d);
    let n = cases();
    for i in 0..n {
        let hello = rng.chance(70);
        let bytes = match rng.below(4) {
            // Raw garbage.
            0 => random_bytes(&mut rng, 300),
            // Well-framed garbage.
            1 => frame(&random_bytes(&mut rng, 300)),
            // Framed requests, damaged.
            2 => {
                let mut all = Vec::new();
                for _ in 0..1 + rng.below(3) {
                    let req = random_request(&mut rng);
                    let b = mutate(&mut rng, body(&req));
                    all.extend(frame(&b));
                }
                all
            }
            // Valid requests in random order (Chunk, End, Hello anywhere).
            _ => {
                let mut all = Vec::new();
                for _ in 0..1 + rng.below(4) {
                    all.extend(encode(&random_request(&mut rng)).expect("encode"));
                }
                all
            }
        };
        let case = format!(
            "case {i} (hello: {hello}, {} bytes: {:02x?})",
            bytes.len(),
            &bytes[..bytes.len().min(64)]
        );
        throw(&d, hello, &bytes, &case);
        obs.check(&case);
    }
    eprintln!("[hostile] {n} arbitrary and mutated cases");
}

#[test]
fn truncated_frames_end_only_their_connection() {
    let seed = Seed::from_env("JOBD_HOSTILE_SEED", "truncated_frames");
    let mut rng = seed.rng(2);
    let d = Daemon::start();
    let mut obs = Observer::new(&d);
    let upload = [
        encode(&Request::SubmitUpload {
            kind: UploadKind::BaselineCsv,
            rate: None,
        })
        .expect("encode"),
        encode(&Request::Chunk {
            data: b"date,v\n2024-01-01,1\n".to_vec(),
        })
        .expect("encode"),
        encode(&Request::End { bytes: 20 }).expect("encode"),
    ]
    .concat();
    for i in 0..cases() / 2 {
        // A whole request stream cut anywhere (the length prefix included).
        let stream = if rng.chance(50) {
            upload.clone()
        } else {
            encode(&random_request(&mut rng)).expect("encode")
        };
        let cut = rng.below(stream.len() as u64) as usize;
        let case = format!("case {i}: {:02x?} cut at {cut}", stream);
        let seen = throw(&d, true, &stream[..cut], &case);
        assert!(
            !seen.iter().any(|r| matches!(r, Response::Job(_))),
            "{case}: a job from a truncated upload: {seen:?}"
        );
        obs.check(&case);
    }
    wait_uploads_gone(&d);
    assert!(d.status_all().is_empty(), "a truncated upload made a job");
}

#[test]
fn length_prefixes_up_to_4_gib_are_refused_before_reading() {
    let seed = Seed::from_env("JOBD_HOSTILE_SEED", "length_prefixes");
    let mut rng = seed.rng(3);
    let d = Daemon::start();
    let mut obs = Observer::new(&d);
    let mut lens = vec![
        DEFAULT_MAX_FRAME + 1,
        1 << 31,
        u32::MAX,
        u32::MAX - 1,
        64 << 20,
        (64 << 20) + 1,
    ];
    for _ in 0..cases() / 4 {
        lens.push(
            DEFAULT_MAX_FRAME + 1 + rng.below(u64::from(u32::MAX - DEFAULT_MAX_FRAME)) as u32,
        );
    }
    for (i, len) in lens.iter().enumerate() {
        let hello = i % 3 != 0;
        let mut w = if hello {
            Wire::hello(&d)
        } else {
            Wire::connect(&d)
        };
        w.read_timeout(Duration::from_secs(5));
        // Only the 4 length bytes: the refusal must come without any body.
        w.send_raw(&len.to_be_bytes()).expect("write a length");
        let seen = w.until_closed(1);
        assert!(
            matches!(seen.as_slice(), [r] if is_error(r, ErrorCode::FrameTooLarge)),
            "length {len} (hello: {hello}): expected frame_too_large then a close, got {seen:?}"
        );
        obs.check(&format!("length {len}"));
    }
}

/// Hundreds of connections at once announce huge frames, or frames at the limit
/// whose bodies never come: the daemon's memory does not follow the claims.
#[test]
fn memory_stays_bounded_under_a_burst_of_huge_length_prefixes() {
    let d = Daemon::start();
    let mut obs = Observer::new(&d);
    let pid = d.pid();
    let rss0 = proc_kb(pid, "VmRSS");
    let hwm0 = proc_kb(pid, "VmHWM");
    // 300 connections announce 4 GiB - 1 each; all are refused.
    let mut conns: Vec<Wire> = (0..300).map(|_| Wire::hello(&d)).collect();
    for w in &mut conns {
        w.send_raw(&u32::MAX.to_be_bytes()).expect("length");
    }
    for w in &mut conns {
        let seen = w.until_closed(1);
        assert!(
            matches!(seen.as_slice(), [r] if is_error(r, ErrorCode::FrameTooLarge)),
            "{seen:?}"
        );
    }
    drop(conns);
    obs.check("300 lengths of 4 GiB");
    // 300 connections announce a frame exactly at the limit (8 MiB) and send 1 KiB of
    // it, then hold: a daemon that allocated the claimed size would need 2.4 GiB.
    let mut held: Vec<Wire> = (0..300).map(|_| Wire::hello(&d)).collect();
    for w in &mut held {
        let mut b = DEFAULT_MAX_FRAME.to_be_bytes().to_vec();
        b.extend([3u8; 1024]);
        w.send_raw(&b).expect("partial frame");
    }
    thread::sleep(Duration::from_millis(300));
    obs.check("300 frames of 8 MiB announced");
    let rss1 = proc_kb(pid, "VmRSS");
    let hwm1 = proc_kb(pid, "VmHWM");
    eprintln!(
        "[hostile] jobd VmRSS {rss0} -> {rss1} kB, VmHWM {hwm0} -> {hwm1} kB while 300 connections hold 8 MiB frames"
    );
    assert!(
        hwm1.saturating_sub(hwm0) < 150 * 1024,
        "jobd grew from {hwm0} kB to a peak of {hwm1} kB under claims it never received"
    );
    drop(held);
    obs.check("after the held frames closed");
}

#[test]
fn unknown_variants_and_malformed_fields_are_bad_requests() {
    let d = Daemon::start();
    let mut obs = Observer::new(&d);
    let mut bodies: Vec<(String, Vec<u8>)> = Vec::new();
    // Variant indices past the last request (18, `Prune`), in every varint width.
    for idx in [19u8, 20, 50, 200, 250] {
        bodies.push((format!("variant {idx}"), vec![idx]));
    }
    bodies.push(("variant 251 (u16)".into(), vec![0xfb, 0xfb, 0x00]));
    bodies.push(("variant 65535 (u16)".into(), vec![0xfb, 0xff, 0xff]));
    bodies.push((
        "variant 2^32-1 (u32)".into(),
        vec![0xfc, 0xff, 0xff, 0xff, 0xff],
    ));
    bodies.push((
        "u64 marker for a u32 index".into(),
        vec![0xfd, 1, 0, 0, 0, 0, 0, 0, 0],
    ));
    bodies.push(("u128 marker".into(), vec![0xfe; 17]));
    bodies.push(("0xff marker".into(), vec![0xff]));
    bodies.push(("empty body".into(), vec![]));
    // Inner enums and tags.
    bodies.push(("UploadKind 2".into(), vec![2, 2, 0]));
    bodies.push(("UploadKind 200".into(), vec![2, 200, 0]));
    bodies.push(("Option tag 2".into(), vec![2, 0, 2]));
    bodies.push(("rate cut short".into(), vec![2, 0, 1, 0, 0, 0]));
    bodies.push(("Revert with bool 2".into(), vec![16, 1, b'x', 2]));
    bodies.push(("Revert without its bool".into(), vec![16, 1, b'x']));
    bodies.push(("Prune with JobState 7".into(), vec![18, 0, 1, 7]));
    bodies.push(("Prune with JobState 200".into(), vec![18, 0, 1, 200]));
    bodies.push((
        "Prune with 2^32 states".into(),
        vec![18, 0, 0xfd, 0, 0, 0, 0, 1, 0, 0, 0],
    ));
    // Strings and byte strings.
    bodies.push((
        "invalid UTF-8 id".into(),
        vec![6, 2, 0xff, 0xfe, 4, b's', b't', b'o', b'p'],
    ));
    bodies.push(("string longer than the frame".into(), vec![8, 100, b'x']));
    bodies.push((
        "string of 2^62 bytes".into(),
        vec![8, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0x40],
    ));
    bodies.push((
        "chunk of 2^64-1 bytes".into(),
        vec![3, 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    ));
    bodies.push((
        "vector of 2^32 ids".into(),
        vec![7, 0xfd, 0, 0, 0, 0, 1, 0, 0, 0],
    ));
    bodies.push(("trailing byte after Ping".into(), vec![1, 0]));
    bodies.push(("End with u128 marker".into(), vec![4, 0xfe]));
    for hello in [true, false] {
        for (name, b) in &bodies {
            let seen = throw(&d, hello, &frame(b), name);
            assert!(
                matches!(seen.as_slice(), [r] if is_error(r, ErrorCode::BadRequest)),
                "{name} (hello: {hello}): expected one bad_request then a close, got {seen:?}"
            );
            obs.check(name);
        }
    }
}

/// One valid frame at a time where it does not belong.
#[test]
fn valid_frames_in_an_invalid_order() {
    let d = Daemon::start();
    let mut obs = Observer::new(&d);
    let hello = Request::Hello {
        protocol_version: jobd_protocol::PROTOCOL_VERSION,
        client: "again".into(),
    };
    let chunk = Request::Chunk {
        data: b"date,v\n".to_vec(),
    };
    let submit = Request::SubmitUpload {
        kind: UploadKind::BaselineCsv,
        rate: None,
    };
    // Before the handshake: one bad_request, then the daemon closes.
    for req in [
        Request::Ping,
        chunk.clone(),
        Request::End { bytes: 0 },
        submit.clone(),
        Request::Status { ids: vec![] },
    ] {
        let seen = throw(&d, false, &encode(&req).expect("encode"), "before Hello");
        assert!(
            matches!(seen.as_slice(), [r] if is_error(r, ErrorCode::BadRequest)),
            "{req:?} before Hello: {seen:?}"
        );
        obs.check(&format!("{req:?} before Hello"));
    }
    // After it, outside an upload: bad_request, and the connection goes on.
    let mut w = Wire::hello(&d);
    for req in [hello.clone(), chunk.clone(), Request::End { bytes: 7 }] {
        w.send(&req).expect("send");
        match w.recv() {
            Received::Frame(r) if is_error(&r, ErrorCode::BadRequest) => {}
            other => panic!("{req:?} outside an upload: {other:?}"),
        }
        w.ping();
        obs.check(&format!("{req:?} outside an upload"));
    }
    // Inside an upload, anything but Chunk or End: bad_request and a close.
    for req in [
        Request::Ping,
        hello,
        submit.clone(),
        Request::Status { ids: vec![] },
    ] {
        let mut w = Wire::hello(&d);
        w.send(&submit).expect("submit");
        assert_eq!(w.recv(), Received::Frame(Response::Ready));
        w.send(&chunk).expect("chunk");
        w.send(&req).expect("send");
        let seen = w.until_closed(1);
        assert!(
            matches!(seen.as_slice(), [r] if is_error(r, ErrorCode::BadRequest)),
            "{req:?} inside an upload: {seen:?}"
        );
        obs.check(&format!("{req:?} inside an upload"));
    }
    // A wrong byte count: upload_incomplete, and the connection goes on.
    let mut w = Wire::hello(&d);
    w.send(&submit).expect("submit");
    assert_eq!(w.recv(), Received::Frame(Response::Ready));
    w.send(&chunk).expect("chunk");
    w.send(&Request::End { bytes: 1000 }).expect("end");
    match w.recv() {
        Received::Frame(r) if is_error(&r, ErrorCode::UploadIncomplete) => {}
        other => panic!("wrong byte count: {other:?}"),
    }
    w.ping();
    // Anything sent during a watch ends it.
    let id = d.upload(
        b"date,v\n2024-01-01,1\n2024-01-02,2\n2024-01-03,3\n",
        Some(1.0),
    );
    let mut w = Wire::hello(&d);
    w.send(&Request::Watch { id: id.clone() }).expect("watch");
    assert!(matches!(w.recv(), Received::Frame(Response::Job(_))));
    w.send(&Request::Ping).expect("ping during a watch");
    let rest = w.until_closed(100);
    assert!(
        rest.iter().all(|r| matches!(
            r,
            Response::Job(_) | Response::End { .. } | Response::Error { .. }
        )),
        "{rest:?}"
    );
    obs.check("ping during a watch");
    wait_uploads_gone(&d);
    assert_eq!(d.status_all().len(), 1, "only the watched job exists");
}

/// Hostile connections from several threads at once.
#[test]
fn hostile_connections_in_parallel() {
    let seed = Seed::from_env("JOBD_HOSTILE_SEED", "hostile_connections_in_parallel");
    let d = Daemon::start();
    let per_thread = cases() / 4;
    thread::scope(|s| {
        for t in 0..6 {
            let d = &d;
            let mut rng = seed.rng(100 + t);
            s.spawn(move || {
                for i in 0..per_thread {
                    let req = random_request(&mut rng);
                    let b = if rng.chance(50) {
                        mutate(&mut rng, body(&req))
                    } else {
                        body(&req)
                    };
                    let mut bytes = frame(&b);
                    if rng.chance(20) {
                        let cut = rng.below(bytes.len() as u64) as usize;
                        bytes.truncate(cut);
                    }
                    throw(d, rng.chance(80), &bytes, &format!("thread {t} case {i}"));
                }
            });
        }
    });
    Observer::new(&d).check("parallel hostile connections");
    wait_uploads_gone(&d);
}

/// An upload past `--max-upload-bytes` is refused in the middle of the stream
/// (`upload_incomplete`, then the connection closes) and leaves nothing behind.
#[test]
fn an_upload_over_the_size_limit_is_refused_midstream() {
    let d = Daemon::start_with(&["--max-upload-bytes", "100000"]);
    let mut text = String::from("date,v\n");
    let mut i = 0;
    while text.len() < 600_000 {
        i += 1;
        text.push_str(&format!("2024-01-{:02},{i}\n", 1 + i % 28));
    }
    let out = d.jobctl_stdin(&["upload", "-"], text.as_bytes());
    out.refused("upload_incomplete");
    // Raw: the refusal comes in the middle of the chunks, then the close.
    let mut w = Wire::start_upload(&d, UploadKind::BaselineCsv);
    for c in text.as_bytes().chunks(60_000).take(2) {
        w.send(&Request::Chunk { data: c.to_vec() }).expect("chunk");
    }
    let seen = w.until_closed(1);
    assert!(
        matches!(seen.as_slice(), [r] if is_error(r, ErrorCode::UploadIncomplete)),
        "{seen:?}"
    );
    wait_uploads_gone(&d);
    assert!(d.status_all().is_empty(), "a refused upload made a job");
    // Under the limit, the same daemon takes it.
    let id = d.upload(&text.as_bytes()[..50_000], None);
    d.wait_completed(&id);
}
