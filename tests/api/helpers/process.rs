//! The `verdict` binary as a child process: a command for it, its output, a running `serve` and
//! waiting for its readiness.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// A command running the built `verdict`, with no configuration from the environment.
pub fn verdict() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_verdict"));
    command.env_remove("VERDICT_CONFIG").env("RUST_LOG", "info");
    command
}

/// A new end-user API key from `verdict apikey new` with `args`: the key, and the configuration entry
/// that holds its hash. The command says the key is not stored anywhere.
pub fn new_api_key(args: &[&str]) -> (String, String) {
    let (status, stdout, stderr) = output(verdict().args(["apikey", "new"]).args(args));
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("not stored"), "{stderr}");
    let mut lines = stdout.lines();
    let key = lines.next().unwrap_or_default().to_owned();
    let entry = lines.next().unwrap_or_default().to_owned();
    (key, entry)
}

/// A running `verdict serve`, killed when dropped, whose output lines arrive on channels.
pub struct Server {
    pub child: Child,
    pub stdout: mpsc::Receiver<String>,
    pub stderr: mpsc::Receiver<String>,
}

impl Server {
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        Self {
            child,
            stdout,
            stderr,
        }
    }

    /// `verdict serve --config CONFIG`, with `RUST_LOG` set to `rust_log`, or removed so that the
    /// configuration's `log.level` applies.
    pub fn serve(config: &std::path::Path, rust_log: Option<&str>) -> Self {
        let mut command = verdict();
        command.args(["serve", "--config"]).arg(config);
        match rust_log {
            Some(filter) => command.env("RUST_LOG", filter),
            None => command.env_remove("RUST_LOG"),
        };
        Self::spawn(command)
    }

    /// Waits (bounded) for a line of `stream` containing `needle`, returning it.
    pub fn wait_for(stream: &mpsc::Receiver<String>, needle: &str) -> String {
        loop {
            match stream.recv_timeout(Duration::from_secs(60)) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(error) => panic!("no line containing `{needle}`: {error}"),
            }
        }
    }

    /// Sends the process SIGHUP.
    pub fn hangup(&self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
        assert!(status.success());
    }

    /// The API's address from the "verdict listening" log line, written as text or as JSON.
    pub fn address(&self) -> String {
        let line = Self::wait_for(&self.stderr, "verdict listening");
        let address = match serde_json::from_str::<Value>(&line) {
            Ok(record) => record["address"].as_str().map(str::to_owned),
            Err(_) => line
                .split("address=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_owned),
        };
        address.unwrap_or_else(|| panic!("no address in `{line}`"))
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        self.wait_exit()
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        for _ in 0..600 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the server did not exit");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

/// Runs `command` to its end: its exit status, standard output and standard error.
pub fn output(command: &mut Command) -> (ExitStatus, String, String) {
    let output = command.output().unwrap();
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Polls `/readyz` until it answers 200; a bounded wait for a process, not a timing assertion.
pub async fn wait_ready(address: &str) -> Value {
    for _ in 0..600 {
        if let Ok(response) = reqwest::get(format!("http://{address}/readyz")).await
            && response.status() == 200
        {
            return serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{address} never became ready");
}

/// `/readyz` of the service at `address`.
async fn readyz(address: &str) -> Value {
    let response = reqwest::get(format!("http://{address}/readyz"))
        .await
        .unwrap();
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

/// Polls `/readyz` until `done` holds; a bounded wait for the process to act, not a timing assertion.
pub async fn wait_readyz(address: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..600 {
        let body = readyz(address).await;
        if done(&body) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} never happened: {}", readyz(address).await);
}
