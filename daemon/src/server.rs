//! The socket server: bind (replacing a stale socket, refusing to take over a live
//! one), accept, learn the caller from the peer credentials, and run one task per
//! connection until shutdown.

use crate::connection::{ConnError, Connection};
use crate::handler::{self, Context};
use crate::registry::Caller;
use crate::shutdown::Shutdown;
use crate::users;
use jobd_protocol::frame::FrameError;
use jobd_protocol::{ErrorCode, Request, Response, PROTOCOL_VERSION};
use nix::unistd::{chown, Gid};
use std::fs::Permissions;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};

/// A client must say `Hello` within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct ServerConfig {
    pub max_frame: u32,
    pub idle_timeout: Duration,
}

/// Binds the socket at `path`. A socket nobody answers on is stale and replaced;
/// one that answers belongs to a running daemon, and binding fails.
///
/// A socket directory jobd creates is private to its owner (0700), or also open to
/// `group` (0750) for a system service; the socket itself is 0600, or 0660 with a group.
/// A directory someone else could use to swap the socket is refused ([`check_dir`]).
pub fn bind(path: &Path, group: Option<Gid>) -> io::Result<std::os::unix::net::UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
            // Made by someone else meanwhile: left as it is, for check_dir to judge.
            if let Some(gid) = group.filter(|_| owned_by_us(dir)) {
                chown(dir, None, Some(gid)).map_err(io::Error::from)?;
                std::fs::set_permissions(dir, Permissions::from_mode(0o750))?;
            }
        }
        check_dir(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("another jobd is already listening on {}", path.display()),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::info!(socket = %path.display(), "replacing a stale socket");
                    std::fs::remove_file(path)?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; not replacing it",
                    path.display()
                ),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    let mode = match group {
        Some(gid) => {
            chown(path, None, Some(gid)).map_err(io::Error::from)?;
            0o660
        }
        None => 0o600,
    };
    std::fs::set_permissions(path, Permissions::from_mode(mode))?;
    Ok(listener)
}

/// Refuses a socket directory that another user could use to delete or replace the
/// socket (a squatted `/tmp/jobd-<uid>/`): one owned by someone else than this
/// process's user or root, one that others may write without the sticky bit, or a
/// path that is a symbolic link someone else owns.
pub fn check_dir(dir: &Path) -> io::Result<()> {
    let me = nix::unistd::geteuid().as_raw();
    let refuse = |why: String| {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{why}: another user could replace the socket; \
                 remove the directory or choose another path with --socket"
            ),
        ))
    };
    let link = std::fs::symlink_metadata(dir)?;
    if link.file_type().is_symlink() && link.uid() != me && link.uid() != 0 {
        return refuse(format!(
            "{} is a symbolic link owned by {}, not by you ({}) or root",
            dir.display(),
            user(link.uid()),
            user(me)
        ));
    }
    let meta = std::fs::metadata(dir)?;
    if !meta.is_dir() {
        return refuse(format!("{} is not a directory", dir.display()));
    }
    if meta.uid() != me && meta.uid() != 0 {
        return refuse(format!(
            "the socket directory {} is owned by {}, not by you ({}) or root",
            dir.display(),
            user(meta.uid()),
            user(me)
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return refuse(format!(
            "the socket directory {} is writable by others (mode {mode:04o}) without the sticky bit",
            dir.display()
        ));
    }
    Ok(())
}

fn owned_by_us(dir: &Path) -> bool {
    std::fs::symlink_metadata(dir).is_ok_and(|m| m.uid() == nix::unistd::geteuid().as_raw())
}

/// `uid 1000 (alice)`, or `uid 1000` without a passwd entry.
fn user(uid: u32) -> String {
    let name = users::name_of(uid);
    if name == uid.to_string() {
        format!("uid {uid}")
    } else {
        format!("uid {uid} ({name})")
    }
}

/// Accepts connections until `shutdown` fires.
pub async fn run(
    listener: UnixListener,
    ctx: Arc<Context>,
    cfg: Arc<ServerConfig>,
    mut shutdown: Shutdown,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.recv() => return,
        };
        match accepted {
            Ok((stream, _)) => {
                let (ctx, cfg) = (Arc::clone(&ctx), Arc::clone(&cfg));
                let busy = ctx.registry.activity().busy();
                tokio::spawn(async move {
                    let _busy = busy;
                    if let Err(e) = serve(stream, &ctx, &cfg).await {
                        tracing::debug!(error = ?e, "connection ended");
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve(stream: UnixStream, ctx: &Context, cfg: &ServerConfig) -> Result<(), ConnError> {
    let uid = stream.peer_cred()?.uid();
    let mut conn = Connection::new(stream, cfg.max_frame, cfg.idle_timeout);
    let caller = match handshake(&mut conn, uid).await? {
        Some(c) => c,
        None => return Ok(()),
    };
    loop {
        let req = match conn.read().await {
            Ok(Some(req)) => req,
            Ok(None) => return Ok(()),
            Err(e) => return refuse_and_close(&mut conn, e).await,
        };
        handler::handle(&mut conn, ctx, &caller, req).await?;
    }
}

/// `Hello` → `Welcome`, naming the user the daemon sees (never one the client claims).
async fn handshake(conn: &mut Connection, uid: u32) -> Result<Option<Caller>, ConnError> {
    let hello = match conn.read_within(HANDSHAKE_TIMEOUT).await {
        Ok(Some(h)) => h,
        Ok(None) => return Ok(None),
        Err(e) => return refuse_and_close(conn, e).await.map(|()| None),
    };
    let Request::Hello {
        protocol_version, ..
    } = hello
    else {
        conn.send(&Response::error(
            ErrorCode::BadRequest,
            "the first frame must be Hello",
        ))
        .await?;
        return Ok(None);
    };
    if protocol_version != PROTOCOL_VERSION {
        let msg = format!(
            "client speaks protocol version {protocol_version}, this daemon speaks {PROTOCOL_VERSION}"
        );
        conn.send(&Response::error(ErrorCode::UnsupportedProtocol, msg))
            .await?;
        return Ok(None);
    }
    let user = users::name_of(uid);
    conn.send(&Response::Welcome {
        protocol_version: PROTOCOL_VERSION,
        daemon_version: env!("CARGO_PKG_VERSION").to_string(),
        user: user.clone(),
    })
    .await?;
    Ok(Some(Caller { uid, user }))
}

/// Tells the client why its connection is being closed, when there is a reason to give.
async fn refuse_and_close(conn: &mut Connection, e: ConnError) -> Result<(), ConnError> {
    let (code, message) = match &e {
        ConnError::Frame(FrameError::TooLarge { .. }) => {
            (ErrorCode::FrameTooLarge, e_to_string(&e))
        }
        ConnError::Frame(FrameError::Decode(_) | FrameError::TrailingBytes(_)) => {
            (ErrorCode::BadRequest, e_to_string(&e))
        }
        ConnError::Idle => (ErrorCode::BadRequest, "idle timeout".to_string()),
        _ => return Err(e),
    };
    let _ = conn.send(&Response::error(code, message)).await;
    Err(e)
}

fn e_to_string(e: &ConnError) -> String {
    match e {
        ConnError::Frame(f) => f.to_string(),
        ConnError::Idle => "idle timeout".into(),
    }
}
