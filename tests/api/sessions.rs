//! Refresh tokens: rotation, reuse detection, logout, and what retires a session.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestResponse};

crate::on_both_backends!(
    a_refresh_token_trades_once_for_new_tokens,
    a_reused_refresh_token_revokes_the_whole_session,
    two_clients_racing_with_one_refresh_token_cannot_both_win,
    logout_revokes_the_session_and_only_that_one,
    deactivation_and_password_changes_retire_refresh_tokens,
    refresh_tokens_are_stored_only_as_hashes,
);

async fn log_in(app: &TestApp, username: &str, password: &str) -> Value {
    let response = app.post_form("/auth/token", &format!("username={username}&password={password}")).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    response.json
}

async fn refresh(app: &TestApp, refresh_token: &Value) -> TestResponse {
    app.call(Method::POST, "/auth/refresh", None, Some(json!({"refresh_token": refresh_token}))).await
}

async fn a_refresh_token_trades_once_for_new_tokens(app: TestApp) {
    let session = log_in(&app, "alice", "alice123").await;
    assert!(session["refresh_token"].as_str().is_some_and(|t| t.len() >= 43), "{session}");
    assert_eq!(session["refresh_expires_in"], 14 * 86_400);

    let renewed = refresh(&app, &session["refresh_token"]).await;
    assert_eq!(renewed.status, StatusCode::OK, "{}", renewed.text);
    assert_eq!(renewed.header("cache-control"), Some("no-store"));
    assert_ne!(renewed.json["refresh_token"], session["refresh_token"], "rotated");
    let access = renewed.json["access_token"].as_str().unwrap();
    let me = app.get("/users/me", Some(access)).await;
    assert_eq!((me.status, me.json["username"].as_str()), (StatusCode::OK, Some("alice")));

    // The new one works in turn.
    assert_eq!(refresh(&app, &renewed.json["refresh_token"]).await.status, StatusCode::OK);

    for garbage in [json!("not-a-token"), json!(""), session["access_token"].clone()] {
        refresh(&app, &garbage).await.assert_problem(StatusCode::UNAUTHORIZED);
    }
}

async fn a_reused_refresh_token_revokes_the_whole_session(app: TestApp) {
    let session = log_in(&app, "alice", "alice123").await;
    let other_session = log_in(&app, "alice", "alice123").await;
    let legitimate = refresh(&app, &session["refresh_token"]).await;
    assert_eq!(legitimate.status, StatusCode::OK);

    // A thief replays the stolen, already used token: refused, and the session it belongs to dies,
    // including the token the legitimate client holds now.
    let detail =
        refresh(&app, &session["refresh_token"]).await.assert_problem(StatusCode::UNAUTHORIZED).to_owned();
    assert!(detail.contains("log in again"), "{detail}");
    refresh(&app, &legitimate.json["refresh_token"]).await.assert_problem(StatusCode::UNAUTHORIZED);
    // Its access tokens, the thief's and the legitimate client's, stop working with it.
    for access in [&session["access_token"], &legitimate.json["access_token"]] {
        assert_session_ended(&app, access.as_str().unwrap()).await;
    }
    // Another login of the same user is another session, untouched.
    assert_eq!(refresh(&app, &other_session["refresh_token"]).await.status, StatusCode::OK);
    assert_session_open(&app, other_session["access_token"].as_str().unwrap()).await;
}

/// The access token is refused on the routes that load the caller alone and on the hot ticket
/// read, which loads it with the ticket.
async fn assert_session_ended(app: &TestApp, access: &str) {
    for path in ["/users/me", "/tickets/999"] {
        let refused = app.get(path, Some(access)).await;
        let detail = refused.assert_problem(StatusCode::UNAUTHORIZED);
        assert!(detail.contains("session has ended"), "{path}: {detail}");
    }
}

async fn assert_session_open(app: &TestApp, access: &str) {
    assert_eq!(app.get("/users/me", Some(access)).await.status, StatusCode::OK);
    app.get("/tickets/999", Some(access)).await.assert_problem(StatusCode::NOT_FOUND);
}

