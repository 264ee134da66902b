//! The server loop on a real socket: slow clients, oversized heads, graceful shutdown.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use ticketdesk::server::{ServeOptions, serve};

use crate::helpers::TestApp;

crate::on_both_backends!(
    shutdown_finishes_requests_in_flight_and_closes_idle_connections,
    the_drain_deadline_cuts_off_requests_that_never_finish,
    a_client_that_stalls_in_its_headers_is_disconnected,
    a_client_silent_then_slow_has_the_header_timeout_in_all,
    oversized_request_heads_are_refused,
    a_client_that_stops_reading_is_disconnected,
    connections_beyond_the_cap_displace_idle_ones_and_busy_ones_get_503,
);

/// The app served on a real socket by the real server loop.
pub struct RunningServer {
    pub address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl RunningServer {
    pub async fn start(app: &TestApp, options: ServeOptions) -> Self {
        Self::start_at(app, options, "127.0.0.1:0").await
    }

    /// Listening on `bind` (e.g. `[::]:0`, which hears IPv4 clients as `::ffff:a.b.c.d`).
    pub async fn start_at(app: &TestApp, options: ServeOptions, bind: &str) -> Self {
        let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(
            listener,
            app.router(),
            async {
                let _ = stopped.await;
            },
            options,
        ));
        Self { address, stop: Some(stop), task }
    }

    fn shut_down(&mut self) {
        let _ = self.stop.take().unwrap().send(());
    }

    pub async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.address).await.unwrap()
    }
}

fn options(header_read_timeout: u64, drain_deadline: u64) -> ServeOptions {
    ServeOptions {
        header_read_timeout: Duration::from_secs(header_read_timeout),
        send_timeout: Duration::from_secs(10),
        max_connections: 100,
        max_connections_per_client: 100,
        trusted_proxies: Vec::new().into(),
        drain_deadline: Duration::from_secs(drain_deadline),
    }
}

/// Reads one response: the head, then as many body bytes as Content-Length says. Empty if the
/// server closed the connection first.
pub async fn read_response(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length = text[..head_end]
                .lines()
                .find_map(|line| {
                    line.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if received.len() >= head_end + 4 + length {
                return text;
            }
        }
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&received).into_owned(),
            Ok(n) => received.extend_from_slice(&buffer[..n]),
        }
    }
}

async fn shutdown_finishes_requests_in_flight_and_closes_idle_connections(app: TestApp) {
    let alice = app.login("alice", "alice123").await;
    let mut server = RunningServer::start(&app, options(5, 10)).await;

    // A request in flight: its head and half its body are sent.
    let body = r#"{"subject": "Sent during a deploy", "description": "slowly"}"#;
    let (first_half, second_half) = body.split_at(20);
    let mut in_flight = server.connect().await;
    let head = format!(
        "POST /tickets/ HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {alice}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{first_half}",
        body.len()
    );
    in_flight.write_all(head.as_bytes()).await.unwrap();
    // An idle keep-alive connection.
    let mut idle = server.connect().await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n").await.unwrap();
    assert!(read_response(&mut idle).await.starts_with("HTTP/1.1 200"));
    // A connection accepted for a request that has not arrived yet.
    let mut fresh = server.connect().await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    server.shut_down();
    // The idle connection is closed at once, and nobody new gets in.
    let closed = tokio::time::timeout(Duration::from_secs(2), read_response(&mut idle)).await;
    assert_eq!(closed.expect("the idle connection was closed"), "");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(TcpStream::connect(server.address).await.is_err(), "the listener is closed");

    // The fresh connection still gets its one request answered, then is closed.
    fresh.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n").await.unwrap();
    let answered = read_response(&mut fresh).await;
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    let closed = tokio::time::timeout(Duration::from_secs(2), read_response(&mut fresh)).await;
    assert_eq!(closed.expect("closed after its answer"), "");

    // The request in flight completes normally, with its answer.
    in_flight.write_all(second_half.as_bytes()).await.unwrap();
    let response = read_response(&mut in_flight).await;
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), &mut server.task)
        .await
        .expect("the server stopped")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(app.get("/tickets/my", Some(&alice)).await.json.as_array().unwrap().len(), 1);
}

