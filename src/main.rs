//! The `gatehouse` command: serve, and the operator tasks that touch the
//! database directly.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use gatehouse::MasterKeyAction;
use gatehouse::config::{ENV_HELP, RawSettings, Settings};
use gatehouse_core::SystemClock;
use gatehouse_session::{OpaqueToken, SigningAlgorithm};

#[derive(Parser)]
#[command(name = "gatehouse", version, about = "Identity federation for multi-tenant platforms", after_help = ENV_HELP)]
struct Cli {
    /// A TOML file with settings (same names as the environment variables,
    /// lower case, without the GATEHOUSE_ prefix). The environment wins.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (on 127.0.0.1:8080 with an embedded SQLite database
    /// under ./data unless configured otherwise).
    #[command(after_help = ENV_HELP)]
    Serve,
    /// Manage stored platform-admin tokens.
    #[command(subcommand, after_help = ENV_HELP)]
    AdminToken(AdminTokenCommand),
    /// Manage the keys that sign platform tokens.
    #[command(subcommand, after_help = ENV_HELP)]
    Keys(KeysCommand),
    /// Manage the master keys that seal stored secrets.
    #[command(subcommand, after_help = ENV_HELP)]
    MasterKey(MasterKeyCommand),
}

#[derive(Subcommand)]
enum MasterKeyCommand {
    /// Print a new master key (32 random bytes, base64).
    Generate,
    /// With a key file: put a new key first and re-seal every stored
    /// secret under it, while the service runs; running nodes read the new
    /// key within a minute. The old key stays until `prune`.
    #[command(after_help = ENV_HELP)]
    Rotate,
    /// Re-seal every stored secret under the first configured key (after
    /// putting a new key first in GATEHOUSE_MASTER_KEY on every node).
    #[command(after_help = ENV_HELP)]
    Reseal,
    /// How many stored secrets each master key has sealed.
    #[command(after_help = ENV_HELP)]
    Status,
    /// With a key file: drop the keys that no longer seal anything.
    #[command(after_help = ENV_HELP)]
    Prune,
}

#[derive(Subcommand)]
enum AdminTokenCommand {
    /// Mint an admin token. It is printed once and stored only as a hash.
    #[command(after_help = ENV_HELP)]
    Create {
        /// What the token is for, e.g. "ci" or "alice's laptop".
        #[arg(long)]
        label: String,
    },
    /// Revoke an admin token by its id.
    #[command(after_help = ENV_HELP)]
    Revoke {
        #[arg(long)]
        id: String,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Add a new signing key. The previous key stays published until every
    /// token it signed has expired.
    #[command(after_help = ENV_HELP)]
    Rotate {
        /// ES256 or EdDSA [default: GATEHOUSE_SIGNING_ALG, or ES256].
        #[arg(long)]
        alg: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let failed = |e: anyhow::Error| {
        // One line, with the chain of causes.
        eprintln!("gatehouse: {}", format!("{e:#}").replace('\n', " "));
        ExitCode::FAILURE
    };
    // Read before the runtime exists: they say how many threads it has.
    let settings = match settings(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(e) => return failed(e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.worker_threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return failed(anyhow::Error::new(e).context("cannot start the runtime")),
    };
    match runtime.block_on(run(cli.command, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => failed(e),
    }
}

/// The settings: the file's, if one is given, overlaid by the environment.
fn settings(file: Option<&Path>) -> anyhow::Result<Settings> {
    let raw = match file {
        Some(path) => RawSettings::from_file(path)?,
        None => RawSettings::default(),
    };
    Ok(Settings::from_raw(raw.overlay_env(|name| std::env::var(name).ok())?)?)
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    gatehouse::telemetry::init_logging(settings.log_format, &settings.log_level)?;
    let clock = Arc::new(SystemClock);
    match command {
        Command::Serve => {
            let bind = settings.bind;
            let state = gatehouse::bootstrap(settings, clock).await?;
            let listener = tokio::net::TcpListener::bind(bind)
                .await
                .with_context(|| format!("cannot listen on {bind}"))?;
            // The runtime's own count, which is what serves (`GATEHOUSE_WORKER_THREADS`).
            let workers = tokio::runtime::Handle::current().metrics().num_workers();
            tracing::info!(address = %listener.local_addr()?, issuer = state.issuer(), workers, "gatehouse listening");
            gatehouse::serve(listener, state, gatehouse::shutdown_signal()).await?;
        }
        Command::AdminToken(AdminTokenCommand::Create { label }) => {
            let label = label.trim();
            anyhow::ensure!(!label.is_empty() && label.len() <= 200, "--label must be 1 to 200 characters");
            let state = gatehouse::bootstrap(settings, clock).await?;
            let token = OpaqueToken::generate("gha");
            let record = state.store().create_admin_token(label, token.hash(), state.clock().now()).await?;
            eprintln!("admin token {} ({label}) created; it is shown only this once:", record.id);
            println!("{}", token.plain());
        }
        Command::AdminToken(AdminTokenCommand::Revoke { id }) => {
            let state = gatehouse::bootstrap(settings, clock).await?;
            state.store().revoke_admin_token(&id, state.clock().now()).await.context("cannot revoke")?;
            eprintln!("admin token {id} revoked");
        }
        Command::MasterKey(MasterKeyCommand::Generate) => {
            println!("{}", gatehouse_session::MasterKey::generate().to_base64());
        }
        Command::MasterKey(command) => {
            let action = match command {
                MasterKeyCommand::Generate => unreachable!("handled above"),
                MasterKeyCommand::Rotate => MasterKeyAction::Rotate,
                MasterKeyCommand::Reseal => MasterKeyAction::Reseal,
                MasterKeyCommand::Status => MasterKeyAction::Status,
                MasterKeyCommand::Prune => MasterKeyAction::Prune,
            };
            let state = gatehouse::bootstrap(settings, clock).await?;
            println!("{}", gatehouse::master_key_command(&state, action).await?);
        }
        Command::Keys(KeysCommand::Rotate { alg }) => {
            let alg = match alg {
                Some(a) => {
                    SigningAlgorithm::parse(&a).with_context(|| format!("--alg {a:?}: use ES256 or EdDSA"))?
                }
                None => settings.signing_alg,
            };
            let state = gatehouse::bootstrap(settings, clock).await?;
            let kid = state.keys().rotate(alg).await?;
            println!("{kid}");
            eprintln!("signing key {kid} ({}) is now current", alg.as_str());
        }
    }
    Ok(())
}
