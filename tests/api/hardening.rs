//! Defences every response and every request get, whatever the route.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode};
use http_body::Frame;

use crate::helpers::{EmptyDatabase, ONE_SECOND_TIMEOUT, TestApp};

crate::on_both_backends!(
    every_response_carries_security_headers,
    a_client_that_never_finishes_its_body_gets_408,
    only_configured_origins_may_call_the_api_from_a_browser,
);

async fn every_response_carries_security_headers(app: TestApp) {
    let alice = app.login("alice", "alice123").await;
    let ticket = app.create_ticket(&alice, "Headers").await;
    let embed = format!("/tickets/embed/{}", ticket.embed_token);
    for (path, token) in [
        ("/tickets/my", Some(alice.as_str())),
        ("/nope", None),
        ("/docs/", None),
        ("/openapi.json", None),
        (embed.as_str(), None),
    ] {
        let response = app.get(path, token).await;
        assert_eq!(response.header("x-content-type-options"), Some("nosniff"), "{path}");
        assert_eq!(response.header("referrer-policy"), Some("no-referrer"), "{path}");
        let csp = response.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"), "{path}: {csp}");
    }
    // The embed card keeps its own policy: no script at all, and any site may frame it.
    let card =
        app.send(Request::get(&embed).header("accept", "text/html").body(Body::empty()).unwrap()).await;
    let csp = card.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors *"), "{csp}");
}

/// A request body that sends a few bytes and then nothing, forever: a slow client.
struct StalledBody(bool);

impl http_body::Body for StalledBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.0 {
            return Poll::Pending;
        }
        self.0 = true;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(br#"{"subject": "#)))))
    }
}

async fn a_client_that_never_finishes_its_body_gets_408(database: EmptyDatabase) {
    let app = TestApp::at(&database.url, ONE_SECOND_TIMEOUT).await;
    let alice = app.login("alice", "alice123").await;
    let request = Request::post("/tickets/")
        .header("authorization", format!("Bearer {alice}"))
        .header("content-type", "application/json")
        .body(Body::new(StalledBody(false)))
        .unwrap();
    let started = Instant::now();
    let response =
        tokio::time::timeout(Duration::from_secs(10), app.send(request)).await.expect("the server answered");
    response.assert_problem(StatusCode::REQUEST_TIMEOUT);
    assert!(started.elapsed() >= Duration::from_millis(900), "cut off at the configured second, not before");
    assert_eq!(app.get("/tickets/my", Some(&alice)).await.json, serde_json::json!([]), "nothing was stored");
}

const ONE_ALLOWED_ORIGIN: &[(&str, &str)] = &[("CORS_ALLOWED_ORIGINS", "https://app.example.test")];

async fn only_configured_origins_may_call_the_api_from_a_browser(database: EmptyDatabase) {
    let app = TestApp::at(&database.url, ONE_ALLOWED_ORIGIN).await;
    let preflight = |origin: &str, path: &str, headers: &str| {
        Request::options(path)
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", headers)
            .body(Body::empty())
            .unwrap()
    };
    let allowed = app.send(preflight("https://app.example.test", "/tickets/my", "authorization")).await;
    assert_eq!(allowed.header("access-control-allow-origin"), Some("https://app.example.test"));
    let allowed_headers = allowed.header("access-control-allow-headers").unwrap_or_default();
    assert!(
        allowed_headers.contains("idempotency-key") && allowed_headers.contains("if-match"),
        "{allowed_headers}"
    );
    assert_eq!(allowed.header("access-control-allow-credentials"), None, "bearer tokens, never cookies");

    let foreign = app.send(preflight("https://evil.example", "/tickets/my", "authorization")).await;
    assert_eq!(foreign.header("access-control-allow-origin"), None);
    let alice = app.login("alice", "alice123").await;
    let read = Request::get("/users/me")
        .header("origin", "https://evil.example")
        .header("authorization", format!("Bearer {alice}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.send(read).await.header("access-control-allow-origin"), None);

    // The embed route stays open to every origin, revalidation included.
    let ticket = app.create_ticket(&alice, "Embedded").await;
    let embed = format!("/tickets/embed/{}", ticket.embed_token);
    let embed_preflight = app.send(preflight("https://evil.example", &embed, "if-none-match")).await;
    assert_eq!(embed_preflight.header("access-control-allow-origin"), Some("*"));
    assert!(
        embed_preflight.header("access-control-allow-headers").unwrap_or_default().contains("if-none-match")
    );
    let polled = Request::get(&embed).header("origin", "https://evil.example").body(Body::empty()).unwrap();
    let polled = app.send(polled).await;
    assert_eq!(polled.header("access-control-allow-origin"), Some("*"));
    assert_eq!(polled.header("access-control-expose-headers"), Some("etag"));
}
