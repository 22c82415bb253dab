//! The registry-wide change sequence as a signal: every commit announces its `seq`, and
//! long-polling change-feed readers wake when a newer one arrives. Shared by the services that
//! commit (the registry, the federation worker).

use tokio::sync::watch;

pub struct ChangeFeed(watch::Sender<i64>);

impl Default for ChangeFeed {
    fn default() -> Self {
        Self(watch::Sender::new(0))
    }
}

impl ChangeFeed {
    /// Wakes long-polling readers after a commit of `seq`.
    pub fn changed(&self, seq: i64) {
        self.0.send_if_modified(|latest| {
            let newer = seq > *latest;
            *latest = (*latest).max(seq);
            newer
        });
    }

    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.0.subscribe()
    }
}
