//! The `reliquary` binary: the registry server and its command-line tools.

use std::io::IsTerminal;

use clap::{Parser, Subcommand};
use reliquary::cli::keys::KeysCommand;
use reliquary::cli::ClientArgs;
use reliquary::config::{Config, ServeArgs, StoreArgs};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "reliquary",
    version,
    about = "A federated artefact store for per-architecture plugin tarballs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry: HTTP API, web UI and sync worker.
    Serve(ServeArgs),
    /// Apply pending schema migrations and print what was applied.
    Migrate(StoreArgs),
    /// Import a legacy export directory (DIR/artefacts.jsonl and its tarballs).
    ImportLegacy {
        dir: std::path::PathBuf,
        #[command(flatten)]
        args: ServeArgs,
        #[arg(long)]
        json: bool,
    },
    /// Apply branch retention, then collect blobs nothing references any more (mark now, delete
    /// after the grace period).
    Gc {
        #[command(flatten)]
        args: ServeArgs,
        /// How long a blob must have been unreferenced (and unwritten) before it is deleted.
        #[arg(long, default_value_t = 3600)]
        grace_seconds: u64,
        /// List what retention and collection would remove; remove and mark nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Check a tarball offline with the registry's rules (exit 0 valid, 1 not).
    Validate {
        tarball: std::path::PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Upload one slot from CI.
    Publish {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: reliquary::cli::artefacts::PublishArgs,
    },
    /// Make an artefact present in the local cache and print its path.
    Ensure {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: reliquary::cli::artefacts::EnsureArgs,
    },
    /// Generate a registry signing key (PKCS#8 PEM, mode 0600) for `--signing-key`; see
    /// docs/security.md for rotation.
    SigningKey {
        #[command(subcommand)]
        command: SigningKeyCommand,
    },
    /// Show the replaced slots of an artefact, newest first, with what was yanked.
    History {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: reliquary::cli::lifecycle::HistoryArgs,
    },
    /// Serve an earlier version again and yank the versions it replaces.
    Rollback {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: reliquary::cli::lifecycle::RollbackArgs,
    },
    /// Deprecate an artefact (still delivered, but hosts are told why not to use it).
    Deprecate {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: reliquary::cli::lifecycle::DeprecateArgs,
    },
    /// Manage remotes (federation) on a running registry.
    Remotes {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: reliquary::cli::remotes::RemotesCommand,
    },
    /// Manage trusted publishers (CI publishing with OIDC tokens) on a running registry.
    TrustedPublishers {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: reliquary::cli::trust::TrustedPublishersCommand,
    },
    /// Manage API keys on a running registry.
    Keys {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand)]
enum SigningKeyCommand {
    /// Write a new key to FILE (which must not exist) and print its kid.
    Generate { file: std::path::PathBuf },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("RELIQUARY_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("reliquary: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let config = Config::from_serve_args(&args)?;
            let listener = tokio::net::TcpListener::bind(config.listen).await?;
            reliquary::launch(config, listener, shutdown_signal()).await
        }
        Command::Migrate(args) => {
            let config = Config::from_store_args(&args)?;
            let (_, applied) = reliquary::open_store(&config).await?;
            if applied.is_empty() {
                println!("The store is up to date; nothing to apply.");
            }
            for migration in applied {
                println!("applied {migration}");
            }
            Ok(())
        }
        Command::SigningKey {
            command: SigningKeyCommand::Generate { file },
        } => {
            let key = reliquary::signing::generate_key_file(&file)?;
            let kid = reliquary_client::jws::kid_for(&key.verifying_key());
            println!("wrote {} (kid {kid})", file.display());
            Ok(())
        }
        Command::ImportLegacy { dir, args, json } => {
            let config = Config::from_serve_args(&args)?;
            let registry = reliquary::open_stores_and_keys(&config).await?;
            let report = reliquary::legacy::import(&registry, &dir).await?;
            print_import_report(&report, json)?;
            anyhow::ensure!(
                report.failed.is_empty(),
                "{} line(s) failed; everything else was imported",
                report.failed.len()
            );
            Ok(())
        }
        Command::Gc {
            args,
            grace_seconds,
            dry_run,
            json,
        } => {
            let config = Config::from_serve_args(&args)?;
            let registry = reliquary::open_stores_and_keys(&config).await?;
            let grace = std::time::Duration::from_secs(grace_seconds);
            // Retention first: what it removes is collected by a run after the grace period.
            let retention = registry.apply_retention(dry_run).await?;
            let collection =
                reliquary::gc::collect(registry.store.as_ref(), &registry.blobs, grace, dry_run)
                    .await?;
            let report = GcOutput {
                retention,
                collection,
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_gc_report(&report, grace_seconds);
            }
            Ok(())
        }
        Command::Validate { tarball, json } => reliquary::cli::artefacts::validate(&tarball, json),
        Command::Publish { client, args } => {
            reliquary::cli::artefacts::publish(&client, args).await
        }
        Command::Ensure { client, args } => reliquary::cli::artefacts::ensure(&client, args).await,
        Command::History { client, args } => {
            reliquary::cli::lifecycle::history(&client, args).await
        }
        Command::Rollback { client, args } => {
            reliquary::cli::lifecycle::rollback(&client, args).await
        }
        Command::Deprecate { client, args } => {
            reliquary::cli::lifecycle::deprecate(&client, args).await
        }
        Command::Remotes { client, command } => {
            reliquary::cli::remotes::run(&client, command).await
        }
        Command::TrustedPublishers { client, command } => {
            reliquary::cli::trust::run(&client, command).await
        }
        Command::Keys { client, command } => reliquary::cli::keys::run(&client, command).await,
    }
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct GcOutput {
    retention: reliquary::registry::RetentionReport,
    #[serde(flatten)]
    collection: reliquary::gc::GcReport,
}

fn print_gc_report(report: &GcOutput, grace_seconds: u64) {
    let dry_run = report.collection.dry_run;
    let verb = if dry_run { "would remove" } else { "removed" };
    match report.retention.cutoff {
        None => println!("branch retention is off (--branch-retention)"),
        Some(cutoff) => {
            for idle in &report.retention.removed {
                let downloaded = idle.last_downloaded_at.map_or_else(
                    || "never downloaded".to_owned(),
                    |at| format!("last downloaded {at}"),
                );
                println!(
                    "{verb} branch artefact {} (bytes unchanged since {}, {downloaded})",
                    idle.id, idle.data_updated_at
                );
            }
            println!(
                "branch retention: {} idle since {cutoff} {verb}",
                report.retention.removed.len()
            );
        }
    }
    let collection = &report.collection;
    for digest in &collection.removed_blobs {
        println!("{verb} blob sha256:{digest}");
    }
    for upload in &collection.removed_uploads {
        println!("{verb} abandoned upload {upload}");
    }
    println!(
        "{} blobs referenced; {} {verb}; {} newly marked (removed by a run after {grace_seconds} s); {} abandoned uploads {verb}",
        collection.referenced,
        collection.removed_blobs.len(),
        collection.newly_marked.len(),
        collection.removed_uploads.len()
    );
}

fn print_import_report(report: &reliquary::legacy::ImportReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    for id in &report.created {
        println!("created    {id}");
    }
    for id in &report.unchanged {
        println!("unchanged  {id} (already present)");
    }
    for s in &report.superseded {
        println!(
            "superseded {} {} (a higher version of its major was imported)",
            s.id, s.version
        );
    }
    for f in &report.failed {
        println!("failed     line {}: {}", f.line, f.message);
    }
    if report.created.is_empty() && report.failed.is_empty() {
        println!("Nothing to import: every artefact is present already.");
    }
    println!(
        "{} created, {} unchanged, {} superseded, {} failed",
        report.created.len(),
        report.unchanged.len(),
        report.superseded.len(),
        report.failed.len()
    );
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = interrupt => {},
            _ = terminate.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutting down: finishing in-flight requests");
}
