//! The command line: `verdict serve`, `verdict check`, `verdict test`, `verdict decide`,
//! `verdict --version`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use clap::{ArgGroup, Parser, Subcommand};

use crate::app::Application;
use crate::clock::{Clock, SystemClock};
use crate::config::{ClaimNames, Config, ProcessEnvironment};
use crate::demo::{DEMO_LISTEN, Demo};
use crate::fronts::service_callout::DecideResponse;
use crate::offline::{self, OfflineDecider, Scenario, suite};
use crate::reload::{self, Reloader};

/// Verdict: an authorization decision service for API gateways.
#[derive(Debug, Parser)]
#[command(name = "verdict", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve decisions. Without a configuration, runs the embedded demo.
    Serve {
        /// The YAML configuration file.
        #[arg(long, env = "VERDICT_CONFIG")]
        config: Option<PathBuf>,
        /// The demo's listen address (only without `--config`).
        #[arg(long, default_value = DEMO_LISTEN, conflicts_with = "config")]
        demo_listen: std::net::SocketAddr,
    },
    /// Validate a configuration and its policies, print every error, and exit non-zero if any.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Run the policy test files (`*.test.yaml`) under a directory; exit non-zero if any case fails.
    Test {
        /// A directory searched recursively, or one test file.
        #[arg(default_value = ".")]
        path: PathBuf,
    },
    /// Decide one request offline, from given claims (no signature), and print the decision and why.
    #[command(group(ArgGroup::new("source").required(true).args(["config", "policies"])))]
    Decide(Box<DecideArgs>),
    /// End-user API keys.
    Apikey {
        #[command(subcommand)]
        command: ApikeyCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ApikeyCommand {
    /// Print a fresh key, and the `api_keys` entry (holding only its hash) to paste into the
    /// configuration.
    New(NewApiKey),
}

#[derive(Debug, clap::Args)]
struct NewApiKey {
    /// The key's id: the principal is `ApiKey::"<id>"`.
    #[arg(long)]
    id: String,
    /// `principal.subject`; the id when absent.
    #[arg(long)]
    subject: Option<String>,
    /// A scope of the key; repeatable.
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// A role of the key (a `Role` parent of the principal); repeatable.
    #[arg(long = "role")]
    roles: Vec<String>,
    #[arg(long)]
    tenant: Option<String>,
    /// When the key stops working, RFC 3339 in UTC.
    #[arg(long)]
    expires: Option<String>,
}

#[derive(Debug, clap::Args)]
struct DecideArgs {
    /// Decide as this configuration would: its policies, headers, realm and issuers' claim names.
    #[arg(long)]
    config: Option<PathBuf>,
    /// With --config: read the claims as this issuer's (by name) rather than the one matching `iss`.
    #[arg(long, requires = "config")]
    issuer: Option<String>,
    /// A policy directory (`*.cedar`), instead of a configuration.
    #[arg(long)]
    policies: Option<PathBuf>,
    /// A Cedar schema to validate the policies against.
    #[arg(long, requires = "policies")]
    schema: Option<PathBuf>,
    /// A JSON or YAML file with `token` (claims), `request` (the callout body) and optionally `time`;
    /// `-` reads standard input.
    #[arg(long, conflicts_with_all = ["token", "method", "path"])]
    input: Option<PathBuf>,
    /// The token's claims as a JSON object, e.g. '{"sub":"alice","scope":"orders:read"}'.
    #[arg(long, required_unless_present = "input")]
    token: Option<String>,
    #[arg(long, required_unless_present = "input")]
    method: Option<String>,
    #[arg(long, required_unless_present = "input")]
    path: Option<String>,
    #[arg(long)]
    host: Option<String>,
    #[arg(long)]
    query: Option<String>,
    #[arg(long)]
    client_ip: Option<String>,
    /// A request header, `name: value`; repeatable.
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// The decision time, RFC 3339 in UTC; now when absent.
    #[arg(long)]
    time: Option<String>,
}

/// Runs the command line and returns the process's exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` sets up logging once it has read its configuration, which may ask for JSON.
    if !matches!(cli.command, Command::Serve { .. }) {
        crate::telemetry::init();
    }
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Test { path } => test(&path),
        Command::Apikey {
            command: ApikeyCommand::New(entry),
        } => match new_api_key(&entry) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Decide(args) => match decide(*args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::FAILURE
            }
        },
        Command::Serve {
            config,
            demo_listen,
        } => {
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("error: cannot start the runtime: {error}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(config, demo_listen)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("error: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match Config::load(path, &ProcessEnvironment) {
        Ok(config) => {
            let _ = writeln!(
                std::io::stdout(),
                "{}: ok ({} issuers, {} policies, revision {})",
                path.display(),
                config.issuers.len(),
                config.policies.len(),
                config.revision
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{}: {} error(s)", path.display(), errors.0.len());
            for error in &errors.0 {
                let _ = writeln!(err, "  {error}");
            }
            ExitCode::FAILURE
        }
    }
}

fn new_api_key(entry: &NewApiKey) -> Result<(), String> {
    if entry.id.is_empty() {
        return Err("--id must not be empty".to_owned());
    }
    if let Some(expires) = &entry.expires {
        humantime::parse_rfc3339(expires).map_err(|error| {
            format!("--expires `{expires}` is not an RFC 3339 UTC time such as 2027-01-01T00:00:00Z ({error})")
        })?;
    }
    let (key, hash) = crate::credential::api_key::generate()?;
    // JSON strings are YAML double-quoted scalars: the line pastes as YAML whatever the values hold.
    let quote = |text: &str| serde_json::to_string(text).unwrap_or_default();
    let list = |items: &[String]| {
        items
            .iter()
            .map(|item| quote(item))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut line = format!("- {{ id: {}, hash: {}", quote(&entry.id), quote(&hash));
    if let Some(subject) = &entry.subject {
        let _ = write!(line, ", subject: {}", quote(subject));
    }
    let _ = write!(line, ", scopes: [{}]", list(&entry.scopes));
    if !entry.roles.is_empty() {
        let _ = write!(line, ", roles: [{}]", list(&entry.roles));
    }
    if let Some(tenant) = &entry.tenant {
        let _ = write!(line, ", tenant: {}", quote(tenant));
    }
    if let Some(expires) = &entry.expires {
        let _ = write!(line, ", expires: {}", quote(expires));
    }
    line.push_str(" }");
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{key}\n{line}");
    let _ = writeln!(
        std::io::stderr(),
        "The first line is the key: give it to the client now, it is not stored anywhere.\n\
         The second is its entry for `api_keys.keys` (or the `keys` of `api_keys.file`)."
    );
    Ok(())
}

fn test(path: &Path) -> ExitCode {
    let mut report = String::new();
    let result = suite::run(path, &mut report);
    let _ = std::io::stdout().write_all(report.as_bytes());
    match result {
        Ok(summary) if summary.succeeded() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn decide(args: DecideArgs) -> anyhow::Result<()> {
    let decider = match (&args.config, &args.policies) {
        (Some(path), _) => {
            let config = Config::load(path, &ProcessEnvironment).map_err(|errors| {
                anyhow::anyhow!("invalid configuration `{}`:\n{errors}", path.display())
            })?;
            OfflineDecider::from_config(config, args.issuer.as_deref())
                .map_err(anyhow::Error::msg)?
        }
        (None, Some(directory)) => OfflineDecider::new(
            offline::load_policies(directory, args.schema.as_deref())
                .map_err(anyhow::Error::msg)?,
            ClaimNames::default(),
        ),
        (None, None) => anyhow::bail!("give --config or --policies"),
    };
    let scenario = scenario(args)?;
    let decision = decider.decide(scenario).map_err(anyhow::Error::msg)?;
    let json = serde_json::to_string_pretty(&DecideResponse::from(&decision))?;
    let _ = writeln!(std::io::stdout(), "{json}");
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{}", suite::describe(&decision));
    for error in &decision.trace.policy_errors {
        let _ = writeln!(err, "policy error (the policy did not apply): {error}");
    }
    Ok(())
}

/// The scenario of `verdict decide`, from `--input` or from the flags.
fn scenario(args: DecideArgs) -> anyhow::Result<Scenario> {
    if let Some(path) = args.input {
        let text = if path.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin()).context("reading standard input")?
        } else {
            std::fs::read_to_string(&path)
                .with_context(|| format!("reading `{}`", path.display()))?
        };
        return serde_path_to_error::deserialize(serde_norway::Deserializer::from_str(&text))
            .map_err(|error| anyhow::anyhow!("`{}`: {error}", path.display()));
    }
    let token: serde_json::Value = serde_json::from_str(args.token.as_deref().unwrap_or("{}"))
        .context("--token must be a JSON object of claims")?;
    let mut headers = serde_json::Map::new();
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .with_context(|| format!("--header `{header}` is not `name: value`"))?;
        headers.insert(name.trim().to_owned(), value.trim().into());
    }
    let document = serde_json::json!({
        "token": token,
        "request": {
            "method": args.method,
            "path": args.path,
            "host": args.host,
            "query": args.query,
            "client_ip": args.client_ip,
            "headers": headers,
        },
        "time": args.time,
    });
    serde_path_to_error::deserialize(document).map_err(|error| anyhow::anyhow!("{error}"))
}

async fn serve(
    config_path: Option<PathBuf>,
    demo_listen: std::net::SocketAddr,
) -> anyhow::Result<()> {
    let clock = Arc::new(SystemClock);
    let config = match &config_path {
        Some(path) => Some(Config::load(path, &ProcessEnvironment).map_err(|errors| {
            anyhow::anyhow!("invalid configuration `{}`:\n{errors}", path.display())
        })?),
        None => None,
    };
    let telemetry = match &config {
        Some(config) => Some(crate::telemetry::init_with(
            &config.service.log,
            &config.service.tracing,
        )?),
        None => {
            crate::telemetry::init();
            None
        }
    };
    let (application, demo, reloader) = match (config, config_path) {
        (Some(config), Some(path)) => {
            let application = Application::build(config, clock.clone(), Router::new()).await?;
            let reloader = Reloader::new(
                &path,
                application.state().clone(),
                clock.clone(),
                Arc::new(ProcessEnvironment),
            )?;
            (application, None, Some(Arc::new(reloader)))
        }
        _ => {
            let listener = tokio::net::TcpListener::bind(demo_listen)
                .await
                .with_context(|| format!("binding {demo_listen}"))?;
            let Demo {
                config,
                routes,
                issuer,
            } = Demo::new(listener.local_addr()?)?;
            (
                Application::build_on(listener, config, clock.clone(), routes).await?,
                Some(issuer),
                None,
            )
        }
    };
    let address = application
        .local_addr()
        .context("reading the bound address")?;
    match application
        .admin_addr()
        .transpose()
        .context("reading the admin address")?
    {
        Some(admin) => tracing::info!(%address, %admin, "verdict listening"),
        None => tracing::info!(%address, "verdict listening"),
    }
    if let Some(demo) = demo {
        demo.print_instructions(&demo.sample_token(clock.now()), address)
            .context("printing the demo instructions")?;
    }
    let reloading = match reloader {
        Some(reloader) => tokio::spawn(reloader.run()),
        None => tokio::spawn(reload::ignore_hangups()),
    };
    let served = application.run_until_stopped(shutdown_signal()).await;
    reloading.abort();
    if let Some(telemetry) = telemetry {
        telemetry.shutdown().await;
    }
    if served.is_ok() {
        tracing::info!("stopped");
    }
    served
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
