use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::helpers::TestApp;

crate::on_both_backends!(
    customer_and_agent_talk_and_internal_notes_stay_internal,
    a_customer_reply_reopens_a_resolved_ticket,
    nobody_comments_on_a_closed_ticket,
    strangers_cannot_read_or_write_a_conversation,
    an_internal_note_changes_nothing_customers_or_the_embed_can_see,
    the_conversation_and_the_history_are_paged,
);

fn bodies(comments: &Value) -> Vec<&str> {
    comments.as_array().unwrap().iter().map(|c| c["body"].as_str().unwrap()).collect()
}

async fn customer_and_agent_talk_and_internal_notes_stay_internal(app: TestApp) {
    let tokens = app.demo_tokens().await;
    let id = app.bobs_ticket(&tokens, "Chatty").await;

    let question = app.comment(&tokens.bob, id, json!({"body": "Which version?"})).await;
    assert_eq!(question.status, StatusCode::CREATED, "{}", question.text);
    assert_eq!(question.json["author_id"], app.user_id("bob").await);
    assert_eq!(question.json["internal"], false);
    let note = app.comment(&tokens.bob, id, json!({"body": "Known bug #12", "internal": true})).await;
    assert_eq!(note.json["internal"], true);
    app.comment(&tokens.alice, id, json!({"body": "Version 2.1"})).await;
    app.comment(&tokens.carol, id, json!({"body": "Escalating", "internal": true})).await;

    let path = format!("/tickets/{id}/comments");
    let for_staff = app.get(&path, Some(&tokens.bob)).await.json;
    assert_eq!(bodies(&for_staff), ["Which version?", "Known bug #12", "Version 2.1", "Escalating"]);
    let for_customer = app.get(&path, Some(&tokens.alice)).await;
    assert_eq!(bodies(&for_customer.json), ["Which version?", "Version 2.1"]);
    assert!(!for_customer.text.contains("Known bug") && !for_customer.text.contains("Escalating"));

    // Nor do the events about them reach the customer, not even as a count.
    let customer_events = app.get(&format!("/tickets/{id}/events"), Some(&tokens.alice)).await.json;
    let staff_events = app.get(&format!("/tickets/{id}/events"), Some(&tokens.carol)).await.json;
    let comment_events =
        |events: &Value| events.as_array().unwrap().iter().filter(|e| e["kind"] == "comment_added").count();
    assert_eq!((comment_events(&customer_events), comment_events(&staff_events)), (2, 4));
    assert!(customer_events.as_array().unwrap().iter().all(|e| e["internal"] == false));
    let note_id = note.json["id"].clone();
    assert!(customer_events.as_array().unwrap().iter().all(|e| e["comment_id"] != note_id));

    let internal_by_customer =
        app.comment(&tokens.alice, id, json!({"body": "sneaky", "internal": true})).await;
    internal_by_customer.assert_problem(StatusCode::FORBIDDEN);
    assert_eq!(bodies(&app.get(&path, Some(&tokens.carol)).await.json).len(), 4, "nothing stored");
}

async fn a_customer_reply_reopens_a_resolved_ticket(app: TestApp) {
    let tokens = app.demo_tokens().await;
    let id = app.bobs_ticket(&tokens, "Not fixed").await;
    app.set_status(&tokens.bob, id, "in_progress").await;
    app.set_status(&tokens.bob, id, "resolved").await;

    // The agent's own follow-up keeps it resolved.
    app.comment(&tokens.bob, id, json!({"body": "Fixed in 2.2"})).await;
    assert_eq!(app.get(&format!("/tickets/{id}"), Some(&tokens.alice)).await.json["status"], "resolved");

    let reply = app.comment(&tokens.alice, id, json!({"body": "Still crashes"})).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let ticket = app.get(&format!("/tickets/{id}"), Some(&tokens.alice)).await.json;
    assert_eq!(ticket["status"], "open");

    let events = app.get(&format!("/tickets/{id}/events"), Some(&tokens.carol)).await.json;
    let reopen = events.as_array().unwrap().iter().rev().find(|e| e["kind"] == "status_changed").unwrap();
    assert_eq!((reopen["from"].as_str(), reopen["to"].as_str()), (Some("resolved"), Some("open")));
    assert_eq!(reopen["actor_id"], app.user_id("alice").await);
}

async fn nobody_comments_on_a_closed_ticket(app: TestApp) {
    let tokens = app.demo_tokens().await;
    let id = app.bobs_ticket(&tokens, "Closed").await;
    app.set_status(&tokens.carol, id, "closed").await;
    for token in [&tokens.alice, &tokens.bob, &tokens.carol] {
        app.comment(token, id, json!({"body": "hello?"})).await.assert_problem(StatusCode::CONFLICT);
    }
    assert_eq!(app.get(&format!("/tickets/{id}/comments"), Some(&tokens.carol)).await.json, json!([]));
}

async fn strangers_cannot_read_or_write_a_conversation(app: TestApp) {
    let tokens = app.demo_tokens().await;
    let id = app.create_ticket_id(&tokens.alice, "Private talk").await;
    // Bob is not assigned: to him the ticket does not exist.
    app.comment(&tokens.bob, id, json!({"body": "hi"})).await.assert_problem(StatusCode::NOT_FOUND);
    app.get(&format!("/tickets/{id}/comments"), Some(&tokens.bob))
        .await
        .assert_problem(StatusCode::NOT_FOUND);
    app.get(&format!("/tickets/{id}/events"), Some(&tokens.bob)).await.assert_problem(StatusCode::NOT_FOUND);
    app.comment(&tokens.alice, id + 1000, json!({"body": "hi"})).await.assert_problem(StatusCode::NOT_FOUND);
}

