//! The soak test of `bench/soak.sh`: a real `verdict serve` on loopback, held at a fixed rate of
//! `POST /v1/decide` callouts over kept-alive HTTP/1.1 connections for minutes, while its issuer's JWKS
//! endpoint flaps (503, up, hanging, up, ...) and its policies are reloaded by SIGHUP.
//!
//! The tokens are of five kinds, and each kind's outcome is fixed by how it was built, never by asking
//! Verdict: valid (allow); signed by an impostor key under the published `kid`, expired, or for another
//! audience (deny); and signed by a key whose `kid` the JWKS never publishes (deny, after Verdict's
//! unknown-`kid` refetch, which its cooldown bounds). The report gives wrong decisions, errors, requests
//! sent behind schedule, latency, and Verdict's resident memory from the end of the warm-up on. The
//! exit status is non-zero on any wrong decision, when Verdict exits early, or when its memory grows
//! past the stated tolerance.

#[path = "fixture.rs"]
mod fixture;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use clap::Parser;
use fixture::{AUDIENCE, CALLER_KEY, claims, config_yaml, issuer_router, mint_tokens, unix_now};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use verdict::demo::signing::SigningKey;

/// The `kid` of the issuer's one published key.
const PUBLISHED_KID: &str = "soak-rs256";
/// The `kid` of a key the JWKS never publishes.
const UNPUBLISHED_KID: &str = "soak-unpublished";
/// How long a hanging JWKS request is held before it is answered 503 (Verdict gives up long before).
const HANG_LIMIT: Duration = Duration::from_secs(120);
/// The policy file the soak rewrites before each SIGHUP.
const RELOAD_POLICY_FILE: &str = "soak-reload.cedar";

