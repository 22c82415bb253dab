//! The client subcommands of `reliquary`: the admin API from a shell, with `--json` output.

pub mod artefacts;
pub mod keys;
pub mod lifecycle;
pub mod remotes;
pub mod trust;

use clap::Args;
use reliquary_client::Client;
use serde::Serialize;

/// Where the registry is and who is asking; the flag wins over the environment.
#[derive(Args, Clone, Debug)]
pub struct ClientArgs {
    /// The registry's base URL.
    #[arg(
        long,
        env = "RELIQUARY_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub registry: String,
    /// The API token.
    #[arg(long, env = "RELIQUARY_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print one JSON document instead of prose.
    #[arg(long, global = true)]
    pub json: bool,
}

impl ClientArgs {
    pub fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::builder(&self.registry)
            .maybe_token(self.token.clone())
            .build()?)
    }

    /// Prints `value` as JSON with `--json`, else the prose `human` makes of it.
    pub fn print<T: Serialize>(
        &self,
        value: &T,
        human: impl FnOnce(&T) -> String,
    ) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else {
            println!("{}", human(value));
        }
        Ok(())
    }
}
