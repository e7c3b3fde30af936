//! The accept loop: a connection permit before each accept, one task per
//! connection, graceful drain on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use switchyard_router::Router;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::GatewayConfig;

/// Most concurrent HTTP/2 streams per connection.
pub(crate) const MAX_H2_STREAMS: u32 = 4096;

/// Whether a new connection opens with the HTTP/2 preface (`PRI * HTTP/2.0`;
/// no HTTP/1.1 request starts with `PRI`). Waits for the first bytes.
async fn is_h2(stream: &tokio::net::TcpStream) -> bool {
    const PREFIX: &[u8] = b"PRI";
    let mut buf = [0u8; 3];
    for _ in 0..100 {
        match stream.peek(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) if n >= PREFIX.len() => return buf == PREFIX,
            Ok(n) if buf[..n] != PREFIX[..n] => return false,
            // Part of the prefix so far: wait for the rest.
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(2)).await,
        }
    }
    false
}

/// Response body type of every handler.
pub(crate) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A complete body.
pub(crate) fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed_unsync()
}

/// What every request handler can reach.
pub(crate) struct App {
    pub router: Router,
    pub config: GatewayConfig,
    /// Verifies client tokens (and caches the verified ones).
    pub auth: crate::auth::Authorizer,
    /// Turns true when the node shuts down; SSE streams end on it.
    pub shutdown: watch::Receiver<bool>,
}

/// Serves the HTTP API on `listener` until `shutdown` resolves, then stops
/// accepting, ends SSE streams, and gives in-flight requests
/// [`GatewayConfig::shutdown_grace`] to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: GatewayConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let grace = config.shutdown_grace;
    let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
    // HTTP/1.1 for clients; HTTP/2 with prior knowledge (h2c) for
    // node-to-node requests and clients that speak it. The protocol is
    // chosen from the first bytes (peeked, not read), so an HTTP/1.1
    // connection costs no more than with an HTTP/1.1-only server.
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_headers(config.max_request_headers)
        .max_buf_size(config.max_header_bytes.max(8192));
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        // A peer relays each group member connected to it as one stream
        // of its relay connection to the group's coordinator.
        .max_concurrent_streams(MAX_H2_STREAMS)
        .max_header_list_size(config.max_header_bytes.max(8192) as u32);
    let first_bytes_timeout = config.header_read_timeout;
    let app = Arc::new(App {
        router,
        auth: crate::auth::Authorizer::new(config.auth.clone()),
        config,
        shutdown: stop_rx,
    });
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and similar: back off briefly.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = service_fn(move |req: hyper::Request<Incoming>| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(crate::handlers::handle(app, req).await) }
        });
        let (http1, http2) = (http1.clone(), http2.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let Ok(h2) = tokio::time::timeout(first_bytes_timeout, is_h2(&stream)).await else {
                tracing::debug!(%peer, "no request in time; connection closed");
                return;
            };
            let io = TokioIo::new(stream);
            // Boxed, so that the task of an HTTP/1.1 connection (most of
            // them, each idle subscriber) is not sized for HTTP/2's state.
            let ended = if h2 {
                Box::pin(watcher.watch(http2.serve_connection(io, service))).await
            } else {
                watcher.watch(http1.serve_connection(io, service)).await
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace period; closing them");
    }
    Ok(())
}