async fn an_internal_note_changes_nothing_customers_or_the_embed_can_see(app: TestApp) {
    let tokens = app.demo_tokens().await;
    let ticket = app.create_ticket(&tokens.alice, "Quietly discussed").await;
    let id = ticket.id;
    app.assign(&tokens.carol, id, app.user_id("bob").await).await;
    let embed = format!("/tickets/embed/{}", ticket.embed_token);
    let seen = |token: Option<String>| {
        let path = token.as_ref().map_or(embed.clone(), |_| format!("/tickets/{id}"));
        let app = &app;
        async move {
            let response = app.get(&path, token.as_deref()).await;
            assert_eq!(response.status, StatusCode::OK, "{}", response.text);
            let time =
                if token.is_some() { &response.json["updated_at"] } else { &response.json["last_updated"] };
            (time.as_str().unwrap().to_owned(), response.header("etag").unwrap().to_owned())
        }
    };
    let customer_before = seen(Some(tokens.alice.clone())).await;
    let embed_before = seen(None).await;
    let staff_before = seen(Some(tokens.bob.clone())).await;

    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let note = app.comment(&tokens.bob, id, json!({"body": "Refund fraud?", "internal": true})).await;
    assert_eq!(note.status, StatusCode::CREATED, "{}", note.text);
    assert_eq!(seen(Some(tokens.alice.clone())).await, customer_before, "the customer learns nothing");
    assert_eq!(seen(None).await, embed_before, "nor does anyone with the embed link");
    assert_eq!(seen(Some(tokens.bob.clone())).await, staff_before, "the ticket itself did not change");
    let polled = app
        .send(
            axum::http::Request::get(&embed)
                .header("if-none-match", &embed_before.1)
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(polled.status, StatusCode::NOT_MODIFIED, "a poller sees no change");
    // Staff still see the note in the history.
    let events = app.get(&format!("/tickets/{id}/events"), Some(&tokens.bob)).await.json;
    assert!(events.as_array().unwrap().iter().any(|e| e["internal"] == true), "{events}");

    // A public reply is a visible change: both move.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    app.comment(&tokens.bob, id, json!({"body": "We are on it"})).await;
    let customer_after = seen(Some(tokens.alice.clone())).await;
    assert!(customer_after.0 > customer_before.0 && customer_after.1 != customer_before.1);
    assert_ne!(seen(None).await, embed_before);
}

async fn the_conversation_and_the_history_are_paged(app: TestApp) {
    let tokens = app.demo_tokens().await;
    let id = app.bobs_ticket(&tokens, "Long story").await;
    for n in 1..=7 {
        let reply = app.comment(&tokens.bob, id, json!({"body": format!("reply {n}")})).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        if n % 3 == 0 {
            app.comment(&tokens.bob, id, json!({"body": format!("note {n}"), "internal": true})).await;
        }
    }
    // Pages of three, oldest first, each announcing the next; customers never see a note.
    let pages = app.pages(&format!("/tickets/{id}/comments?limit=3"), &tokens.alice).await;
    let sizes: Vec<usize> = pages.iter().map(|page| page.as_array().unwrap().len()).collect();
    assert_eq!(sizes, [3, 3, 1]);
    let seen: Vec<&str> = pages.iter().flat_map(bodies).collect();
    let replies: Vec<String> = (1..=7).map(|n| format!("reply {n}")).collect();
    assert_eq!(seen, replies);
    let staff = app.pages(&format!("/tickets/{id}/comments?limit=4"), &tokens.bob).await;
    let seen: Vec<&str> = staff.iter().flat_map(bodies).collect();
    assert_eq!(seen.len(), 9, "{seen:?}");
    assert_eq!(seen[3], "note 3");

    // The first page keeps its shape: a plain array, 50 by default.
    let first = app.get(&format!("/tickets/{id}/events"), Some(&tokens.carol)).await;
    assert!(first.json.is_array() && first.header("link").is_none(), "{}", first.text);
    let events = first.json.as_array().unwrap().len();
    let paged = app.pages(&format!("/tickets/{id}/events?limit=2"), &tokens.carol).await;
    let ids: Vec<i64> = paged
        .iter()
        .flat_map(|page| page.as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()))
        .collect();
    assert_eq!(ids.len(), events);
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "oldest first, once each: {ids:?}");
    let customer: usize = app
        .pages(&format!("/tickets/{id}/events?limit=2"), &tokens.alice)
        .await
        .iter()
        .map(|page| page.as_array().unwrap().len())
        .sum();
    assert_eq!(customer, events - 2, "the two notes' events are staff only");

    for bad in ["limit=0", "limit=201", "cursor=nonsense"] {
        for listing in ["comments", "events"] {
            let refused = app.get(&format!("/tickets/{id}/{listing}?{bad}"), Some(&tokens.alice)).await;
            refused.assert_problem(StatusCode::BAD_REQUEST);
        }
    }
}
