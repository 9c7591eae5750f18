//! The decision log (`decision_log:`): one JSON line per decision, to standard output or a file.
//!
//! Records are serialized on the request path and written by a thread of their own, in batches at most
//! 100 ms old, so a slow disk or a blocked pipe never holds a decision up. When the writer falls [`BACKLOG`] records behind, new
//! records are dropped, each one counted in `verdict_decision_log_dropped_total`, and a warning says
//! how many, at most every [`WARNING_INTERVAL`]. A record names the credential only by a short hash;
//! it never holds a token, a key or a secret.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use uuid::Uuid;

use crate::config::DecisionLogTarget;
use crate::decision::{Decision, DecisionInput};
use crate::digest::ShortDigest;

/// Records the writer may fall behind by before new ones are dropped.
const BACKLOG: usize = 16 * 1024;
/// The shortest time between two warnings about dropped records.
const WARNING_INTERVAL: Duration = Duration::from_secs(10);
/// The longest a record waits in the writer's buffer.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// How long the busy writer sleeps between taking what is queued; at 50,000 decisions/s a tick
/// queues 250 records, far below [`BACKLOG`].
const BATCH_TICK: Duration = Duration::from_millis(5);
/// The longest a shutdown waits for the last records to be written.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The sink for decision records.
#[derive(Debug)]
pub struct DecisionLog {
    sender: Option<SyncSender<Vec<u8>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    started: Instant,
    /// Records dropped since the log opened.
    dropped: AtomicU64,
    /// Dropped records not yet reported by a warning.
    unreported: AtomicU64,
    /// When the last warning was given, in milliseconds since `started`.
    last_warning_millis: AtomicU64,
}

/// One line of the decision log.
#[derive(Debug, Serialize)]
pub struct DecisionRecord<'a> {
    #[serde(serialize_with = "displayed")]
    pub time: humantime::Rfc3339Timestamp,
    pub decision_id: Uuid,
    pub message_id: &'a str,
    /// Who made the callout (see `callers::Caller`).
    pub caller: &'a str,
    /// Which front asked: `service_callout`, `forward_auth`.
    pub front: &'a str,
    /// The configured issuer name (`api_key` for an API key) and the token's `iss`.
    pub issuer_name: &'a str,
    pub issuer: &'a str,
    pub subject: &'a str,
    pub client_id: &'a str,
    pub kid: &'a str,
    /// A short SHA-256 of the credential, to tell requests with the same token apart from others.
    #[serde(serialize_with = "displayed_or_empty")]
    pub token_hash: Option<ShortDigest>,
    pub method: &'a str,
    pub path: &'a str,
    pub allow: bool,
    pub status: u16,
    pub error: &'a str,
    pub policies: &'a [String],
    pub token_cache_hit: bool,
    /// The decision came from the decision memo.
    pub memo_hit: bool,
    pub verify_us: u64,
    pub policy_us: u64,
    /// The W3C trace id of the callout, when it sent a `traceparent`.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub trace_id: &'a str,
}

impl<'a> DecisionRecord<'a> {
    /// The record of `decision` on `input`, whose credential's issuer is configured as `issuer_name`.
    pub fn new(
        decision: &'a Decision,
        input: &'a DecisionInput,
        issuer_name: &'a str,
        caller: &'a str,
        front: &'a str,
        trace_id: &'a str,
    ) -> Self {
        Self {
            time: humantime::format_rfc3339_millis(SystemTime::now()),
            decision_id: decision.decision_id,
            message_id: &input.message_id,
            caller,
            front,
            issuer_name,
            issuer: decision.issuer(),
            subject: decision.subject(),
            client_id: decision.client_id(),
            kid: decision.kid(),
            token_hash: decision.trace.credential_hash,
            method: &input.method,
            path: &input.path,
            allow: decision.allow,
            status: decision.status,
            error: decision.error.as_str(),
            policies: &decision.policies,
            token_cache_hit: decision.trace.token_cache_hit,
            memo_hit: decision.trace.memo_hit,
            verify_us: decision.trace.verify_micros,
            policy_us: decision.trace.policy_micros,
            trace_id,
        }
    }
}

/// Writes a field by its `Display`, straight into the line.
fn displayed<S: serde::Serializer>(
    value: &impl std::fmt::Display,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// [`displayed`], or `""` for `None`.
fn displayed_or_empty<S: serde::Serializer>(
    value: &Option<impl std::fmt::Display>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => serializer.collect_str(value),
        None => serializer.serialize_str(""),
    }
}