async fn the_drain_deadline_cuts_off_requests_that_never_finish(app: TestApp) {
    let alice = app.login("alice", "alice123").await;
    let mut server = RunningServer::start(&app, options(5, 1)).await;
    let mut stalled = server.connect().await;
    let head = format!(
        "POST /tickets/ HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {alice}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"subject\""
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    server.shut_down();
    tokio::time::timeout(Duration::from_secs(5), &mut server.task)
        .await
        .expect("the server stopped")
        .unwrap();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "{took:?}");
    assert_eq!(app.get("/tickets/my", Some(&alice)).await.json, serde_json::json!([]));
}

async fn a_client_that_stalls_in_its_headers_is_disconnected(app: TestApp) {
    let server = RunningServer::start(&app, options(1, 1)).await;
    let mut slow = server.connect().await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: te").await.unwrap();
    let started = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(5), read_response(&mut slow)).await;
    assert!(outcome.is_ok(), "still connected after 5 s");
    assert!(started.elapsed() >= Duration::from_millis(800), "{:?}", started.elapsed());

    // Idle keep-alive connections are closed after the same time.
    let mut idle = server.connect().await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n").await.unwrap();
    assert!(read_response(&mut idle).await.starts_with("HTTP/1.1 200"));
    let closed = tokio::time::timeout(Duration::from_secs(5), read_response(&mut idle)).await;
    assert_eq!(closed.expect("the idle connection was closed"), "");
}

/// The first head's time runs from the connection's start, however the client splits it between
/// silence and a slow head.
async fn a_client_silent_then_slow_has_the_header_timeout_in_all(app: TestApp) {
    let server = RunningServer::start(&app, options(2, 1)).await;
    let mut slow = server.connect().await;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: te").await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(5), read_response(&mut slow)).await;
    assert_eq!(outcome.expect("still connected after 5 s"), "", "no answer to half a head");
    let lasted = started.elapsed();
    // 2 s from the start, not 2 s from the first byte (3.2 s).
    assert!(lasted >= Duration::from_millis(1800) && lasted < Duration::from_millis(2800), "{lasted:?}");
}

async fn oversized_request_heads_are_refused(app: TestApp) {
    let server = RunningServer::start(&app, options(5, 1)).await;
    let address = server.address;
    let send = |request: String| async move {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        read_response(&mut stream).await
    };
    // Within the server's hard cap: the API answers problem+json.
    let long_path = send(format!("GET /tickets/{} HTTP/1.1\r\nHost: t\r\n\r\n", "9".repeat(10_000))).await;
    assert!(long_path.starts_with("HTTP/1.1 414"), "{long_path}");
    assert!(long_path.contains("application/problem+json") && long_path.contains("8192"), "{long_path}");
    let big_headers =
        send(format!("GET /healthz HTTP/1.1\r\nHost: t\r\nX-Padding: {}\r\n\r\n", "x".repeat(20_000))).await;
    assert!(big_headers.starts_with("HTTP/1.1 431"), "{big_headers}");
    assert!(big_headers.contains("application/problem+json"), "{big_headers}");
    // Beyond it, the connection is refused before the head is even parsed.
    let huge =
        send(format!("GET /healthz HTTP/1.1\r\nHost: t\r\nX-Padding: {}\r\n\r\n", "x".repeat(70_000))).await;
    assert!(huge.starts_with("HTTP/1.1 431"), "{huge}");
}