/// Holds a real `verdict serve` at a fixed callout rate under a flapping JWKS and policy reloads.
#[derive(Debug, Parser)]
struct Arguments {
    /// The `verdict` binary to run.
    #[arg(long)]
    verdict_bin: PathBuf,
    /// Callouts per second, kept whatever Verdict's latency (an open loop).
    #[arg(long, default_value_t = 300)]
    rate: u32,
    /// How long the measured run lasts, after the warm-up.
    #[arg(long, default_value = "180s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Load before the measured run, with the JWKS up and no reloads: it fills Verdict's token cache.
    /// Its decisions are checked too; memory and latency are measured from its end.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Kept-alive HTTP/1.1 connections to Verdict, one per sending task.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Timeout of one callout; 3 s is the `<Timeout>` of the Apigee ServiceCallout in `apigee-bundles`.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// A callout sent later than this after its slot in the schedule counts as behind schedule.
    #[arg(long, default_value = "10ms", value_parser = humantime::parse_duration)]
    late_after: Duration,
    /// How long each JWKS state lasts; the states cycle 503, up, hanging, up. `0s`: the JWKS stays up.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    flap_every: Duration,
    /// How often a policy file is rewritten and Verdict sent SIGHUP. `0s`: never.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    reload_every: Duration,
    /// How often Verdict's resident memory is sampled.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    sample_every: Duration,
    /// The most Verdict's resident memory may grow from the end of the warm-up to the end, in MiB.
    #[arg(long, default_value_t = 8)]
    rss_tolerance_mib: u64,
    /// The issuer's `jwks_refresh.default_interval` and `min_interval`, short so that scheduled
    /// refreshes meet the JWKS outages (Verdict's defaults are 5m and 1m).
    #[arg(long, default_value = "5s")]
    jwks_refresh: String,
    /// The issuer's `jwks_refresh.unknown_kid_cooldown` (Verdict's default, 30s, when not given).
    #[arg(long)]
    unknown_kid_cooldown: Option<String>,
    /// The issuer's `jwks_refresh.timeout` (Verdict's default, 5s, when not given).
    #[arg(long)]
    jwks_timeout: Option<String>,
    /// The configuration's `decision_log` (`off`, `stdout` or a path); the key is left out when not
    /// given, for binaries that do not know it.
    #[arg(long)]
    decision_log: Option<String>,
    /// Distinct valid tokens.
    #[arg(long, default_value_t = 1_000)]
    tokens: usize,
    /// `repeat`: callout `n` asks for route `n mod 1000` with token `n mod tokens`, so a pair recurs
    /// (with 1,000 tokens, each token always asks the same route); `unique`: route `(n / tokens) mod
    /// 1000`, so a pair recurs only every `tokens` × 1,000 callouts and nearly every decision runs the
    /// policies (issue 15's unique workload).
    #[arg(long, value_enum, default_value_t = Workload::Repeat)]
    workload: Workload,
    /// Distinct tokens of each denied kind.
    #[arg(long, default_value_t = 250)]
    denied_tokens: usize,
    /// Percent of callouts with a valid token.
    #[arg(long, default_value_t = 70)]
    valid_percent: u32,
    /// Percent with a token signed by another key under the published `kid`.
    #[arg(long, default_value_t = 10)]
    bad_signature_percent: u32,
    /// Percent with an expired token.
    #[arg(long, default_value_t = 5)]
    expired_percent: u32,
    /// Percent with a token for another audience.
    #[arg(long, default_value_t = 5)]
    wrong_audience_percent: u32,
    /// Percent with a token whose `kid` the JWKS never publishes.
    #[arg(long, default_value_t = 10)]
    unknown_kid_percent: u32,
    /// Verdict's listen address; a free loopback port when not given.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Where the configuration, policies and Verdict's output go; a fresh temporary directory, removed
    /// after a passing run, when not given.
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<ExitCode> {
    let arguments = Arguments::parse();
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    runtime.block_on(run(arguments))
}

async fn run(arguments: Arguments) -> anyhow::Result<ExitCode> {
    let mix = Mix::new(&arguments)?;
    let (work_dir, temporary) = match &arguments.work_dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("verdict-soak-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("creating `{}`", work_dir.display()))?;

    // The issuer: the benchmark fixture's JWKS and introspection routes behind the flapping switch.
    let key = SigningKey::generate_rs256(PUBLISHED_KID).context("generating the RS256 key")?;
    let jwks_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the JWKS server")?;
    let issuer = format!("http://{}", jwks_listener.local_addr()?);
    let now = unix_now()?;
    let jwks = Arc::new(JwksSwitch::default());
    let router = issuer_router(&key, &issuer, now).layer(axum::middleware::from_fn_with_state(
        Arc::clone(&jwks),
        flap,
    ));
    tokio::spawn(async move { axum::serve(jwks_listener, router).await });

    eprintln!("soak: minting tokens");
    let tokens = Tokens::mint(&key, &issuer, now, &arguments)?;

    let listen = match arguments.listen {
        Some(listen) => listen,
        None => free_loopback_port()?,
    };
    let policies = work_dir.join("policies");
    copy_policies(&policies)?;
    write_reload_policy(&policies, 0)?;
    let config_path = work_dir.join("verdict.yaml");
    std::fs::write(
        &config_path,
        soak_config(listen, &issuer, &policies, &arguments)?,
    )
    .with_context(|| format!("writing `{}`", config_path.display()))?;

    let mut verdict = Verdict::start(&arguments.verdict_bin, &config_path, &work_dir)?;
    let base = format!("http://{listen}");
    let control = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .context("building the control client")?;
    let first_revision = wait_until_ready(&control, &base, &mut verdict).await?;
    eprintln!(
        "soak: verdict (pid {}) ready on {listen}; {} callouts/s over {} connections, {} s warm-up \
         then {} s measured; work directory `{}`",
        verdict.pid,
        arguments.rate,
        arguments.connections,
        arguments.warmup.as_secs(),
        arguments.duration.as_secs(),
        work_dir.display()
    );

    let schedule = Schedule {
        start: Instant::now(),
        rate: f64::from(arguments.rate.max(1)),
        total: u64::from(arguments.rate) * (arguments.warmup + arguments.duration).as_secs(),
        warmup: u64::from(arguments.rate) * arguments.warmup.as_secs(),
        late_after: arguments.late_after,
    };
    let shared = Arc::new(Shared {
        schedule,
        next: AtomicU64::new(0),
        tokens,
        mix,
        jwks: Arc::clone(&jwks),
        url: format!("{base}/v1/decide"),
        live: Live::default(),
        workload: arguments.workload,
        tokens_per_kind: u64::try_from(arguments.tokens).unwrap_or(u64::MAX),
    });
    let mut workers = Vec::new();
    for _ in 0..arguments.connections.max(1) {
        let client = reqwest::Client::builder()
            .no_proxy()
            .http1_only()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(1)
            .pool_idle_timeout(None)
            .timeout(arguments.timeout)
            .build()
            .context("building a callout client")?;
        workers.push(tokio::spawn(send_callouts(Arc::clone(&shared), client)));
    }

    // From the end of the warm-up: the JWKS flaps, the policies reload, and memory is sampled.
    tokio::time::sleep_until((schedule.start + arguments.warmup).into()).await;
    let memory_start = resident_kib(verdict.pid)?;
    eprintln!(
        "soak: warm-up done; verdict resident memory {}",
        mib(memory_start)
    );
    let flapper = tokio::spawn(flap_jwks(Arc::clone(&jwks), arguments.flap_every));
    let reloads = Arc::new(ReloadLog::default());
    let reloader = tokio::spawn(reload_policies(
        control.clone(),
        base.clone(),
        verdict.pid,
        policies.clone(),
        arguments.reload_every,
        first_revision,
        Arc::clone(&reloads),
    ));
    let memory_samples = Arc::new(Mutex::new(vec![(0, memory_start)]));
    let sampler = tokio::spawn(sample_memory(
        Arc::clone(&shared),
        verdict.pid,
        arguments.sample_every,
        Arc::clone(&memory_samples),
    ));

    let mut samples = Vec::new();
    for worker in workers {
        samples.extend(worker.await.context("a callout task failed")?);
    }
    flapper.abort();
    reloader.abort();
    sampler.abort();
    let exited_early = verdict.exited();
    let memory_end = if exited_early {
        None
    } else {
        resident_kib(verdict.pid).ok()
    };
    let memory_samples = memory_samples
        .lock()
        .map(|samples| samples.clone())
        .unwrap_or_default();
    let readyz = fetch_readyz(&control, &base).await.ok();
    verdict.stop();

    let report = Report {
        arguments: &arguments,
        schedule: &shared.schedule,
        samples: &samples,
        jwks: &jwks,
        reloads: &reloads,
        readyz: readyz.as_ref(),
        memory_start,
        memory_samples: &memory_samples,
        memory_end,
    };
    let (text, passed) = report.render(exited_early)?;
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("writing the report")?;
    if passed && temporary {
        let _ = std::fs::remove_dir_all(&work_dir);
    } else {
        eprintln!(
            "soak: configuration and verdict's output kept in `{}`",
            work_dir.display()
        );
    }
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The kinds of token, each with the outcome it was built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Valid,
    BadSignature,
    Expired,
    WrongAudience,
    UnknownKid,
}

impl Kind {
    const ALL: [Self; 5] = [
        Self::Valid,
        Self::BadSignature,
        Self::Expired,
        Self::WrongAudience,
        Self::UnknownKid,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::BadSignature => "bad-signature",
            Self::Expired => "expired",
            Self::WrongAudience => "wrong-audience",
            Self::UnknownKid => "unknown-kid",
        }
    }

    /// Whether Verdict must allow a callout with this kind of token (every callout asks for
    /// `GET /orders/<n>`, which the example policies permit to the valid tokens' `orders:read`).
    fn must_allow(self) -> bool {
        self == Self::Valid
    }
}

/// Which kind of token each callout carries: the percentages, spread over every block of 100 callouts
/// by a fixed permutation, so that the kinds interleave.
#[derive(Debug)]
struct Mix {
    /// The kind of each of the 100 slots.
    slots: Vec<Kind>,
}

impl Mix {
    fn new(arguments: &Arguments) -> anyhow::Result<Self> {
        let percents = [
            (Kind::Valid, arguments.valid_percent),
            (Kind::BadSignature, arguments.bad_signature_percent),
            (Kind::Expired, arguments.expired_percent),
            (Kind::WrongAudience, arguments.wrong_audience_percent),
            (Kind::UnknownKid, arguments.unknown_kid_percent),
        ];
        let total: u32 = percents.iter().map(|(_, percent)| percent).sum();
        if total != 100 {
            bail!("the token percentages add up to {total}, not 100");
        }
        let slots = percents
            .iter()
            .flat_map(|&(kind, percent)| std::iter::repeat_n(kind, percent as usize))
            .collect();
        Ok(Self { slots })
    }

