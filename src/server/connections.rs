//! The open connections of one listener: counted against `MAX_CONNECTIONS` in all and
//! `MAX_CONNECTIONS_PER_CLIENT` per address, and known by whether they are answering a request,
//! so that when the budget is spent the oldest idle one makes room for a new client (as mature
//! front servers drop idle keep-alive connections first). A connection that turns into a live
//! stream leaves this budget for the streams' own.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use tokio::sync::Notify;

use super::ClientKey;
use super::budget::{Budget, Refusal, Share};

/// How long a new connection waits for an idle one it displaced to close.
const DISPLACE_WAIT: Duration = Duration::from_secs(1);

pub struct Connections {
    budget: Arc<Budget>,
    /// Peers not capped per address: each speaks for many clients.
    trusted_proxies: Arc<[IpAddr]>,
    /// Every open connection by accept order, oldest first.
    open: Mutex<BTreeMap<u64, Arc<Connection>>>,
    next_id: AtomicU64,
    /// Woken whenever a connection closes or leaves the budget.
    freed: Notify,
}

/// One open connection, as its requests and the server loop see it.
pub struct Connection {
    id: u64,
    owner: Arc<Connections>,
    /// Its place in the budget; `None` once it became a live stream.
    share: Mutex<Option<Share>>,
    /// A request is being answered (from its head to its response head).
    busy: AtomicBool,
    /// Asked to close as soon as it is idle.
    displaced: AtomicBool,
    pub(super) close: Notify,
    /// Its first request has arrived (remembered by `Notify`'s stored permit).
    pub(super) first_request: Notify,
    seen_a_request: AtomicBool,
    /// The request being answered has a body the handler has not read to its end.
    body_unread: AtomicBool,
    streaming: AtomicBool,
    /// A live stream's body, once hyper has written its head (see `super::streams`).
    handed_over: Mutex<Option<axum::body::Body>>,
}

impl Connections {
    pub fn new(max: usize, per_client: usize, trusted_proxies: Arc<[IpAddr]>) -> Arc<Self> {
        Arc::new(Self {
            budget: Budget::new(max, per_client),
            trusted_proxies,
            open: Mutex::default(),
            next_id: AtomicU64::new(0),
            freed: Notify::new(),
        })
    }

    /// A place for a connection from `peer`. When the budget is spent, the oldest idle
    /// connection is asked to close and this one waits (briefly) for its place.
    pub async fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<OpenConnection, Refusal> {
        let client = (!super::client::is_trusted(peer, &self.trusted_proxies)).then(|| ClientKey::of(peer));
        let waited = tokio::time::timeout(DISPLACE_WAIT, async {
            loop {
                let mut freed = pin!(self.freed.notified());
                freed.as_mut().enable();
                match self.budget.take(client) {
                    Ok(share) => return Ok(self.register(share)),
                    Err(Refusal::Full) if self.make_room() => freed.await,
                    Err(refusal) => return Err(refusal),
                }
            }
        })
        .await;
        waited.unwrap_or(Err(Refusal::Full))
    }

    fn register(self: &Arc<Self>, share: Share) -> OpenConnection {
        let connection = Arc::new(Connection {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            owner: self.clone(),
            share: Mutex::new(Some(share)),
            busy: AtomicBool::new(false),
            displaced: AtomicBool::new(false),
            close: Notify::new(),
            first_request: Notify::new(),
            seen_a_request: AtomicBool::new(false),
            body_unread: AtomicBool::new(false),
            streaming: AtomicBool::new(false),
            handed_over: Mutex::new(None),
        });
        self.lock().insert(connection.id, connection.clone());
        OpenConnection(connection)
    }

    /// Asks the oldest connection that is answering nothing (and is no stream) to close. False
    /// if there is none and none asked before is still closing: no room will come soon.
    fn make_room(&self) -> bool {
        let open = self.lock();
        let idle = open.values().find(|connection| {
            !connection.busy.load(Ordering::Acquire)
                && !connection.streaming.load(Ordering::Acquire)
                && !connection.displaced.swap(true, Ordering::AcqRel)
        });
        match idle {
            Some(connection) => {
                tracing::debug!(connection = connection.id, "closing an idle connection to make room");
                connection.close.notify_one();
                true
            }
            None => open.values().any(|connection| connection.displaced.load(Ordering::Acquire)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<Connection>>> {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A connection's place among the open ones, given up when dropped (the connection closed).
pub struct OpenConnection(pub(super) Arc<Connection>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let owner = &self.0.owner;
        owner.lock().remove(&self.0.id);
        self.0.leave_budget();
        owner.freed.notify_waiters();
    }
}

impl Connection {
    /// A request's head arrived; `body` is its body as the handler will read it.
    pub(super) fn request_arrived(self: &Arc<Self>, body: Incoming) -> RequestBody {
        self.busy.store(true, Ordering::Release);
        self.body_unread.store(!body.is_end_stream(), Ordering::Release);
        if !self.seen_a_request.swap(true, Ordering::AcqRel) {
            self.first_request.notify_one();
        }
        RequestBody { inner: body, connection: self.clone() }
    }

    /// Whether a handler made this connection a live stream.
    pub(super) fn is_stream(&self) -> bool {
        self.streaming.load(Ordering::Acquire)
    }

    /// Keeps a live stream's body for the server loop, which sends it after hyper is done.
    pub(super) fn hand_over(&self, body: axum::body::Body) {
        *self.handed_over.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(body);
    }

    pub(super) fn take_handed_over(&self) -> Option<axum::body::Body> {
        self.handed_over.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }

    /// The response's head is ready. Whether the connection must close after it: the request's
    /// body was not read (what is left of it would be taken for the next request), or it is a
    /// live stream (which may not turn back into an uncounted keep-alive connection).
    pub(super) fn response_ready(&self) -> bool {
        self.busy.store(false, Ordering::Release);
        self.body_unread() || self.streaming.load(Ordering::Acquire)
    }

    /// Whether the last request's body was left (partly) unread.
    pub(super) fn body_unread(&self) -> bool {
        self.body_unread.load(Ordering::Acquire)
    }

    fn leave_budget(&self) {
        let share = self.share.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        drop(share);
    }
}

/// What a handler may do with the connection its request came on (a request extension).
#[derive(Clone)]
pub struct ConnectionHandle(pub(super) Arc<Connection>);

impl ConnectionHandle {
    /// The connection becomes a live stream: it gives its place among ordinary connections back
    /// (the stream holds one in the streams' budget instead) and closes when the stream ends.
    pub fn become_stream(&self) {
        self.0.streaming.store(true, Ordering::Release);
        self.0.leave_budget();
        self.0.owner.freed.notify_waiters();
    }
}

/// A request's body that tells its connection when it has been read to the end.
pub struct RequestBody {
    inner: Incoming,
    connection: Arc<Connection>,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.connection.body_unread.store(false, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
