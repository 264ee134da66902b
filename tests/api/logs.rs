//! What the server logs: one span per request with its id and route, and never a secret.

use std::cell::RefCell;
use std::io::Write;
use std::sync::{Arc, Mutex, Once};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{JWT_SECRET, TestApp};

crate::on_both_backends!(
    requests_are_logged_with_id_route_status_and_latency_but_never_a_secret,
    request_ids_are_echoed_or_generated
);

thread_local! {
    static CAPTURE: RefCell<Option<Arc<Mutex<Vec<u8>>>>> = const { RefCell::new(None) };
}

/// Writes to the current thread's capture buffer, if it has one; elsewhere, nowhere.
struct ThreadCapture;

impl Write for ThreadCapture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        CAPTURE.with(|capture| {
            if let Some(buffer) = capture.borrow().as_ref() {
                buffer.lock().unwrap().extend_from_slice(bytes);
            }
        });
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures, as JSON lines, everything logged on this thread (the test's single-threaded runtime
/// runs every request on it) until `finish`. One global subscriber serves every test thread: a
/// thread-local one races with tracing's global callsite cache and loses events now and then.
fn capture_logs() -> Arc<Mutex<Vec<u8>>> {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_max_level(tracing::Level::TRACE)
            .with_writer(|| ThreadCapture)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber in tests");
    });
    let buffer = Arc::new(Mutex::new(Vec::new()));
    CAPTURE.with(|capture| *capture.borrow_mut() = Some(buffer.clone()));
    buffer
}

fn finish_capture(buffer: &Arc<Mutex<Vec<u8>>>) -> String {
    CAPTURE.with(|capture| *capture.borrow_mut() = None);
    String::from_utf8(buffer.lock().unwrap().clone()).unwrap()
}

async fn requests_are_logged_with_id_route_status_and_latency_but_never_a_secret(app: TestApp) {
    let captured = capture_logs();

    let alice = app.login("alice", "alice123").await;
    let ticket = app.create_ticket(&alice, "Logged").await;
    let id = ticket.id;
    let embed_token = ticket.embed_token.to_string();
    app.get(&format!("/tickets/embed/{embed_token}"), None).await;
    app.post_form("/auth/token", "username=alice&password=wrong-guess-123").await;
    let change = json!({"current_password": "alice123", "new_password": "secret passphrase 42"});
    let changed = app.call(Method::PUT, "/users/me/password", Some(&alice), Some(change)).await;
    assert_eq!(changed.status, StatusCode::NO_CONTENT);
    let session = app.post_form("/auth/token", "username=alice&password=secret+passphrase+42").await.json;
    let fresh = session["access_token"].as_str().unwrap().to_owned();
    let request = Request::get(format!("/tickets/{id}"))
        .header("authorization", format!("Bearer {fresh}"))
        .header("x-request-id", "trace-me-123")
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.send(request).await.status, StatusCode::OK);
    // Refresh tokens travel in bodies: used, rotated and revoked, none may reach the logs.
    let refresh = json!({"refresh_token": session["refresh_token"]});
    let renewed = app.call(Method::POST, "/auth/refresh", None, Some(refresh)).await;
    assert_eq!(renewed.status, StatusCode::OK, "{}", renewed.text);
    let logout = json!({"refresh_token": renewed.json["refresh_token"]});
    assert_eq!(
        app.call(Method::POST, "/auth/logout", None, Some(logout)).await.status,
        StatusCode::NO_CONTENT
    );
    let refresh_tokens =
        [session["refresh_token"].as_str().unwrap(), renewed.json["refresh_token"].as_str().unwrap()];
    let carol = app.login("carol", "carol123").await;
    let hook = json!({"url": "https://203.0.114.7/hook", "events": ["ticket.created"]});
    let webhook = app.call(Method::POST, "/webhooks", Some(&carol), Some(hook)).await.json;
    let rotated = format!("/webhooks/{}/rotate-secret", webhook["id"]);
    let rotated = app.call(Method::POST, &rotated, Some(&carol), None).await.json;
    let webhook_secrets = [webhook["secret"].as_str().unwrap(), rotated["secret"].as_str().unwrap()];
    let logged = finish_capture(&captured);
    let lines: Vec<Value> =
        logged.lines().map(|line| serde_json::from_str(line).expect("each line is JSON")).collect();
    let finished = lines
        .iter()
        .find(|line| {
            line["span"]["request_id"] == "trace-me-123"
                && line["fields"]["message"] == "finished processing request"
        })
        .unwrap_or_else(|| panic!("no response line for the request id in:\n{logged}"));
    assert_eq!(finished["span"]["route"], "/tickets/{id}");
    assert_eq!(finished["span"]["method"], "GET");
    assert_eq!(finished["fields"]["status"], 200);
    assert!(finished["fields"]["latency"].as_str().is_some_and(|l| l.ends_with("μs")), "{finished}");

    let hash = app.store.user_credentials("alice").await.unwrap().unwrap().password_hash;
    let salt = hash.split('$').nth(4).unwrap().to_owned();
    for secret in [
        "alice123",
        "wrong-guess-123",
        "secret passphrase 42",
        "secret+passphrase",
        JWT_SECRET,
        alice.as_str(),
        fresh.as_str(),
        fresh.split('.').nth(2).unwrap(),
        embed_token.as_str(),
        salt.as_str(),
        webhook_secrets[0],
        webhook_secrets[1],
        refresh_tokens[0],
        refresh_tokens[1],
    ] {
        assert!(!logged.contains(secret), "{secret:?} was logged:\n{logged}");
    }
}

async fn request_ids_are_echoed_or_generated(app: TestApp) {
    let given = Request::get("/healthz").header("x-request-id", "abc-123").body(Body::empty()).unwrap();
    assert_eq!(app.send(given).await.header("x-request-id"), Some("abc-123"));
    let first = app.get("/healthz", None).await;
    let second = app.get("/nope", None).await;
    let (first, second) = (first.header("x-request-id").unwrap(), second.header("x-request-id").unwrap());
    assert!(
        uuid::Uuid::parse_str(first).is_ok() && uuid::Uuid::parse_str(second).is_ok(),
        "{first} {second}"
    );
    assert_ne!(first, second);
}
