//! `jobd-http` under test: the real shim on a free local port in front of a
//! [`Daemon`], and a minimal HTTP/1.1 client over `TcpStream` that shows exactly
//! what the server sent (status, headers, raw body) and never follows redirects.

use crate::{bins, Daemon, DEADLINE, POLL};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long one HTTP exchange may take before the test fails.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(60);

/// The `jobd-http` binary, built beside `jobd` and `jobctl`.
pub fn jobd_http_bin() -> PathBuf {
    let path = bins().jobctl.with_file_name("jobd-http");
    assert!(
        path.is_file(),
        "{} is missing: build it first (cargo build --workspace)",
        path.display()
    );
    path
}

/// A running `jobd-http`. Dropping it kills the process; if the test is failing,
/// its log is printed.
pub struct Shim {
    child: Option<Child>,
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Shim {
    /// Starts `jobd-http --listen 127.0.0.1:0 --socket <daemon's> EXTRA...` and
    /// learns its port from its "listening" log line. (Picking a free port first
    /// and passing it raced with parallel tests: two shims were given the same
    /// port, and one test talked to the other test's shim.)
    pub fn start(daemon: &Daemon, extra: &[&str]) -> Shim {
        Shim::start_at(&daemon.socket, &daemon.dir().join("http-logs"), extra)
    }

    /// The same for whatever listens at `socket`, logging into `log_dir`.
    pub fn start_at(socket: &Path, log_dir: &Path, extra: &[&str]) -> Shim {
        fs::create_dir_all(log_dir).expect("log directory");
        let log = log_dir.join("jobd-http.log");
        let file = File::create(&log).expect("shim log file");
        let mut child = Command::new(jobd_http_bin())
            .env_remove("JOBD_SOCKET")
            .env_remove("RUST_LOG")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--socket")
            .arg(socket)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log handle"))
            .stderr(file)
            .spawn()
            .expect("spawn jobd-http");
        let deadline = Instant::now() + DEADLINE;
        loop {
            let text = String::from_utf8_lossy(&fs::read(&log).unwrap_or_default()).into_owned();
            if let Some(addr) = listening_address(&text) {
                return Shim {
                    child: Some(child),
                    addr,
                    log,
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("jobd-http exited at start ({status}):\n{text}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("jobd-http did not listen within {DEADLINE:?}:\n{text}");
            }
            thread::sleep(POLL);
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("jobd-http is not running").id()
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// What the shim wrote on stderr.
    pub fn logs(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// A field of `/proc/PID/status` in KiB (`VmHWM`, `VmRSS`).
    pub fn proc_kib(&self, field: &str) -> u64 {
        let text = fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        text.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/PID/status"))
    }

    /// Sends `sig` and waits (bounded) for the process to exit.
    pub fn signal_and_wait(&mut self, sig: Signal) -> ExitStatus {
        let mut child = self.child.take().expect("jobd-http is not running");
        kill(Pid::from_raw(child.id() as i32), sig).expect("signal jobd-http");
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = child.try_wait().expect("wait for jobd-http") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "jobd-http did not exit within {DEADLINE:?} of {sig}:\n{}",
                    self.logs()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// A new connection to the shim, with read and write timeouts.
    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).expect("connect to jobd-http");
        s.set_read_timeout(Some(HTTP_TIMEOUT)).expect("timeout");
        s.set_write_timeout(Some(HTTP_TIMEOUT)).expect("timeout");
        s
    }

    /// One request on a fresh connection (`Connection: close`); the whole answer.
    pub fn request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HttpResponse {
        let mut s = self.connect();
        write_head(&mut s, method, target, headers, Some(body.len() as u64));
        s.write_all(body).expect("send body");
        read_response(&mut BufReader::new(s), method)
    }

    pub fn get(&self, target: &str) -> HttpResponse {
        self.request("GET", target, &[], b"")
    }

    /// POST with a body and, if given, a content type.
    pub fn post(&self, target: &str, content_type: Option<&str>, body: &[u8]) -> HttpResponse {
        match content_type {
            Some(ct) => self.request("POST", target, &[("Content-Type", ct)], body),
            None => self.request("POST", target, &[], body),
        }
    }

    /// POST of a multipart form with one file part `file` named `filename`.
    pub fn upload(&self, target: &str, filename: &str, bytes: &[u8]) -> HttpResponse {
        let form = Multipart::new().file("file", filename, bytes);
        self.post(target, Some(&form.content_type()), &form.body())
    }
}

impl Drop for Shim {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            eprintln!("===== jobd-http log =====\n{}", self.logs());
        }
    }
}

/// The address in the shim's `jobd-http listening listen=ADDR` log line.
fn listening_address(log: &str) -> Option<SocketAddr> {
    log.lines()
        .filter(|l| l.contains("jobd-http listening"))
        .find_map(|l| {
            l.split_once("listen=")?
                .1
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
}

/// Writes a request head (`Connection: close`; `Content-Length` if given).
pub fn write_head(
    s: &mut TcpStream,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    content_length: Option<u64>,
) {
    let mut head =
        format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(n) = content_length {
        head.push_str(&format!("Content-Length: {n}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).expect("send request head");
}

/// A multipart/form-data body built part by part.
pub struct Multipart {
    pub boundary: String,
    parts: Vec<u8>,
}

impl Default for Multipart {
    fn default() -> Self {
        Multipart::new()
    }
}

impl Multipart {
    pub fn new() -> Multipart {
        Multipart {
            boundary: "----jobdTestBoundary7MA4YWxkTrZu0gW".into(),
            parts: Vec::new(),
        }
    }

    pub fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    /// A file part: `name="NAME"; filename="FILENAME"`.
    pub fn file(mut self, name: &str, filename: &str, bytes: &[u8]) -> Multipart {
        self.parts
            .extend_from_slice(self.file_head(name, filename).as_bytes());
        self.parts.extend_from_slice(bytes);
        self.parts.extend_from_slice(b"\r\n");
        self
    }

    /// A plain field (no file name).
    pub fn field(mut self, name: &str, value: &str) -> Multipart {
        let head = format!(
            "--{}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n",
            self.boundary
        );
        self.parts.extend_from_slice(head.as_bytes());
        self
    }

    /// What precedes a file's bytes in its part.
    pub fn file_head(&self, name: &str, filename: &str) -> String {
        format!(
            "--{}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n",
            self.boundary
        )
    }

    /// What closes the form after the last part's bytes.
    pub fn tail(&self) -> String {
        format!("\r\n--{}--\r\n", self.boundary)
    }

    pub fn body(&self) -> Vec<u8> {
        let mut b = self.parts.clone();
        b.extend_from_slice(format!("--{}--\r\n", self.boundary).as_bytes());
        b
    }
}

/// A response as received.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {self}"))
    }

    /// Asserts status, content type and exact body.
    #[track_caller]
    pub fn expect(&self, status: u16, content_type: &str, body: &str) -> &Self {
        assert_eq!(
            (
                self.status,
                self.header("content-type"),
                self.text().as_str()
            ),
            (status, Some(content_type), body),
            "unexpected answer: {self}"
        );
        self
    }

    /// Asserts a legacy JSON answer: status, `application/json; charset=utf-8`, exact body.
    #[track_caller]
    pub fn expect_json(&self, status: u16, body: &str) -> &Self {
        self.expect(status, "application/json; charset=utf-8", body)
    }

    /// Asserts `{"errorType":"<code>"}` with `status`.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) -> &Self {
        self.expect_json(status, &format!("{{\"errorType\":\"{code}\"}}"))
    }
}

impl std::fmt::Display for HttpResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "HTTP {}", self.status)?;
        for (k, v) in &self.headers {
            writeln!(f, "{k}: {v}")?;
        }
        write!(f, "\n{:?}", self.text())
    }
}

/// Reads a status line and headers.
pub fn read_head(r: &mut impl BufRead) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    r.read_line(&mut line).expect("read status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).expect("read header");
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        let (k, v) = l
            .split_once(':')
            .unwrap_or_else(|| panic!("bad header {l:?}"));
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    (status, headers)
}

/// Reads a whole response (Content-Length, chunked, or up to the end).
pub fn read_response(r: &mut impl BufRead, method: &str) -> HttpResponse {
    let (status, headers) = read_head(r);
    let resp = HttpResponse {
        status,
        headers,
        body: Vec::new(),
    };
    let mut body = Vec::new();
    if method == "HEAD" || status == 204 || status == 304 {
        // No body.
    } else if resp
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        Chunked::new(r)
            .read_to_end(&mut body)
            .expect("chunked body");
    } else if let Some(n) = resp.header("content-length") {
        let n: usize = n.parse().expect("numeric content-length");
        body.resize(n, 0);
        r.read_exact(&mut body).expect("body");
    } else {
        r.read_to_end(&mut body).expect("body");
    }
    HttpResponse { body, ..resp }
}

/// A chunked transfer-encoded body, decoded as it is read.
pub struct Chunked<R> {
    inner: R,
    left: usize,
    done: bool,
}

impl<R: BufRead> Chunked<R> {
    pub fn new(inner: R) -> Chunked<R> {
        Chunked {
            inner,
            left: 0,
            done: false,
        }
    }
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            self.inner.read_line(&mut line)?;
            let size = line.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size, 16).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidData, format!("chunk size {line:?}"))
            })?;
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    line.clear();
                    if self.inner.read_line(&mut line)? == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                self.done = true;
                return Ok(0);
            }
            self.left = size;
        }
        let n = self.left.min(buf.len());
        let got = self.inner.read(&mut buf[..n])?;
        if got == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.left -= got;
        if self.left == 0 {
            let mut crlf = [0u8; 2];
            self.inner.read_exact(&mut crlf)?;
        }
        Ok(got)
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

