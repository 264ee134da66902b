use axum::http::{Method, StatusCode};
use serde_json::json;
use ticketdesk::domain::Role;

use crate::helpers::TestApp;

crate::on_both_backends!(
    every_role_against_every_route,
    customer_cannot_see_another_customers_ticket,
    agent_sees_only_tickets_assigned_to_them,
    invisible_and_missing_tickets_answer_alike,
);

/// Alice's ticket, assigned to bob; dave is another customer, erin another agent.
async fn every_role_against_every_route(app: TestApp) {
    app.add_user("dave", "dave-password", Role::Customer).await;
    let erin_id = app.add_user("erin", "erin-password", Role::Agent).await;
    let bob_id = app.user_id("bob").await;
    let tokens = app.demo_tokens().await;
    let dave = app.login("dave", "dave-password").await;
    let erin = app.login("erin", "erin-password").await;
    let ticket = app.create_ticket(&tokens.alice, "Matrix").await;
    let id = ticket.id;
    let embed_token = ticket.embed_token.to_string();
    app.assign(&tokens.carol, id, bob_id).await;

    let callers: [(&str, Option<&str>); 6] = [
        ("alice", Some(&tokens.alice)),
        ("dave", Some(&dave)),
        ("bob", Some(&tokens.bob)),
        ("erin", Some(&erin)),
        ("carol", Some(&tokens.carol)),
        ("anonymous", None),
    ];
    let ticket_path = format!("/tickets/{id}");
    let assign_path = format!("/tickets/{id}/assign");
    let embed_path = format!("/tickets/embed/{embed_token}");
    let comments_path = format!("/tickets/{id}/comments");
    let events_path = format!("/tickets/{id}/events");
    let rotate_path = format!("/tickets/{id}/embed-token");
    let note = json!({"body": "internal", "internal": true});
    let new_ticket = json!({"subject": "s", "description": "d"});
    // Expected statuses in the order of `callers`.
    let matrix: Vec<(Method, &str, Option<serde_json::Value>, [u16; 6])> = vec![
        (Method::POST, "/tickets/", Some(new_ticket), [201, 201, 403, 403, 403, 401]),
        (Method::GET, "/tickets/my", None, [200, 200, 403, 403, 403, 401]),
        (Method::GET, "/tickets/", None, [403, 403, 200, 200, 200, 401]),
        (Method::GET, &ticket_path, None, [200, 404, 200, 404, 200, 401]),
        (Method::PATCH, &ticket_path, Some(json!({"status": "in_progress"})), [403, 404, 200, 404, 200, 401]),
        (Method::PATCH, &assign_path, Some(json!({"agent_id": bob_id})), [403, 403, 403, 403, 200, 401]),
        (Method::GET, "/users/me", None, [200, 200, 200, 200, 200, 401]),
        (Method::GET, "/users?role=agent", None, [403, 403, 403, 403, 200, 401]),
        (Method::POST, &comments_path, Some(json!({"body": "hello"})), [201, 404, 201, 404, 201, 401]),
        (Method::POST, &comments_path, Some(note), [403, 403, 201, 404, 201, 401]),
        (Method::GET, &comments_path, None, [200, 404, 200, 404, 200, 401]),
        (Method::GET, &events_path, None, [200, 404, 200, 404, 200, 401]),
        (Method::GET, &embed_path, None, [200, 200, 200, 200, 200, 200]),
        // Last: each success rotates the token the row above used.
        (Method::POST, &rotate_path, None, [200, 404, 403, 404, 200, 401]),
    ];

    let mut mismatches = Vec::new();
    for (method, path, body, expected) in &matrix {
        for ((caller, token), want) in callers.iter().zip(expected) {
            let response = app.call(method.clone(), path, *token, body.clone()).await;
            if response.status.as_u16() != *want {
                mismatches.push(format!("{caller} {method} {path}: got {} want {want}", response.status));
            } else if *want >= 400 {
                response.assert_problem(response.status);
            }
        }
    }
    assert!(mismatches.is_empty(), "role matrix mismatches:\n{}", mismatches.join("\n"));

    // Denied writes that would each change something change nothing: not the ticket, not its
    // history.
    let before = app.get(&ticket_path, Some(&tokens.carol)).await.json;
    let history = app.get(&events_path, Some(&tokens.carol)).await.json;
    let reassign = json!({"agent_id": erin_id});
    let close = json!({"status": "closed", "priority": "urgent"});
    for (caller, token) in callers.iter().filter(|(caller, _)| *caller != "carol") {
        let refused = app.call(Method::PATCH, &assign_path, *token, Some(reassign.clone())).await;
        assert!(refused.status.is_client_error(), "{caller} reassigned: {}", refused.text);
        if *caller != "bob" {
            let refused = app.call(Method::PATCH, &ticket_path, *token, Some(close.clone())).await;
            assert!(refused.status.is_client_error(), "{caller} closed: {}", refused.text);
        }
    }
    assert_eq!(app.get(&ticket_path, Some(&tokens.carol)).await.json, before);
    assert_eq!(before["assigned_to"], bob_id);
    assert_eq!(app.get(&events_path, Some(&tokens.carol)).await.json, history);
}

