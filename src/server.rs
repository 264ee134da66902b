//! The HTTP/1.1 server loop: `axum::serve`, plus the limits it does not set. A client must send
//! its request head within a timeout (10 s; this also closes idle keep-alive
//! connections), and the head may not exceed [`MAX_HEAD_BYTES`]; slow or silent clients cannot
//! hold connections forever. On shutdown it stops accepting, lets requests in flight finish up to
//! a deadline, then cuts off the rest.

use std::future::Future;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tower::ServiceExt;

/// How the server treats connections.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// Time a client has to send a request's line and headers, from when the server starts
    /// waiting for them (on a kept-alive connection, from the end of the previous response).
    pub header_read_timeout: Duration,
    /// How long requests in flight may run on after shutdown begins.
    pub drain_deadline: Duration,
}

impl ServeOptions {
    pub fn new(drain_deadline: Duration) -> Self {
        Self { header_read_timeout: Duration::from_secs(10), drain_deadline }
    }
}

/// Request line plus headers; beyond it the connection gets a bare 431 and is closed. The API's
/// own, smaller limits answer problem+json before this one is reached (see `api::security`).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Serves `app` on `listener` until `shutdown` completes, then drains connections for up to
/// the options' deadline. Each request carries its peer's address as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()>,
    options: ServeOptions,
) {
    let drain_deadline = options.drain_deadline;
    let (stopping, stop_signal) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    let connection = |stream: TcpStream, peer| {
        let _ = stream.set_nodelay(true);
        serve_connection(stream, peer, app.clone(), options, stop_signal.clone())
    };
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(connection(stream, peer));
                }
                // Out of file descriptors and the like: wait a little instead of spinning.
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            // Reap finished connections as they go.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // Connections the kernel completed but we had not accepted yet: closing the listener would
    // reset them, though their clients may have sent a request already. Take them all in, with
    // plain non-blocking accept calls (tokio's accept only tries when the reactor has seen the
    // listener become readable, and may not have yet), then close the listener at once.
    for (stream, peer) in backlog(listener) {
        connections.spawn(connection(stream, peer));
    }
    let _ = stopping.send(true);
    let in_flight = connections.len();
    let drained =
        tokio::time::timeout(drain_deadline, async { while connections.join_next().await.is_some() {} })
            .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            of = in_flight,
            deadline = ?drain_deadline,
            "connections still busy at the shutdown deadline are cut off"
        );
        connections.shutdown().await;
    }
}

/// Accepts every connection waiting in the listener's queue, then closes the listener.
fn backlog(listener: TcpListener) -> Vec<(TcpStream, SocketAddr)> {
    let Ok(listener) = listener.into_std() else { return Vec::new() };
    let mut waiting = Vec::new();
    // The listener is non-blocking: accept returns WouldBlock once the queue is empty.
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                if let Ok(stream) = stream.set_nonblocking(true).and_then(|()| TcpStream::from_std(stream)) {
                    waiting.push((stream, peer));
                }
            }
            Err(error) if matches!(error.kind(), ErrorKind::Interrupted | ErrorKind::ConnectionAborted) => {}
            Err(_) => return waiting,
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    options: ServeOptions,
    mut stop_signal: watch::Receiver<bool>,
) {
    // Holds a permit once the connection has brought a request.
    let has_requested = Arc::new(Notify::new());
    let requested = has_requested.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        requested.notify_one();
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(peer));
        app.clone().oneshot(request)
    });
    let mut connection = pin!(
        http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(options.header_read_timeout)
            .max_header_size(MAX_HEAD_BYTES)
            .serve_connection(TokioIo::new(stream), service)
    );
    tokio::select! {
        result = connection.as_mut() => return log_connection_end(result),
        () = async { let _ = stop_signal.wait_for(|stop| *stop).await; } => {}
    }
    // Stopping. A graceful shutdown closes a connection with no request in progress at once. That
    // is right for a kept-alive connection between requests, but a new one has been accepted for a
    // request its client may have sent already: wait for it (within the header timeout) first.
    tokio::select! {
        result = connection.as_mut() => return log_connection_end(result),
        () = has_requested.notified() => {}
    }
    // Finish the request in progress, if any, then close.
    connection.as_mut().graceful_shutdown();
    log_connection_end(connection.await);
}

fn log_connection_end(result: Result<(), hyper::Error>) {
    if let Err(error) = result {
        tracing::debug!(%error, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn closing_takes_every_queued_connection_first() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        // Completed by the kernel, never accepted by the server.
        let clients: Vec<_> = (0..3).map(|_| std::net::TcpStream::connect(address).unwrap()).collect();
        let taken = backlog(listener);
        assert_eq!(taken.len(), clients.len());
        assert!(std::net::TcpStream::connect(address).is_err(), "the listener is closed");
    }
}
