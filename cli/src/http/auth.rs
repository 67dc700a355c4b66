//! Who may use jobd-http: with `--token-file`, every route but `/healthz` needs a
//! bearer token from that file (`Authorization: Bearer TOKEN`), or the session
//! cookie the dashboard's login form sets after checking one.
//!
//! The file must not be readable by others (mode 0600 or 0400), is small (at most
//! [`MAX_FILE`] bytes, [`MAX_TOKENS`] tokens of [`MIN_TOKEN`] to [`MAX_TOKEN`]
//! visible ASCII characters, one a line; blank lines and `#` comments are
//! skipped). A presented token is compared with every token in constant time
//! (`subtle`), so neither which token nor how much of one matched shows in the
//! timing. Tokens are never logged, nor echoed in errors.
//!
//! Sessions are random 256-bit ids kept in memory (so a restart of jobd-http
//! logs everyone out), at most [`MAX_SESSIONS`], each valid for [`SESSION_TTL`].

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use subtle::{Choice, ConstantTimeEq};
use thiserror::Error;

pub const MAX_FILE: u64 = 64 * 1024;
pub const MAX_TOKENS: usize = 64;
pub const MIN_TOKEN: usize = 16;
pub const MAX_TOKEN: usize = 256;
pub const MAX_SESSIONS: usize = 10_000;
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// The session cookie's name.
pub const COOKIE: &str = "jobd_session";

#[derive(Debug, Error)]
pub enum TokenFileError {
    #[error("cannot read the token file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the token file {path} has mode {mode:04o}: others may read it; \
         make it private (chmod 600)"
    )]
    Mode { path: PathBuf, mode: u32 },
    #[error("the token file {path} is larger than {MAX_FILE} bytes")]
    TooLarge { path: PathBuf },
    #[error("the token file {path} has more than {MAX_TOKENS} tokens")]
    TooMany { path: PathBuf },
    #[error(
        "line {line} of the token file {path} is not a token: \
         {MIN_TOKEN} to {MAX_TOKEN} visible ASCII characters, without spaces"
    )]
    Malformed { path: PathBuf, line: usize },
    #[error("the token file {path} has no token")]
    Empty { path: PathBuf },
}

/// A token, zero-padded to a fixed size so that comparing costs the same
/// whatever its length.
struct Secret {
    len: u64,
    bytes: [u8; MAX_TOKEN],
}

impl Secret {
    fn new(token: &[u8]) -> Option<Secret> {
        if token.len() > MAX_TOKEN {
            return None;
        }
        let mut bytes = [0u8; MAX_TOKEN];
        bytes[..token.len()].copy_from_slice(token);
        Some(Secret {
            len: token.len() as u64,
            bytes,
        })
    }

    fn ct_eq(&self, other: &Secret) -> Choice {
        self.len.ct_eq(&other.len) & self.bytes.ct_eq(&other.bytes)
    }
}

pub struct Auth {
    tokens: Vec<Secret>,
    /// Session id (hex) → when it expires.
    sessions: Mutex<HashMap<String, Instant>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Auth({} tokens)", self.tokens.len())
    }
}

impl Auth {
    /// Reads and checks the token file.
    pub fn load(path: &Path) -> Result<Auth, TokenFileError> {
        let read = |source| TokenFileError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read)?;
        let meta = file.metadata().map_err(read)?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(TokenFileError::Mode {
                path: path.to_path_buf(),
                mode,
            });
        }
        let mut text = Vec::new();
        file.take(MAX_FILE + 1)
            .read_to_end(&mut text)
            .map_err(read)?;
        if text.len() as u64 > MAX_FILE {
            return Err(TokenFileError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        Auth::parse(path, &text)
    }

    fn parse(path: &Path, text: &[u8]) -> Result<Auth, TokenFileError> {
        let mut tokens = Vec::new();
        for (i, line) in text.split(|b| *b == b'\n').enumerate() {
            let line = line.trim_ascii();
            if line.is_empty() || line.starts_with(b"#") {
                continue;
            }
            let well_formed = (MIN_TOKEN..=MAX_TOKEN).contains(&line.len())
                && line.iter().all(|b| (0x21..=0x7e).contains(b));
            let secret = Secret::new(line).filter(|_| well_formed);
            let Some(secret) = secret else {
                return Err(TokenFileError::Malformed {
                    path: path.to_path_buf(),
                    line: i + 1,
                });
            };
            if tokens.len() == MAX_TOKENS {
                return Err(TokenFileError::TooMany {
                    path: path.to_path_buf(),
                });
            }
            tokens.push(secret);
        }
        if tokens.is_empty() {
            return Err(TokenFileError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Auth {
            tokens,
            sessions: Mutex::new(HashMap::new()),
        })
    }

    /// Is `presented` one of the tokens? Every token is compared, in constant time.
    pub fn check_token(&self, presented: &[u8]) -> bool {
        let Some(presented) = Secret::new(presented) else {
            return false;
        };
        let mut found = Choice::from(0);
        for t in &self.tokens {
            found |= t.ct_eq(&presented);
        }
        found.into()
    }

    /// Is this `Authorization` header value `Bearer <a token>`?
    pub fn check_bearer(&self, header: &[u8]) -> bool {
        match header.split_at_checked(7) {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case(b"bearer ") => {
                self.check_token(token.trim_ascii())
            }
            _ => false,
        }
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<String, Instant>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session (after a token was checked): its id, for the cookie.
    pub fn new_session(&self) -> Result<String, getrandom::Error> {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw)?;
        let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut sessions = self.sessions();
        if sessions.len() >= MAX_SESSIONS {
            sessions.retain(|_, until| *until > now);
        }
        if sessions.len() >= MAX_SESSIONS {
            // Still full: the session closest to its end makes room.
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, until)| **until)
                .map(|(k, _)| k.clone())
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(id.clone(), now + SESSION_TTL);
        Ok(id)
    }

    /// Does this `Cookie` header carry a live session?
    pub fn check_session(&self, cookie_header: &[u8]) -> bool {
        let Some(id) = session_id(cookie_header) else {
            return false;
        };
        let mut sessions = self.sessions();
        match sessions.get(id) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                sessions.remove(id);
                false
            }
            None => false,
        }
    }

    /// Forgets the session this `Cookie` header carries (logout).
    pub fn end_session(&self, cookie_header: &[u8]) {
        if let Some(id) = session_id(cookie_header) {
            self.sessions().remove(id);
        }
    }
}

