//! Our own HTTP/1.1 accept loop, in place of `axum::serve`, which sets none of these limits: a
//! client must send its request head within a timeout (10 s; this also closes idle keep-alive
//! connections), the head may not exceed [`MAX_HEAD_BYTES`], a response that makes no progress
//! for the send timeout (a client that stops reading) closes the connection, and connections are
//! budgeted in all and per client address (see [`connections`]): when the budget is spent the
//! oldest idle connection makes room, and only with none idle is a new one answered 503. A
//! response sent before its request's body was read says `Connection: close`, and every close
//! lingers (see [`io`]), so keep-alive clients see the answer instead of a reset. Slow, silent
//! or greedy clients cannot hold connections forever, nor one client all of them. On shutdown it
//! stops accepting, takes in the connections the kernel had queued, lets requests in flight
//! finish up to a deadline, then cuts off the rest. hyper serves each connection; hyper-util
//! adapts the axum service to it. A live stream's body is sent by the loop itself once hyper
//! has written its head: hyper would hold 16 KiB of buffers for the stream's whole life (see
//! [`streams`]).

mod budget;
mod client;
mod connections;
mod io;
mod streams;

pub use budget::{Budget, Refusal, Share};
pub use client::ClientKey;
pub use connections::ConnectionHandle;

use std::convert::Infallible;
use std::future::Future;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tower::{Service, ServiceExt};

use connections::{Connections, OpenConnection, RequestBody};

/// How the server treats connections.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Time a client has to send a request's line and headers, from when the server starts
    /// waiting for them (on a kept-alive connection, from the end of the previous response).
    pub header_read_timeout: Duration,
    /// How long writing a response may make no progress before the connection is closed.
    pub send_timeout: Duration,
    /// Connections open at once, at most (live streams have a budget of their own).
    pub max_connections: usize,
    /// Connections one client address may hold open; trusted proxies are not capped.
    pub max_connections_per_client: usize,
    /// Peers that speak for many clients (`TRUSTED_PROXIES`).
    pub trusted_proxies: Arc<[IpAddr]>,
    /// How long requests in flight may run on after shutdown begins.
    pub drain_deadline: Duration,
}

impl ServeOptions {
    pub fn new(config: &crate::config::Config) -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            send_timeout: config.send_timeout,
            max_connections: config.max_connections,
            max_connections_per_client: config.max_connections_per_client,
            trusted_proxies: config.trusted_proxies.clone().into(),
            drain_deadline: config.shutdown_timeout,
        }
    }
}

/// Request line plus headers; beyond it the connection gets a bare 431 and is closed. The API's
/// own, smaller limits answer problem+json before this one is reached (see `api::security`).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Serves `app` on `listener` until `shutdown` completes, then drains connections for up to
/// the options' deadline. Each request carries its peer's address as `ConnectInfo<SocketAddr>`
/// and its connection as a [`ConnectionHandle`].
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()>,
    options: ServeOptions,
) {
    let drain_deadline = options.drain_deadline;
    let (stop, stopping) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    let mut services = app.into_make_service_with_connect_info::<SocketAddr>();
    let connections = Connections::new(
        options.max_connections,
        options.max_connections_per_client,
        options.trusted_proxies.clone(),
    );
    // Refusals linger up to a second each; they are capped too, beyond which a connection is just
    // closed.
    let refusing = Arc::new(Semaphore::new(options.max_connections));
    let limits = (options.header_read_timeout, options.send_timeout);
    let mut connection = |stream: TcpStream, peer: SocketAddr| {
        let _ = stream.set_nodelay(true);
        let service = services.call(peer);
        let (connections, refusing, stopping) = (connections.clone(), refusing.clone(), stopping.clone());
        async move {
            match connections.admit(peer.ip()).await {
                Ok(open) => {
                    let Ok(service) = service.await;
                    // Boxed, so that a live stream's task, once hyper is done with it, keeps no
                    // room for hyper's connection.
                    let stream = Box::pin(serve_connection(stream, service, limits, open, stopping)).await;
                    if let Some((mut stream, body)) = stream
                        && let Err(error) = streams::send(&mut stream, body).await
                    {
                        tracing::debug!(%error, "a live stream's connection ended");
                    }
                }
                Err(refusal) => {
                    if let Ok(_slot) = refusing.try_acquire_owned() {
                        // Boxed: its read buffer would otherwise be part of every connection's task.
                        Box::pin(refuse(stream, refusal)).await;
                    }
                }
            }
        }
    };
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tasks.spawn(connection(stream, peer));
                }
                // Out of file descriptors and the like: wait a little instead of spinning.
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            // Reap finished connections as they go.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    // Connections the kernel completed but we had not accepted yet: closing the listener would
    // reset them, though their clients may have sent a request already. Take them all in, with
    // plain non-blocking accept calls (tokio's accept only tries when the reactor has seen the
    // listener become readable, and may not have yet), then close the listener at once.
    for (stream, peer) in backlog(listener) {
        tasks.spawn(connection(stream, peer));
    }
    let _ = stop.send(true);
    let in_flight = tasks.len();
    let drained =
        tokio::time::timeout(drain_deadline, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            connections = tasks.len(),
            of = in_flight,
            deadline = ?drain_deadline,
            "connections still busy at the shutdown deadline are cut off"
        );
        tasks.shutdown().await;
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

