//! Hot reload: on SIGHUP, or when the configuration or policy files change, the configuration is read
//! and validated completely, then its [`Generation`] replaces the running one in one step.
//!
//! A reload that fails (a bad file, a deleted directory) changes nothing: the running generation keeps
//! serving, and the failure is logged, counted and shown by `/readyz`. The log has the whole message;
//! `/readyz`, which is unauthenticated, only when it happened and at which configuration paths, because
//! the message may quote a value of the file, a secret included. Files are watched by polling a
//! fingerprint of their contents, which also sees the symlink swaps of Kubernetes volumes; a change is
//! loaded once the fingerprint has held still for one interval, so a half-written set is not loaded.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::clock::SharedClock;
use crate::config::{Config, ConfigErrors, Environment, PolicySource};
use crate::state::{AppState, Generation};

/// The environment `${VAR}` references are read from, shared with the blocking loader.
pub type SharedEnvironment = Arc<dyn Environment + Send + Sync>;

/// Why a reload failed: the whole message, for the log, and where in the configuration it failed, which
/// is all `/readyz` shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ReloadError {
    /// The configuration paths that failed (`issuers[0].jwks_uri`), or the file's path.
    paths: Vec<String>,
    /// Every problem, as `verdict check` would print them; URL credentials hidden.
    message: String,
}

impl ReloadError {
    /// A failure of the configuration file at `file` as a whole.
    fn of_file(file: &Path, message: &str) -> Self {
        Self {
            paths: vec![file.display().to_string()],
            message: crate::redact::url_credentials(message).into_owned(),
        }
    }

    /// The problems of an invalid configuration, each at its path; one of the file as a whole (it
    /// cannot be read, or is not YAML) at the file's path.
    fn of_config(file: &Path, errors: &ConfigErrors) -> Self {
        let mut message = format!("invalid configuration `{}`:", file.display());
        let mut paths: Vec<String> = Vec::new();
        for error in &errors.0 {
            let _ = write!(message, "\n  {error}");
            let path = if error.path.is_empty() {
                file.display().to_string()
            } else {
                error.path.clone()
            };
            if !paths.contains(&path) {
                paths.push(path);
            }
        }
        Self {
            paths,
            message: crate::redact::url_credentials(&message).into_owned(),
        }
    }
}

/// Reloads the service's configuration file into its [`AppState`].
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    state: AppState,
    http: reqwest::Client,
    clock: SharedClock,
    environment: EnvironmentHandle,
    /// What is watched; the lock also makes reloads take turns.
    watched: Mutex<Watched>,
}

/// The environment, whose `Debug` never prints the variables: they hold secrets.
#[derive(Clone)]
struct EnvironmentHandle(SharedEnvironment);

impl std::fmt::Debug for EnvironmentHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Environment")
    }
}

#[derive(Debug)]
struct Watched {
    /// The fingerprint of the files at the last reload attempt, good or bad.
    attempted: String,
    /// The fingerprint seen by the last poll.
    last_seen: String,
}

impl Reloader {
    /// A reloader for the service whose running configuration was loaded from `path`.
    pub fn new(
        path: &Path,
        state: AppState,
        clock: SharedClock,
        environment: SharedEnvironment,
    ) -> anyhow::Result<Self> {
        let current = state.current();
        let fingerprint = fingerprint(
            path,
            current.policy_source.as_ref(),
            &current.referenced_files,
        );
        Ok(Self {
            path: path.to_path_buf(),
            state,
            http: crate::outbound::http_client()?,
            clock,
            environment: EnvironmentHandle(environment),
            watched: Mutex::new(Watched {
                attempted: fingerprint.clone(),
                last_seen: fingerprint,
            }),
        })
    }

    /// Reads, validates and installs the configuration and policies now. On failure the running
    /// generation is untouched and the returned error lists every problem.
    pub async fn reload(&self) -> Result<(), ReloadError> {
        let mut watched = self.watched.lock().await;
        let before = self.fingerprint().await;
        let result = self.load_and_install().await;
        let now = self.clock.now();
        watched.attempted = match &result {
            // The policy directory may have moved: fingerprint what is watched from now on.
            Ok(()) => self.fingerprint().await,
            Err(_) => before,
        };
        let generation = self.state.current();
        match &result {
            Ok(()) => {
                self.state.reloads.record_success(now);
                tracing::info!(
                    config_revision = %generation.config_revision,
                    policy_revision = %generation.engine.policies().revision(),
                    "configuration reloaded"
                );
            }
            Err(error) => {
                self.state.reloads.record_failure(now, error.paths.clone());
                tracing::warn!(
                    %error,
                    config_revision = %generation.config_revision,
                    policy_revision = %generation.engine.policies().revision(),
                    "reload failed; still serving the previous configuration"
                );
            }
        }
        result
    }

