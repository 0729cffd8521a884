//! The `medhub` binary: `serve`, `admin`, `migrate`, `check-config`, `example-config`.
// The CLI's output is its interface (ids, the one-time password): printing is deliberate.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod admin;
mod audit;
mod audit_export;
mod config;
mod oncall;
mod reports;
mod retention;
mod server_key;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use medhub_core::SystemClock;
use medhub_service::Services;

use crate::config::{Config, LogFormat, Overrides};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// medhub: real-time clinical collaboration.
#[derive(Parser, Debug)]
#[command(name = "medhub", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where to find the configuration and the data (shared by every command).
#[derive(Args, Debug, Clone, Default)]
struct StoreArgs {
    /// Configuration file (TOML). Settings may also come from MEDHUB__SECTION__KEY variables.
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Directory of the embedded SQLite database [default: ./medhub-data].
    #[arg(long, value_name = "DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Use PostgreSQL at this URL instead of the embedded database.
    #[arg(long, value_name = "postgres://…", global = true)]
    database_url: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server.
    Serve {
        /// Address to listen on [default: 127.0.0.1:8080].
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
        /// Serve HTTPS with this PEM certificate chain (needs --tls-key; reloaded on SIGHUP).
        #[arg(long, value_name = "FILE")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of --tls-cert.
        #[arg(long, value_name = "FILE")]
        tls_key: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Apply database migrations and exit.
    Migrate {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Validate the configuration and print the effective settings (secrets redacted).
    CheckConfig {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Print an example configuration file with every setting and its default.
    ExampleConfig,
    /// Manage users, conversations and memberships.
    Admin {
        #[command(flatten)]
        store: StoreArgs,
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
    /// Audit-trail tools: verify the tamper-evident log, make compliance reports.
    Audit {
        #[command(flatten)]
        store: StoreArgs,
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Content retention: policies, legal holds, and the expiry job on demand.
    Retention {
        #[command(flatten)]
        store: StoreArgs,
        #[command(subcommand)]
        command: retention::RetentionCommand,
    },
}

impl StoreArgs {
    fn load(&self, listen: Option<std::net::SocketAddr>) -> Result<Config> {
        self.load_with(Overrides { listen, ..Overrides::default() })
    }

    fn load_with(&self, overrides: Overrides) -> Result<Config> {
        let overrides =
            Overrides { data_dir: self.data_dir.clone(), database_url: self.database_url.clone(), ..overrides };
        Ok(Config::load(self.config.as_deref(), &overrides)?)
    }
}

fn init_logging(config: &Config) {
    init_logging_at(config, &std::env::var("RUST_LOG").unwrap_or_else(|_| config.log.level.clone()));
}

/// Logs to standard error; colours only on a terminal, so that a log file or journal holds
/// plain text.
fn init_logging_at(config: &Config, spec: &str) {
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(medhub_api::log_filter(spec))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // No transparent huge pages for this process: with them, the allocator's sparsely used
    // arenas are backed by 2 MiB pages, which multiplies resident memory per connection and
    // adds compaction stalls. (A kernel in "madvise" mode may still apply them.)
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        eprintln!("medhub: could not disable transparent huge pages: {e}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("medhub").build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("medhub: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("medhub: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::ExampleConfig => {
            print!("{}", config::example_toml());
            Ok(())
        }
        Command::CheckConfig { store } => {
            let config = store.load(None)?;
            println!("# configuration is valid; effective settings:\n{}", config.to_redacted_toml());
            Ok(())
        }
        Command::Migrate { store } => {
            let config = store.load(None)?;
            init_logging(&config);
            let store = open_store(&config).await?;
            store.migrate().await.context("migration failed")?;
            println!("medhub: database is at the current schema");
            Ok(())
        }
        Command::Serve { listen, tls_cert, tls_key, store } => {
            serve(store.load_with(Overrides { listen, tls_cert, tls_key, ..Overrides::default() })?).await
        }
        Command::Admin { store, command } => {
            let config = store.load(None)?;
            init_logging_quiet(&config);
            let services = start(&config, false).await?;
            admin::run(&services, command).await
        }
        Command::Retention { store, command } => {
            let config = store.load(None)?;
            init_logging_quiet(&config);
            let services = start(&config, false).await?;
            retention::run(&services, command).await
        }
        Command::Audit { store, command } => {
            let config = store.load(None)?;
            init_logging_quiet(&config);
            let store = open_store(&config).await?;
            store.migrate().await.context("migration failed")?;
            let key = server_key::load_or_create(&config.secret_key_file())?;
            let ctx = audit::AuditContext {
                signer: medhub_service::tree_heads::TreeHeadSigner::new(&key),
                export: config.service().audit_tree_head_export,
                origin: config.service().audit_origin,
            };
            audit::run(&store, &ctx, command).await
        }
    }
}

/// Admin commands log only warnings, so that their standard output stays scriptable.
fn init_logging_quiet(config: &Config) {
    init_logging_at(config, &std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned()));
}

async fn open_store(config: &Config) -> Result<medhub_store::DynStore> {
    let location = config.location();
    medhub_store::open(&location).await.with_context(|| match &location {
        medhub_store::Location::Sqlite { data_dir } => format!("cannot open the database in {}", data_dir.display()),
        medhub_store::Location::Postgres { .. } => {
            "cannot connect to PostgreSQL (check storage.database_url)".to_owned()
        }
    })
}

/// Opens and migrates the store, starts the services, and bootstraps an empty store. The
/// bootstrap administrator's one-time password goes to standard output, once, never to logs.
/// The services over the configured store; `serving` also schedules the compliance reports
/// (an admin command is over before a period ends, and must not write reports on the way).
async fn start(config: &Config, serving: bool) -> Result<Services> {
    let store = open_store(config).await?;
    store.migrate().await.context("migration failed")?;
    let mut service = config.service();
    if !serving {
        service.audit_reports = None;
        // Moving open on-call items is the servers' job, not a CLI command's.
        service.oncall_handover_interval = None;
    }
    service.server_key = server_key::load_or_create(&config.secret_key_file())?;
    service.oidc = config.oidc()?;
    service.saml = config.saml()?;
    service.notifier = config.notifier()?;
    let (services, _background) =
        Services::start(store, service, Arc::new(SystemClock)).await.map_err(|e| match e {
            medhub_service::ServiceError::ServerKeyMismatch => anyhow::anyhow!(
                "the server key {} is not the one this database was set up with; restore the right key file \
                 (set auth.secret_key_file) instead of starting with a new one",
                config.secret_key_file().display()
            ),
            other => other.into(),
        })?;
    if let Some((user, password)) =
        services.auth.bootstrap(&config.bootstrap.organization_name, &config.bootstrap.admin_username).await?
    {
        println!(
            "medhub: created organization {:?} and administrator {:?}.\n\
             medhub: one-time password: {password}\n\
             medhub: it is shown only now; it must be changed at first sign-in.",
            config.bootstrap.organization_name, user.username
        );
    }
    Ok(services)
}

async fn serve(config: Config) -> Result<()> {
    init_logging(&config);
    // The certificate and key are read first: a bad file stops the start before anything else.
    let tls = config.tls_settings().map(medhub_api::Tls::load).transpose().context("cannot serve HTTPS")?;
    let services = start(&config, true).await?;
    let backend = services.store.backend();
    let state = medhub_api::AppState::new(services, config.api());
    let listener = medhub_api::bind(config.server.listen, config.server.listen_backlog)
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, ?backend, tls = tls.is_some(), "medhub listening");
    if tls.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "serving plain HTTP on a non-loopback address: enable TLS (--tls-cert and --tls-key) \
             unless a TLS-terminating proxy is the only way in"
        );
    }
    let shutdown = state.shutdown.clone();
    let server = match tls {
        Some(tls) => {
            // Registered before the address is announced, so that no SIGHUP finds the default
            // action (which would end the process).
            let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .context("cannot listen for SIGHUP (certificate reload)")?;
            tokio::spawn(reload_on_hangup(hangup, tls.clone()));
            let state = state.clone();
            println!("medhub: listening on https://{addr}");
            tokio::spawn(async move { medhub_api::serve_tls(listener, state, &tls).await })
        }
        None => {
            println!("medhub: listening on http://{addr}");
            tokio::spawn(medhub_api::serve(listener, state.clone()))
        }
    };
    wait_for_signal().await;
    tracing::info!("shutting down: closing connections");
    shutdown.cancel();
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let deadline = tokio::time::Instant::now() + grace;
    while state.services.metrics.connections.get() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = tokio::time::timeout(grace, server).await;
    tracing::info!("stopped");
    Ok(())
}

/// Reads the certificate and key again on each SIGHUP. New connections get the new pair;
/// a pair that does not load is logged and the previous one stays in force.
async fn reload_on_hangup(mut hangup: tokio::signal::unix::Signal, tls: medhub_api::Tls) {
    while hangup.recv().await.is_some() {
        let reloading = tls.clone();
        match tokio::task::spawn_blocking(move || reloading.reload()).await {
            Ok(Ok(())) => {
                tracing::info!(cert = %tls.settings().cert_file.display(), "TLS certificate and key reloaded")
            }
            Ok(Err(e)) => tracing::error!(error = %e, "TLS reload failed; the previous certificate stays in use"),
            Err(e) => tracing::error!(error = %e, "TLS reload failed; the previous certificate stays in use"),
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