async fn two_clients_racing_with_one_refresh_token_cannot_both_win(app: TestApp) {
    let session = log_in(&app, "alice", "alice123").await;
    let body = json!({"refresh_token": session["refresh_token"]}).to_string();
    let attempts = (0..8).map(|_| {
        let router = app.router();
        let body = body.clone();
        tokio::spawn(async move {
            let request = axum::http::Request::post("/auth/refresh")
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body))
                .unwrap();
            crate::helpers::send_to(router, request).await
        })
    });
    let mut winners = Vec::new();
    for attempt in attempts.collect::<Vec<_>>() {
        let response = attempt.await.unwrap();
        match response.status {
            StatusCode::OK => winners.push(response.json["refresh_token"].clone()),
            StatusCode::UNAUTHORIZED => {}
            other => panic!("unexpected {other}: {}", response.text),
        }
    }
    // The first to lock the token rotates it; every other finds it used.
    assert_eq!(winners.len(), 1, "one token was rotated {} times", winners.len());
    // The losers presented a used token, so whatever the winner got is revoked as well.
    for winner in winners {
        refresh(&app, &winner).await.assert_problem(StatusCode::UNAUTHORIZED);
    }
}

async fn logout_revokes_the_session_and_only_that_one(app: TestApp) {
    let session = log_in(&app, "bob", "bob123").await;
    let other = log_in(&app, "bob", "bob123").await;
    let renewed = refresh(&app, &session["refresh_token"]).await.json;

    let logout = app
        .call(Method::POST, "/auth/logout", None, Some(json!({"refresh_token": renewed["refresh_token"]})))
        .await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT, "{}", logout.text);
    refresh(&app, &renewed["refresh_token"]).await.assert_problem(StatusCode::UNAUTHORIZED);
    // Every access token of that session is refused at once, not only once it expires.
    for access in [&session["access_token"], &renewed["access_token"]] {
        assert_session_ended(&app, access.as_str().unwrap()).await;
    }
    assert_session_open(&app, other["access_token"].as_str().unwrap()).await;
    assert_eq!(refresh(&app, &other["refresh_token"]).await.status, StatusCode::OK);

    // Unknown tokens are accepted silently (RFC 7009): nothing to learn from the answer.
    let unknown = app.call(Method::POST, "/auth/logout", None, Some(json!({"refresh_token": "nope"}))).await;
    assert_eq!(unknown.status, StatusCode::NO_CONTENT);
    let missing = app.call(Method::POST, "/auth/logout", None, Some(json!({}))).await;
    missing.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
}

async fn deactivation_and_password_changes_retire_refresh_tokens(app: TestApp) {
    let carol = app.login("carol", "carol123").await;
    let bob = log_in(&app, "bob", "bob123").await;
    let bob_id = app.user_id("bob").await;
    let deactivate = json!({"active": false});
    app.call(Method::PATCH, &format!("/users/{bob_id}"), Some(&carol), Some(deactivate)).await;
    refresh(&app, &bob["refresh_token"]).await.assert_problem(StatusCode::UNAUTHORIZED);
    // Deactivation ends the sessions for good: reactivating the account does not revive them.
    let reactivate = json!({"active": true});
    app.call(Method::PATCH, &format!("/users/{bob_id}"), Some(&carol), Some(reactivate)).await;
    refresh(&app, &bob["refresh_token"]).await.assert_problem(StatusCode::UNAUTHORIZED);
    assert_eq!(
        refresh(&app, &log_in(&app, "bob", "bob123").await["refresh_token"]).await.status,
        StatusCode::OK
    );

    let alice = log_in(&app, "alice", "alice123").await;
    let change = json!({"current_password": "alice123", "new_password": "a brand new passphrase"});
    let changed =
        app.call(Method::PUT, "/users/me/password", alice["access_token"].as_str(), Some(change)).await;
    assert_eq!(changed.status, StatusCode::NO_CONTENT, "{}", changed.text);
    refresh(&app, &alice["refresh_token"]).await.assert_problem(StatusCode::UNAUTHORIZED);
}

async fn refresh_tokens_are_stored_only_as_hashes(app: TestApp) {
    let session = log_in(&app, "alice", "alice123").await;
    let token = session["refresh_token"].as_str().unwrap();
    let stored = app.texts("SELECT token_hash FROM refresh_tokens").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].len(), 64, "a SHA-256 hash in hex");
    assert!(!stored[0].contains(token) && !token.contains(&stored[0]));
}
