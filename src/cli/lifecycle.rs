//! `reliquary history`, `rollback` and `deprecate`: withdrawing a release from a shell.

use clap::Args;
use reliquary_client::types::{Artefact, HistoryItem, Rollback};
use serde_json::json;

use super::ClientArgs;

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// The artefact id.
    pub id: String,
    /// Only this slot's history.
    #[arg(long)]
    pub arch: Option<String>,
}

#[derive(Args, Debug)]
pub struct RollbackArgs {
    /// The artefact id.
    pub id: String,
    /// The earlier version to serve again.
    #[arg(long)]
    pub version: String,
    /// Only this slot; by default every slot whose history holds the version.
    #[arg(long)]
    pub arch: Option<String>,
    /// Why: kept with the yanked versions and shown to whoever retries them.
    #[arg(long)]
    pub reason: String,
}

#[derive(Args, Debug)]
pub struct DeprecateArgs {
    /// The artefact id.
    pub id: String,
    /// What hosts are told, e.g. "use acme-plugin@2".
    #[arg(required_unless_present = "clear", conflicts_with = "clear")]
    pub message: Option<String>,
    /// Remove the deprecation.
    #[arg(long)]
    pub clear: bool,
}

pub async fn history(args: &ClientArgs, command: HistoryArgs) -> anyhow::Result<()> {
    let items = args
        .client()?
        .history(&command.id, command.arch.as_deref())
        .await?;
    args.print(&json!({ "items": items }), |_| {
        describe_history(&command.id, &items)
    })
}

fn describe_history(id: &str, items: &[HistoryItem]) -> String {
    if items.is_empty() {
        return format!("`{id}` has no history yet: no slot has been replaced.");
    }
    let mut lines = vec![format!(
        "{:<10} {:<16} {:<26} {:<14} yanked",
        "slot", "version", "replaced", "sha256"
    )];
    for item in items {
        let yanked = item
            .entry
            .yanked
            .as_ref()
            .map_or_else(|| "-".to_owned(), |y| format!("{} ({})", y.at, y.reason));
        lines.push(format!(
            "{:<10} {:<16} {:<26} {:<14} {yanked}",
            item.architecture,
            item.entry.slot.version,
            item.entry.replaced_at.to_string(),
            &item.entry.slot.sha256[..12.min(item.entry.slot.sha256.len())],
        ));
    }
    lines.join("\n")
}

pub async fn rollback(args: &ClientArgs, command: RollbackArgs) -> anyhow::Result<()> {
    let doc = args
        .client()?
        .rollback(
            &command.id,
            &Rollback {
                version: command.version.clone(),
                architecture: command.arch.clone(),
                reason: command.reason.clone(),
            },
        )
        .await?;
    args.print(&doc, |doc| {
        let slots = slot_versions(doc);
        format!(
            "Rolled `{}` back to {}; slots now: {slots}. The versions it replaced are yanked: \"{}\".",
            doc.id, command.version, command.reason
        )
    })
}

pub async fn deprecate(args: &ClientArgs, command: DeprecateArgs) -> anyhow::Result<()> {
    let message = command.message.as_deref().filter(|_| !command.clear);
    let doc = args.client()?.deprecate(&command.id, message).await?;
    args.print(&doc, |doc| match &doc.deprecated {
        Some(d) => format!("Deprecated `{}`: {}", doc.id, d.message),
        None => format!("`{}` is no longer deprecated.", doc.id),
    })
}

fn slot_versions(doc: &Artefact) -> String {
    doc.tarballs
        .iter()
        .map(|(arch, slot)| format!("{arch} {}", slot.version))
        .collect::<Vec<_>>()
        .join(", ")
}
