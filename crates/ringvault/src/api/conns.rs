//! Accepting the HTTP API's connections, with bounds: nothing a client does (connect and say
//! nothing, trickle a request head, keep a connection idle, open thousands) holds a file
//! descriptor for long or without limit.
//!
//! - A request head must arrive whole within `header_timeout`; the same clock runs while a
//!   keep-alive connection waits for its next request, so an idle connection is closed after it
//!   too. A response being streamed (a download, a topic's event stream) is not cut by it.
//! - At most `max_connections` are open at once, event streams included; a connection over the
//!   cap is closed at once and counted.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;

/// How long open connections may take to finish when the server stops.
const DRAIN_WITHIN: Duration = Duration::from_secs(5);

/// Bounds on the HTTP server's connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// A request head must arrive within this; a keep-alive connection idle this long closes.
    pub header_timeout: Duration,
    /// Connections open at once, event streams included.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: Duration::from_secs(10),
            max_connections: 1024,
        }
    }
}

/// What the server's connections did, for `/metrics`.
#[derive(Debug, Default)]
pub struct ConnCounters {
    /// Connections open now.
    pub open: AtomicUsize,
    /// Connections closed at once because `max_connections` were open.
    pub refused: AtomicU64,
}

/// Serves `app` on `listener` within `limits` until `shutdown` resolves; then stops accepting
/// and gives open connections [`DRAIN_WITHIN`] to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: HttpLimits,
    counters: Arc<ConnCounters>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, most likely: wait rather than spin.
                    tracing::warn!("accepting an HTTP connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if counters.refused.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::warn!(
                    "{} HTTP connections are open: closing new ones until some end (--http-max-connections)",
                    limits.max_connections
                );
            }
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        let counters = counters.clone();
        counters.open.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("HTTP connection ended: {e}");
            }
            counters.open.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    if tokio::time::timeout(DRAIN_WITHIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("HTTP connections still open after {DRAIN_WITHIN:?}; closing them");
    }
}
