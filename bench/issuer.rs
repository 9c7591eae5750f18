//! The issuer side of `bench/load.sh`: generates an RS256 key, serves its JWKS and an introspection
//! endpoint on loopback, writes real tokens (one per line), optionally opaque ones, and Verdict
//! configurations trusting that issuer, then serves until killed.
//!
//! The configurations are written last, each by a rename, so a script that sees one can use it. The
//! tokens are distinct (`sub` and `jti`), valid for six hours, with scope `orders:read`, which the
//! example policies allow for `GET /orders/...`.

#[path = "fixture.rs"]
mod fixture;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Parser;
use fixture::{config_yaml, issuer_router, mint_tokens, unix_now};
use verdict::demo::signing::SigningKey;

/// Serves a benchmark issuer's JWKS and writes its tokens and Verdict configurations.
#[derive(Debug, Parser)]
struct Arguments {
    /// Where to serve the JWKS (`/jwks.json`); the issuer is `http://<this address>`.
    #[arg(long, default_value = "127.0.0.1:18091")]
    jwks_listen: SocketAddr,
    /// How many distinct tokens to write.
    #[arg(long, default_value_t = 1_000)]
    count: usize,
    /// The tokens file, one token per line.
    #[arg(long)]
    tokens_out: PathBuf,
    /// Optionally, as many opaque tokens, which the issuer's `/introspect` answers as active.
    #[arg(long)]
    opaque_tokens_out: Option<PathBuf>,
    /// The listen address written into the Verdict configuration.
    #[arg(long, default_value = "127.0.0.1:18080")]
    verdict_listen: SocketAddr,
    /// The Verdict configuration file to write.
    #[arg(long)]
    config_out: PathBuf,
    /// Optionally, a second configuration whose token cache holds one token, so that rotating tokens
    /// always miss it and every decision verifies a signature.
    #[arg(long, requires = "uncached_listen")]
    uncached_config_out: Option<PathBuf>,
    /// The listen address of the second configuration.
    #[arg(long)]
    uncached_listen: Option<SocketAddr>,
    /// Optionally, a third configuration with no decision memo, so that every decision runs the
    /// policies.
    #[arg(long, requires = "unmemoized_listen")]
    unmemoized_config_out: Option<PathBuf>,
    /// The listen address of the third configuration.
    #[arg(long)]
    unmemoized_listen: Option<SocketAddr>,
}

fn main() -> anyhow::Result<()> {
    let arguments = Arguments::parse();
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    runtime.block_on(run(arguments))
}

async fn run(arguments: Arguments) -> anyhow::Result<()> {
    let key = SigningKey::generate_rs256("bench-rs256").context("generating the RS256 key")?;
    let listener = tokio::net::TcpListener::bind(arguments.jwks_listen)
        .await
        .with_context(|| format!("binding {}", arguments.jwks_listen))?;
    let issuer = format!("http://{}", listener.local_addr()?);
    let now = unix_now()?;
    let router = issuer_router(&key, &issuer, now);
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    let tokens = mint_tokens(&key, &issuer, now, arguments.count);
    write_atomically(&arguments.tokens_out, &(tokens.join("\n") + "\n"))?;
    if let Some(path) = &arguments.opaque_tokens_out {
        let opaque: Vec<String> = (0..arguments.count)
            .map(|number| format!("opaque-bench-{number:06}-0123456789abcdef"))
            .collect();
        write_atomically(path, &(opaque.join("\n") + "\n"))?;
    }
    if let (Some(path), Some(listen)) = (&arguments.uncached_config_out, arguments.uncached_listen)
    {
        write_atomically(path, &config_header(config_yaml(listen, &issuer, 1)?))?;
    }
    if let (Some(path), Some(listen)) = (
        &arguments.unmemoized_config_out,
        arguments.unmemoized_listen,
    ) {
        let yaml = config_yaml(listen, &issuer, 100_000)?;
        let unmemoized = yaml.replace("cache:\n", "cache:\n  max_decisions: 0\n");
        anyhow::ensure!(
            unmemoized != yaml,
            "the configuration has no `cache` section"
        );
        write_atomically(path, &config_header(unmemoized))?;
    }
    write_atomically(
        &arguments.config_out,
        &config_header(config_yaml(arguments.verdict_listen, &issuer, 100_000)?),
    )?;
    eprintln!(
        "bench fixture: issuer {issuer}, {} tokens in `{}`, configuration in `{}`",
        tokens.len(),
        arguments.tokens_out.display(),
        arguments.config_out.display()
    );

    server
        .await
        .context("the JWKS server task failed")?
        .context("serving the JWKS")
}

/// Marks a written configuration as this program's.
fn config_header(yaml: String) -> String {
    format!("# Written by bench/issuer.rs for bench/load.sh.\n{yaml}")
}

/// Writes `text` beside `path`, then renames it into place.
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    std::fs::write(&partial, text).with_context(|| format!("writing `{}`", path.display()))?;
    std::fs::rename(&partial, path).with_context(|| format!("renaming into `{}`", path.display()))
}
