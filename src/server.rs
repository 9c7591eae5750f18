//! The accept loop: HTTP/1.1 and HTTP/2 on one listener, over TCP or TLS, with a bounded request head
//! and a graceful shutdown.
//!
//! A connection speaks HTTP/2 when it opens with HTTP/2's preface: h2c with prior knowledge on plain
//! TCP (what Cloud Run's end-to-end HTTP/2 sends), or `h2` chosen by ALPN over TLS. HTTP/2's own limits
//! are set, not left to defaults: concurrent streams per connection, the header list size (the same
//! budget as an HTTP/1.1 head), and the streams a client may reset before they are served (the "rapid
//! reset" attack). An HTTP/1.1 request line and headers together may take at most
//! [`HeadLimits::max_bytes`] (more gets 431) and must arrive within [`HeadLimits::read_timeout`]. When `shutdown` resolves the listener closes at
//! once; idle keep-alive connections close, requests in flight finish and their connections close
//! after the response. Whatever is still running after the grace period is cut off.
//!
//! It knows nothing of the service it runs: the router is given, and so are the TLS settings, through
//! [`TlsSource`], which the running state implements.

pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::{Extension, Router};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use tls::{TlsSettings, TlsSource};

/// The bounds on a request's head (its request line and headers).
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// The request line and headers together; a longer head gets 431.
    pub max_bytes: usize,
    /// How long the head may take to arrive.
    pub read_timeout: Duration,
}

/// How connections on a listener are secured.
#[derive(Clone)]
pub enum Transport {
    Plain,
    /// TLS with the identity of the generation running when each connection arrives, or `first` if a
    /// reload dropped `tls:` (a listener cannot turn into plain HTTP). Each request on a connection
    /// whose client presented a certificate carries it as an `Arc<tls::ClientCertificate>` extension.
    Tls {
        source: Arc<dyn TlsSource>,
        first: Arc<TlsSettings>,
    },
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Plain => f.write_str("Plain"),
            Self::Tls { .. } => f.write_str("Tls"),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    transport: Transport,
    head: HeadLimits,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(head.read_timeout)
        .max_buf_size(head.max_bytes)
        .max_headers(max_header_count(head.max_bytes));
    http.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_header_list_size(u32::try_from(head.max_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, most likely: pause rather than spin.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let router = router.clone();
        let http = http.clone();
        let watcher = graceful.watcher();
        let transport = transport.clone();
        tokio::spawn(async move {
            let served = match transport {
                Transport::Plain => serve_connection(stream, router, &http, watcher).await,
                Transport::Tls { source, first } => {
                    match tls::accept(&*source, &first, stream, peer).await {
                        Some((stream, certificate)) => {
                            let router = match certificate {
                                Some(certificate) => router.layer(Extension(certificate)),
                                None => router,
                            };
                            serve_connection(stream, router, &http, watcher).await
                        }
                        None => Ok(()),
                    }
                }
            };
            if let Err(error) = served {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let open = graceful.count();
    if open > 0 {
        tracing::info!(
            connections = open,
            grace_seconds = grace.as_secs_f64(),
            "draining connections"
        );
    }
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_seconds = grace.as_secs_f64(),
            "requests were still in flight at the end of the grace period; closing them"
        );
    }
    Ok(())
}

/// HTTP/2 streams one connection may have open at once (each is a callout in flight; the request limits
/// bound the total).
const H2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// Streams a client may open and reset before the server has seen them: past this the connection is
/// closed (CVE-2023-44487, "rapid reset").
const H2_MAX_PENDING_RESETS: usize = 20;
/// Streams the server may reset for a client's protocol errors before it closes the connection.
const H2_MAX_LOCAL_ERROR_RESETS: usize = 64;

/// The shortest header line hyper's parser accepts: a one-letter name, a colon, a bare line feed.
const SHORTEST_HEADER_LINE: usize = "a:\n".len();

/// As many headers as `max_header_bytes` can hold, so that the byte limit alone bounds the request
/// head: hyper's own default of 100 headers would refuse 150 small ones that fit in 16 KiB.
fn max_header_count(max_header_bytes: usize) -> usize {
    (max_header_bytes / SHORTEST_HEADER_LINE).max(100)
}

async fn serve_connection<I>(
    io: I,
    router: Router,
    http: &auto::Builder<TokioExecutor>,
    watcher: Watcher,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let connection = http.serve_connection(TokioIo::new(io), TowerToHyperService::new(router));
    watcher.watch(connection).await
}
