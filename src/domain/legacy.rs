//! How the legacy registry's documents map onto the unified model.
//!
//! - `format: "npm"` (multi-version, resolved by semver): one release artefact per major,
//!   `<packageName>@<major>`, whose `noarch` slot holds the highest version of that major;
//!   pre-releases only when the major has nothing else. The other versions are superseded.
//! - `format: "branch"` (one mutable tarball): a branch artefact `<packageName>@<branch>`, where
//!   `<branch>` is the legacy `_id` without its `<packageName>-` prefix.

use std::collections::BTreeMap;

use reliquary_client::types::{Kind, Timestamp};
use semver::Version;
use serde::Deserialize;

use super::id::validate_id;

/// One line of `artefacts.jsonl`.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "format", rename_all = "lowercase")]
pub enum LegacyRecord {
    Npm(LegacyNpm),
    Branch(LegacyBranch),
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacyNpm {
    #[serde(rename = "_id")]
    pub id: String,
    pub package_name: String,
    #[serde(default)]
    pub category: Option<String>,
    /// Epoch milliseconds.
    pub created_at: i64,
    pub versions: Vec<LegacyVersion>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacyVersion {
    pub version: String,
    /// A path relative to the export directory.
    pub tarball: String,
    pub uploaded_at: i64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacyBranch {
    #[serde(rename = "_id")]
    pub id: String,
    pub package_name: String,
    pub tarball: String,
    pub created_at: i64,
    pub data_updated_at: i64,
}

/// One artefact to create, with one `noarch` slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedArtefact {
    pub id: String,
    pub kind: Kind,
    pub package_name: String,
    pub category: Option<String>,
    /// The version the slot must hold (checked against the tarball's package.json).
    pub version: Option<Version>,
    pub tarball: String,
    pub created_at: Timestamp,
    pub uploaded_at: Timestamp,
    pub data_updated_at: Timestamp,
}

/// What one legacy line becomes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub artefacts: Vec<PlannedArtefact>,
    /// Versions not imported because a higher one of the same major was: `(id, version)`.
    pub superseded: Vec<(String, String)>,
}

/// Maps one legacy record; an error is a sentence for the report.
pub fn plan(record: &LegacyRecord) -> Result<Plan, String> {
    match record {
        LegacyRecord::Npm(npm) => plan_npm(npm),
        LegacyRecord::Branch(branch) => plan_branch(branch),
    }
}

fn plan_npm(npm: &LegacyNpm) -> Result<Plan, String> {
    if npm.versions.is_empty() {
        return Err(format!("`{}` has no versions", npm.id));
    }
    let mut majors: BTreeMap<u64, Vec<(Version, &LegacyVersion)>> = BTreeMap::new();
    for legacy in &npm.versions {
        let version = Version::parse(&legacy.version)
            .map_err(|e| format!("version `{}` is not semver: {e}", legacy.version))?;
        majors
            .entry(version.major)
            .or_default()
            .push((version, legacy));
    }
    let mut plan = Plan {
        artefacts: Vec::new(),
        superseded: Vec::new(),
    };
    for (major, mut versions) in majors {
        let id = format!("{}@{major}", npm.package_name);
        validate_id(&id).map_err(|why| format!("`{id}` is not a valid id: {why}"))?;
        // Releases beat pre-releases; among equals, the highest version wins.
        versions.sort_by(|(a, _), (b, _)| (a.pre.is_empty(), a).cmp(&(b.pre.is_empty(), b)));
        let (chosen, legacy) = versions.pop().expect("a major has at least one version");
        plan.superseded.extend(
            versions
                .into_iter()
                .map(|(v, _)| (id.clone(), v.to_string())),
        );
        let uploaded_at = Timestamp::from_millis(legacy.uploaded_at);
        plan.artefacts.push(PlannedArtefact {
            id,
            kind: Kind::Release,
            package_name: npm.package_name.clone(),
            category: npm.category.clone(),
            version: Some(chosen),
            tarball: legacy.tarball.clone(),
            created_at: Timestamp::from_millis(npm.created_at),
            uploaded_at,
            data_updated_at: uploaded_at,
        });
    }
    Ok(plan)
}

fn plan_branch(branch: &LegacyBranch) -> Result<Plan, String> {
    let prefix = format!("{}-", branch.package_name);
    let name = branch
        .id
        .strip_prefix(&prefix)
        .filter(|b| !b.is_empty())
        .ok_or_else(|| {
            format!(
                "branch `_id` `{}` does not start with `{prefix}`",
                branch.id
            )
        })?;
    let id = format!("{}@{name}", branch.package_name);
    validate_id(&id).map_err(|why| format!("`{id}` is not a valid id: {why}"))?;
    let updated = Timestamp::from_millis(branch.data_updated_at);
    Ok(Plan {
        artefacts: vec![PlannedArtefact {
            id,
            kind: Kind::Branch,
            package_name: branch.package_name.clone(),
            category: None,
            version: None,
            tarball: branch.tarball.clone(),
            created_at: Timestamp::from_millis(branch.created_at),
            uploaded_at: updated,
            data_updated_at: updated,
        }],
        superseded: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npm(versions: &[&str]) -> LegacyRecord {
        LegacyRecord::Npm(LegacyNpm {
            id: "x".into(),
            package_name: "acme".into(),
            category: Some("plugins".into()),
            created_at: 1_000,
            versions: versions
                .iter()
                .enumerate()
                .map(|(i, v)| LegacyVersion {
                    version: (*v).into(),
                    tarball: format!("t/{v}.tgz"),
                    uploaded_at: 2_000 + i as i64,
                })
                .collect(),
        })
    }

    #[test]
    fn one_release_per_major_with_its_highest_version() {
        let planned = plan(&npm(&[
            "1.0.0",
            "1.4.2",
            "1.10.0",
            "2.0.0-rc.1",
            "2.0.0",
            "0.9.0",
        ]))
        .unwrap();
        let chosen: Vec<(String, String)> = planned
            .artefacts
            .iter()
            .map(|a| (a.id.clone(), a.version.as_ref().unwrap().to_string()))
            .collect();
        assert_eq!(
            chosen,
            [
                ("acme@0".into(), "0.9.0".into()),
                ("acme@1".into(), "1.10.0".into()),
                ("acme@2".into(), "2.0.0".into())
            ]
        );
        let mut superseded = planned.superseded.clone();
        superseded.sort();
        assert_eq!(
            superseded,
            [
                ("acme@1".to_owned(), "1.0.0".to_owned()),
                ("acme@1".to_owned(), "1.4.2".to_owned()),
                ("acme@2".to_owned(), "2.0.0-rc.1".to_owned())
            ]
        );
        let one = &planned.artefacts[1];
        assert_eq!(one.kind, Kind::Release);
        assert_eq!(one.category.as_deref(), Some("plugins"));
        assert_eq!(one.created_at, Timestamp::from_millis(1_000));
        assert_eq!(one.uploaded_at, Timestamp::from_millis(2_002));
    }

    #[test]
    fn pre_releases_only_when_the_major_has_nothing_else() {
        let only_pre = plan(&npm(&["3.0.0-alpha.1", "3.0.0-beta.2", "3.0.0-alpha.9"])).unwrap();
        assert_eq!(
            only_pre.artefacts[0].version.as_ref().unwrap().to_string(),
            "3.0.0-beta.2"
        );
        assert_eq!(only_pre.superseded.len(), 2);
        let mixed = plan(&npm(&["3.0.0-beta.2", "3.1.0-rc.1", "3.0.1"])).unwrap();
        assert_eq!(
            mixed.artefacts[0].version.as_ref().unwrap().to_string(),
            "3.0.1"
        );
    }

    #[test]
    fn branches_drop_the_package_prefix_and_keep_their_timestamps() {
        let record = LegacyRecord::Branch(LegacyBranch {
            id: "acme-feature-login".into(),
            package_name: "acme".into(),
            tarball: "b.tgz".into(),
            created_at: 5,
            data_updated_at: 9,
        });
        let planned = plan(&record).unwrap();
        assert_eq!(planned.artefacts[0].id, "acme@feature-login");
        assert_eq!(planned.artefacts[0].kind, Kind::Branch);
        assert_eq!(
            planned.artefacts[0].data_updated_at,
            Timestamp::from_millis(9)
        );
        let mismatched = LegacyRecord::Branch(LegacyBranch {
            id: "other-main".into(),
            ..match record {
                LegacyRecord::Branch(b) => b,
                _ => unreachable!(),
            }
        });
        assert!(plan_err(&mismatched).contains("does not start with"));
    }

    #[test]
    fn bad_versions_and_empty_records_fail_with_a_reason() {
        assert!(plan_err(&npm(&["1.0"])).contains("not semver"));
        assert!(plan_err(&npm(&[])).contains("no versions"));
    }

    fn plan_err(record: &LegacyRecord) -> String {
        plan(record).unwrap_err()
    }
}
