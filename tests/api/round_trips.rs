//! What reaches PostgreSQL: a relay between the app and the server counts the round trips (each
//! ends with a Sync or is a simple Query), and can cut every connection as a restart would.
//! PostgreSQL only; tests/sqlite_statements.rs counts SQLite's statements.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinSet;

use crate::helpers::{Backend, EmptyDatabase, NO_WEBHOOK_DELIVERY, TestApp};

#[tokio::test]
async fn a_ticket_read_and_an_embed_read_are_one_round_trip_each() {
    crate::helpers::run(one_round_trip_per_hot_read, Backend::Postgres).await;
}

#[tokio::test]
async fn connections_the_database_dropped_are_replaced_without_failing_a_request() {
    crate::helpers::run(dropped_connections_are_replaced, Backend::Postgres).await;
}

/// A TCP relay in front of PostgreSQL that counts the client's round trips after start-up, and
/// can cut every connection it carries.
struct CountingRelay {
    address: SocketAddr,
    round_trips: Arc<AtomicUsize>,
    relays: Arc<Mutex<JoinSet<()>>>,
}

impl CountingRelay {
    async fn to(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let round_trips = Arc::new(AtomicUsize::new(0));
        let relays = Arc::new(Mutex::new(JoinSet::new()));
        let (counted, accepted) = (round_trips.clone(), relays.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, counted) = (upstream.clone(), counted.clone());
                accepted.lock().await.spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else { return };
                    let (client_read, mut client_write) = client.into_split();
                    let (mut server_read, server_write) = server.into_split();
                    let answers = async { tokio::io::copy(&mut server_read, &mut client_write).await };
                    tokio::select! {
                        _ = answers => {}
                        _ = count_requests(client_read, server_write, counted) => {}
                    }
                });
            }
        });
        Self { address, round_trips, relays }
    }

    fn round_trips(&self) -> usize {
        self.round_trips.load(Ordering::SeqCst)
    }

    /// Closes every connection, as a database restart does; new ones are relayed as before.
    async fn cut_all(&self) {
        self.relays.lock().await.abort_all();
    }
}

/// Forwards the client's messages, counting each Sync ('S') and simple Query ('Q'): every round
/// trip of the extended protocol ends with a Sync (a ping is a bare one), the simple protocol's is
/// one Query. The start-up messages before them carry no type byte.
async fn count_requests(
    mut client: tokio::net::tcp::OwnedReadHalf,
    mut server: tokio::net::tcp::OwnedWriteHalf,
    round_trips: Arc<AtomicUsize>,
) -> std::io::Result<()> {
    const SSL_REQUEST: u32 = 80_877_103;
    const GSS_ENCRYPTION_REQUEST: u32 = 80_877_104;
    // Untyped: the optional SSL/GSS request, then the start-up message.
    loop {
        let length = client.read_u32().await?;
        let mut body = vec![0; length as usize - 4];
        client.read_exact(&mut body).await?;
        server.write_u32(length).await?;
        server.write_all(&body).await?;
        let code = u32::from_be_bytes(body[..4].try_into().unwrap());
        if code != SSL_REQUEST && code != GSS_ENCRYPTION_REQUEST {
            break;
        }
    }
    loop {
        let kind = client.read_u8().await?;
        let length = client.read_u32().await?;
        let mut body = vec![0; length as usize - 4];
        client.read_exact(&mut body).await?;
        if kind == b'S' || kind == b'Q' {
            round_trips.fetch_add(1, Ordering::SeqCst);
        }
        server.write_u8(kind).await?;
        server.write_u32(length).await?;
        server.write_all(&body).await?;
    }
}

/// The app through a relay: TLS off (the relay reads the protocol) and one read connection, so
/// that every read after the first runs on an already prepared statement.
async fn app_through_relay(database: &EmptyDatabase) -> (TestApp, CountingRelay) {
    let (_, upstream) = crate::outage::through(&database.url, "127.0.0.1:1".parse().unwrap());
    let relay = CountingRelay::to(upstream).await;
    let (proxied, _) = crate::outage::through(&database.url, relay.address);
    let proxied = format!("{proxied}&sslmode=disable");
    let app = TestApp::at(&proxied, &[("DATABASE_MAX_CONNECTIONS", "2"), NO_WEBHOOK_DELIVERY[0]]).await;
    (app, relay)
}

async fn one_round_trip_per_hot_read(database: EmptyDatabase) {
    let (app, relay) = app_through_relay(&database).await;
    let alice = app.login("alice", "alice123").await;
    let ticket = app.create_ticket(&alice, "Counted").await;
    let (id, embed) = (ticket.id, ticket.embed_token.to_string());
    let (read, shown) = (format!("/tickets/{id}"), format!("/tickets/embed/{embed}"));
    // The first of each prepares its statement on the connection (one more round trip, once).
    assert_eq!(app.get(&read, Some(&alice)).await.status, StatusCode::OK);
    assert_eq!(app.get(&shown, None).await.status, StatusCode::OK);
    // The write pool pings the connections it takes back, in the background: let that finish.
    tokio::time::sleep(Duration::from_millis(200)).await;

    for (path, token) in [(&read, Some(alice.as_str())), (&shown, None)] {
        let before = relay.round_trips();
        for _ in 0..10 {
            assert_eq!(app.get(path, token).await.status, StatusCode::OK);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(relay.round_trips() - before, 10, "10 × GET {path}: one round trip each");
    }
}

async fn dropped_connections_are_replaced(database: EmptyDatabase) {
    let (app, relay) = app_through_relay(&database).await;
    let alice = app.login("alice", "alice123").await;
    let id = app.create_ticket_id(&alice, "Before the restart").await;
    assert_eq!(app.get(&format!("/tickets/{id}"), Some(&alice)).await.status, StatusCode::OK);

    // Every pooled connection, read and write, dies at once; nothing pings them before use.
    relay.cut_all().await;
    let read = app.get(&format!("/tickets/{id}"), Some(&alice)).await;
    assert_eq!(read.status, StatusCode::OK, "the read is retried on a new connection: {}", read.text);
    relay.cut_all().await;
    let body = serde_json::json!({"subject": "After the restart", "description": "written once"});
    let written = app.call(Method::POST, "/tickets/", Some(&alice), Some(body)).await;
    assert_eq!(
        written.status,
        StatusCode::CREATED,
        "BEGIN is retried on a live connection: {}",
        written.text
    );
    let mine = app.get("/tickets/my", Some(&alice)).await.json;
    let subjects: Vec<&str> =
        mine.as_array().unwrap().iter().map(|t| t["subject"].as_str().unwrap()).collect();
    assert_eq!(subjects, ["After the restart", "Before the restart"], "each stored once");
}
