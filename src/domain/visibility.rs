//! The federation filter: which artefacts a caller may see at all.
//!
//! It is applied inside every store query (lists, change feeds, single reads), never in handlers,
//! so no read path can forget it. A hidden artefact is indistinguishable from a missing one.

use reliquary_client::types::Kind;

use super::id::star_match;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Visibility {
    /// Hide every `kind: "branch"` artefact: mirror keys, and anonymous callers under
    /// `--anonymous-read releases`. Branch builds never leave the registry that owns them.
    pub releases_only: bool,
    /// A mirror key's `allowedNamePrefix`: only ids starting with it.
    pub id_prefix: Option<String>,
    /// A mirror key's `allowedCategory`: only artefacts in it.
    pub category: Option<String>,
    /// A mirror key's `allowedIds`: only ids matching one of these patterns.
    pub id_patterns: Option<Vec<String>>,
}

impl Visibility {
    /// Everything, branch builds included (admin, publish and read keys; `--anonymous-read all`).
    pub fn all() -> Self {
        Self::default()
    }

    /// Release artefacts only.
    pub fn releases() -> Self {
        Self {
            releases_only: true,
            ..Self::default()
        }
    }

    /// Whether a document with these properties passes the filter.
    pub fn allows(&self, id: &str, kind: Kind, category: Option<&str>) -> bool {
        (!self.releases_only || kind == Kind::Release)
            && self.id_prefix.as_deref().is_none_or(|p| id.starts_with(p))
            && self.category.as_deref().is_none_or(|c| category == Some(c))
            && self.admits_id(id)
    }

    /// Whether `id` matches the id patterns, if there are any.
    pub fn admits_id(&self, id: &str) -> bool {
        self.id_patterns
            .as_ref()
            .is_none_or(|patterns| patterns.iter().any(|p| star_match(p, id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_only_hides_branches() {
        assert!(Visibility::all().allows("a@main", Kind::Branch, None));
        assert!(Visibility::releases().allows("a@1", Kind::Release, None));
        assert!(!Visibility::releases().allows("a@main", Kind::Branch, None));
    }

    #[test]
    fn scopes_narrow_further() {
        let scoped = Visibility {
            releases_only: true,
            id_prefix: Some("acme-".into()),
            category: Some("plugins".into()),
            id_patterns: None,
        };
        assert!(scoped.allows("acme-x@1", Kind::Release, Some("plugins")));
        assert!(!scoped.allows("other@1", Kind::Release, Some("plugins")));
        assert!(!scoped.allows("acme-x@1", Kind::Release, Some("services")));
        assert!(!scoped.allows("acme-x@1", Kind::Release, None));
        assert!(!scoped.allows("acme-x@main", Kind::Branch, Some("plugins")));
    }

    #[test]
    fn id_patterns_admit_matching_ids_only() {
        let scoped = Visibility {
            id_patterns: Some(vec!["acme-*@1".into(), "@acme/*@*".into()]),
            ..Visibility::releases()
        };
        assert!(scoped.allows("acme-x@1", Kind::Release, None));
        assert!(scoped.allows("@acme/tool@2", Kind::Release, None));
        assert!(!scoped.allows("acme-x@2", Kind::Release, None));
        assert!(!scoped.allows("other@1", Kind::Release, None));
    }
}
