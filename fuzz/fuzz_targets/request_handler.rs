//! The real request handling of the daemon, in process: the `jobd` library's
//! server (`server::run`: handshake, frame limits, idle timeout, every handler,
//! the registry, workers and the SQLite store in a temporary directory) serves a
//! Unix socket; each input is one connection's byte stream.
//!
//! Input layout: the first byte chooses whether a valid `Hello` is sent first (odd)
//! or not (even), so the fuzzer reaches the handlers without having to discover the
//! handshake; the rest is written as it is, then the write half is closed. Every
//! frame the daemon sends back must decode as a `Response`; after every input a
//! fresh connection must get a `Pong`. A panic anywhere in the daemon (any task or
//! thread) aborts the process, which libFuzzer reports as a crash.

#![no_main]

use jobd::handler::Context;
use jobd::registry::{Limits, Registry};
use jobd::server::{self, ServerConfig};
use jobd::store::sqlite::SqliteStore;
use jobd_protocol::frame::{decode, encode, read_frame, DEFAULT_MAX_FRAME};
use jobd_protocol::{Request, Response, PROTOCOL_VERSION};
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

struct Env {
    rt: tokio::runtime::Runtime,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            default_hook(info);
            std::process::abort();
        }));
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = SqliteStore::open(&dir.path().join("state")).expect("store");
        let socket = dir.path().join("jobd.sock");
        let listener = server::bind(&socket, None).expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let limits = Limits {
                max_running: 2,
                max_row_errors: 100,
            };
            let registry = Registry::load(Arc::new(store), limits).expect("registry");
            registry.start();
            let ctx = Arc::new(Context {
                registry,
                max_upload_bytes: 1 << 20,
            });
            let cfg = Arc::new(ServerConfig {
                max_frame: DEFAULT_MAX_FRAME,
                idle_timeout: Duration::from_secs(2),
            });
            let listener = tokio::net::UnixListener::from_std(listener).expect("listener");
            let shutdown = jobd::shutdown::on_signals().expect("signals");
            tokio::spawn(server::run(listener, ctx, cfg, shutdown));
        });
        Env {
            rt,
            socket,
            _dir: dir,
        }
    })
}

/// Reads frames until the daemon closes or stays silent for `quiet`; each must decode.
async fn drain(stream: &mut UnixStream, quiet: Duration) -> Vec<Response> {
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(quiet, read_frame(stream, DEFAULT_MAX_FRAME)).await {
            Ok(Ok(Some(body))) => {
                let r: Response = decode(&body).unwrap_or_else(|e| {
                    panic!("the daemon sent an undecodable frame {body:02x?}: {e}")
                });
                seen.push(r);
            }
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => return seen,
        }
    }
}

fn hello() -> Vec<u8> {
    encode(&Request::Hello {
        protocol_version: PROTOCOL_VERSION,
        client: "fuzz".into(),
    })
    .expect("encode")
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let env = env();
    env.rt.block_on(async {
        let mut s = UnixStream::connect(&env.socket).await.expect("connect");
        if mode & 1 == 1 {
            s.write_all(&hello()).await.expect("hello");
        }
        // The daemon may close early (a refusal); later writes then fail, which is fine.
        let _ = s.write_all(rest).await;
        let _ = s.shutdown().await;
        drain(&mut s, Duration::from_millis(200)).await;
        drop(s);

        // The daemon still serves.
        let mut p = UnixStream::connect(&env.socket)
            .await
            .expect("connect for ping");
        let mut out = hello();
        out.extend(encode(&Request::Ping).expect("encode"));
        p.write_all(&out).await.expect("ping");
        let mut seen = Vec::new();
        for _ in 0..2 {
            match tokio::time::timeout(
                Duration::from_secs(5),
                read_frame(&mut p, DEFAULT_MAX_FRAME),
            )
            .await
            {
                Ok(Ok(Some(body))) => {
                    seen.push(decode::<Response>(&body).expect("decodable answer"))
                }
                other => panic!("no answer to a ping after an input: {other:?} after {seen:?}"),
            }
        }
        assert!(
            matches!(seen.as_slice(), [Response::Welcome { .. }, Response::Pong]),
            "no Pong after an input: {seen:?}"
        );
    });
});
