//! The database goes away and comes back: requests fail fast with 503, readiness says so, and the
//! server recovers by itself. PostgreSQL only: an embedded SQLite database is part of the process
//! and cannot become unreachable on its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinSet;

use crate::helpers::{Backend, EmptyDatabase, TestApp};

#[tokio::test]
async fn a_lost_database_is_503_at_once_and_the_server_recovers_when_it_returns() {
    crate::helpers::run(lost_database_scenario, Backend::Postgres).await;
}

/// A TCP relay in front of PostgreSQL that can cut every connection and refuse new ones.
pub(crate) struct CuttableLink {
    pub(crate) address: SocketAddr,
    up: Arc<AtomicBool>,
    relays: Arc<Mutex<JoinSet<()>>>,
}

impl CuttableLink {
    pub(crate) async fn to(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let relays = Arc::new(Mutex::new(JoinSet::new()));
        let (accept_up, accept_relays) = (up.clone(), relays.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !accept_up.load(Ordering::SeqCst) {
                    continue; // dropped: the database is "gone"
                }
                let upstream = upstream.clone();
                accept_relays.lock().await.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Self { address, up, relays }
    }

    pub(crate) async fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.relays.lock().await.abort_all();
    }

    pub(crate) fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// `url` with its `host:port` replaced by `address`, and that `host:port`.
pub(crate) fn through(url: &str, address: SocketAddr) -> (String, String) {
    let authority_start = url.find('@').map_or_else(|| url.find("://").unwrap() + 3, |at| at + 1);
    let authority_end = url[authority_start..].find(['/', '?']).map_or(url.len(), |i| authority_start + i);
    let upstream = url[authority_start..authority_end].to_owned();
    let upstream = if upstream.contains(':') { upstream } else { format!("{upstream}:5432") };
    (format!("{}{address}{}", &url[..authority_start], &url[authority_end..]), upstream)
}

async fn lost_database_scenario(database: EmptyDatabase) {
    let (_, upstream) = through(&database.url, "127.0.0.1:1".parse().unwrap());
    let link = CuttableLink::to(upstream).await;
    let (proxied, _) = through(&database.url, link.address);
    let app = TestApp::at(&proxied, &[]).await;
    let alice = app.login("alice", "alice123").await;
    let kept = app.create_ticket_id(&alice, "Before the outage").await;

    link.cut().await;
    let started = Instant::now();
    let read = app.get("/tickets/my", Some(&alice)).await;
    let detail = read.assert_problem(StatusCode::SERVICE_UNAVAILABLE);
    assert!(detail.contains("database is unavailable"), "{detail}");
    assert!(started.elapsed() < Duration::from_secs(8), "failed slowly: {:?}", started.elapsed());
    let body = serde_json::json!({"subject": "During the outage", "description": ""});
    app.call(Method::POST, "/tickets/", Some(&alice), Some(body))
        .await
        .assert_problem(StatusCode::SERVICE_UNAVAILABLE);
    app.get("/readyz", None).await.assert_problem(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(app.get("/healthz", None).await.status, StatusCode::OK, "the process itself is alive");

    link.restore();
    let restored = Instant::now();
    loop {
        let response = app.get("/tickets/my", Some(&alice)).await;
        if response.status == StatusCode::OK {
            let ids: Vec<i64> =
                response.json.as_array().unwrap().iter().map(|t| t["id"].as_i64().unwrap()).collect();
            assert_eq!(ids, [kept], "what was stored before is there; nothing half-written from during");
            break;
        }
        assert!(restored.elapsed() < Duration::from_secs(15), "not recovered: {}", response.text);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(app.get("/readyz", None).await.status, StatusCode::OK);
    app.create_ticket(&alice, "After the outage").await;
}
