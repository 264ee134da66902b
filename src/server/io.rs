//! The client's socket as hyper sees it: writes time out when the client stops reading, and a
//! close lingers so the client reads the last answer before the connection goes.

use std::future::Future;
use std::io::{self, ErrorKind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use super::connections::Connection;

/// How long a connection closing with its request's body unread keeps reading (and dropping)
/// what the client still sends. Closing a socket with unread data resets it, and a reset can
/// destroy the answer before the client reads it: a 413 sent while the client still sends its
/// body would arrive as "connection reset". nginx's `lingering_close` does the same.
pub const LINGER: Duration = Duration::from_secs(2);

/// A connection whose writes fail once they have been stuck for `send_timeout` (the client
/// stopped reading: its receive window is full) and whose shutdown sends FIN, then, if the last
/// request's body was left unread, reads and drops whatever arrives until the client closes too
/// or [`LINGER`] passes. Any write progress restarts the send clock, so a slow reader that keeps
/// reading is served; the timer is only allocated while a write waits.
pub struct ClientStream {
    stream: TcpStream,
    connection: Arc<Connection>,
    send_timeout: Duration,
    stuck: Option<Pin<Box<Sleep>>>,
    /// Set once our side is shut: the end of lingering.
    lingering: Option<Pin<Box<Sleep>>>,
}

impl ClientStream {
    pub fn new(stream: TcpStream, connection: Arc<Connection>, send_timeout: Duration) -> Self {
        Self { stream, connection, send_timeout, stuck: None, lingering: None }
    }

    /// After the inner write answered `poll`: keeps the clock running while it is pending, turns
    /// it into an error once the timeout passes, and stops the clock on any answer.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stuck = None;
            return poll;
        }
        let timeout = self.send_timeout;
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

impl AsyncRead for ClientStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientStream {
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

    /// Sends FIN, then, with a body left unread, lingers: reads and drops until the client
    /// closes, errs, or [`LINGER`] passes. Hyper shuts a connection down this way whenever it closes it after an answer.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.lingering.is_none() {
            let poll = Pin::new(&mut self.stream).poll_shutdown(cx);
            if let Err(error) = ready!(self.watch(cx, poll)) {
                return Poll::Ready(Err(error));
            }
            // Nothing the client sent is left unread: it has no answer to lose.
            if !self.connection.body_unread() {
                return Poll::Ready(Ok(()));
            }
            self.lingering = Some(Box::pin(tokio::time::sleep(LINGER)));
        }
        let mut sink = [0u8; 4096];
        loop {
            if let Some(lingering) = self.lingering.as_mut()
                && lingering.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut sink);
            match Pin::new(&mut self.stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => continue,
                // The client reset the connection: nothing left to protect.
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
