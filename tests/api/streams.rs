//! The live embed stream: the view now, then each change (from any server), `gone` when the
//! token is rotated, a cap on open streams, and recovery after the database was away.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use sqlx::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use ticketdesk::server::ServeOptions;

use crate::helpers::{Backend, EmptyDatabase, TestApp};
use crate::outage::{CuttableLink, through};
use crate::serving::{RunningServer, read_response};

crate::on_both_backends!(
    the_stream_shows_the_ticket_then_each_change_then_gone,
    a_stream_on_a_socket_is_sent_by_the_loop_and_freed_when_its_client_goes,
    unknown_tokens_are_404_and_open_streams_are_capped,
    a_stream_ends_after_its_lifetime,
);

#[tokio::test]
async fn a_change_on_another_server_reaches_the_stream_within_a_second() {
    crate::helpers::run(change_on_another_server, Backend::Postgres).await;
}

#[tokio::test]
async fn a_stream_catches_up_after_the_database_was_away() {
    crate::helpers::run(stream_after_an_outage, Backend::Postgres).await;
}

#[tokio::test]
async fn only_changes_of_watched_tickets_are_announced() {
    crate::helpers::run(only_watched_tickets_are_announced, Backend::Postgres).await;
}

#[tokio::test]
async fn a_stream_opened_during_a_write_sees_that_write() {
    crate::helpers::run(stream_opened_during_a_write, Backend::Postgres).await;
}

#[tokio::test]
async fn watches_are_renewed_and_lapsed_ones_recorded_again() {
    crate::helpers::run(watches_renewed, Backend::Postgres).await;
}

/// One server-sent event.
#[derive(Debug)]
struct SseEvent {
    event: Option<String>,
    data: String,
}

impl SseEvent {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {}", self.data))
    }
}

/// An open `text/event-stream` response, read event by event.
struct EventStream {
    body: Body,
    buffer: String,
}

impl EventStream {
    async fn open(app: &TestApp, token: &str) -> Result<Self, crate::helpers::TestResponse> {
        let request = Request::get(format!("/tickets/embed/{token}/stream")).body(Body::empty()).unwrap();
        let response = app.router().oneshot(request).await.unwrap();
        if response.status() != StatusCode::OK {
            let (parts, body) = response.into_parts();
            let text = String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap();
            let json = serde_json::from_str(&text).unwrap_or(Value::Null);
            return Err(crate::helpers::TestResponse {
                status: parts.status,
                headers: parts.headers,
                text,
                json,
            });
        }
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert_eq!(content_type, "text/event-stream");
        assert_eq!(response.headers()["cache-control"], "no-store");
        Ok(Self { body: response.into_body(), buffer: String::new() })
    }

    /// The next event within `within` (keep-alive comments skipped); `None` if the stream ended.
    async fn next(&mut self, within: Duration) -> Option<SseEvent> {
        tokio::time::timeout(within, self.next_event())
            .await
            .unwrap_or_else(|_| panic!("no event within {within:?}; buffered: {:?}", self.buffer))
    }

    async fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(event) = SseEvent::take(&mut self.buffer) {
                return Some(event);
            }
            let frame = self.body.frame().await?.expect("the stream's body does not fail");
            if let Ok(bytes) = frame.into_data() {
                self.buffer.push_str(std::str::from_utf8(&bytes).unwrap());
            }
        }
    }
}

impl SseEvent {
    /// Takes the first whole event out of `buffer`, dropping comments before it.
    fn take(buffer: &mut String) -> Option<SseEvent> {
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut event = SseEvent { event: None, data: String::new() };
            for line in block.lines() {
                if let Some(name) = line.strip_prefix("event:") {
                    event.event = Some(name.trim().to_owned());
                } else if let Some(data) = line.strip_prefix("data:") {
                    event.data.push_str(data.trim_start());
                }
            }
            if event.event.is_some() || !event.data.is_empty() {
                return Some(event);
            }
        }
        None
    }
}

/// A stream read off a real socket, as a browser's `EventSource` gets it: the head, then the
/// body until the server closes the connection.
struct SocketStream {
    socket: TcpStream,
    received: Vec<u8>,
}