async fn customer_cannot_see_another_customers_ticket(app: TestApp) {
    app.add_user("dave", "dave-password", Role::Customer).await;
    let alice = app.login("alice", "alice123").await;
    let dave = app.login("dave", "dave-password").await;
    let id = app.create_ticket_id(&alice, "Private").await;

    app.get(&format!("/tickets/{id}"), Some(&dave)).await.assert_problem(StatusCode::NOT_FOUND);
    assert_eq!(app.get("/tickets/my", Some(&dave)).await.json, json!([]));
}

async fn agent_sees_only_tickets_assigned_to_them(app: TestApp) {
    let tokens = app.demo_tokens().await;
    let erin_id = app.add_user("erin", "erin-password", Role::Agent).await;
    let bob_id = app.user_id("bob").await;
    let for_bob = app.create_ticket_id(&tokens.alice, "for bob").await;
    let for_erin = app.create_ticket_id(&tokens.alice, "for erin").await;
    let unassigned = app.create_ticket_id(&tokens.alice, "nobody's").await;
    app.assign(&tokens.carol, for_bob, bob_id).await;
    app.assign(&tokens.carol, for_erin, erin_id).await;

    let queue = app.get("/tickets/", Some(&tokens.bob)).await;
    let ids: Vec<i64> = queue.json.as_array().unwrap().iter().map(|t| t["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [for_bob]);
    for other in [for_erin, unassigned] {
        app.get(&format!("/tickets/{other}"), Some(&tokens.bob)).await.assert_problem(StatusCode::NOT_FOUND);
        app.set_status(&tokens.bob, other, "resolved").await.assert_problem(StatusCode::NOT_FOUND);
    }
    let all = app.get("/tickets/", Some(&tokens.carol)).await;
    assert_eq!(all.json.as_array().unwrap().len(), 3);
    let untouched = app.get(&format!("/tickets/{for_erin}"), Some(&tokens.carol)).await;
    assert_eq!(untouched.json["status"], "open", "the refused update wrote nothing");
}

async fn invisible_and_missing_tickets_answer_alike(app: TestApp) {
    app.add_user("dave", "dave-password", Role::Customer).await;
    let alice = app.login("alice", "alice123").await;
    let dave = app.login("dave", "dave-password").await;
    let id = app.create_ticket_id(&alice, "Exists").await;

    let invisible = app.get(&format!("/tickets/{id}"), Some(&dave)).await;
    let missing = app.get(&format!("/tickets/{}", id + 1000), Some(&dave)).await;
    invisible.assert_problem(StatusCode::NOT_FOUND);
    assert_eq!(invisible.text, missing.text);
}