/// Serves one connection with hyper until it ends; a live stream's socket and body, if its last
/// answer was one (see [`streams`]).
async fn serve_connection<S>(
    stream: TcpStream,
    service: S,
    (header_read_timeout, send_timeout): (Duration, Duration),
    open: OpenConnection,
    mut stopping: watch::Receiver<bool>,
) -> Option<(io::ClientStream, Body)>
where
    S: tower::Service<hyper::Request<RequestBody>, Response = axum::response::Response, Error = Infallible>
        + Clone
        + Send
        + Unpin
        + 'static,
    S::Future: Send + Unpin + 'static,
{
    let (arrived, answered) = (open.0.clone(), open.0.clone());
    let service = service
        .map_request(move |request: hyper::Request<hyper::body::Incoming>| {
            let (mut parts, body) = request.into_parts();
            parts.extensions.insert(ConnectionHandle(arrived.clone()));
            hyper::Request::from_parts(parts, arrived.request_arrived(body))
        })
        .map_response(move |mut response: axum::response::Response| {
            if answered.response_ready() {
                response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                if answered.is_stream() && response.status() == StatusCode::OK {
                    answered.hand_over(streams::hand_over(&mut response));
                }
            }
            response
        });
    let mut connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_header_size(MAX_HEAD_BYTES)
        .serve_connection(
            TokioIo::new(io::ClientStream::new(stream, open.0.clone(), send_timeout)),
            TowerToHyperService::new(service),
        );
    let (mut closing, mut stop_seen) = (false, false);
    let ended = loop {
        tokio::select! {
            // Done without closing the socket: a live stream's body goes on without hyper.
            result = std::future::poll_fn(|cx| connection.poll_without_shutdown(cx)) => break result,
            // Displaced to make room: closes now if idle, else after the answer in progress.
            () = open.0.close.notified(), if !closing => {
                closing = true;
                std::pin::Pin::new(&mut connection).graceful_shutdown();
            }
            _ = stopping.wait_for(|stop| *stop), if !stop_seen => stop_seen = true,
            // A shutdown closes a connection at once if hyper has read nothing from it yet. That
            // is right between requests of a kept-alive connection, but a new one was accepted
            // for a request its client may have sent already: the shutdown reaches a connection
            // only once its first request has arrived (within the header timeout), so that one
            // is answered first.
            () = open.0.first_request.notified(), if stop_seen && !closing => {
                closing = true;
                std::pin::Pin::new(&mut connection).graceful_shutdown();
            }
        }
    };
    if let Err(error) = ended {
        tracing::debug!(%error, "connection ended with an error");
        return None;
    }
    let mut stream = connection.into_parts().io.into_inner();
    if let Some(body) = open.0.take_handed_over() {
        return Some((stream, body));
    }
    use tokio::io::AsyncWriteExt;
    let _ = stream.shutdown().await;
    None
}

/// Answers a connection the budget has no room for with a 503 (the server is full) or a 429
/// (this client holds its share) and closes it. The response is sent before reading anything (it
/// fits any socket buffer); then whatever the client sent is read and dropped for up to a
/// second, because closing with unread data would reset the connection and could destroy the
/// answer before the client reads it.
async fn refuse(mut stream: TcpStream, refusal: Refusal) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (status, detail) = match refusal {
        Refusal::Full => {
            (StatusCode::SERVICE_UNAVAILABLE, "the server has too many open connections; try again shortly")
        }
        Refusal::ClientFull => (
            StatusCode::TOO_MANY_REQUESTS,
            "this address has too many open connections; close some or reuse them",
        ),
    };
    tracing::warn!(%status, "refusing a connection: {detail}");
    let body = serde_json::to_string(&crate::error::Problem::new(status, detail)).unwrap_or_default();
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {}\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n",
        crate::error::PROBLEM_JSON,
        body.len()
    );
    let linger = async {
        stream.write_all(format!("{head}{body}").as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), linger).await;
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