impl SocketStream {
    /// Sends the request, after `before` (earlier requests on the same connection, whose answers
    /// are read and dropped); the stream's head, and the connection to read on.
    async fn open(server: &RunningServer, token: &str, before: usize) -> (String, Self) {
        let mut socket = server.connect().await;
        for _ in 0..before {
            socket.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
            assert!(read_response(&mut socket).await.starts_with("HTTP/1.1 200"));
        }
        let request = format!("GET /tickets/embed/{token}/stream HTTP/1.1\r\nHost: t\r\n\r\n");
        socket.write_all(request.as_bytes()).await.unwrap();
        let mut stream = Self { socket, received: Vec::new() };
        let head_end = loop {
            if let Some(end) = stream.received.windows(4).position(|window| window == b"\r\n\r\n") {
                break end + 4;
            }
            assert!(stream.read_more().await, "closed before its head: {:?}", stream.received);
        };
        let head = String::from_utf8(stream.received.drain(..head_end).collect()).unwrap();
        (head, stream)
    }

    async fn read_more(&mut self) -> bool {
        let mut buffer = [0u8; 4096];
        let read = tokio::time::timeout(Duration::from_secs(5), self.socket.read(&mut buffer)).await;
        match read.expect("the server sent nothing for 5 s") {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.received.extend_from_slice(&buffer[..n]);
                true
            }
        }
    }

    /// The next event; `None` once the server closed the connection.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            let mut text = String::from_utf8(self.received.clone()).unwrap();
            if let Some(event) = SseEvent::take(&mut text) {
                self.received = text.into_bytes();
                return Some(event);
            }
            if !self.read_more().await {
                assert!(self.received.is_empty(), "closed mid-event: {:?}", self.received);
                return None;
            }
        }
    }
}

async fn the_stream_shows_the_ticket_then_each_change_then_gone(app: TestApp) {
    let tokens = app.demo_tokens().await;
    let ticket = app.create_ticket(&tokens.alice, "Streamed").await;
    let (id, token) = (ticket.id, &ticket.embed_token.to_string());
    let mut stream = EventStream::open(&app, token).await.unwrap();

    let first = stream.next(Duration::from_secs(2)).await.unwrap();
    assert_eq!(first.event, None);
    let polled = app.get(&format!("/tickets/embed/{token}"), None).await.json;
    assert_eq!(first.json(), polled, "exactly the embed's view");
    assert_eq!(polled["status"], "Open");

    app.assign(&tokens.carol, id, app.user_id("bob").await).await;
    app.set_status(&tokens.bob, id, "in_progress").await;
    let mut latest = stream.next(Duration::from_secs(1)).await.unwrap().json();
    while latest["status"] != "In Progress" {
        latest = stream.next(Duration::from_secs(1)).await.unwrap().json();
    }
    assert_eq!(latest, app.get(&format!("/tickets/embed/{token}"), None).await.json);

    // Staff-only changes move nothing the embed shows: the next event is the public change after.
    let note = json!({"body": "psst", "internal": true});
    let noted = app.comment(&tokens.bob, id, note).await;
    assert_eq!(noted.status, StatusCode::CREATED, "{}", noted.text);
    assert_eq!(app.set_status(&tokens.bob, id, "resolved").await.status, StatusCode::OK);
    let next = stream.next(Duration::from_secs(1)).await.unwrap().json();
    assert_eq!(next["status"], "Resolved", "the note showed nothing: {next}");
    assert_eq!(next, app.get(&format!("/tickets/embed/{token}"), None).await.json);

    app.call(Method::POST, &format!("/tickets/{id}/embed-token"), Some(&tokens.alice), None).await;
    let gone = stream.next(Duration::from_secs(1)).await.unwrap();
    assert_eq!(gone.event.as_deref(), Some("gone"), "{gone:?}");
    assert!(stream.next(Duration::from_secs(1)).await.is_none(), "the stream ends after gone");
    let old = EventStream::open(&app, token).await.err().expect("the old token is refused");
    old.assert_problem(StatusCode::NOT_FOUND);
}

pub const ONE_STREAM: &[(&str, &str)] = &[("EMBED_STREAMS_MAX", "1")];

