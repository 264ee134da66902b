use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::TestApp;

crate::on_both_backends!(
    every_change_is_recorded_with_actor_and_before_after,
    refused_changes_record_nothing,
    rotating_the_embed_token_retires_the_old_one_at_once
);

fn summary(events: &Value) -> Vec<(String, Value, Value, Value)> {
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["actor_id"].clone(),
                e["from"].clone(),
                e["to"].clone(),
            )
        })
        .collect()
}

async fn every_change_is_recorded_with_actor_and_before_after(app: TestApp) {
    let tokens = app.demo_tokens().await;
    let (alice, bob, carol) =
        (app.user_id("alice").await, app.user_id("bob").await, app.user_id("carol").await);
    let id = app.bobs_ticket(&tokens, "History").await;
    app.set_status(&tokens.bob, id, "in_progress").await;
    app.call(Method::PATCH, &format!("/tickets/{id}"), Some(&tokens.bob), Some(json!({"priority": "high"})))
        .await;
    app.comment(&tokens.alice, id, json!({"body": "thanks"})).await;
    app.call(Method::POST, &format!("/tickets/{id}/embed-token"), Some(&tokens.alice), None).await;
    app.call(
        Method::PATCH,
        &format!("/tickets/{id}/assign"),
        Some(&tokens.carol),
        Some(json!({"agent_id": null})),
    )
    .await;

    let events = app.get(&format!("/tickets/{id}/events"), Some(&tokens.carol)).await.json;
    let s = |v: &str| json!(v);
    assert_eq!(
        summary(&events),
        [
            ("created".into(), json!(alice), Value::Null, s("open")),
            ("assigned".into(), json!(carol), Value::Null, s(&bob.to_string())),
            ("status_changed".into(), json!(bob), s("open"), s("in_progress")),
            ("priority_changed".into(), json!(bob), s("normal"), s("high")),
            ("comment_added".into(), json!(alice), Value::Null, Value::Null),
            ("embed_token_rotated".into(), json!(alice), Value::Null, Value::Null),
            ("unassigned".into(), json!(carol), s(&bob.to_string()), Value::Null),
        ]
    );
    let comment_event = &events[4];
    let comments = app.get(&format!("/tickets/{id}/comments"), Some(&tokens.alice)).await.json;
    assert_eq!(comment_event["comment_id"], comments[0]["id"]);
    let times: Vec<&str> =
        events.as_array().unwrap().iter().map(|e| e["created_at"].as_str().unwrap()).collect();
    let ticket = app.get(&format!("/tickets/{id}"), Some(&tokens.carol)).await.json;
    assert_eq!(times.last().copied(), ticket["updated_at"].as_str(), "an event's time is its change's time");
}

async fn refused_changes_record_nothing(app: TestApp) {
    let tokens = app.demo_tokens().await;
    let id = app.create_ticket_id(&tokens.alice, "Quiet").await;
    app.set_status(&tokens.carol, id, "resolved").await.assert_problem(StatusCode::CONFLICT);
    app.assign(&tokens.carol, id, app.user_id("alice").await)
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    app.set_status(&tokens.alice, id, "in_progress").await.assert_problem(StatusCode::FORBIDDEN);
    let events = app.get(&format!("/tickets/{id}/events"), Some(&tokens.carol)).await.json;
    assert_eq!(summary(&events).len(), 1, "only `created`: {events}");
}

async fn rotating_the_embed_token_retires_the_old_one_at_once(app: TestApp) {
    let tokens = app.demo_tokens().await;
    let ticket = app.create_ticket(&tokens.alice, "Leaked link").await;
    let id = ticket.id;
    let old = ticket.embed_token.to_string();
    assert_eq!(app.get(&format!("/tickets/embed/{old}"), None).await.status, StatusCode::OK);

    let rotated =
        app.call(Method::POST, &format!("/tickets/{id}/embed-token"), Some(&tokens.alice), None).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.text);
    let new = rotated.json["embed_token"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    app.get(&format!("/tickets/embed/{old}"), None).await.assert_problem(StatusCode::NOT_FOUND);
    let embed = app.get(&format!("/tickets/embed/{new}"), None).await;
    assert_eq!(embed.json["subject"], "Leaked link");
    assert!(embed.json["link"].as_str().unwrap().ends_with(&new));

    // An admin may rotate too; the assigned agent may not.
    let by_admin =
        app.call(Method::POST, &format!("/tickets/{id}/embed-token"), Some(&tokens.carol), None).await;
    assert_eq!(by_admin.status, StatusCode::OK, "{}", by_admin.text);
    let by_admin = by_admin.json["embed_token"].as_str().expect("a new embed token").to_owned();
    assert_ne!(by_admin, new);
    app.assign(&tokens.carol, id, app.user_id("bob").await).await;
    let by_agent =
        app.call(Method::POST, &format!("/tickets/{id}/embed-token"), Some(&tokens.bob), None).await;
    by_agent.assert_problem(StatusCode::FORBIDDEN);
}
