//! The feed of every job change, for clients that follow all their jobs at once
//! (`Request::Events`, the dashboard). The registry publishes each change it
//! makes, as it makes it: nobody polls. With no subscriber a change costs one
//! atomic load.

use jobd_protocol::JobInfo;
use tokio::sync::broadcast;

/// Changes kept for a subscriber that has not read them yet; one further behind
/// is told how many it missed (and must read the jobs again).
const BACKLOG: usize = 4096;

pub struct Feed {
    tx: broadcast::Sender<JobInfo>,
}

impl Default for Feed {
    fn default() -> Self {
        Feed::new()
    }
}

impl Feed {
    pub fn new() -> Feed {
        Feed {
            tx: broadcast::channel(BACKLOG).0,
        }
    }

    pub fn publish(&self, info: &JobInfo) {
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(info.clone());
        }
    }

    /// Every change published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<JobInfo> {
        self.tx.subscribe()
    }
}
