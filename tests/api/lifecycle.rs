use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use ticketdesk::domain::Priority;

use crate::helpers::TestApp;

crate::on_both_backends!(
    status_follows_the_lifecycle_and_refusals_name_the_allowed_states,
    admins_close_from_any_state_and_closed_is_final,
    setting_the_current_status_changes_nothing,
    customers_choose_a_priority_and_staff_change_it,
    admins_unassign_with_null_and_an_empty_body_changes_nothing,
    if_match_keeps_two_agents_from_overwriting_each_other,
    pending_waits_on_the_customer_whose_reply_ends_it,
);

async fn pending_waits_on_the_customer_whose_reply_ends_it(app: TestApp) {
    let tokens = app.demo_tokens().await;
    let id = app.bobs_ticket(&tokens, "Which version?").await;
    app.set_status(&tokens.bob, id, "pending").await.assert_problem(StatusCode::CONFLICT);
    app.set_status(&tokens.bob, id, "in_progress").await;
    let waiting = app.set_status(&tokens.bob, id, "pending").await;
    assert_eq!(waiting.json["status"], "pending", "{}", waiting.text);
    let embed =
        app.get(&format!("/tickets/embed/{}", waiting.json["embed_token"].as_str().unwrap()), None).await;
    assert_eq!(embed.json["status"], "Waiting for your reply", "{}", embed.text);

    // The agent's own note or reply does not end the wait; the customer's reply does.
    let note = app.comment(&tokens.bob, id, json!({"body": "asked for the version"})).await;
    assert_eq!(note.status, StatusCode::CREATED, "{}", note.text);
    assert_eq!(app.get(&format!("/tickets/{id}"), Some(&tokens.bob)).await.json["status"], "pending");
    let answer = app.comment(&tokens.alice, id, json!({"body": "version 4.2"})).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    let ticket = app.get(&format!("/tickets/{id}"), Some(&tokens.bob)).await;
    assert_eq!(ticket.json["status"], "in_progress");
    let history = app.get(&format!("/tickets/{id}/events"), Some(&tokens.bob)).await;
    let moves: Vec<(Value, Value)> = history
        .json
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["kind"] == "status_changed")
        .map(|event| (event["from"].clone(), event["to"].clone()))
        .collect();
    assert_eq!(moves.last(), Some(&(json!("pending"), json!("in_progress"))), "{moves:?}");

    // From pending the agent may also resolve; admins may close.
    app.set_status(&tokens.bob, id, "pending").await;
    let resolved = app.set_status(&tokens.bob, id, "resolved").await;
    assert_eq!(resolved.json["status"], "resolved", "{}", resolved.text);
}

async fn status_follows_the_lifecycle_and_refusals_name_the_allowed_states(app: TestApp) {
    let tokens = app.demo_tokens().await;
    let id = app.bobs_ticket(&tokens, "Lifecycle").await;

    let skip = app.set_status(&tokens.bob, id, "resolved").await;
    let detail = skip.assert_problem(StatusCode::CONFLICT).to_owned();
    assert!(detail.contains("allowed next states: in_progress"), "{detail}");
    app.set_status(&tokens.bob, id, "closed").await.assert_problem(StatusCode::CONFLICT);

    for (next, expected) in [
        ("in_progress", "in_progress"),
        ("open", "open"),
        ("in_progress", "in_progress"),
        ("resolved", "resolved"),
        ("open", "open"),
    ] {
        let response = app.set_status(&tokens.bob, id, next).await;
        assert_eq!(response.status, StatusCode::OK, "-> {next}: {}", response.text);
        assert_eq!(response.json["status"], expected);
    }
    app.set_status(&tokens.bob, id, "in_progress").await;
    app.set_status(&tokens.bob, id, "resolved").await;
    let closed = app.set_status(&tokens.bob, id, "closed").await;
    assert_eq!(closed.json["status"], "closed", "{}", closed.text);
}

async fn admins_close_from_any_state_and_closed_is_final(app: TestApp) {
    let tokens = app.demo_tokens().await;
    for before in ["open", "in_progress"] {
        let id = app.bobs_ticket(&tokens, before).await;
        if before == "in_progress" {
            app.set_status(&tokens.bob, id, "in_progress").await;
        }
        // An agent may not close an open or in-progress ticket; an admin may.
        app.set_status(&tokens.bob, id, "closed").await.assert_problem(StatusCode::CONFLICT);
        assert_eq!(app.set_status(&tokens.carol, id, "closed").await.json["status"], "closed");
        for after in ["open", "in_progress", "resolved"] {
            let detail = app
                .set_status(&tokens.carol, id, after)
                .await
                .assert_problem(StatusCode::CONFLICT)
                .to_owned();
            assert!(detail.contains("closed ticket is final"), "{detail}");
        }
    }
}

async fn setting_the_current_status_changes_nothing(app: TestApp) {
    let carol = app.login("carol", "carol123").await;
    let alice = app.login("alice", "alice123").await;
    let ticket = app.create_ticket(&alice, "Idempotent").await;
    let id = ticket.id;
    let same = app.set_status(&carol, id, "open").await;
    assert_eq!(same.status, StatusCode::OK);
    assert_eq!(same.json["updated_at"], json!(ticket.updated_at), "nothing changed, so nothing moved");
    let events = app.get(&format!("/tickets/{id}/events"), Some(&carol)).await.json;
    assert_eq!(events.as_array().unwrap().len(), 1, "only `created`: {events}");
}

