//! Hostile clients on a real socket: one address holding all it can open, keep-alive clients
//! beside early refusals, and a dual-stack listener behind a trusted proxy.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use ticketdesk::server::ServeOptions;

use crate::helpers::{EmptyDatabase, TestApp};
use crate::serving::{RunningServer, read_response};

crate::on_both_backends!(
    one_address_holding_all_it_can_does_not_stop_another,
    early_refusals_close_cleanly_for_keep_alive_clients,
    a_trusted_proxy_is_recognised_on_a_dual_stack_listener,
);

/// A connection to `server` from `source`, one of the loopback addresses (127.0.0.0/8).
async fn connect_from(source: &str, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(server).await.unwrap()
}

/// Reads a response's head (a stream's body never ends).
async fn read_head(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buffer = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        while !received.windows(4).any(|window| window == b"\r\n\r\n") {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    });
    read.await.expect("a response head within 5 s");
    String::from_utf8_lossy(&received).into_owned()
}

pub const SMALL_BUDGETS: &[(&str, &str)] = &[
    ("MAX_CONNECTIONS", "20"),
    ("MAX_CONNECTIONS_PER_CLIENT", "8"),
    ("EMBED_STREAMS_MAX", "20"),
    ("EMBED_STREAMS_PER_CLIENT", "4"),
];