async fn a_client_that_stops_reading_is_disconnected(app: TestApp) {
    // Long header and drain timeouts: only the send timeout can end this connection.
    let server =
        RunningServer::start(&app, ServeOptions { send_timeout: Duration::from_secs(1), ..options(60, 60) })
            .await;
    let mut greedy = server.connect().await;
    // Pipelined requests for the 1.5 MB Swagger bundle, never read: far more than socket buffers hold.
    let requests = 40;
    let request = b"GET /docs/swagger-ui-bundle.js HTTP/1.1\r\nHost: test\r\n\r\n".repeat(requests);
    greedy.write_all(&request).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Now read: what was buffered arrives, then the connection ends, well before all 40 answers.
    let mut received = 0usize;
    let mut buffer = vec![0u8; 1 << 16];
    let drained = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match greedy.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received += n,
            }
        }
    })
    .await;
    assert!(drained.is_ok(), "the connection was still open");
    let bundle = app.get("/docs/swagger-ui-bundle.js", None).await.text.len();
    assert!(bundle > 1_000_000, "{bundle}");
    assert!(received < bundle * requests / 2, "{received} bytes of {}", bundle * requests);
    // The server itself is fine.
    let mut next = server.connect().await;
    next.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n").await.unwrap();
    assert!(read_response(&mut next).await.starts_with("HTTP/1.1 200"));
}

async fn connections_beyond_the_cap_displace_idle_ones_and_busy_ones_get_503(app: TestApp) {
    let alice = app.login("alice", "alice123").await;
    let server = RunningServer::start(&app, ServeOptions { max_connections: 2, ..options(5, 1) }).await;
    let healthz = b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n";
    let mut first = server.connect().await;
    let mut second = server.connect().await;
    for open in [&mut first, &mut second] {
        open.write_all(healthz).await.unwrap();
        assert!(read_response(open).await.starts_with("HTTP/1.1 200"));
    }
    // Both stay open, idle (keep-alive): a third closes the oldest idle one and is served.
    let mut third = server.connect().await;
    third.write_all(healthz).await.unwrap();
    assert!(read_response(&mut third).await.starts_with("HTTP/1.1 200"));
    let closed = tokio::time::timeout(Duration::from_secs(3), read_response(&mut first)).await;
    assert_eq!(closed.expect("the oldest idle connection was closed"), "");
    second.write_all(healthz).await.unwrap();
    assert!(read_response(&mut second).await.starts_with("HTTP/1.1 200"), "the younger one is kept");
    drop((second, third));

    // Two connections busy with a request (its body half sent): nothing to displace, so a
    // third is answered 503 and closed.
    let head = format!(
        "POST /tickets/ HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {alice}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"subject\""
    );
    let mut busy = Vec::new();
    for _ in 0..2 {
        let mut stream = server.connect().await;
        stream.write_all(head.as_bytes()).await.unwrap();
        busy.push(stream);
    }
    wait_for_requests_in_flight(&app, 2).await;
    // Both requests have arrived, so neither connection is idle.
    let refused = answer_once_it_starts_with(&server, "HTTP/1.1 503").await;
    assert!(refused.contains("application/problem+json") && refused.contains("retry-after: 1"), "{refused}");
    assert!(refused.contains("too many open connections"), "{refused}");
    // Once one closes (the server may take a moment to see it), a new connection is served.
    drop(busy.pop());
    answer_once_it_starts_with(&server, "HTTP/1.1 200").await;
}

/// `GET /healthz` on new connections until the answer starts with `prefix`, for up to a second.
async fn answer_once_it_starts_with(server: &RunningServer, prefix: &str) -> String {
    for _ in 0..50 {
        let mut connection = server.connect().await;
        connection.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n").await.unwrap();
        let answer = read_response(&mut connection).await;
        if answer.starts_with(prefix) {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no answer starting {prefix:?}");
}

/// Waits until the app is answering `count` requests (their heads have arrived).
pub async fn wait_for_requests_in_flight(app: &TestApp, count: usize) {
    let expected = format!("\nhttp_requests_in_flight {count}\n");
    for _ in 0..200 {
        if app.metrics().await.contains(&expected) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never {count} requests in flight");
}
