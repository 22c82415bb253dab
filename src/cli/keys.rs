//! `reliquary keys create|list|revoke`.

use clap::Subcommand;
use reliquary_client::types::{ApiKey, Kind, NewKey, Role, Timestamp};

use super::ClientArgs;

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a key and print its token (shown this once).
    Create {
        /// A name that says who or what uses the key, e.g. `ci-acme-plugin`.
        #[arg(long)]
        name: String,
        /// admin, publish, read or mirror.
        #[arg(long)]
        role: Role,
        /// Publish keys: the only package.json name they may upload.
        #[arg(long)]
        allowed_package_name: Option<String>,
        /// Publish/mirror keys: the id prefix they are limited to.
        #[arg(long)]
        allowed_name_prefix: Option<String>,
        /// Publish/mirror keys: the category they are limited to.
        #[arg(long)]
        allowed_category: Option<String>,
        /// Publish keys: an id pattern they may write (`*`: any run but `/`); repeatable.
        #[arg(long = "allowed-id")]
        allowed_ids: Vec<String>,
        /// Publish keys: a kind they may write (`release`, `branch`); repeatable.
        #[arg(long = "allowed-kind")]
        allowed_kinds: Vec<Kind>,
        /// When the key stops working (RFC 3339).
        #[arg(long)]
        expires_at: Option<Timestamp>,
    },
    /// List keys (never their tokens).
    List,
    /// Revoke a key by id; it stays listed with `revokedAt`.
    Revoke { id: String },
}

pub async fn run(args: &ClientArgs, command: KeysCommand) -> anyhow::Result<()> {
    let client = args.client()?;
    match command {
        KeysCommand::Create {
            name,
            role,
            allowed_package_name,
            allowed_name_prefix,
            allowed_category,
            allowed_ids,
            allowed_kinds,
            expires_at,
        } => {
            let created = client
                .create_key(&NewKey {
                    name,
                    role,
                    allowed_package_name,
                    allowed_name_prefix,
                    allowed_category,
                    allowed_ids: Some(allowed_ids).filter(|v| !v.is_empty()),
                    allowed_kinds: Some(allowed_kinds).filter(|v| !v.is_empty()),
                    expires_at,
                })
                .await?;
            args.print(&created, |c| {
                format!(
                    "Created key {} ({}, role {}).\nToken (shown once, store it now):\n{}",
                    c.key.name,
                    c.key.id,
                    c.key.role.as_str(),
                    c.token
                )
            })
        }
        KeysCommand::List => {
            let keys = client.list_keys().await?;
            args.print(&keys, |keys| {
                keys.iter().map(describe).collect::<Vec<_>>().join("\n")
            })
        }
        KeysCommand::Revoke { id } => {
            let key = client.revoke_key(&id).await?;
            args.print(&key, |k| format!("Revoked {}", describe(k)))
        }
    }
}

fn describe(key: &ApiKey) -> String {
    let mut line = format!(
        "{}  {:<8} {:<8} {}",
        key.id,
        key.role.as_str(),
        key.prefix,
        key.name
    );
    for (label, scope) in [
        ("package", &key.allowed_package_name),
        ("prefix", &key.allowed_name_prefix),
        ("category", &key.allowed_category),
    ] {
        if let Some(value) = scope {
            line.push_str(&format!("  {label}={value}"));
        }
    }
    if let Some(ids) = &key.allowed_ids {
        line.push_str(&format!("  ids={}", ids.join(",")));
    }
    if let Some(kinds) = &key.allowed_kinds {
        let kinds: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        line.push_str(&format!("  kinds={}", kinds.join(",")));
    }
    if let Some(at) = key.expires_at {
        line.push_str(&format!("  expires {at}"));
    }
    if let Some(at) = key.revoked_at {
        line.push_str(&format!("  REVOKED {at}"));
    }
    line
}