    fn kind(&self, number: u64) -> Kind {
        // 37 is prime to 100, so slot `37 * n mod 100` visits each of the 100 slots once per block.
        let slot = (number % 100) * 37 % 100;
        usize::try_from(slot)
            .ok()
            .and_then(|slot| self.slots.get(slot))
            .copied()
            .unwrap_or(Kind::Valid)
    }
}

/// The pre-minted tokens of each kind.
#[derive(Debug)]
struct Tokens {
    by_kind: BTreeMap<Kind, Vec<String>>,
}

impl Tokens {
    fn mint(
        key: &SigningKey,
        issuer: &str,
        now: u64,
        arguments: &Arguments,
    ) -> anyhow::Result<Self> {
        let impostor =
            SigningKey::generate_rs256(PUBLISHED_KID).context("generating the impostor key")?;
        let unpublished = SigningKey::generate_rs256(UNPUBLISHED_KID)
            .context("generating the unpublished key")?;
        let count = arguments.denied_tokens.max(1);
        let valid = arguments.tokens.max(1);
        // Numbers past the valid tokens' keep every token of the run distinct (`sub` and `jti`).
        let denied =
            |signer: &SigningKey, first: usize, adjust: &dyn Fn(&mut Map<String, Value>)| {
                (first..first + count)
                    .map(|number| {
                        let mut token_claims = claims(issuer, number, now);
                        if let Some(fields) = token_claims.as_object_mut() {
                            adjust(fields);
                        }
                        signer.sign(&token_claims)
                    })
                    .collect::<Vec<_>>()
            };
        let mut by_kind = BTreeMap::new();
        by_kind.insert(Kind::Valid, mint_tokens(key, issuer, now, valid));
        by_kind.insert(Kind::BadSignature, denied(&impostor, valid, &|_| {}));
        by_kind.insert(
            Kind::Expired,
            denied(key, valid + count, &|fields| {
                // Past the default 30 s leeway by far.
                fields.insert("iat".into(), json!(now.saturating_sub(2 * 60 * 60)));
                fields.insert("exp".into(), json!(now.saturating_sub(60 * 60)));
            }),
        );
        by_kind.insert(
            Kind::WrongAudience,
            denied(key, valid + 2 * count, &|fields| {
                fields.insert("aud".into(), json!(format!("{AUDIENCE}-other")));
            }),
        );
        by_kind.insert(
            Kind::UnknownKid,
            denied(&unpublished, valid + 3 * count, &|_| {}),
        );
        Ok(Self { by_kind })
    }

    fn pick(&self, kind: Kind, number: u64) -> &str {
        self.by_kind
            .get(&kind)
            .and_then(|tokens| {
                let index = usize::try_from(number).ok()? % tokens.len().max(1);
                tokens.get(index)
            })
            .map_or("", String::as_str)
    }
}

/// The state of the issuer's JWKS endpoint, switched by [`flap_jwks`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum JwksState {
    Up = 0,
    Unavailable = 1,
    Hanging = 2,
}

impl JwksState {
    const ALL: [Self; 3] = [Self::Up, Self::Unavailable, Self::Hanging];

