//! The accept loop. `axum::serve` gives no header read timeout (hyper drops it without a
//! timer) and no connection cap, so a few hundred clients that open a connection and send
//! nothing, or send headers a byte at a time, would hold the pod's memory. Here every
//! connection gets hyper's header read timeout, at most `server.max_connections` are open at
//! once (further clients wait in the kernel's listen backlog), and shutdown lets in-flight
//! requests finish.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::config::ServerConfig;

/// How long shutdown waits for in-flight requests before it closes what is left.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Serves `app` on `listener` with the limits of `server` until `shutdown` completes, then
/// stops accepting and waits (up to [`SHUTDOWN_GRACE`]) for open requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    server: &ServerConfig,
    shutdown: impl Future<Output = ()>,
) {
    let connections = Arc::new(Semaphore::new(server.max_connections));
    // Tells every open connection to finish its request and close.
    let (stop, stopping) = watch::channel(false);
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(server.header_read_timeout);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let connection =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = stopping.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, "connection closed with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a permit until it is closed: all permits back = all closed.
    let all = u32::try_from(server.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(SHUTDOWN_GRACE, connections.acquire_many(all)).await.is_err() {
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "shutdown: requests still open after the grace period");
    }
}
