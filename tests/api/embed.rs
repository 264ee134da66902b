use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::DateTime;

use crate::helpers::{PUBLIC_BASE_URL, TestApp, sorted_keys};

crate::on_both_backends!(
    embed_needs_no_login_and_shows_only_four_fields,
    unknown_and_malformed_embed_tokens_are_404,
    embed_last_updated_moves_with_the_ticket,
    embed_is_readable_cross_origin_but_other_routes_are_not,
);

async fn embed_needs_no_login_and_shows_only_four_fields(app: TestApp) {
    let alice = app.login("alice", "alice123").await;
    let ticket = app.create_ticket(&alice, "App Crash").await;
    let token = ticket["embed_token"].as_str().unwrap();

    let embed = app.get(&format!("/tickets/embed/{token}"), None).await;
    assert_eq!(embed.status, StatusCode::OK, "{}", embed.text);
    assert_eq!(sorted_keys(&embed.json), ["last_updated", "link", "status", "subject"]);
    assert_eq!(embed.json["subject"], "App Crash");
    assert_eq!(embed.json["status"], "Open");
    assert_eq!(embed.json["link"], format!("{PUBLIC_BASE_URL}/tickets/{token}"));
    assert_eq!(embed.json["last_updated"], ticket["updated_at"]);
    // Nothing about the people or the text leaks, under any name.
    for secret in ["details", "alice", &ticket["created_by"].to_string()] {
        assert!(!embed.text.contains(&format!("\"{secret}\"")), "{secret} leaked: {}", embed.text);
    }
}

async fn unknown_and_malformed_embed_tokens_are_404(app: TestApp) {
    let alice = app.login("alice", "alice123").await;
    let ticket = app.create_ticket(&alice, "Hidden").await;
    let id = ticket["id"].as_i64().unwrap();
    let random = uuid::Uuid::new_v4().to_string();
    let truncated = &ticket["embed_token"].as_str().unwrap()[..35];
    for token in [random.as_str(), truncated, "not-a-uuid", &id.to_string(), "%00", "..%2F..%2Fetc%2Fpasswd"]
    {
        app.get(&format!("/tickets/embed/{token}"), None).await.assert_problem(StatusCode::NOT_FOUND);
    }
}

async fn embed_last_updated_moves_with_the_ticket(app: TestApp) {
    let tokens = app.demo_tokens().await;
    let ticket = app.create_ticket(&tokens.alice, "Moving").await;
    let path = format!("/tickets/embed/{}", ticket["embed_token"].as_str().unwrap());
    let before = app.get(&path, None).await.json;

    let id = ticket["id"].as_i64().unwrap();
    app.set_status(&tokens.carol, id, "in_progress").await;
    let after = app.get(&path, None).await.json;

    assert_eq!(after["status"], "In Progress");
    let parse = |v: &serde_json::Value| DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    assert!(parse(&after["last_updated"]) > parse(&before["last_updated"]), "{before} -> {after}");
}

async fn embed_is_readable_cross_origin_but_other_routes_are_not(app: TestApp) {
    let alice = app.login("alice", "alice123").await;
    let ticket = app.create_ticket(&alice, "Cross origin").await;
    let path = format!("/tickets/embed/{}", ticket["embed_token"].as_str().unwrap());

    let request =
        Request::get(&path).header("origin", "https://chat.example.org").body(Body::empty()).unwrap();
    let response = app.send(request).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.header("access-control-allow-origin"), Some("*"));

    let preflight = Request::options(&path)
        .header("origin", "https://chat.example.org")
        .header("access-control-request-method", "GET")
        .body(Body::empty())
        .unwrap();
    let response = app.send(preflight).await;
    assert!(response.status.is_success(), "{}", response.status);
    assert_eq!(response.header("access-control-allow-origin"), Some("*"));

    let elsewhere = Request::get("/users/me")
        .header("origin", "https://chat.example.org")
        .header("authorization", format!("Bearer {alice}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.send(elsewhere).await.header("access-control-allow-origin"), None);
}
