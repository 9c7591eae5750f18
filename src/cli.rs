//! The command line: `verdict serve`, `verdict check`, `verdict --version`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use clap::{Parser, Subcommand};

use crate::app::Application;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ProcessEnvironment};
use crate::demo::{DEMO_LISTEN, Demo};

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
}

/// Runs the command line and returns the process's exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::telemetry::init();
    match cli.command {
        Command::Check { config } => check(&config),
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

async fn serve(
    config_path: Option<PathBuf>,
    demo_listen: std::net::SocketAddr,
) -> anyhow::Result<()> {
    let clock = Arc::new(SystemClock);
    let (application, demo) = match config_path {
        Some(path) => {
            let config = Config::load(&path, &ProcessEnvironment).map_err(|errors| {
                anyhow::anyhow!("invalid configuration `{}`:\n{errors}", path.display())
            })?;
            (
                Application::build(config, clock.clone(), Router::new()).await?,
                None,
            )
        }
        None => {
            let listener = tokio::net::TcpListener::bind(demo_listen)
                .await
                .with_context(|| format!("binding {demo_listen}"))?;
            let Demo {
                config,
                routes,
                issuer,
            } = Demo::new(listener.local_addr()?)?;
            (
                Application::build_on(listener, config, clock.clone(), routes)?,
                Some(issuer),
            )
        }
    };
    let address = application
        .local_addr()
        .context("reading the bound address")?;
    tracing::info!(%address, "verdict listening");
    if let Some(demo) = demo {
        demo.print_instructions(&demo.sample_token(clock.now()), address)
            .context("printing the demo instructions")?;
    }
    application.run_until_stopped(shutdown_signal()).await
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
