//! `reliquary trusted-publishers put|list|delete`, and the OIDC side of `publish --oidc`.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use clap::Subcommand;
use reliquary_client::types::{Kind, PutTrustedPublisher, TrustedPublisher};
use reliquary_client::Client;
use serde::Deserialize;

use super::ClientArgs;

#[derive(Subcommand, Debug)]
pub enum TrustedPublishersCommand {
    /// Create or replace a trusted publisher: CI runs whose OIDC token matches may publish.
    Put {
        name: String,
        /// The token issuer, e.g. `https://token.actions.githubusercontent.com`.
        #[arg(long)]
        issuer: String,
        /// The `aud` the token must carry (default: the registry's name).
        #[arg(long)]
        audience: Option<String>,
        /// A claim the token must carry, `name=pattern` (`*`: any run except `/`); repeat.
        #[arg(long = "claim", value_name = "NAME=PATTERN", required = true)]
        claims: Vec<String>,
        /// Id patterns the issued key may publish; repeat.
        #[arg(long = "allowed-id", required = true)]
        allowed_ids: Vec<String>,
        /// Kinds the issued key may publish; repeat.
        #[arg(long = "allowed-kind")]
        allowed_kinds: Vec<Kind>,
        #[arg(long)]
        allowed_category: Option<String>,
    },
    /// List trusted publishers.
    List,
    /// Delete a trusted publisher and revoke the keys it issued.
    Delete { name: String },
}

pub async fn run(args: &ClientArgs, command: TrustedPublishersCommand) -> anyhow::Result<()> {
    let client = args.client()?;
    match command {
        TrustedPublishersCommand::Put {
            name,
            issuer,
            audience,
            claims,
            allowed_ids,
            allowed_kinds,
            allowed_category,
        } => {
            let claims = claims
                .iter()
                .map(|pair| {
                    pair.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .with_context(|| format!("--claim `{pair}` is not NAME=PATTERN"))
                })
                .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
            let request = PutTrustedPublisher {
                issuer,
                audience,
                claims,
                allowed_ids,
                allowed_kinds: (!allowed_kinds.is_empty()).then_some(allowed_kinds),
                allowed_category,
            };
            let publisher = client.put_trusted_publisher(&name, &request).await?;
            args.print(&publisher, describe)
        }
        TrustedPublishersCommand::List => {
            let publishers = client.list_trusted_publishers().await?;
            args.print(&publishers, |list| {
                if list.is_empty() {
                    return "No trusted publishers.".into();
                }
                list.iter().map(describe).collect::<Vec<_>>().join("\n")
            })
        }
        TrustedPublishersCommand::Delete { name } => {
            client.delete_trusted_publisher(&name).await?;
            args.print(&serde_json::json!({"deleted": name}), |_| {
                format!("Deleted trusted publisher {name}; the keys it issued are revoked")
            })
        }
    }
}

fn describe(p: &TrustedPublisher) -> String {
    let claims: Vec<String> = p.claims.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(
        "{}  issuer={} audience={} claims[{}] allowedIds[{}]{}{}",
        p.name,
        p.issuer,
        p.audience,
        claims.join(" "),
        p.allowed_ids.join(" "),
        p.allowed_kinds
            .as_ref()
            .map_or(String::new(), |kinds| format!(
                " allowedKinds[{}]",
                kinds
                    .iter()
                    .map(|kind| kind.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            )),
        p.allowed_category
            .as_ref()
            .map_or(String::new(), |c| format!(" allowedCategory={c}"))
    )
}

/// A client holding a fresh publish key from trusted publishing: the CI's OIDC token (from
/// GitHub Actions' token endpoint, or `RELIQUARY_OIDC_TOKEN`) traded at `POST /oidc/token`.
pub async fn exchanged_client(
    args: &ClientArgs,
    audience: Option<String>,
) -> anyhow::Result<Client> {
    let anonymous = Client::builder(&args.registry).build()?;
    let oidc_token = match ci_token_source()? {
        TokenSource::GitHub { url, bearer } => {
            let audience = match audience {
                Some(audience) => audience,
                None => anonymous.well_known().await?.registry,
            };
            github_token(&url, &bearer, &audience).await?
        }
        TokenSource::Given(token) => token,
    };
    let issued = anonymous
        .exchange_oidc_token(&oidc_token)
        .await
        .context("exchanging the CI's OIDC token at the registry")?;
    if !args.json {
        eprintln!(
            "reliquary: trusted publisher `{}` issued a publish key valid until {}",
            issued.publisher, issued.expires_at
        );
    }
    Ok(Client::builder(&args.registry)
        .token(issued.token)
        .build()?)
}

enum TokenSource {
    GitHub { url: String, bearer: String },
    Given(String),
}

fn ci_token_source() -> anyhow::Result<TokenSource> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if let (Some(url), Some(bearer)) = (
        var("ACTIONS_ID_TOKEN_REQUEST_URL"),
        var("ACTIONS_ID_TOKEN_REQUEST_TOKEN"),
    ) {
        return Ok(TokenSource::GitHub { url, bearer });
    }
    if let Some(token) = var("RELIQUARY_OIDC_TOKEN") {
        return Ok(TokenSource::Given(token));
    }
    bail!(
        "--oidc found no OIDC token: in GitHub Actions give the job `permissions: id-token: write`; elsewhere set RELIQUARY_OIDC_TOKEN (GitLab: an `id_tokens:` entry)"
    )
}

/// GitHub Actions' token endpoint: `GET $ACTIONS_ID_TOKEN_REQUEST_URL&audience=...` with the
/// request token as bearer, answering `{"value": "<jwt>"}`.
async fn github_token(url: &str, bearer: &str, audience: &str) -> anyhow::Result<String> {
    #[derive(Deserialize)]
    struct Answer {
        value: String,
    }
    let mut url = reqwest::Url::parse(url).context("ACTIONS_ID_TOKEN_REQUEST_URL is not a URL")?;
    url.query_pairs_mut().append_pair("audience", audience);
    let response = reqwest::Client::new()
        .get(url)
        .bearer_auth(bearer)
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await
        .context("requesting an OIDC token from GitHub Actions")?;
    let status = response.status();
    if !status.is_success() {
        bail!("GitHub Actions' token endpoint answered {status} (does the job have `permissions: id-token: write`?)");
    }
    Ok(response
        .json::<Answer>()
        .await
        .context("GitHub Actions' token endpoint did not answer {\"value\": ...}")?
        .value)
}
