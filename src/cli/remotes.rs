//! `reliquary remotes put|list|sync|delete`.

use anyhow::Context;
use clap::Subcommand;
use reliquary_client::types::{PutRemote, Remote};

use super::ClientArgs;

#[derive(Subcommand, Debug)]
pub enum RemotesCommand {
    /// Create or replace a remote: mirror the peer at URL with one of its mirror keys.
    Put {
        name: String,
        #[arg(long)]
        url: String,
        /// A mirror key on the peer.
        #[arg(long, env = "RELIQUARY_PEER_TOKEN", hide_env_values = true)]
        peer_token: String,
        #[arg(long, default_value_t = 60)]
        interval_seconds: u64,
        #[arg(long)]
        allowed_name_prefix: Option<String>,
        #[arg(long)]
        allowed_category: Option<String>,
        /// Mirror only these slots (repeat or comma-separate).
        #[arg(long, value_delimiter = ',')]
        architectures: Vec<String>,
        /// Configure it without starting the sync worker.
        #[arg(long)]
        disabled: bool,
        /// Pin keys explicitly: a JSON file `{"<registry>": [JWK, ...]}` (for instance the
        /// `keys` of the origin's `/.well-known/reliquary`, obtained out of band).
        #[arg(long, value_name = "FILE")]
        trusted_keys: Option<std::path::PathBuf>,
    },
    /// List remotes and their sync status.
    List,
    /// Run one pass now and print what it did.
    Sync {
        name: String,
        /// Re-read the peer's feed from the start: items refused before are judged again.
        #[arg(long)]
        from_start: bool,
    },
    /// Stop mirroring; `--purge` also deletes what was mirrored.
    Delete {
        name: String,
        #[arg(long)]
        purge: bool,
    },
}

pub async fn run(args: &ClientArgs, command: RemotesCommand) -> anyhow::Result<()> {
    let client = args.client()?;
    match command {
        RemotesCommand::Put {
            name,
            url,
            peer_token,
            interval_seconds,
            allowed_name_prefix,
            allowed_category,
            architectures,
            disabled,
            trusted_keys,
        } => {
            let trusted_keys = match trusted_keys {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    Some(serde_json::from_str(&text).with_context(|| {
                        format!("{} is not a JSON object of JWK lists", path.display())
                    })?)
                }
                None => None,
            };
            let request = PutRemote {
                url,
                token: peer_token,
                interval_seconds,
                allowed_name_prefix,
                allowed_category,
                architectures: (!architectures.is_empty()).then_some(architectures),
                enabled: !disabled,
                trusted_keys,
            };
            let remote = client.put_remote(&name, &request).await?;
            args.print(&remote, |r| {
                format!(
                    "Remote {} mirrors registry `{}` at {}",
                    r.name, r.registry, r.url
                )
            })
        }
        RemotesCommand::List => {
            let remotes = client.list_remotes().await?;
            args.print(&remotes, |remotes| {
                remotes.iter().map(describe).collect::<Vec<_>>().join("\n")
            })
        }
        RemotesCommand::Sync { name, from_start } => {
            let summary = client.sync_remote_from(&name, from_start).await?;
            args.print(&summary, |s| {
                format!(
                    "mirrored {}, deleted {}, conflicts {}, skipped {}, {} bytes; cursor {}",
                    s.mirrored, s.deleted, s.conflicts, s.skipped, s.bytes, s.cursor
                )
            })
        }
        RemotesCommand::Delete { name, purge } => {
            let remote = client.delete_remote(&name, purge).await?;
            args.print(&remote, |r| format!("Deleted remote {}", r.name))
        }
    }
}

fn describe(remote: &Remote) -> String {
    let status = match (&remote.last_error, remote.last_success_at) {
        (Some(error), _) => format!("error: {error}"),
        (None, Some(at)) => format!("ok at {at}"),
        (None, None) => "never synced".into(),
    };
    let lease = remote.lease.as_ref().map_or_else(
        || "lease=none".to_owned(),
        |l| format!("lease={} until {}", l.holder, l.until),
    );
    format!(
        "{}  {}  registry={} {} lag={} mirrored={} {lease}  {}",
        remote.name,
        remote.url,
        remote.registry,
        if remote.enabled {
            "enabled"
        } else {
            "disabled"
        },
        remote.peer_last_seq - remote.cursor,
        remote.mirrored_artefacts,
        status
    )
}
