//! User names of uids, as the socket's peer credentials give them.

use nix::unistd::{Uid, User};

/// The login name of `uid`, or the number itself when it has no passwd entry.
pub fn name_of(uid: u32) -> String {
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(u)) => u.name,
        _ => uid.to_string(),
    }
}