async fn one_address_holding_all_it_can_does_not_stop_another(database: EmptyDatabase) {
    let app = TestApp::at(&database.url, SMALL_BUDGETS).await;
    let tokens = app.demo_tokens().await;
    let ticket = app.create_ticket(&tokens.alice, "Watched by a hostile widget").await;
    let (id, embed) = (ticket.id, ticket.embed_token.to_string());
    let server = RunningServer::start(&app, ServeOptions::new(&app.config)).await;

    // The attacker, at 127.0.0.2, opens live streams until refused: it holds its four.
    let mut streams = Vec::new();
    let refused = loop {
        let mut stream = connect_from("127.0.0.2", server.address).await;
        let request = format!("GET /tickets/embed/{embed}/stream HTTP/1.1\r\nHost: t\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let head = read_head(&mut stream).await;
        // A stream's answer is HTTP/1.0, framed by the close (see `server::streams`).
        if !head.starts_with("HTTP/1.0 200") {
            break head;
        }
        assert!(head.contains("connection: close"), "a stream never turns back into keep-alive: {head}");
        streams.push(stream);
        assert!(streams.len() <= 4, "a fifth stream was granted");
    };
    assert_eq!(streams.len(), 4);
    assert!(refused.starts_with("HTTP/1.1 429") && refused.contains("live embed streams"), "{refused}");

    // Then as many ordinary connections as it can, each left idle after one request.
    let mut idle = Vec::new();
    for _ in 0..12 {
        let mut stream = connect_from("127.0.0.2", server.address).await;
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
        idle.push(stream);
    }
    let (mut held, mut refused) = (0, 0);
    for stream in &mut idle {
        let answer = read_response(stream).await;
        if answer.starts_with("HTTP/1.1 200") {
            held += 1;
        } else {
            assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
            assert!(answer.contains("this address has too many open connections"), "{answer}");
            refused += 1;
        }
    }
    assert_eq!((held, refused), (8, 4), "the streams did not count against its connections");

    // Three more addresses open sockets and never send a byte: 24 more than the 20 the server
    // holds, beside the attacker's 8.
    let mut silent = Vec::new();
    for source in ["127.0.0.3", "127.0.0.4", "127.0.0.5"] {
        for _ in 0..8 {
            silent.push(connect_from(source, server.address).await);
        }
    }

    // Meanwhile a customer elsewhere logs in, reads the ticket and watches it too.
    let base = format!("http://{}", server.address);
    let client = reqwest::Client::new();
    let login = client
        .post(format!("{base}/auth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("username=alice&password=alice123")
        .send()
        .await
        .expect("the login is answered");
    assert_eq!(login.status(), StatusCode::OK);
    let read = client
        .get(format!("{base}/tickets/{id}"))
        .bearer_auth(&tokens.alice)
        .send()
        .await
        .expect("the read is answered");
    assert_eq!(read.status(), StatusCode::OK);
    let mut own = connect_from("127.0.0.1", server.address).await;
    own.write_all(format!("GET /tickets/embed/{embed}/stream HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut own).await;
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    drop((streams, idle, silent));
}

/// A keep-alive client as most HTTP libraries are: it sends a whole request, body included, then
/// reads the answer, and sends the next request on the same connection unless the answer said
/// `Connection: close`.
struct KeepAliveClient {
    server: SocketAddr,
    connection: Option<TcpStream>,
}

impl KeepAliveClient {
    async fn send(&mut self, request: &[u8]) -> Result<String, String> {
        let connection = match &mut self.connection {
            Some(connection) => connection,
            None => self.connection.insert(TcpStream::connect(self.server).await.unwrap()),
        };
        let sent = connection.write_all(request).await;
        let answer = read_response(connection).await;
        let head = answer.split("\r\n\r\n").next().unwrap_or_default().to_ascii_lowercase();
        if answer.is_empty() || head.contains("connection: close") {
            self.connection = None;
        }
        // Many clients (Python's http.client among them) give up when the request cannot be
        // sent whole, whatever the server may have answered meanwhile.
        match sent {
            Err(error) => Err(format!("sending failed: {error}")),
            Ok(()) if answer.is_empty() => Err("the server disconnected without sending a response".into()),
            Ok(()) => Ok(answer),
        }
    }
}

async fn early_refusals_close_cleanly_for_keep_alive_clients(app: TestApp) {
    let alice = app.login("alice", "alice123").await;
    let server = RunningServer::start(&app, ServeOptions::new(&app.config)).await;
    let mut client = KeepAliveClient { server: server.address, connection: None };
    let request = |body: &[u8]| {
        let head = format!(
            "POST /tickets/ HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {alice}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        [head.as_bytes(), body].concat()
    };
    let too_big = request(&vec![b' '; 1 << 20]);
    // More than the socket buffers hold: the server closes while the client is still sending.
    let far_too_big = request(&vec![b' '; 16 << 20]);
    let ticket = request(br#"{"subject": "After a refusal", "description": "on the same client"}"#);
    let mut transport_errors = Vec::new();
    for round in 0..520 {
        let refused = if round < 500 { &too_big } else { &far_too_big };
        match client.send(refused).await {
            Ok(answer) => {
                assert!(answer.starts_with("HTTP/1.1 413"), "round {round}: {answer}");
                assert!(answer.contains("connection: close"), "round {round}: {answer}");
            }
            Err(error) => transport_errors.push(format!("round {round}, the large body: {error}")),
        }
        match client.send(&ticket).await {
            Ok(answer) => assert!(answer.starts_with("HTTP/1.1 201"), "round {round}: {answer}"),
            Err(error) => transport_errors.push(format!("round {round}, the next request: {error}")),
        }
    }
    assert!(
        transport_errors.is_empty(),
        "{} transport errors: {transport_errors:#?}",
        transport_errors.len()
    );
}

pub const BEHIND_A_PROXY: &[(&str, &str)] = &[("TRUSTED_PROXIES", "127.0.0.1")];

async fn a_trusted_proxy_is_recognised_on_a_dual_stack_listener(database: EmptyDatabase) {
    let app = TestApp::at(&database.url, BEHIND_A_PROXY).await;
    // `[::]` hears the IPv4 proxy at 127.0.0.1 as ::ffff:127.0.0.1.
    let server = RunningServer::start_at(&app, ServeOptions::new(&app.config), "[::]:0").await;
    let url = format!("http://127.0.0.1:{}/auth/token", server.address.port());
    let client = reqwest::Client::new();
    let login = |client_address: &'static str, password: &'static str| {
        client
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-forwarded-for", client_address)
            .body(format!("username=alice&password={password}"))
            .send()
    };
    for _ in 0..5 {
        assert_eq!(login("203.0.113.66", "guess").await.unwrap().status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(login("203.0.113.66", "alice123").await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    // Another user behind the same balancer is someone else.
    assert_eq!(login("198.51.100.7", "alice123").await.unwrap().status(), StatusCode::OK);
}
