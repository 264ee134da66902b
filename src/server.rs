//! Our own HTTP/1.1 accept loop, in place of `axum::serve`, which sets none of these limits: a
//! client must send its request head within a timeout (10 s; this also closes idle keep-alive
//! connections), the head may not exceed [`MAX_HEAD_BYTES`], a response that makes no progress
//! for the send timeout (a client that stops reading) closes the connection, and at most
//! `max_connections` are open at once (beyond it: a 503 and close). Slow, silent or greedy
//! clients cannot hold connections forever. On shutdown it stops accepting, takes in the
//! connections the kernel had queued, lets requests in flight finish up to a deadline, then cuts
//! off the rest. hyper serves each connection; hyper-util adapts the axum service to it and
//! shuts the connections down gracefully.

use std::future::Future;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use std::convert::Infallible;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Sleep;
use tower::{Service, ServiceExt};

/// How the server treats connections.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// Time a client has to send a request's line and headers, from when the server starts
    /// waiting for them (on a kept-alive connection, from the end of the previous response).
    pub header_read_timeout: Duration,
    /// How long writing a response may make no progress before the connection is closed.
    pub send_timeout: Duration,
    /// Connections open at once, at most.
    pub max_connections: usize,
    /// How long requests in flight may run on after shutdown begins.
    pub drain_deadline: Duration,
}

impl ServeOptions {
    pub fn new(config: &crate::config::Config) -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            send_timeout: config.send_timeout,
            max_connections: config.max_connections,
            drain_deadline: config.shutdown_timeout,
        }
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
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    let mut services = app.into_make_service_with_connect_info::<SocketAddr>();
    let open = Arc::new(Semaphore::new(options.max_connections));
    // Refusals linger up to a second each; they are capped too, beyond which a connection is just
    // closed.
    let refusing = Arc::new(Semaphore::new(options.max_connections));
    let mut connection = |stream: TcpStream, peer, watcher: Watcher| {
        let _ = stream.set_nodelay(true);
        let service = services.call(peer);
        let (open, refusing) = (open.clone(), refusing.clone());
        async move {
            if let Ok(_slot) = open.try_acquire_owned() {
                let Ok(service) = service.await;
                serve_connection(stream, service, options, watcher).await;
            } else if let Ok(_slot) = refusing.try_acquire_owned() {
                refuse(stream).await;
            }
        }
    };
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(connection(stream, peer, graceful.watcher()));
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
        connections.spawn(connection(stream, peer, graceful.watcher()));
    }
    let in_flight = connections.len();
    let drained = tokio::time::timeout(drain_deadline, async {
        graceful.shutdown().await;
        while connections.join_next().await.is_some() {}
    })
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

async fn serve_connection<S>(stream: TcpStream, service: S, options: ServeOptions, watcher: Watcher)
where
    S: tower::Service<hyper::Request<Incoming>, Response = axum::response::Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let first_request = Arc::new(Notify::new());
    let arrived = first_request.clone();
    let service = TowerToHyperService::new(service.map_request(move |request| {
        arrived.notify_one();
        request
    }));
    let mut connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_header_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(SendTimeout::new(stream, options.send_timeout)), service);
    // A shutdown closes a connection at once if hyper has read nothing from it yet. That is right
    // between requests of a kept-alive connection, but a new one was accepted for a request its
    // client may have sent already: the connection comes under the shutdown's watch only once its
    // first request has arrived (within the header timeout), so that one is answered first.
    tokio::select! {
        result = &mut connection => return log_connection_end(result),
        () = first_request.notified() => {}
    }
    log_connection_end(watcher.watch(connection).await);
}

/// Answers a connection beyond `max_connections` with a 503 and closes it. The response is sent
/// before reading anything (it fits any socket buffer); then whatever the client sent is read
/// and dropped for up to a second, because closing with unread data would reset the connection
/// and could destroy the answer before the client reads it.
async fn refuse(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tracing::warn!("refusing a connection: MAX_CONNECTIONS are open");
    let body = serde_json::to_string(&crate::error::Problem::new(
        hyper::StatusCode::SERVICE_UNAVAILABLE,
        "the server has too many open connections; try again shortly",
    ))
    .unwrap_or_default();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: {}\r\nretry-after: 1\r\n\
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

/// A connection whose writes fail once they have been stuck for `timeout`: the client stopped
/// reading (its receive window is full). Any progress restarts the clock, so a slow reader that
/// keeps reading is served; the timer is only allocated while a write waits.
struct SendTimeout {
    stream: TcpStream,
    timeout: Duration,
    stuck: Option<Pin<Box<Sleep>>>,
}

impl SendTimeout {
    fn new(stream: TcpStream, timeout: Duration) -> Self {
        Self { stream, timeout, stuck: None }
    }

    /// After the inner write answered `poll`: keeps the clock running while it is pending, turns
    /// it into an error once the timeout passes, and stops the clock on any answer.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stuck = None;
            return poll;
        }
        let timeout = self.timeout;
        let stuck = self.stuck.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stuck.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                ErrorKind::TimedOut,
                "the client read nothing for the send timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for SendTimeout {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendTimeout {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.stream).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.stream).poll_shutdown(cx);
        self.watch(cx, poll)
    }
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