impl DecisionLog {
    /// A log that records nothing.
    pub fn off() -> Self {
        Self::with_sender(None, None)
    }

    /// Opens `target` and starts its writer thread.
    pub fn open(target: &DecisionLogTarget) -> std::io::Result<Self> {
        let sink: Box<dyn Write + Send> = match target {
            DecisionLogTarget::Off => return Ok(Self::off()),
            DecisionLogTarget::Stdout => Box::new(std::io::stdout()),
            DecisionLogTarget::File(path) => Box::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|error| {
                        std::io::Error::new(
                            error.kind(),
                            format!("opening the decision log `{}`: {error}", path.display()),
                        )
                    })?,
            ),
        };
        Self::to_sink(sink)
    }

    /// A log writing to `sink` from a thread of its own.
    fn to_sink(sink: Box<dyn Write + Send>) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::sync_channel(BACKLOG);
        let writer = std::thread::Builder::new()
            .name("decision-log".to_owned())
            .spawn(move || write_records(&receiver, sink))?;
        Ok(Self::with_sender(Some(sender), Some(writer)))
    }

    fn with_sender(sender: Option<SyncSender<Vec<u8>>>, writer: Option<JoinHandle<()>>) -> Self {
        Self {
            sender,
            writer: Mutex::new(writer),
            started: Instant::now(),
            dropped: AtomicU64::new(0),
            unreported: AtomicU64::new(0),
            last_warning_millis: AtomicU64::new(0),
        }
    }

    /// Whether records are kept: a caller may skip building one when not.
    pub fn is_enabled(&self) -> bool {
        self.sender.is_some()
    }

    /// Records dropped since the log opened (also counted in `verdict_decision_log_dropped_total`).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Queues one record; never waits.
    pub fn record(&self, record: &DecisionRecord<'_>) {
        let Some(sender) = &self.sender else {
            return;
        };
        let mut line = match serde_json::to_vec(record) {
            Ok(line) => line,
            Err(error) => {
                tracing::error!(%error, "a decision record could not be serialized");
                return;
            }
        };
        line.push(b'\n');
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = sender.try_send(line) {
            self.drop_record();
        }
    }

    fn drop_record(&self) {
        crate::metrics::global().decision_log_dropped();
        self.dropped.fetch_add(1, Ordering::Relaxed);
        let unreported = self.unreported.fetch_add(1, Ordering::Relaxed) + 1;
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.last_warning_millis.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= WARNING_INTERVAL.as_millis() as u64;
        if due
            && self
                .last_warning_millis
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let dropped = self.unreported.swap(0, Ordering::Relaxed).max(unreported);
            tracing::warn!(
                dropped,
                "the decision log cannot keep up: records were dropped (see verdict_decision_log_dropped_total)"
            );
        }
    }

    /// Writes out what is queued and stops the writer, waiting at most [`CLOSE_TIMEOUT`] for a sink
    /// that does not drain. Records made afterwards are dropped. Blocks the calling thread.
    pub fn close(&self) {
        let Some(writer) = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        else {
            return;
        };
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        // An empty record is the writer's end mark (the sender itself lives as long as `self`).
        if let Some(sender) = &self.sender {
            while let Err(TrySendError::Full(_)) = sender.try_send(Vec::new()) {
                if Instant::now() >= deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        while !writer.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if writer.is_finished() {
            let _ = writer.join();
        } else {
            tracing::warn!("the decision log's sink did not drain; its last records are lost");
        }
    }
}

/// The writer thread: buffers records and writes them out when the buffer fills or at most
/// [`FLUSH_INTERVAL`] after the oldest unwritten one, so a busy service makes one write for many
/// records. An empty record ends it, after a last flush.
///
/// Idle, it waits on the channel, and the first record wakes it. Busy, it takes what is queued, then
/// sleeps for a [`BATCH_TICK`] instead of waiting on the channel, so the callouts' sends find no
/// waiting thread to wake: a wake-up per record would cost the request path a system call and a
/// context switch each.
fn write_records(receiver: &Receiver<Vec<u8>>, sink: Box<dyn Write + Send>) {
    let mut writer = Writer {
        sink: BufWriter::with_capacity(64 * 1024, sink),
        failing: false,
        flush_by: None,
    };
    loop {
        let wait = writer.flush_by.map_or(FLUSH_INTERVAL, |due| {
            due.saturating_duration_since(Instant::now())
        });
        match receiver.recv_timeout(wait) {
            Ok(line) if line.is_empty() => break,
            Ok(line) => writer.write(&line),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        // Busy: drain, sleep a tick, drain again, until a tick brings nothing.
        let mut ended = false;
        loop {
            let mut taken = 0_usize;
            loop {
                match receiver.try_recv() {
                    Ok(line) if line.is_empty() => ended = true,
                    Ok(line) => {
                        writer.write(&line);
                        taken += 1;
                        continue;
                    }
                    Err(TryRecvError::Disconnected) => ended = true,
                    Err(TryRecvError::Empty) => {}
                }
                break;
            }
            writer.flush_if_due();
            if ended || taken == 0 {
                break;
            }
            std::thread::sleep(BATCH_TICK);
        }
        if ended {
            break;
        }
    }
    let _ = writer.sink.flush();
}

/// The writer thread's buffered sink.
struct Writer {
    sink: BufWriter<Box<dyn Write + Send>>,
    failing: bool,
    /// When the oldest unwritten record is due out.
    flush_by: Option<Instant>,
}

impl Writer {
    fn write(&mut self, line: &[u8]) {
        if let Err(error) = self.sink.write_all(line) {
            crate::metrics::global().decision_log_dropped();
            report_write_error(&mut self.failing, &error);
        }
        self.flush_by
            .get_or_insert_with(|| Instant::now() + FLUSH_INTERVAL);
    }

    fn flush_if_due(&mut self) {
        if self.flush_by.is_some_and(|due| Instant::now() >= due) {
            self.flush_by = None;
            flush(&mut self.sink, &mut self.failing);
        }
    }
}

fn flush(sink: &mut impl Write, failing: &mut bool) {
    match sink.flush() {
        Ok(()) => *failing = false,
        Err(error) => report_write_error(failing, &error),
    }
}

/// Warns once when writing starts failing, not on every record.
fn report_write_error(failing: &mut bool, error: &std::io::Error) {
    if !*failing {
        tracing::error!(%error, "writing the decision log failed; records are being lost");
        *failing = true;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Condvar};

    use super::*;
    use crate::decision::ErrorCode;

    /// A sink that blocks every write until it is opened, then keeps what it is given.
    #[derive(Clone, Default)]
    struct Gate {
        open: Arc<(Mutex<bool>, Condvar)>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Gate {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let (open, opened) = &*self.open;
            let mut is_open = open
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            while !*is_open {
                is_open = opened
                    .wait(is_open)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            self.written
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            self.write(&[]).map(drop)
        }
    }

    fn decision() -> Decision {
        Decision {
            decision_id: uuid::Uuid::now_v7(),
            allow: false,
            status: 401,
            error: ErrorCode::InvalidToken,
            ..Decision::default()
        }
    }

    #[test]
    fn a_sink_that_cannot_keep_up_loses_records_counted_but_never_holds_a_decision_up() {
        let gate = Gate::default();
        let log = DecisionLog::to_sink(Box::new(gate.clone())).unwrap_or_else(|error| {
            unreachable!("a thread could not start: {error}");
        });
        let (decision, input) = (decision(), DecisionInput::default());
        let records = BACKLOG * 2 + 1000;
        // With the sink blocked, every call returns: a blocking `record` would never get here.
        for _ in 0..records {
            log.record(&DecisionRecord::new(
                &decision,
                &input,
                "",
                "test",
                "service_callout",
                "",
            ));
        }
        let dropped = log.dropped();
        assert!(dropped >= BACKLOG as u64, "dropped {dropped} of {records}");

        {
            let (open, opened) = &*gate.open;
            *open
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
            opened.notify_all();
        }
        log.close();
        let written = gate
            .written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let lines = written
            .split(|byte| *byte == b'\n')
            .filter(|line| !line.is_empty());
        let mut kept = 0_u64;
        for line in lines {
            let record: serde_json::Value = serde_json::from_slice(line).unwrap_or_default();
            assert_eq!(record["status"], 401);
            kept += 1;
        }
        assert_eq!(
            kept + dropped,
            records as u64,
            "every record is written or counted"
        );
    }
}