async fn customers_choose_a_priority_and_staff_change_it(app: TestApp) {
    let tokens = app.demo_tokens().await;
    let default = app.create_ticket(&tokens.alice, "Default priority").await;
    assert_eq!(default.priority, Priority::Normal);
    let body = json!({"subject": "Down!", "description": "", "priority": "urgent"});
    let urgent = app.call(Method::POST, "/tickets/", Some(&tokens.alice), Some(body)).await;
    assert_eq!(urgent.json["priority"], "urgent", "{}", urgent.text);

    let id = default.id;
    let path = format!("/tickets/{id}");
    let by_customer =
        app.call(Method::PATCH, &path, Some(&tokens.alice), Some(json!({"priority": "urgent"}))).await;
    by_customer.assert_problem(StatusCode::FORBIDDEN);
    // Bob is not assigned yet: the ticket is invisible to him.
    let by_stranger =
        app.call(Method::PATCH, &path, Some(&tokens.bob), Some(json!({"priority": "high"}))).await;
    by_stranger.assert_problem(StatusCode::NOT_FOUND);

    app.assign(&tokens.carol, id, app.user_id("bob").await).await;
    let both = app
        .call(
            Method::PATCH,
            &path,
            Some(&tokens.bob),
            Some(json!({"priority": "high", "status": "in_progress"})),
        )
        .await;
    assert_eq!(
        (both.json["priority"].clone(), both.json["status"].clone()),
        (json!("high"), json!("in_progress")),
        "{}",
        both.text
    );
    let by_admin =
        app.call(Method::PATCH, &path, Some(&tokens.carol), Some(json!({"priority": "low"}))).await;
    assert_eq!(by_admin.json["priority"], "low");
}

async fn admins_unassign_with_null_and_an_empty_body_changes_nothing(app: TestApp) {
    let tokens = app.demo_tokens().await;
    let bob = app.user_id("bob").await;
    let id = app.bobs_ticket(&tokens, "Unassign").await;

    let missing =
        app.call(Method::PATCH, &format!("/tickets/{id}/assign"), Some(&tokens.carol), Some(json!({}))).await;
    missing.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.get(&format!("/tickets/{id}"), Some(&tokens.carol)).await.json["assigned_to"], bob);

    let body = json!({"agent_id": null});
    let unassigned =
        app.call(Method::PATCH, &format!("/tickets/{id}/assign"), Some(&tokens.carol), Some(body)).await;
    assert_eq!(unassigned.status, StatusCode::OK, "{}", unassigned.text);
    assert_eq!(unassigned.json["assigned_to"], Value::Null);
    app.get(&format!("/tickets/{id}"), Some(&tokens.bob)).await.assert_problem(StatusCode::NOT_FOUND);
}

async fn if_match_keeps_two_agents_from_overwriting_each_other(app: TestApp) {
    let tokens = app.demo_tokens().await;
    let id = app.bobs_ticket(&tokens, "Contested").await;
    let path = format!("/tickets/{id}");
    let patch = |token: &str, etag: Option<&str>, body: Value| {
        let mut request = axum::http::Request::patch(&path)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json");
        if let Some(etag) = etag {
            request = request.header("if-match", etag);
        }
        app.send(request.body(axum::body::Body::from(body.to_string())).unwrap())
    };

    // Bob and Carol both load the ticket, at the same version.
    let seen_by_bob = app.get(&path, Some(&tokens.bob)).await;
    let etag = seen_by_bob.header("etag").expect("an ETag").to_owned();
    assert_eq!(app.get(&path, Some(&tokens.carol)).await.header("etag"), Some(etag.as_str()));

    let first = patch(&tokens.bob, Some(&etag), json!({"priority": "high"})).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let newer = first.header("etag").unwrap().to_owned();
    assert_ne!(newer, etag, "every change makes a new version");

    let stale = patch(&tokens.carol, Some(&etag), json!({"priority": "low"})).await;
    stale.assert_problem(StatusCode::PRECONDITION_FAILED);
    let stale_assign = app
        .send(
            axum::http::Request::patch(format!("{path}/assign"))
                .header("authorization", format!("Bearer {}", tokens.carol))
                .header("content-type", "application/json")
                .header("if-match", &etag)
                .body(axum::body::Body::from(json!({"agent_id": null}).to_string()))
                .unwrap(),
        )
        .await;
    stale_assign.assert_problem(StatusCode::PRECONDITION_FAILED);
    let now = app.get(&path, Some(&tokens.carol)).await;
    assert_eq!(
        (now.json["priority"].as_str(), now.header("etag")),
        (Some("high"), Some(newer.as_str())),
        "the stale writes changed nothing"
    );

    // With the current version, a list of tags, or `*`, the change goes through; weak tags never match.
    assert_eq!(
        patch(&tokens.carol, Some(&format!("\"x\", {newer}")), json!({"priority": "low"})).await.status,
        StatusCode::OK
    );
    assert_eq!(patch(&tokens.carol, Some("*"), json!({"priority": "urgent"})).await.status, StatusCode::OK);
    let current = app.get(&path, Some(&tokens.carol)).await.header("etag").unwrap().to_owned();
    patch(&tokens.carol, Some(&format!("W/{current}")), json!({"priority": "normal"}))
        .await
        .assert_problem(StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        patch(&tokens.carol, None, json!({"priority": "normal"})).await.status,
        StatusCode::OK,
        "If-Match is optional"
    );
}