    fn name(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Unavailable => "503",
            Self::Hanging => "hanging",
        }
    }

    fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Unavailable,
            2 => Self::Hanging,
            _ => Self::Up,
        }
    }
}

/// The JWKS endpoint's current state, and the requests it met in each.
#[derive(Debug, Default)]
struct JwksSwitch {
    state: AtomicU8,
    requests: [AtomicU64; 3],
}

impl JwksSwitch {
    fn state(&self) -> JwksState {
        JwksState::from_u8(self.state.load(Ordering::Relaxed))
    }

    fn requests(&self, state: JwksState) -> u64 {
        self.requests
            .get(state as usize)
            .map_or(0, |count| count.load(Ordering::Relaxed))
    }
}

/// The middleware in front of the issuer's routes: the JWKS answers as the switch says.
async fn flap(State(switch): State<Arc<JwksSwitch>>, request: Request, next: Next) -> Response {
    if request.uri().path() != "/jwks.json" {
        return next.run(request).await;
    }
    let state = switch.state();
    if let Some(count) = switch.requests.get(state as usize) {
        count.fetch_add(1, Ordering::Relaxed);
    }
    match state {
        JwksState::Up => next.run(request).await,
        JwksState::Unavailable => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        JwksState::Hanging => {
            tokio::time::sleep(HANG_LIMIT).await;
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

/// Cycles the JWKS through 503, up, hanging, up, each for `every`, until aborted; with an `every` of
/// zero, leaves it up.
async fn flap_jwks(switch: Arc<JwksSwitch>, every: Duration) {
    if every.is_zero() {
        return;
    }
    let cycle = [
        JwksState::Unavailable,
        JwksState::Up,
        JwksState::Hanging,
        JwksState::Up,
    ];
    for state in cycle.iter().cycle() {
        switch.state.store(*state as u8, Ordering::Relaxed);
        eprintln!("soak: jwks {}", state.name());
        tokio::time::sleep(every).await;
    }
}

/// When each callout is due.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    start: Instant,
    rate: f64,
    /// Callouts in the whole run, warm-up included.
    total: u64,
    /// Callouts of the warm-up, the first of the run.
    warmup: u64,
    late_after: Duration,
}

impl Schedule {
    fn due(&self, number: u64) -> Instant {
        // Exact: callout numbers stay far below 2^53.
        let offset = Duration::from_secs_f64(number as f64 / self.rate);
        self.start + offset
    }
}

/// What the sending tasks share.
#[derive(Debug)]
struct Shared {
    schedule: Schedule,
    /// The next callout number to send.
    next: AtomicU64,
    tokens: Tokens,
    mix: Mix,
    jwks: Arc<JwksSwitch>,
    url: String,
    live: Live,
    workload: Workload,
    /// Distinct valid tokens.
    tokens_per_kind: u64,
}

impl Shared {
    /// The route number of callout `number`.
    fn route(&self, number: u64) -> u64 {
        match self.workload {
            Workload::Repeat => number % 1_000,
            Workload::Unique => number / self.tokens_per_kind.max(1) % 1_000,
        }
    }
}

/// Running totals for the progress lines.
#[derive(Debug, Default)]
struct Live {
    sent: AtomicU64,
    wrong: AtomicU64,
    errors: AtomicU64,
    late: AtomicU64,
}

/// One callout's record.
#[derive(Debug, Clone)]
struct Sample {
    number: u64,
    kind: Kind,
    jwks: JwksState,
    late: Duration,
    latency: Duration,
    outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Decision {
        allow: bool,
        status: u16,
        error: String,
    },
    /// An HTTP status other than 200: not a decision.
    Status(u16),
    /// A 200 whose body is not a decision.
    Malformed,
    Timeout,
    Transport,
}

impl Outcome {
    fn is_wrong(&self, kind: Kind) -> bool {
        matches!(self, Self::Decision { allow, .. } if *allow != kind.must_allow())
    }

    fn is_error(&self) -> bool {
        !matches!(self, Self::Decision { .. })
    }
}

/// Which route each callout asks for ([`Arguments::workload`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Workload {
    Repeat,
    Unique,
}

/// The fields of a decision the soak checks.
#[derive(Debug, Deserialize)]
struct DecisionBody {
    allow: bool,
    status: u16,
    error: String,
}

/// Sends callouts by number, each when it is due, over this task's one kept-alive connection, until the
/// schedule ends.
async fn send_callouts(shared: Arc<Shared>, client: reqwest::Client) -> Vec<Sample> {
    let mut samples = Vec::new();
    loop {
        let number = shared.next.fetch_add(1, Ordering::Relaxed);
        if number >= shared.schedule.total {
            return samples;
        }
        let due = shared.schedule.due(number);
        tokio::time::sleep_until(due.into()).await;
        let kind = shared.mix.kind(number);
        let body = json!({
            "authorization": format!("Bearer {}", shared.tokens.pick(kind, number)),
            "method": "GET",
            "path": format!("/orders/{}", shared.route(number)),
            "host": "api.example.com",
            "client_ip": "203.0.113.7",
            "apigee": { "proxy": "orders-v1", "environment": "prod", "organization": "example" },
            "message_id": format!("rrt-soak-{number:08}"),
        })
        .to_string();
        let jwks = shared.jwks.state();
        let sent = Instant::now();
        let late = sent.saturating_duration_since(due);
        let outcome = decide(&client, &shared.url, body).await;
        let latency = sent.elapsed();

        let live = &shared.live;
        live.sent.fetch_add(1, Ordering::Relaxed);
        if outcome.is_wrong(kind) {
            live.wrong.fetch_add(1, Ordering::Relaxed);
        }
        if outcome.is_error() {
            live.errors.fetch_add(1, Ordering::Relaxed);
        }
        if late > shared.schedule.late_after {
            live.late.fetch_add(1, Ordering::Relaxed);
        }
        samples.push(Sample {
            number,
            kind,
            jwks,
            late,
            latency,
            outcome,
        });
    }
}

async fn decide(client: &reqwest::Client, url: &str, body: String) -> Outcome {
    let failed = |error: &reqwest::Error| {
        if error.is_timeout() {
            Outcome::Timeout
        } else {
            Outcome::Transport
        }
    };
    let response = match client
        .post(url)
        .header("content-type", "application/json")
        .header("x-verdict-key", CALLER_KEY)
        .body(body)
        .send()
        .await
    {
        Ok(response) => response,
        Err(error) => return failed(&error),
    };
    let status = response.status();
    let bytes = match response.bytes().await {
        Ok(bytes) => bytes,
        Err(error) => return failed(&error),
    };
    if status != StatusCode::OK {
        return Outcome::Status(status.as_u16());
    }
    match serde_json::from_slice::<DecisionBody>(&bytes) {
        Ok(decision) => Outcome::Decision {
            allow: decision.allow,
            status: decision.status,
            error: decision.error,
        },
        Err(_) => Outcome::Malformed,
    }
}

/// The `verdict serve` child process, stopped when dropped.
#[derive(Debug)]
struct Verdict {
    child: Child,
    pid: u32,
    /// Where its standard error goes.
    stderr: PathBuf,
}

impl Verdict {
    fn start(binary: &Path, config: &Path, work_dir: &Path) -> anyhow::Result<Self> {
        let output = |name: &str| -> anyhow::Result<std::fs::File> {
            let path = work_dir.join(name);
            std::fs::File::create(&path).with_context(|| format!("creating `{}`", path.display()))
        };
        let child = Command::new(binary)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(output("verdict.stdout")?)
            .stderr(output("verdict.stderr")?)
            .spawn()
            .with_context(|| format!("starting `{}`", binary.display()))?;
        let pid = child.id();
        Ok(Self {
            child,
            pid,
            stderr: work_dir.join("verdict.stderr"),
        })
    }

    fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then SIGKILL if it has not exited within ten seconds.
    fn stop(mut self) {
        let _ = signal(self.pid, "-TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Verdict {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends process `pid` a signal with `kill` (the crate forbids the `unsafe` a direct call needs).
fn signal(pid: u32, which: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(which)
        .arg(pid.to_string())
        .status()
        .context("running `kill`")?;
    if !status.success() {
        bail!("`kill {which} {pid}` failed: {status}");
    }
    Ok(())
}

/// A loopback address no one listens on right now.
fn free_loopback_port() -> anyhow::Result<SocketAddr> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(listener.local_addr()?)
}

/// The benchmark configuration, adapted: the soak's policy directory, a short JWKS refresh, reloads by
/// SIGHUP only (so each reload is the soak's), and `decision_log` when asked for.
fn soak_config(
    listen: SocketAddr,
    issuer: &str,
    policies: &Path,
    arguments: &Arguments,
) -> anyhow::Result<String> {
    let yaml = config_yaml(listen, issuer, 100_000)?;
    let mut config: Value =
        serde_norway::from_str(&yaml).context("reading the benchmark configuration")?;
    let mut refresh = Map::new();
    refresh.insert("default_interval".into(), json!(arguments.jwks_refresh));
    refresh.insert("min_interval".into(), json!(arguments.jwks_refresh));
    if let Some(cooldown) = &arguments.unknown_kid_cooldown {
        refresh.insert("unknown_kid_cooldown".into(), json!(cooldown));
    }
    if let Some(timeout) = &arguments.jwks_timeout {
        refresh.insert("timeout".into(), json!(timeout));
    }
    config
        .pointer_mut("/issuers/0")
        .and_then(Value::as_object_mut)
        .context("the benchmark configuration has no issuer")?
        .insert("jwks_refresh".into(), Value::Object(refresh));
    let top = config
        .as_object_mut()
        .context("the benchmark configuration is not a mapping")?;
    top.insert(
        "policies".into(),
        json!({ "path": policies.to_string_lossy() }),
    );
    top.insert("reload".into(), json!({ "watch": false }));
    if let Some(target) = &arguments.decision_log {
        top.insert("decision_log".into(), json!(target));
    }
    let yaml = serde_norway::to_string(&config).context("writing the soak configuration")?;
    Ok(format!("# Written by bench/soak.rs.\n{yaml}"))
}

/// Copies the example policies (the `*.cedar` files Verdict loads from `examples/policies`).
fn copy_policies(target: &Path) -> anyhow::Result<()> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policies");
    std::fs::create_dir_all(target).with_context(|| format!("creating `{}`", target.display()))?;
    for entry in
        std::fs::read_dir(&source).with_context(|| format!("listing `{}`", source.display()))?
    {
        let path = entry?.path();
        if path
            .extension()
            .is_some_and(|extension| extension == "cedar")
            && let Some(name) = path.file_name()
        {
            std::fs::copy(&path, target.join(name))
                .with_context(|| format!("copying `{}`", path.display()))?;
        }
    }
    Ok(())
}

/// Writes generation `generation` of the reloaded policy file, by a rename so that Verdict never reads
/// half of it: a new comment and a `forbid` for a tenant no token has, which changes no decision.
fn write_reload_policy(policies: &Path, generation: u64) -> anyhow::Result<()> {
    let text = format!(
        "// Rewritten by bench/soak.rs before each SIGHUP; generation {generation}.\n\
         @id(\"soak-reload-{generation}\")\n\
         forbid (principal, action, resource)\n\
         when {{ principal.tenant == \"soak-reload-{generation}\" }};\n"
    );
    let partial = policies.join(format!("{RELOAD_POLICY_FILE}.partial"));
    std::fs::write(&partial, text).with_context(|| format!("writing `{}`", partial.display()))?;
    std::fs::rename(&partial, policies.join(RELOAD_POLICY_FILE)).context("renaming the policy file")
}

/// What happened to the reloads.
#[derive(Debug, Default)]
struct ReloadLog {
    sent: AtomicU64,
    /// Reloads whose new policy revision `/readyz` showed within five seconds.
    seen: AtomicU64,
    /// The longest from SIGHUP to the new revision, in microseconds.
    slowest_micros: AtomicU64,
}

/// Every `every`, rewrites the reload policy and sends SIGHUP, then waits for `/readyz` to show a new
/// policy revision. Runs until aborted; with an `every` of zero, never reloads.
async fn reload_policies(
    control: reqwest::Client,
    base: String,
    pid: u32,
    policies: PathBuf,
    every: Duration,
    mut revision: String,
    log: Arc<ReloadLog>,
) {
    if every.is_zero() {
        return;
    }
    let mut generation = 0;
    loop {
        tokio::time::sleep(every).await;
        generation += 1;
        if let Err(error) = write_reload_policy(&policies, generation) {
            eprintln!("soak: {error:#}");
            continue;
        }
        let sent = Instant::now();
        let signalled = tokio::task::spawn_blocking(move || signal(pid, "-HUP")).await;
        if !matches!(signalled, Ok(Ok(()))) {
            eprintln!("soak: could not send SIGHUP");
            continue;
        }
        log.sent.fetch_add(1, Ordering::Relaxed);
        while sent.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let current = fetch_readyz(&control, &base)
                .await
                .ok()
                .and_then(|readyz| readyz.get("policy_revision").cloned())
                .map(|value| value.to_string());
            if let Some(current) = current
                && current != revision
            {
                revision = current;
                log.seen.fetch_add(1, Ordering::Relaxed);
                let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                log.slowest_micros.fetch_max(micros, Ordering::Relaxed);
                break;
            }
        }
    }
}

async fn fetch_readyz(control: &reqwest::Client, base: &str) -> anyhow::Result<Value> {
    // `/readyz` answers 503 with the same body when an issuer's keys are not ready.
    let bytes = control
        .get(format!("{base}/readyz"))
        .send()
        .await?
        .bytes()
        .await?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// Waits (at most 30 s) for `/readyz` to answer 200; returns the policy revision it names.
async fn wait_until_ready(
    control: &reqwest::Client,
    base: &str,
    verdict: &mut Verdict,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if verdict.exited() {
            let stderr = std::fs::read_to_string(&verdict.stderr).unwrap_or_default();
            bail!("verdict exited before it was ready:\n{}", stderr.trim_end());
        }
        if let Ok(response) = control.get(format!("{base}/readyz")).send().await
            && response.status() == StatusCode::OK
        {
            let readyz: Value = serde_json::from_slice(&response.bytes().await?)?;
            return Ok(readyz
                .get("policy_revision")
                .map(Value::to_string)
                .unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("verdict was not ready within 30 s")
}

/// Verdict's resident memory in KiB (`VmRSS` of `/proc/<pid>/status`).
fn resident_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .context("no `VmRSS` in /proc/<pid>/status")
}

/// Samples Verdict's memory every `every` into `samples`, as (seconds since the end of the warm-up,
/// KiB), and prints a progress line, until aborted.
async fn sample_memory(
    shared: Arc<Shared>,
    pid: u32,
    every: Duration,
    samples: Arc<Mutex<Vec<(u64, u64)>>>,
) {
    let start = Instant::now();
    loop {
        tokio::time::sleep(every).await;
        let Ok(kib) = resident_kib(pid) else {
            eprintln!("soak: verdict's memory can no longer be read");
            return;
        };
        let seconds = start.elapsed().as_secs();
        if let Ok(mut samples) = samples.lock() {
            samples.push((seconds, kib));
        }
        let live = &shared.live;
        eprintln!(
            "soak: +{seconds:>4} s  sent {:>7}  wrong {}  errors {}  behind schedule {}  rss {}  jwks {}",
            live.sent.load(Ordering::Relaxed),
            live.wrong.load(Ordering::Relaxed),
            live.errors.load(Ordering::Relaxed),
            live.late.load(Ordering::Relaxed),
            mib(kib),
            shared.jwks.state().name(),
        );
    }
}

fn mib(kib: u64) -> String {
    let mib = kib as f64 / 1024.0;
    format!("{mib:.1} MiB")
}

/// Latency figures of a set of callouts.
#[derive(Debug, Default)]
struct Latencies {
    sorted: Vec<Duration>,
}

impl Latencies {
    /// From sending to the answer.
    fn of<'a>(samples: impl Iterator<Item = &'a Sample>) -> Self {
        Self::measured(samples, |sample| sample.latency)
    }

    /// From the callout's slot in the schedule to the answer: with the wait for a free connection.
    fn from_due<'a>(samples: impl Iterator<Item = &'a Sample>) -> Self {
        Self::measured(samples, |sample| sample.late + sample.latency)
    }

    fn measured<'a>(
        samples: impl Iterator<Item = &'a Sample>,
        latency: impl Fn(&Sample) -> Duration,
    ) -> Self {
        let mut sorted: Vec<Duration> = samples.map(latency).collect();
        sorted.sort_unstable();
        Self { sorted }
    }

    /// The `quantile` latency (nearest rank).
    fn quantile(&self, quantile: f64) -> Option<Duration> {
        let rank = ((quantile * self.sorted.len() as f64).ceil() as usize).max(1);
        self.sorted.get(rank - 1).copied()
    }

    fn summary(&self) -> String {
        let show = |latency: Option<Duration>| {
            latency.map_or_else(|| "-".to_owned(), |latency| format!("{latency:.2?}"))
        };
        format!(
            "{:>9} {:>9} {:>9}",
            show(self.quantile(0.50)),
            show(self.quantile(0.99)),
            show(self.sorted.last().copied())
        )
    }
}

