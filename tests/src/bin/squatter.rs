//! `squatter SOCKET`: what another user could plant at a client's socket path. It
//! listens at SOCKET (mode 0777, so that anyone may connect) and, for every
//! connection, prints `accepted` and then `closed N`: the N bytes the client sent
//! before it closed, or before its first whole frame (then the squatter hangs up,
//! as a fake daemon that answered nothing would). The tests assert N = 0.

use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: squatter SOCKET");
        return ExitCode::from(2);
    };
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("squatter: cannot bind {}: {e}", path.to_string_lossy());
            return ExitCode::from(1);
        }
    };
    if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)) {
        eprintln!("squatter: chmod: {e}");
        return ExitCode::from(1);
    }
    say("listening");
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                say("accepted");
                std::thread::spawn(move || say(&format!("closed {}", drain(stream))));
            }
            Err(e) => eprintln!("squatter: accept: {e}"),
        }
    }
    ExitCode::SUCCESS
}

/// Reads until the client closes, or until a whole frame (4-byte big-endian
/// length, then the body) has arrived; returns the bytes read.
fn drain(mut stream: UnixStream) -> usize {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return got.len(),
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        if let Some(len) = got.get(..4) {
            let body = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            if got.len() >= 4 + body {
                return got.len();
            }
        }
    }
}

fn say(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
