//! Slow and many clients: a client that says nothing, or one byte a second, is
//! dropped after the documented timeouts (10 s for the `Hello`, the idle timeout
//! after it) while others are served promptly; 1 000 concurrent connections doing
//! status and controls while jobs run are all answered; a storm of stop/start on
//! one job leaves it consistent and its effects exact.

use jobd_protocol::{Client, ClientError, ErrorCode, JobInfo, JobState, Request, Response};
use jobd_tests::crash::*;
use jobd_tests::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// What became of a slow connection, and when (from its start).
#[derive(Debug)]
struct Dropped {
    after: Duration,
    frames: Vec<Response>,
}

/// Sends `bytes` one per second (after `prelude` at once) and reads between the
/// bytes; returns once the daemon has closed the connection.
fn trickle(d: &Daemon, hello: bool, prelude: &[u8], bytes: &[u8], per_byte: Duration) -> Dropped {
    let mut w = if hello {
        Wire::hello(d)
    } else {
        Wire::connect(d)
    };
    let t0 = Instant::now();
    w.read_timeout(per_byte);
    let _ = w.send_raw(prelude);
    let mut frames = Vec::new();
    let mut next = bytes.iter();
    loop {
        match w.recv() {
            Received::Frame(r) => frames.push(r),
            Received::Closed => {
                return Dropped {
                    after: t0.elapsed(),
                    frames,
                }
            }
            Received::Timeout => {
                if let Some(b) = next.next() {
                    let _ = w.send_raw(&[*b]);
                }
            }
            Received::Garbage(g) => panic!("garbage from the daemon: {g}"),
        }
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "never dropped: {frames:?}"
        );
    }
}

#[test]
fn silent_and_trickling_clients_are_dropped_after_the_timeouts() {
    let d = Daemon::start_with(&["--idle-timeout", "2"]);
    let id = d.upload(
        b"date,v\n2024-01-01,1\n2024-01-02,2\n2024-01-03,3\n2024-01-04,4\n",
        Some(1.0),
    );
    let stop = AtomicBool::new(false);
    let status = jobd_protocol::frame::encode(&Request::Status {
        ids: vec![id.clone(); 3],
    })
    .expect("encode");
    let hello = jobd_protocol::frame::encode(&Request::Hello {
        protocol_version: jobd_protocol::PROTOCOL_VERSION,
        client: "a slow client".into(),
    })
    .expect("encode");
    let second = Duration::from_secs(1);
    thread::scope(|s| {
        // Meanwhile another client pings every 50 ms; every answer must be prompt.
        let pinger = s.spawn(|| {
            let mut w = Wire::hello(&d);
            let (mut n, mut worst) = (0u32, Duration::ZERO);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                w.ping();
                worst = worst.max(t.elapsed());
                n += 1;
                thread::sleep(Duration::from_millis(50));
            }
            (n, worst)
        });
        let silent_before_hello = s.spawn(|| trickle(&d, false, &[], &[], second));
        let trickle_before_hello = s.spawn(|| trickle(&d, false, &[], &hello, second));
        let silent_after_hello = s.spawn(|| trickle(&d, true, &[], &[], second));
        let trickle_after_hello = s.spawn(|| trickle(&d, true, &[], &status, second));
        // A Wait that lasts longer than the idle timeout is not idleness.
        let waiter = s.spawn(|| {
            let mut w = Wire::hello(&d);
            w.read_timeout(Duration::from_secs(30));
            w.send(&Request::Wait {
                ids: vec![id.clone()],
            })
            .expect("wait");
            let t = Instant::now();
            let r = w.recv();
            (r, t.elapsed())
        });
        // Neither is a Watch: the client sends nothing while it runs.
        let watcher = s.spawn(|| {
            let mut w = Wire::hello(&d);
            w.read_timeout(Duration::from_secs(30));
            w.send(&Request::Watch { id: id.clone() }).expect("watch");
            let t = Instant::now();
            let mut seen = Vec::new();
            loop {
                match w.recv() {
                    Received::Frame(Response::End { .. }) => return (seen, t.elapsed()),
                    Received::Frame(r) => seen.push(r),
                    other => {
                        panic!("a Watch longer than the idle timeout: {other:?} after {seen:?}")
                    }
                }
            }
        });
        // Silent in the middle of an upload: dropped, and nothing is left.
        let stalled_upload = s.spawn(|| {
            let submit = jobd_protocol::frame::encode(&Request::SubmitUpload {
                kind: jobd_protocol::UploadKind::BaselineCsv,
                rate: None,
            })
            .expect("encode");
            let chunk = jobd_protocol::frame::encode(&Request::Chunk {
                data: b"date,v\n2024-01-01,1\n".to_vec(),
            })
            .expect("encode");
            trickle(&d, true, &[submit, chunk].concat(), &[], second)
        });

        let check = |what: &str, r: Dropped, lo: u64, hi: u64| {
            assert!(
                r.after + Duration::from_millis(100) >= Duration::from_millis(lo)
                    && r.after <= Duration::from_millis(hi),
                "{what}: dropped after {:?}, expected between {lo} and {hi} ms ({:?})",
                r.after,
                r.frames
            );
            assert!(
                r.frames
                    .iter()
                    .all(|f| matches!(f, Response::Error { .. } | Response::Ready)),
                "{what}: {:?}",
                r.frames
            );
            eprintln!(
                "[clients] {what}: dropped after {:?} with {:?}",
                r.after, r.frames
            );
        };
        check(
            "silent before Hello",
            silent_before_hello.join().expect("thread"),
            9_500,
            13_000,
        );
        check(
            "one byte a second before Hello",
            trickle_before_hello.join().expect("thread"),
            9_500,
            13_000,
        );
        check(
            "silent after Hello",
            silent_after_hello.join().expect("thread"),
            1_900,
            4_500,
        );
        check(
            "one byte a second after Hello",
            trickle_after_hello.join().expect("thread"),
            1_900,
            4_500,
        );
        check(
            "silent mid-upload",
            stalled_upload.join().expect("thread"),
            1_900,
            4_500,
        );
        let (answer, took) = waiter.join().expect("waiter");
        assert!(
            matches!(&answer, Received::Frame(Response::Jobs(j)) if j.len() == 1 && j[0].state == JobState::Completed),
            "a Wait longer than the idle timeout: {answer:?} after {took:?}"
        );
        assert!(
            took > Duration::from_secs(2),
            "the job was too short to test the wait ({took:?})"
        );
        let (events, took) = watcher.join().expect("watcher");
        assert!(
            matches!(events.last(), Some(Response::Job(j)) if j.state == JobState::Completed),
            "a Watch longer than the idle timeout ended with {events:?} after {took:?}"
        );
        stop.store(true, Ordering::Relaxed);
        let (n, worst) = pinger.join().expect("pinger");
        eprintln!("[clients] {n} pings meanwhile, the slowest in {worst:?}");
        assert!(
            worst < Duration::from_millis(500),
            "a ping took {worst:?} while slow clients hung on"
        );
    });
    wait_uploads_gone(&d);
    assert_eq!(d.status_all().len(), 1, "the stalled upload left a job");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The soft open-file limit of the test process, raised to its hard limit.
