//! The federation filter: which artefacts a caller may see at all.
//!
//! It is applied inside every store query (lists, change feeds, single reads), never in handlers,
//! so no read path can forget it.

use reliquary_client::types::Kind;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visibility {
    /// Everything, branch builds included (admin, publish and read keys; `--anonymous-read all`).
    All,
    /// Release artefacts only: mirror keys and anonymous callers under `--anonymous-read releases`.
    ReleasesOnly,
}

impl Visibility {
    pub fn allows(self, kind: Kind) -> bool {
        match self {
            Visibility::All => true,
            Visibility::ReleasesOnly => kind == Kind::Release,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_only_hides_branches() {
        assert!(Visibility::All.allows(Kind::Branch));
        assert!(Visibility::All.allows(Kind::Release));
        assert!(Visibility::ReleasesOnly.allows(Kind::Release));
        assert!(!Visibility::ReleasesOnly.allows(Kind::Branch));
    }
}
