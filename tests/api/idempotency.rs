//! Idempotency-Key on ticket and comment creation: retries are safe.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestResponse, send_to};

crate::on_both_backends!(
    a_retry_with_the_same_key_gets_the_first_response_and_creates_nothing,
    the_same_key_with_another_body_is_refused,
    keys_belong_to_one_user,
    concurrent_retries_create_one_ticket,
    a_retried_comment_is_posted_once,
    keys_expire_after_a_day,
    malformed_keys_are_refused,
);

fn keyed_post(path: &str, token: &str, key: &str, body: &Value) -> Request<Body> {
    Request::post(path)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(Body::from(body.to_string()))
        .unwrap()
}

async fn submit(app: &TestApp, token: &str, key: &str, body: &Value) -> TestResponse {
    app.send(keyed_post("/tickets/", token, key, body)).await
}

async fn my_ticket_count(app: &TestApp, token: &str) -> usize {
    app.get("/tickets/my", Some(token)).await.json.as_array().unwrap().len()
}

async fn a_retry_with_the_same_key_gets_the_first_response_and_creates_nothing(app: TestApp) {
    let alice = app.login("alice", "alice123").await;
    let body = json!({"subject": "Printer on fire", "description": "really"});
    let first = submit(&app, &alice, "key-1", &body).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert_eq!(first.header("idempotent-replayed"), None);

    let retry = submit(&app, &alice, "key-1", &body).await;
    assert_eq!(retry.status, StatusCode::CREATED);
    assert_eq!(retry.json, first.json, "the same ticket, as first answered");
    assert_eq!(retry.header("location"), first.header("location"));
    assert_eq!(retry.header("content-type"), Some("application/json"));
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(my_ticket_count(&app, &alice).await, 1);

    // A new key is a new request.
    assert_eq!(submit(&app, &alice, "key-2", &body).await.status, StatusCode::CREATED);
    assert_eq!(my_ticket_count(&app, &alice).await, 2);
}

async fn the_same_key_with_another_body_is_refused(app: TestApp) {
    let alice = app.login("alice", "alice123").await;
    submit(&app, &alice, "k", &json!({"subject": "One", "description": ""})).await;
    let other = submit(&app, &alice, "k", &json!({"subject": "Two", "description": ""})).await;
    let detail = other.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(detail.contains("Idempotency-Key"), "{detail}");
    assert_eq!(my_ticket_count(&app, &alice).await, 1);
}

async fn keys_belong_to_one_user(app: TestApp) {
    let alice = app.login("alice", "alice123").await;
    let dave_id = app.add_user("dave", "dave-passphrase", ticketdesk::domain::Role::Customer).await;
    let dave = app.login("dave", "dave-passphrase").await;
    let body = json!({"subject": "Same words", "description": ""});
    let alices = submit(&app, &alice, "shared-key", &body).await;
    assert_eq!(alices.status, StatusCode::CREATED, "{}", alices.text);
    let daves = submit(&app, &dave, "shared-key", &body).await;
    assert_eq!(daves.status, StatusCode::CREATED);
    assert_eq!(daves.header("idempotent-replayed"), None, "dave never sees alice's response");
    assert_ne!(daves.json["id"], alices.json["id"]);
    assert_eq!(daves.json["created_by"], dave_id);
}

async fn concurrent_retries_create_one_ticket(app: TestApp) {
    let alice = app.login("alice", "alice123").await;
    let body = json!({"subject": "Timeout, retrying", "description": "again and again"});
    let retries: Vec<_> = (0..10)
        .map(|_| tokio::spawn(send_to(app.router(), keyed_post("/tickets/", &alice, "retry-storm", &body))))
        .collect();
    let mut ids = Vec::new();
    for retry in retries {
        let response = retry.await.unwrap();
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);
        ids.push(response.json["id"].clone());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every retry got the one ticket: {ids:?}");
    assert_eq!(my_ticket_count(&app, &alice).await, 1);
}

async fn a_retried_comment_is_posted_once(app: TestApp) {
    let alice = app.login("alice", "alice123").await;
    let ticket = app.create_ticket_id(&alice, "Chatty").await;
    let other_ticket = app.create_ticket_id(&alice, "Quiet").await;
    let path = format!("/tickets/{ticket}/comments");
    let body = json!({"body": "Any news?"});
    let first = app.send(keyed_post(&path, &alice, "c-1", &body)).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    let retry = app.send(keyed_post(&path, &alice, "c-1", &body)).await;
    assert_eq!((retry.status, &retry.json), (StatusCode::CREATED, &first.json));
    assert_eq!(app.get(&path, Some(&alice)).await.json.as_array().unwrap().len(), 1);

    // The key names the request, path included: the same body on another ticket is another request.
    let elsewhere =
        app.send(keyed_post(&format!("/tickets/{other_ticket}/comments"), &alice, "c-1", &body)).await;
    elsewhere.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
}

async fn keys_expire_after_a_day(app: TestApp) {
    let alice = app.login("alice", "alice123").await;
    let body = json!({"subject": "Yesterday", "description": ""});
    submit(&app, &alice, "old-key", &body).await;
    let a_day_ago = (chrono::Utc::now() - chrono::TimeDelta::hours(25)).to_rfc3339();
    app.execute(&format!("UPDATE idempotency_keys SET created_at = '{a_day_ago}'")).await;
    let again = submit(&app, &alice, "old-key", &body).await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.header("idempotent-replayed"), None, "a forgotten key is a new request");
    assert_eq!(my_ticket_count(&app, &alice).await, 2);
}

async fn malformed_keys_are_refused(app: TestApp) {
    let alice = app.login("alice", "alice123").await;
    let body = json!({"subject": "Keyed", "description": ""});
    for key in ["", "has space", &"k".repeat(256)] {
        let response = submit(&app, &alice, key, &body).await;
        let detail = response.assert_problem(StatusCode::BAD_REQUEST);
        assert!(detail.contains("Idempotency-Key"), "{key:?}: {detail}");
    }
    let twice = Request::post("/tickets/")
        .header("authorization", format!("Bearer {alice}"))
        .header("content-type", "application/json")
        .header("idempotency-key", "a")
        .header("idempotency-key", "b")
        .body(Body::from(body.to_string()))
        .unwrap();
    app.send(twice).await.assert_problem(StatusCode::BAD_REQUEST);
    assert_eq!(my_ticket_count(&app, &alice).await, 0);
}