/// Everything the final report reads.
struct Report<'a> {
    arguments: &'a Arguments,
    schedule: &'a Schedule,
    samples: &'a [Sample],
    jwks: &'a JwksSwitch,
    reloads: &'a ReloadLog,
    readyz: Option<&'a Value>,
    memory_start: u64,
    memory_samples: &'a [(u64, u64)],
    memory_end: Option<u64>,
}

impl Report<'_> {
    /// The report's text, and whether the run passed.
    fn render(&self, exited_early: bool) -> anyhow::Result<(String, bool)> {
        let mut out = String::new();
        let warmup: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|sample| sample.number < self.schedule.warmup)
            .collect();
        let measured: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|sample| sample.number >= self.schedule.warmup)
            .collect();
        let wrong = |samples: &[&Sample]| {
            samples
                .iter()
                .filter(|sample| sample.outcome.is_wrong(sample.kind))
                .count()
        };
        let wrong_total = wrong(&warmup) + wrong(&measured);
        let args = self.arguments;

        writeln!(
            out,
            "\nsoak: {} callouts/s ({:?} workload), {} connections, {} s warm-up + {} s measured, \
             timeout {:?}; jwks flaps every {} s (503, up, hanging, up), SIGHUP reload every {} s \
             (0: never)",
            args.rate,
            args.workload,
            args.connections,
            args.warmup.as_secs(),
            args.duration.as_secs(),
            args.timeout,
            args.flap_every.as_secs(),
            args.reload_every.as_secs(),
        )?;
        writeln!(
            out,
            "warm-up: {} callouts, {} wrong decisions, {} errors",
            warmup.len(),
            wrong(&warmup),
            warmup
                .iter()
                .filter(|sample| sample.outcome.is_error())
                .count()
        )?;

        let count = |predicate: &dyn Fn(&Sample) -> bool| {
            measured.iter().filter(|sample| predicate(sample)).count()
        };
        let decisions = count(&|sample| !sample.outcome.is_error());
        let late = count(&|sample| sample.late > self.schedule.late_after);
        let latest = measured
            .iter()
            .map(|sample| sample.late)
            .max()
            .unwrap_or_default();
        writeln!(out, "\nmeasured run: {} callouts", measured.len())?;
        writeln!(out, "  decisions answered      {decisions}")?;
        writeln!(out, "  wrong decisions         {}", wrong(&measured))?;
        writeln!(
            out,
            "  errors                  {} (non-200 {}, malformed {}, timeouts {}, transport {})",
            measured.len() - decisions,
            count(&|sample| matches!(sample.outcome, Outcome::Status(_))),
            count(&|sample| sample.outcome == Outcome::Malformed),
            count(&|sample| sample.outcome == Outcome::Timeout),
            count(&|sample| sample.outcome == Outcome::Transport),
        )?;
        writeln!(
            out,
            "  behind schedule         {late} sent more than {:?} late (latest {latest:.2?})",
            self.schedule.late_after
        )?;
        writeln!(
            out,
            "  latency p50/p99/max     {}  (from sending)",
            Latencies::of(measured.iter().copied()).summary()
        )?;
        writeln!(
            out,
            "                          {}  (from the schedule: with the wait for a free connection)",
            Latencies::from_due(measured.iter().copied()).summary()
        )?;

        writeln!(
            out,
            "\n  {:<15} {:>8} {:>7} {:>7} {:>6} {:>7} {:>9} {:>9} {:>9}   {:>9} {:>9} {:>9}",
            "token",
            "callouts",
            "allow",
            "deny",
            "wrong",
            "errors",
            "p50",
            "p99",
            "max",
            "p50 due",
            "p99 due",
            "max due"
        )?;
        for kind in Kind::ALL {
            let of_kind: Vec<&Sample> = measured
                .iter()
                .copied()
                .filter(|sample| sample.kind == kind)
                .collect();
            let allowed = of_kind
                .iter()
                .filter(|sample| matches!(sample.outcome, Outcome::Decision { allow: true, .. }))
                .count();
            let denied = of_kind
                .iter()
                .filter(|sample| matches!(sample.outcome, Outcome::Decision { allow: false, .. }))
                .count();
            writeln!(
                out,
                "  {:<15} {:>8} {:>7} {:>7} {:>6} {:>7} {}   {}",
                kind.name(),
                of_kind.len(),
                allowed,
                denied,
                wrong(&of_kind),
                of_kind
                    .iter()
                    .filter(|sample| sample.outcome.is_error())
                    .count(),
                Latencies::of(of_kind.iter().copied()).summary(),
                Latencies::from_due(of_kind.iter().copied()).summary()
            )?;
        }

        writeln!(
            out,
            "\n  jwks state when sent     {:>8} {:>7} {:>9} {:>9} {:>9}   unknown-kid: {:>8} {:>9} {:>9} {:>9}",
            "callouts", "errors", "p50", "p99", "max", "callouts", "p50", "p99", "max"
        )?;
        for state in JwksState::ALL {
            let in_state: Vec<&Sample> = measured
                .iter()
                .copied()
                .filter(|sample| sample.jwks == state)
                .collect();
            let unknown: Vec<&Sample> = in_state
                .iter()
                .copied()
                .filter(|sample| sample.kind == Kind::UnknownKid)
                .collect();
            writeln!(
                out,
                "  {:<24} {:>8} {:>7} {}                {:>8} {}",
                state.name(),
                in_state.len(),
                in_state
                    .iter()
                    .filter(|sample| sample.outcome.is_error())
                    .count(),
                Latencies::of(in_state.iter().copied()).summary(),
                unknown.len(),
                Latencies::of(unknown.iter().copied()).summary()
            )?;
        }

        let mut answers: BTreeMap<(Kind, String), usize> = BTreeMap::new();
        for sample in &measured {
            let answer = match &sample.outcome {
                Outcome::Decision {
                    allow: true,
                    status,
                    ..
                } => format!("allow {status}"),
                Outcome::Decision { status, error, .. } => format!("deny {status} {error}"),
                Outcome::Status(status) => format!("HTTP {status}"),
                Outcome::Malformed => "malformed 200".to_owned(),
                Outcome::Timeout => "timeout".to_owned(),
                Outcome::Transport => "transport error".to_owned(),
            };
            *answers.entry((sample.kind, answer)).or_default() += 1;
        }
        writeln!(out, "\n  answers by token kind")?;
        for ((kind, answer), count) in &answers {
            writeln!(out, "    {:<15} {:<40} {count}", kind.name(), answer)?;
        }

        writeln!(
            out,
            "\njwks requests met: {} up, {} answered 503, {} hung",
            self.jwks.requests(JwksState::Up),
            self.jwks.requests(JwksState::Unavailable),
            self.jwks.requests(JwksState::Hanging),
        )?;
        let reloads = self.readyz.and_then(|readyz| readyz.get("reloads"));
        writeln!(
            out,
            "reloads: {} SIGHUPs, {} new policy revisions seen in /readyz (slowest {:.2?}); /readyz reloads {}",
            self.reloads.sent.load(Ordering::Relaxed),
            self.reloads.seen.load(Ordering::Relaxed),
            Duration::from_micros(self.reloads.slowest_micros.load(Ordering::Relaxed)),
            reloads.map_or_else(|| "unavailable".to_owned(), Value::to_string),
        )?;

        let samples: Vec<String> = self
            .memory_samples
            .iter()
            .map(|(seconds, kib)| format!("+{seconds}s {}", mib(*kib)))
            .collect();
        writeln!(
            out,
            "\nverdict resident memory (VmRSS): after warm-up {}, end {}",
            mib(self.memory_start),
            self.memory_end
                .map_or_else(|| "unavailable".to_owned(), mib)
        )?;
        writeln!(out, "  samples: {}", samples.join(", "))?;
        let peak = self
            .memory_samples
            .iter()
            .map(|(_, kib)| *kib)
            .chain(self.memory_end)
            .max()
            .unwrap_or(self.memory_start);
        let tolerance_kib = args.rss_tolerance_mib * 1024;
        let growth_kib = self
            .memory_end
            .map(|end| end.saturating_sub(self.memory_start));
        let memory_ok = growth_kib.is_some_and(|growth| growth <= tolerance_kib);
        writeln!(
            out,
            "  growth after warm-up {} (peak {}); tolerance {} MiB: {}",
            growth_kib.map_or_else(|| "unknown".to_owned(), mib),
            mib(peak),
            args.rss_tolerance_mib,
            if memory_ok { "within" } else { "EXCEEDED" }
        )?;

        let mut failures = Vec::new();
        if wrong_total > 0 {
            failures.push(format!("{wrong_total} wrong decisions"));
        }
        if exited_early {
            failures.push("verdict exited during the run".to_owned());
        }
        if !memory_ok {
            failures.push("memory grew past the tolerance".to_owned());
        }
        let passed = failures.is_empty();
        if passed {
            writeln!(out, "\nPASS")?;
        } else {
            writeln!(out, "\nFAIL: {}", failures.join("; "))?;
        }
        Ok((out, passed))
    }
}