    async fn load_and_install(&self) -> Result<(), ReloadError> {
        let path = self.path.clone();
        let environment = self.environment.clone();
        let config = tokio::task::spawn_blocking(move || Config::load(&path, &*environment.0))
            .await
            .map_err(|error| {
                ReloadError::of_file(&self.path, &format!("the loader stopped: {error}"))
            })?
            .map_err(|errors| ReloadError::of_config(&self.path, &errors))?;
        let current = self.state.current();
        if config.tls.is_some() != current.tls.is_some() {
            tracing::warn!("`tls` was added or removed; restart to switch between HTTP and HTTPS");
        }
        if config.service != current.service {
            tracing::warn!(
                "`listen`, `admin_listen`, `decision_log`, `log`, `tracing`, the server limits or `shutdown` changed; they take effect on restart"
            );
        }
        let generation =
            Generation::build(config, Some(&current), &self.http, Arc::clone(&self.clock))
                .map_err(|error| ReloadError::of_file(&self.path, &error))?;
        // Keys of an issuer new to this generation load before it serves, as they do at start.
        let running: Vec<_> = current.key_sets().cloned().collect();
        for keys in generation.key_sets() {
            if running.iter().any(|old| Arc::ptr_eq(old, keys)) {
                continue;
            }
            if let Err(error) = keys.refresh().await {
                tracing::warn!(issuer = %keys.status().name, %error, "keys of a reloaded issuer did not load; its tokens get 503 until they do");
            }
        }
        self.state.install(generation);
        Ok(())
    }

    /// Reloads on SIGHUP, and on file changes unless `reload.watch` is off. Runs until dropped.
    pub async fn run(self: Arc<Self>) {
        let mut hangup = Hangup::new();
        loop {
            let interval = self.state.current().reload.interval;
            tokio::select! {
                () = hangup.recv() => {
                    tracing::info!("SIGHUP: reloading");
                    let _ = self.reload().await;
                }
                () = tokio::time::sleep(interval) => {
                    if self.changed().await {
                        tracing::info!("configuration or policy files changed: reloading");
                        let _ = self.reload().await;
                    }
                }
            }
        }
    }

    /// Whether the files changed since the last attempt and then held still for one poll.
    async fn changed(&self) -> bool {
        let mut watched = self.watched.lock().await;
        if !self.state.current().reload.watch {
            return false;
        }
        let seen = self.fingerprint().await;
        let settled = seen == watched.last_seen;
        watched.last_seen.clone_from(&seen);
        settled && seen != watched.attempted
    }

    /// The fingerprint of the configuration file and of the running generation's policy files.
    async fn fingerprint(&self) -> String {
        let path = self.path.clone();
        let current = self.state.current();
        let policies = current.policy_source.clone();
        let others = current.referenced_files.clone();
        tokio::task::spawn_blocking(move || fingerprint(&path, policies.as_ref(), &others))
            .await
            .unwrap_or_default()
    }
}

/// A hash of the configuration file, every `*.cedar` file of the policy directory, the schema and the
/// other files the configuration read. Unreadable files count by their error, so a deletion is a change
/// too.
fn fingerprint(config: &Path, policies: Option<&PolicySource>, others: &[PathBuf]) -> String {
    let mut material = Vec::new();
    let mut add = |path: &Path| {
        material.extend_from_slice(path.as_os_str().as_encoded_bytes());
        material.push(0);
        match std::fs::read(path) {
            Ok(bytes) => material.extend_from_slice(&crate::digest::sha256(&bytes)),
            Err(error) => material.extend_from_slice(error.to_string().as_bytes()),
        }
        material.push(0);
    };
    add(config);
    others.iter().for_each(|file| add(file));
    if let Some(source) = policies {
        match std::fs::read_dir(&source.directory) {
            Ok(entries) => {
                let mut files: Vec<PathBuf> = entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.path())
                    .filter(|path| {
                        path.extension()
                            .is_some_and(|extension| extension == "cedar")
                    })
                    .collect();
                files.sort();
                files.iter().for_each(|file| add(file));
            }
            Err(_) => add(&source.directory),
        }
        if let Some(schema) = &source.schema {
            add(schema);
        }
    }
    crate::digest::short_hex(&material, 16)
}

/// Logs and otherwise ignores SIGHUP, whose default action would end the process: for a service with
/// nothing to reload (the embedded demo). Runs until dropped.
pub async fn ignore_hangups() {
    let mut hangup = Hangup::new();
    loop {
        hangup.recv().await;
        tracing::info!("SIGHUP: nothing to reload without a configuration file");
    }
}

/// SIGHUP, where there is such a signal.
struct Hangup {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    fn new() -> Self {
        #[cfg(unix)]
        {
            let signal =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            Self { signal }
        }
        #[cfg(not(unix))]
        Self {}
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = self.signal.as_mut() {
            if signal.recv().await.is_some() {
                return;
            }
            self.signal = None;
        }
        std::future::pending::<()>().await;
    }
}
