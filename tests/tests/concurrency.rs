//! Several clients at once: concurrent jobctl processes submitting and controlling,
//! a blocked `wait`/`watch` while another client pauses and resumes, and two
//! protocol-library clients (watch on one connection, control on another).

use jobd_protocol::{Client, ClientError, JobInfo, JobState, UploadKind};
use jobd_tests::*;
use std::thread;
use std::time::{Duration, Instant};

/// Runs `f` for both items on two threads at once and returns both results; a panic
/// in either thread fails the test (no barrier that a panicking thread would leave
/// the other one waiting at).
fn both<T: Sync, R: Send>(items: &[T; 2], f: impl Fn(&T) -> R + Sync) -> [R; 2] {
    thread::scope(|s| {
        let h0 = s.spawn(|| f(&items[0]));
        let h1 = s.spawn(|| f(&items[1]));
        [h0.join().expect("client 0"), h1.join().expect("client 1")]
    })
}

fn two_jobctl_clients_submit_and_control_at_once(b: Backend) {
    let d = Daemon::start_on(b);
    let files = [slow_baseline(101), slow_baseline(102)];
    let paths = both(&files, |f| d.input_file(&f.bytes()));
    // Each client submits, waits for progress, stops, checks the pause and
    // resumes its own job, both at the same time.
    let ids = both(&paths, |p| {
        let id = d.submit(&["upload", p.to_str().expect("path"), "--rate", "40"]);
        d.wait_processed(&id, MID_RUN);
        d.stop(&id);
        d.assert_stays_paused(&id, Duration::from_millis(500));
        d.control("start", &id);
        id
    });
    assert_ne!(ids[0], ids[1]);
    d.jobctl(&["wait", &ids[0], &ids[1]]).ok();
    for (id, f) in ids.iter().zip(&files) {
        assert_baseline_exact(&d, id, &f.records);
    }
}

fn many_uploads_at_once_with_a_status_poller(b: Backend) {
    let d = Daemon::start_on(b);
    let files: Vec<_> = (0..6)
        .map(|i| {
            gen_baseline(
                110 + i,
                &["date", "name", "value"],
                400,
                Date::new(2024, 1, 1),
                30,
            )
        })
        .collect();
    let done = std::sync::atomic::AtomicBool::new(false);
    let ids: Vec<String> = thread::scope(|s| {
        let poller = s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                d.jobctl(&["--json", "status"]).ok();
                thread::sleep(POLL);
            }
        });
        let handles: Vec<_> = files
            .iter()
            .map(|f| {
                let d = &d;
                s.spawn(move || d.upload(&f.bytes(), None))
            })
            .collect();
        let ids = handles
            .into_iter()
            .map(|h| h.join().expect("upload thread"))
            .collect();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        poller.join().expect("poller");
        ids
    });
    for (id, f) in ids.iter().zip(&files) {
        d.wait_completed(id);
        assert_baseline_exact(&d, id, &f.records);
    }
}

fn wait_and_watch_block_through_a_pause(b: Backend) {
    let d = Daemon::start_on(b);
    let f = slow_baseline(103);
    let id = d.upload(&f.bytes(), Some(SLOW_RATE));
    thread::scope(|s| {
        let waiter = s.spawn(|| d.jobctl(&["wait", &id]));
        let watcher = s.spawn(|| d.jobctl(&["watch", &id]));
        d.wait_processed(&id, MID_RUN);
        d.stop(&id);
        d.assert_stays_paused(&id, Duration::from_millis(500));
        assert!(
            !waiter.is_finished(),
            "wait returned while the job is paused"
        );
        d.control("start", &id);
        let w = waiter.join().expect("waiter");
        assert_eq!(w.code, Some(0), "wait: {w}");
        let w = watcher.join().expect("watcher");
        assert_eq!(w.code, Some(0), "watch: {w}");
    });
    assert_eq!(d.status_json(&id)["state"], "completed");
    assert_baseline_exact(&d, &id, &f.records);
}

async fn status(c: &mut Client, id: &str) -> Result<JobInfo, ClientError> {
    let mut v = c.status(&[id.to_string()]).await?;
    assert_eq!(v.len(), 1, "status of one id: {v:?}");
    Ok(v.remove(0))
}

fn library_clients_watch_on_one_connection_control_on_another(b: Backend) {
    let d = Daemon::start_on(b);
    let f = slow_baseline(104);
    let bytes = f.bytes();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let id = rt.block_on(async {
        tokio::time::timeout(DEADLINE, async {
            let mut a = Client::connect(&d.socket, "jobd-tests-a").await?;
            let mut b = Client::connect(&d.socket, "jobd-tests-b").await?;
            assert_eq!(a.user, current_user());
            a.ping().await?;
            let info = a
                .upload(UploadKind::BaselineCsv, Some(SLOW_RATE), &bytes[..], |_| {})
                .await?;
            let id = info.id.clone();
            a.watch(&id).await?;
            let watcher = tokio::spawn(async move {
                let mut events = Vec::new();
                while let Some(ev) = a.next_event().await? {
                    events.push(ev);
                }
                Ok::<_, ClientError>(events)
            });

            let deadline = Instant::now() + DEADLINE;
            while status(&mut b, &id).await?.processed < MID_RUN {
                assert!(Instant::now() < deadline, "no progress");
                tokio::time::sleep(POLL).await;
            }
            let paused = b.control(&id, "stop").await?;
            assert_eq!(paused.state, JobState::Paused);
            let p = paused.processed;
            let end = Instant::now() + Duration::from_millis(500);
            while Instant::now() < end {
                tokio::time::sleep(POLL * 5).await;
                let s = status(&mut b, &id).await?;
                assert_eq!((s.state, s.processed), (JobState::Paused, p));
            }
            b.control(&id, "start").await?;

            let events = watcher.await.expect("watch task")?;
            let last = events.last().expect("watch events");
            assert_eq!(last.state, JobState::Completed, "{last:?}");
            assert_eq!(last.processed, SLOW_ROWS as u64);
            assert!(
                events.iter().any(|e| e.state == JobState::Paused),
                "the watch did not report the pause"
            );
            assert!(
                events.windows(2).all(|w| w[0].processed <= w[1].processed),
                "progress went backwards"
            );
            let finished = b.wait(std::slice::from_ref(&id)).await?;
            assert_eq!(finished[0].state, JobState::Completed);
            let errs = b.errors(&id).await?;
            assert!(errs.is_empty());
            Ok::<_, ClientError>(id)
        })
        .await
        .expect("library client scenario timed out")
    });
    let id = id.unwrap_or_else(|e| panic!("client error: {e}"));
    assert_baseline_exact(&d, &id, &f.records);
}

both_stores!(
    two_jobctl_clients_submit_and_control_at_once,
    many_uploads_at_once_with_a_status_poller,
    wait_and_watch_block_through_a_pause,
    library_clients_watch_on_one_connection_control_on_another,
);