/// Events read one by one from an open `text/event-stream` response.
pub struct SseStream {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    lines: BufReader<Chunked<BufReader<TcpStream>>>,
}

impl SseStream {
    /// `GET target` and read the head; the events follow with [`SseStream::next_event`].
    pub fn open(shim: &Shim, target: &str) -> SseStream {
        let mut s = shim.connect();
        write_head(
            &mut s,
            "GET",
            target,
            &[("Accept", "text/event-stream")],
            None,
        );
        let mut r = BufReader::new(s);
        let (status, headers) = read_head(&mut r);
        SseStream {
            status,
            headers,
            lines: BufReader::new(Chunked::new(r)),
        }
    }

    /// The next event (comments skipped), or `None` at the end of the stream.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        let mut event = SseEvent {
            event: "message".into(),
            data: String::new(),
        };
        let mut seen = false;
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.lines.read_line(&mut line).expect("read event stream");
            if n == 0 {
                return seen.then_some(event);
            }
            let l = line.trim_end_matches(['\r', '\n']);
            if l.is_empty() {
                if seen {
                    return Some(event);
                }
                continue;
            }
            if l.starts_with(':') {
                continue;
            }
            let (field, value) = l.split_once(':').unwrap_or((l, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            seen = true;
            match field {
                "event" => event.event = value.to_string(),
                "data" => {
                    if !event.data.is_empty() {
                        event.data.push('\n');
                    }
                    event.data.push_str(value);
                }
                _ => {}
            }
        }
    }
}