/// The value of our cookie in a `Cookie` header, if it looks like a session id.
fn session_id(cookie_header: &[u8]) -> Option<&str> {
    let header = std::str::from_utf8(cookie_header).ok()?;
    header.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == COOKIE && value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()))
            .then_some(value)
    })
}

/// The `Set-Cookie` value for a new session, and the one that ends it.
pub fn session_cookie(id: &str) -> String {
    format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_TTL.as_secs()
    )
}

pub fn cleared_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "tok-aaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "tok-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn auth(text: &str) -> Result<Auth, TokenFileError> {
        Auth::parse(Path::new("/t"), text.as_bytes())
    }

    #[test]
    fn tokens_and_bearers() {
        let a = auth(&format!("# tokens\n\n{A}\r\n  {B}  \n")).expect("parses");
        assert!(a.check_token(A.as_bytes()));
        assert!(a.check_token(B.as_bytes()));
        assert!(!a.check_token(&A.as_bytes()[..A.len() - 1]));
        assert!(!a.check_token(format!("{A}x").as_bytes()));
        assert!(!a.check_token(b""));
        assert!(!a.check_token(&[b'x'; 1000]));
        assert!(a.check_bearer(format!("Bearer {A}").as_bytes()));
        assert!(a.check_bearer(format!("bearer  {B} ").as_bytes()));
        assert!(!a.check_bearer(A.as_bytes()));
        assert!(!a.check_bearer(format!("Basic {A}").as_bytes()));
        assert!(!a.check_bearer(b"Bearer"));
    }

    #[test]
    fn bad_files() {
        assert!(matches!(auth(""), Err(TokenFileError::Empty { .. })));
        assert!(matches!(
            auth("# only\n"),
            Err(TokenFileError::Empty { .. })
        ));
        for bad in ["short", "has a space in it, long enough", &"x".repeat(257)] {
            let err = auth(&format!("{A}\n{bad}\n")).err();
            assert!(
                matches!(err, Some(TokenFileError::Malformed { line: 2, .. })),
                "{err:?}"
            );
            // The message never shows the token.
            let msg = err.map(|e| e.to_string()).unwrap_or_default();
            assert!(!msg.contains(bad) && !msg.contains(A), "{msg}");
        }
        let many: String = (0..=MAX_TOKENS).map(|i| format!("{A}{i}\n")).collect();
        assert!(matches!(auth(&many), Err(TokenFileError::TooMany { .. })));
    }

    #[test]
    fn sessions() {
        let a = auth(A).expect("parses");
        let id = a.new_session().expect("random");
        assert_eq!(id.len(), 64);
        let cookie = format!("x=1; {COOKIE}={id}; y=2");
        assert!(a.check_session(cookie.as_bytes()));
        assert!(!a.check_session(format!("{COOKIE}={}", "0".repeat(64)).as_bytes()));
        assert!(!a.check_session(format!("{COOKIE}={A}").as_bytes()));
        a.end_session(cookie.as_bytes());
        assert!(!a.check_session(cookie.as_bytes()));
        assert!(session_cookie(&id).contains("HttpOnly; SameSite=Strict"));
    }
}