async fn unknown_tokens_are_404_and_open_streams_are_capped(database: EmptyDatabase) {
    let app = TestApp::at(&database.url, ONE_STREAM).await;
    for token in ["9f40cb91-6a0e-4b7e-9d3c-2f1e5a7b8c90", "abc"] {
        EventStream::open(&app, token).await.err().unwrap().assert_problem(StatusCode::NOT_FOUND);
    }
    let alice = app.login("alice", "alice123").await;
    let ticket = app.create_ticket(&alice, "Popular").await;
    let token = &ticket.embed_token.to_string();
    let mut first = EventStream::open(&app, token).await.unwrap();
    first.next(Duration::from_secs(2)).await.unwrap();
    let refused = EventStream::open(&app, token).await.err().expect("over the cap");
    let detail = refused.assert_problem(StatusCode::SERVICE_UNAVAILABLE);
    assert!(detail.contains("poll"), "{detail}");
    let metrics = app.metrics().await;
    assert!(metrics.contains("\nembed_streams_open 1\n"), "{metrics}");
    assert!(metrics.contains("\nembed_streams_max 1\n"), "{metrics}");

    drop(first);
    for _ in 0..100 {
        if app.metrics().await.contains("\nembed_streams_open 0\n") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut again = EventStream::open(&app, token).await.expect("a closed stream frees its place");
    again.next(Duration::from_secs(2)).await.unwrap();
}

/// On a real socket, hyper writes a stream's head and the server loop the rest
/// (`server::streams`): an HTTP/1.0 answer framed by the close, whether the stream is the
/// connection's first request or follows others on it; a client that goes gives its place back
/// at once.
async fn a_stream_on_a_socket_is_sent_by_the_loop_and_freed_when_its_client_goes(database: EmptyDatabase) {
    let app = TestApp::at(&database.url, ONE_STREAM).await;
    let server = RunningServer::start(&app, ServeOptions::new(&app.config)).await;
    let tokens = app.demo_tokens().await;
    let ticket = app.create_ticket(&tokens.alice, "On the wire").await;
    let token = ticket.embed_token.to_string();

    // A refusal is an ordinary answer, with its length, and the connection stays usable.
    let mut socket = server.connect().await;
    for _ in 0..2 {
        let unknown =
            "GET /tickets/embed/9f40cb91-6a0e-4b7e-9d3c-2f1e5a7b8c90/stream HTTP/1.1\r\nHost: t\r\n\r\n";
        socket.write_all(unknown.as_bytes()).await.unwrap();
        let answer = read_response(&mut socket).await;
        assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"), "{answer}");
        let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
        assert_eq!(serde_json::from_str::<Value>(body).unwrap()["status"], 404);
    }

    // After two other requests on its connection, as a browser reusing a kept-alive one sends it.
    let (head, mut stream) = SocketStream::open(&server, &token, 2).await;
    assert!(head.starts_with("HTTP/1.0 200 OK\r\n"), "{head}");
    for line in ["content-type: text/event-stream", "cache-control: no-store", "connection: close"] {
        assert!(head.contains(&format!("\r\n{line}\r\n")), "{line} in {head}");
    }
    assert!(!head.contains("content-length") && !head.contains("transfer-encoding"), "{head}");
    let first = stream.next().await.unwrap();
    assert_eq!(first.json(), app.get(&format!("/tickets/embed/{token}"), None).await.json);
    app.set_status(&tokens.carol, ticket.id, "closed").await;
    assert_eq!(stream.next().await.unwrap().json()["status"], "Closed");

    // Only one stream may be open: the client that goes must give its place back by itself (not
    // at the next keep-alive comment, 15 s later).
    drop(stream);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut stream = loop {
        let (head, stream) = SocketStream::open(&server, &token, 0).await;
        if head.starts_with("HTTP/1.0 200 ") {
            break stream;
        }
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        assert!(std::time::Instant::now() < deadline, "the closed stream still holds its place");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    stream.next().await.unwrap();
    app.call(Method::POST, &format!("/tickets/{}/embed-token", ticket.id), Some(&tokens.alice), None).await;
    assert_eq!(stream.next().await.unwrap().event.as_deref(), Some("gone"));
    assert!(stream.next().await.is_none(), "the connection closes after gone");
}

async fn change_on_another_server(database: EmptyDatabase) {
    let app = TestApp::at(&database.url, &[]).await;
    let other = app.replica().await;
    let tokens = app.demo_tokens().await;
    let ticket = app.create_ticket(&tokens.alice, "Seen everywhere").await;
    let (id, token) = (ticket.id, &ticket.embed_token.to_string());
    let mut stream = EventStream::open(&app, token).await.unwrap();
    stream.next(Duration::from_secs(2)).await.unwrap();

    let body = json!({"status": "closed"});
    let changed = other.call(Method::PATCH, &format!("/tickets/{id}"), Some(&tokens.carol), Some(body)).await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    let seen = stream.next(Duration::from_secs(1)).await.unwrap();
    assert_eq!(seen.json()["status"], "Closed");

    other.call(Method::POST, &format!("/tickets/{id}/embed-token"), Some(&tokens.alice), None).await;
    let gone = stream.next(Duration::from_secs(1)).await.unwrap();
    assert_eq!(gone.event.as_deref(), Some("gone"));
}

async fn stream_after_an_outage(database: EmptyDatabase) {
    let (_, upstream) = through(&database.url, "127.0.0.1:1".parse().unwrap());
    let link = CuttableLink::to(upstream).await;
    let (proxied, _) = through(&database.url, link.address);
    let app = TestApp::at(&proxied, &[]).await;
    let other = TestApp::at(&database.url, &[]).await;
    let tokens = other.demo_tokens().await;
    let ticket = other.create_ticket(&tokens.alice, "Through an outage").await;
    let (id, token) = (ticket.id, &ticket.embed_token.to_string());
    let mut stream = EventStream::open(&app, token).await.unwrap();
    stream.next(Duration::from_secs(2)).await.unwrap();

    // The stream's server loses the database; meanwhile the ticket changes elsewhere, and the
    // notification of it never reaches that server.
    link.cut().await;
    other.set_status(&tokens.carol, id, "closed").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    link.restore();
    // Listening again, it reads what it may have missed.
    let seen = stream.next(Duration::from_secs(10)).await.unwrap();
    assert_eq!(seen.json()["status"], "Closed");
}

pub const ONE_SECOND_STREAMS: &[(&str, &str)] = &[("EMBED_STREAM_MAX_SECS", "1")];

async fn a_stream_ends_after_its_lifetime(database: EmptyDatabase) {
    let app = TestApp::at(&database.url, ONE_SECOND_STREAMS).await;
    let alice = app.login("alice", "alice123").await;
    let ticket = app.create_ticket(&alice, "Watched for a while").await;
    let started = std::time::Instant::now();
    let mut stream = EventStream::open(&app, &ticket.embed_token.to_string()).await.unwrap();
    stream.next(Duration::from_secs(2)).await.expect("the view as it is");
    assert!(stream.next(Duration::from_secs(3)).await.is_none(), "the stream ends by itself");
    let lasted = started.elapsed();
    // Its lifetime less up to a tenth, so streams opened together do not reconnect together.
    assert!(lasted >= Duration::from_millis(850) && lasted < Duration::from_millis(1500), "{lasted:?}");
    let metrics = app.metrics().await;
    assert!(metrics.contains("\nembed_streams_open 0\n"), "its place is given back: {metrics}");
}

/// Gives the app's tickets ids no other test's tickets have: NOTIFY channels belong to the whole
/// database, which every test's schema shares. Returns the next id.
async fn unique_ticket_ids(app: &TestApp) -> i64 {
    let first = i64::try_from(uuid::Uuid::new_v4().as_u64_pair().0 >> 20).unwrap() + 1;
    app.execute(&format!("ALTER TABLE tickets ALTER COLUMN id RESTART WITH {first}")).await;
    first
}

async fn only_watched_tickets_are_announced(database: EmptyDatabase) {
    let app = TestApp::at(&database.url, &[]).await;
    unique_ticket_ids(&app).await;
    let tokens = app.demo_tokens().await;
    let unwatched = app.create_ticket(&tokens.alice, "Nobody watches").await.id;
    let watched = app.create_ticket(&tokens.alice, "Watched").await;
    let mut listener = sqlx::postgres::PgListener::connect(&database.url).await.unwrap();
    listener.listen("ticketdesk_tickets").await.unwrap();
    let mut stream = EventStream::open(&app, &watched.embed_token.to_string()).await.unwrap();
    stream.next(Duration::from_secs(2)).await.unwrap();
    let recorded = app.texts("SELECT ticket_id::text FROM embed_watches").await;
    assert_eq!(recorded, vec![watched.id.to_string()]);

    // Notifications arrive in commit order: the first of these two tickets' is the watched one's.
    for id in [unwatched, watched.id] {
        assert_eq!(app.set_status(&tokens.carol, id, "closed").await.status, StatusCode::OK);
    }
    let first = loop {
        let notification =
            tokio::time::timeout(Duration::from_secs(2), listener.recv()).await.unwrap().unwrap();
        let id: i64 = notification.payload().parse().unwrap();
        if id == unwatched || id == watched.id {
            break id;
        }
    };
    assert_eq!(first, watched.id, "the unwatched ticket's change was announced");
    assert_eq!(stream.next(Duration::from_secs(1)).await.unwrap().json()["status"], "Closed");
}

/// A write in progress when a stream opens may have looked for watches before the stream's was
/// recorded: the stream must still show it, either in its first view or as a change.
async fn stream_opened_during_a_write(database: EmptyDatabase) {
    let app = TestApp::at(&database.url, &[]).await;
    let tokens = app.demo_tokens().await;
    let ticket = app.create_ticket(&tokens.alice, "Changing as it is opened").await;
    let mut writer = sqlx::PgConnection::connect(&database.url).await.unwrap();
    sqlx::raw_sql("BEGIN").execute(&mut writer).await.unwrap();
    sqlx::query("UPDATE tickets SET status = 'closed', updated_at = now() WHERE id = $1")
        .bind(ticket.id)
        .execute(&mut writer)
        .await
        .unwrap();

    let opening = tokio::spawn({
        let router = app.router();
        let token = ticket.embed_token;
        async move {
            let request = Request::get(format!("/tickets/embed/{token}/stream")).body(Body::empty()).unwrap();
            router.oneshot(request).await.unwrap()
        }
    });
    // Commit once the stream waits for the write (or has opened without waiting, which shows the
    // view from before it).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !opening.is_finished() && std::time::Instant::now() < deadline {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%embed_watches%'",
        )
        .fetch_one(&mut writer)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sqlx::raw_sql("COMMIT").execute(&mut writer).await.unwrap();
    let response = opening.await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = EventStream { body: response.into_body(), buffer: String::new() };
    let mut shown = stream.next(Duration::from_secs(2)).await.unwrap().json();
    if shown["status"] != "Closed" {
        shown = stream.next(Duration::from_secs(2)).await.unwrap().json();
    }
    assert_eq!(shown["status"], "Closed");
}

async fn watches_renewed(database: EmptyDatabase) {
    use ticketdesk::store::watches::Watches;
    let app = TestApp::at(&database.url, &[]).await;
    let tokens = app.demo_tokens().await;
    let (followed, stopped) = (app.create_ticket_id(&tokens.alice, "Followed").await, 999_999);
    let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
    let watches = std::sync::Arc::new(Watches::default());
    let (mut watch, recorded) = watches.follow(followed);
    recorded.set(()).unwrap();
    let now = chrono::Utc::now();
    // The followed ticket's watch has lapsed and was deleted by some server; a stopped server's
    // watch has lapsed and is still there.
    app.execute(&format!("INSERT INTO embed_watches VALUES ({stopped}, now() - interval '1 minute')")).await;

    ticketdesk::store::renew_watches(&pool, &watches, now).await.unwrap();
    let rows = app
        .texts("SELECT ticket_id || ' ' || (expires_at > now() + interval '60 s') FROM embed_watches")
        .await;
    assert_eq!(rows, vec![format!("{followed} true")], "renewed for the lifetime; the lapsed one deleted");
    tokio::time::timeout(Duration::from_secs(1), watch.changed()).await.expect("recorded again: read afresh");

    ticketdesk::store::renew_watches(&pool, &watches, now).await.unwrap();
    let woken = tokio::time::timeout(Duration::ZERO, watch.changed()).await;
    assert!(woken.is_err(), "a watch renewed in place wakes nobody");
}