fn raise_nofile() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < hard {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
    getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit").0
}

#[test]
fn a_thousand_concurrent_connections_are_all_answered() {
    const N: usize = 1000;
    let limit = raise_nofile();
    assert!(
        limit > N as u64 + 100,
        "open-file limit {limit} is too low for {N} connections"
    );
    let d = Daemon::start_with(&["--max-running", "4"]);
    let files: Vec<BaselineFile> = (0..4)
        .map(|i| {
            gen_baseline(
                900 + i,
                &["date", "name", "value"],
                500,
                Date::new(2024, 2, 1),
                20,
            )
        })
        .collect();
    let ids: Arc<Vec<String>> = Arc::new(
        files
            .iter()
            .map(|f| d.upload(&f.bytes(), Some(60.0)))
            .collect(),
    );
    for id in ids.iter() {
        d.wait_processed(id, MID_RUN);
    }
    let socket = d.socket.clone();
    let hwm0 = proc_kb(d.pid(), "VmHWM");
    let rt = runtime();
    let (took, worst) = rt.block_on(async {
        let t0 = Instant::now();
        // All connected at once before anyone asks anything.
        let mut connecting = tokio::task::JoinSet::new();
        for i in 0..N {
            let socket = socket.clone();
            connecting.spawn(async move { (i, Client::connect(&socket, "jobd-tests/many").await) });
        }
        let mut clients = Vec::with_capacity(N);
        while let Some(r) = connecting.join_next().await {
            let (i, c) = r.expect("connect task");
            clients.push((
                i,
                c.unwrap_or_else(|e| panic!("client {i} could not connect: {e}")),
            ));
        }
        eprintln!("[clients] {N} connections open after {:?}", t0.elapsed());
        let go = Arc::new(tokio::sync::Barrier::new(N));
        let mut asking = tokio::task::JoinSet::new();
        for (i, mut c) in clients {
            let (go, ids) = (Arc::clone(&go), Arc::clone(&ids));
            asking.spawn(async move {
                go.wait().await;
                let t = Instant::now();
                c.ping()
                    .await
                    .map_err(|e| format!("client {i} ping: {e}"))?;
                let all = c
                    .status(&[])
                    .await
                    .map_err(|e| format!("client {i} status: {e}"))?;
                if all.len() != ids.len() {
                    return Err(format!("client {i}: status lists {} jobs", all.len()));
                }
                let id = &ids[i % ids.len()];
                c.status(std::slice::from_ref(id))
                    .await
                    .map_err(|e| format!("client {i} status {id}: {e}"))?;
                // Every 10th client stops or starts a running job; the others stop
                // it too, which is answered at once when it is already paused.
                let action = if i % 10 == 0 {
                    ["stop", "start"][i / 10 % 2]
                } else {
                    "stop"
                };
                match c.control(id, action).await {
                    Ok(_) => {}
                    Err(ClientError::Daemon {
                        code: ErrorCode::JobFinished,
                        ..
                    }) => {}
                    Err(e) => return Err(format!("client {i} {action} {id}: {e}")),
                }
                Ok::<Duration, String>(t.elapsed())
            });
        }
        let mut worst = Duration::ZERO;
        let mut failures = Vec::new();
        while let Some(r) = asking.join_next().await {
            match r.expect("client task") {
                Ok(t) => worst = worst.max(t),
                Err(e) => failures.push(e),
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {N} clients failed: {:?}",
            failures.len(),
            &failures[..failures.len().min(10)]
        );
        (t0.elapsed(), worst)
    });
    eprintln!(
        "[clients] {N} clients answered in {took:?} (the slowest client's requests took {worst:?})"
    );
    assert_alive(&d);
    let hwm = proc_kb(d.pid(), "VmHWM");
    eprintln!("[clients] jobd VmHWM {hwm0} -> {hwm} kB with {N} connections");
    assert!(
        hwm.saturating_sub(hwm0) < 300 * 1024,
        "jobd grew by {} MiB for {N} connections",
        hwm.saturating_sub(hwm0) / 1024
    );
    for id in ids.iter() {
        d.jobctl(&["start", id]).ok();
    }
    for (id, f) in ids.iter().zip(&files) {
        d.wait_completed(id);
        assert_baseline_exact(&d, id, &f.records);
        assert_committed_consistent(&d, id);
    }
}

/// One client's share of a storm: `n` controls alternating stop and start.
async fn storm(
    socket: std::path::PathBuf,
    id: String,
    n: usize,
    first_stop: bool,
) -> Result<Vec<(String, JobInfo)>, String> {
    let mut c = Client::connect(&socket, "jobd-tests/storm")
        .await
        .map_err(|e| e.to_string())?;
    let mut answers = Vec::with_capacity(n);
    for k in 0..n {
        let action = if (k % 2 == 0) == first_stop {
            "stop"
        } else {
            "start"
        };
        match c.control(&id, action).await {
            Ok(info) => answers.push((action.to_string(), info)),
            Err(ClientError::Daemon {
                code: ErrorCode::JobFinished,
                ..
            }) => {
                answers.push((
                    action.to_string() + " (finished)",
                    c.status(std::slice::from_ref(&id))
                        .await
                        .map_err(|e| e.to_string())?
                        .remove(0),
                ));
            }
            Err(e) => return Err(format!("{action} #{k} of {id}: {e}")),
        }
    }
    Ok(answers)
}

fn a_storm_of_stop_and_start_leaves_jobs_exact(b: Backend) {
    const CLIENTS: usize = 4;
    const CONTROLS: usize = 200;
    let d = Daemon::start_on(b);
    let base = gen_baseline(
        950,
        &["date", "name", "value"],
        300,
        Date::new(2024, 3, 1),
        20,
    );
    let teams = gen_teams(951, "storm", 300, 4);
    let b = d.upload(&base.bytes(), Some(100.0));
    let t = d.bulk_team(&teams.bytes, Some(100.0));
    d.wait_processed(&b, MID_RUN);
    d.wait_processed(&t, MID_RUN);
    let rt = runtime();
    let t0 = Instant::now();
    let results = rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for id in [&b, &t] {
            for k in 0..CLIENTS {
                tasks.spawn(storm(
                    d.socket.clone(),
                    id.clone(),
                    CONTROLS / CLIENTS,
                    k % 2 == 0,
                ));
            }
        }
        let mut all = Vec::new();
        while let Some(r) = tasks.join_next().await {
            all.push(r.expect("storm task"));
        }
        all
    });
    eprintln!(
        "[clients] {} controls on two jobs in {:?}",
        2 * CONTROLS,
        t0.elapsed()
    );
    let mut finished_early = false;
    for r in results {
        let answers = r.unwrap_or_else(|e| panic!("a storm client failed: {e}"));
        for (action, info) in answers {
            let ok = match action.as_str() {
                "stop" => info.state == JobState::Paused,
                "start" => matches!(info.state, JobState::Queued | JobState::Running),
                _ => {
                    finished_early = true;
                    info.state == JobState::Completed
                }
            };
            assert!(
                ok,
                "{action} of {} answered {:?}: {info:?}",
                info.id, info.state
            );
        }
    }
    if finished_early {
        eprintln!("[clients] a job completed during the storm");
    }
    assert_alive(&d);
    for id in [&b, &t] {
        let s = d.status_json(id);
        if !is_finished(&s) {
            d.control("start", id);
        }
    }
    let s = d.wait_completed(&b);
    assert_counts(&s, 300, 0, Some(300));
    assert_baseline_exact(&d, &b, &base.records);
    let s = d.wait_completed(&t);
    assert_counts(&s, 300, 0, Some(300));
    assert_teams_exact(&d, &t, &teams.teams);
    for id in [&b, &t] {
        assert_committed_consistent(&d, id);
    }
    assert_integrity(&d);
    wait_uploads_gone(&d);
}

both_stores!(a_storm_of_stop_and_start_leaves_jobs_exact,);
