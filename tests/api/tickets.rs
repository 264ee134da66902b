use axum::http::{Method, StatusCode};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use ticketdesk::domain::{Role, Ticket, TicketStatus};

use crate::helpers::{TestApp, sorted_keys};

crate::on_both_backends!(
    a_ticket_goes_from_submission_to_resolution,
    created_ticket_has_the_documented_shape_and_location,
    listings_are_newest_first,
    collection_routes_answer_with_and_without_trailing_slash,
    subject_is_trimmed_and_limited,
    description_is_limited_to_ten_thousand_characters,
    assignment_target_must_be_an_existing_agent,
    admins_can_reassign_and_change_status,
    updating_a_missing_ticket_is_404,
    concurrent_writers_all_succeed,
);

fn timestamp(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value.as_str().expect("a timestamp string")).expect("RFC 3339").to_utc()
}

async fn a_ticket_goes_from_submission_to_resolution(app: TestApp) {
    let tokens = app.demo_tokens().await;
    let bob_id = app.user_id("bob").await;

    let ticket = app.create_ticket(&tokens.alice, "App Crash").await;
    let id = ticket.id;
    assert_eq!(ticket.status, TicketStatus::Open);

    let mine = app.get("/tickets/my", Some(&tokens.alice)).await;
    assert_eq!(mine.json.as_array().unwrap().len(), 1);
    assert_eq!(mine.json[0]["id"], id);

    // Not bob's yet: he cannot see it, nor find it in his queue.
    app.get(&format!("/tickets/{id}"), Some(&tokens.bob)).await.assert_problem(StatusCode::NOT_FOUND);
    assert_eq!(app.get("/tickets/", Some(&tokens.bob)).await.json, json!([]));

    let assigned = app.assign(&tokens.carol, id, bob_id).await;
    assert_eq!(assigned.status, StatusCode::OK, "{}", assigned.text);
    assert_eq!(assigned.json["assigned_to"], bob_id);

    let queue = app.get("/tickets/", Some(&tokens.bob)).await;
    assert_eq!(queue.json.as_array().unwrap().len(), 1);
    assert_eq!(queue.json[0]["id"], id);

    let in_progress = app.set_status(&tokens.bob, id, "in_progress").await;
    assert_eq!(in_progress.status, StatusCode::OK, "{}", in_progress.text);
    let resolved = app.set_status(&tokens.bob, id, "resolved").await;
    let resolved_ticket: Ticket = resolved.body();
    assert_eq!(resolved_ticket.status, TicketStatus::Resolved);
    assert!(resolved_ticket.updated_at > ticket.updated_at);
    assert_eq!(resolved_ticket.created_at, ticket.created_at);

    let seen_by_alice = app.get(&format!("/tickets/{id}"), Some(&tokens.alice)).await;
    assert_eq!(seen_by_alice.json, resolved.json, "what was written is what is read back");

    let embed = app.get(&format!("/tickets/embed/{}", ticket.embed_token), None).await;
    assert_eq!(embed.json["status"], "Resolved");
}

async fn created_ticket_has_the_documented_shape_and_location(app: TestApp) {
    let alice = app.login("alice", "alice123").await;
    let body = json!({"subject": "Login fails", "description": "Error 42 after the update"});
    let response = app.call(Method::POST, "/tickets/", Some(&alice), Some(body)).await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);

    let ticket = &response.json;
    let id = ticket["id"].as_i64().expect("an integer id");
    assert_eq!(response.header("location"), Some(format!("/tickets/{id}").as_str()));
    assert_eq!(
        sorted_keys(ticket),
        [
            "assigned_to",
            "attachments",
            "created_at",
            "created_by",
            "description",
            "embed_token",
            "id",
            "priority",
            "status",
            "subject",
            "updated_at"
        ]
    );
    assert_eq!(ticket["subject"], "Login fails");
    assert_eq!(ticket["description"], "Error 42 after the update");
    assert_eq!(ticket["created_by"], app.user_id("alice").await);
    assert_eq!(ticket["assigned_to"], Value::Null);
    let token = uuid::Uuid::parse_str(ticket["embed_token"].as_str().unwrap()).expect("a uuid");
    assert_eq!(token.get_version_num(), 4);
    assert_eq!(timestamp(&ticket["created_at"]), timestamp(&ticket["updated_at"]));

    let fetched = app.get(&format!("/tickets/{id}"), Some(&alice)).await;
    assert_eq!(&fetched.json, ticket);
}

async fn listings_are_newest_first(app: TestApp) {
    let tokens = app.demo_tokens().await;
    let bob_id = app.user_id("bob").await;
    let mut ids = Vec::new();
    for subject in ["first", "second", "third"] {
        let id = app.create_ticket_id(&tokens.alice, subject).await;
        app.assign(&tokens.carol, id, bob_id).await;
        ids.push(id);
    }
    ids.reverse();
    for (path, token) in
        [("/tickets/my", &tokens.alice), ("/tickets/", &tokens.bob), ("/tickets/", &tokens.carol)]
    {
        let listed: Vec<i64> = app
            .get(path, Some(token))
            .await
            .json
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_i64().unwrap())
            .collect();
        assert_eq!(listed, ids, "{path}");
    }
}

async fn collection_routes_answer_with_and_without_trailing_slash(app: TestApp) {
    let tokens = app.demo_tokens().await;
    let body = json!({"subject": "No slash", "description": ""});
    let created = app.call(Method::POST, "/tickets", Some(&tokens.alice), Some(body)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    for path in ["/tickets", "/tickets/"] {
        let listed = app.get(path, Some(&tokens.carol)).await;
        assert_eq!(listed.status, StatusCode::OK, "{path}");
        assert_eq!(listed.json[0]["id"], created.json["id"], "{path}");
    }
}

async fn subject_is_trimmed_and_limited(app: TestApp) {
    let alice = app.login("alice", "alice123").await;
    let create = |subject: String| {
        let alice = alice.clone();
        let app = &app;
        async move {
            app.call(
                Method::POST,
                "/tickets/",
                Some(&alice),
                Some(json!({"subject": subject, "description": ""})),
            )
            .await
        }
    };
    let trimmed = create("  Printer on fire \n".into()).await;
    assert_eq!(trimmed.json["subject"], "Printer on fire");

    for bad in ["".to_owned(), "   \t ".to_owned(), "x".repeat(201)] {
        let detail = create(bad).await.assert_problem(StatusCode::UNPROCESSABLE_ENTITY).to_owned();
        assert!(detail.contains("subject"), "{detail}");
    }
    let longest = create("ж".repeat(200)).await;
    assert_eq!(longest.status, StatusCode::CREATED, "200 characters are allowed: {}", longest.text);
    assert_eq!(
        app.get("/tickets/my", Some(&alice)).await.json.as_array().unwrap().len(),
        2,
        "nothing else stored"
    );
}

async fn description_is_limited_to_ten_thousand_characters(app: TestApp) {
    let alice = app.login("alice", "alice123").await;
    let post = |description: String| {
        app.call(
            Method::POST,
            "/tickets/",
            Some(&alice),
            Some(json!({"subject": "s", "description": description})),
        )
    };
    assert_eq!(post("a".repeat(10_000)).await.status, StatusCode::CREATED);
    let detail = post("a".repeat(10_001)).await.assert_problem(StatusCode::UNPROCESSABLE_ENTITY).to_owned();
    assert!(detail.contains("description"), "{detail}");
}

async fn assignment_target_must_be_an_existing_agent(app: TestApp) {
    let tokens = app.demo_tokens().await;
    let id = app.create_ticket_id(&tokens.alice, "Needs an agent").await;
    let alice_id = app.user_id("alice").await;
    let carol_id = app.user_id("carol").await;

    for (target, expected) in [(alice_id, "customer"), (carol_id, "admin"), (987_654, "does not name")] {
        let detail = app
            .assign(&tokens.carol, id, target)
            .await
            .assert_problem(StatusCode::UNPROCESSABLE_ENTITY)
            .to_owned();
        assert!(detail.contains(expected), "{detail}");
    }
    let unchanged = app.get(&format!("/tickets/{id}"), Some(&tokens.carol)).await;
    assert_eq!(unchanged.json["assigned_to"], Value::Null, "a refused assignment writes nothing");
}

async fn admins_can_reassign_and_change_status(app: TestApp) {
    let tokens = app.demo_tokens().await;
    let erin_id = app.add_user("erin", "erin-password", Role::Agent).await;
    let bob_id = app.user_id("bob").await;
    let id = app.create_ticket_id(&tokens.alice, "Reassign me").await;

    app.assign(&tokens.carol, id, bob_id).await;
    let reassigned = app.assign(&tokens.carol, id, erin_id).await;
    assert_eq!(reassigned.json["assigned_to"], erin_id);
    // Bob lost it: it is invisible to him now.
    app.get(&format!("/tickets/{id}"), Some(&tokens.bob)).await.assert_problem(StatusCode::NOT_FOUND);

    let closed = app.set_status(&tokens.carol, id, "closed").await;
    assert_eq!(closed.status, StatusCode::OK, "{}", closed.text);
    assert_eq!(closed.json["status"], "closed");
    assert_eq!(closed.json["assigned_to"], erin_id, "a status change keeps the assignment");
}

async fn updating_a_missing_ticket_is_404(app: TestApp) {
    let tokens = app.demo_tokens().await;
    let bob_id = app.user_id("bob").await;
    app.assign(&tokens.carol, 424_242, bob_id).await.assert_problem(StatusCode::NOT_FOUND);
    app.set_status(&tokens.carol, 424_242, "closed").await.assert_problem(StatusCode::NOT_FOUND);
    app.get("/tickets/424242", Some(&tokens.carol)).await.assert_problem(StatusCode::NOT_FOUND);
}

/// 32 submissions and 32 updates at once: no writer may fail with "database is locked".
async fn concurrent_writers_all_succeed(app: TestApp) {
    let tokens = app.demo_tokens().await;
    let id = app.create_ticket_id(&tokens.alice, "Contended").await;
    let mut writers = tokio::task::JoinSet::new();
    for n in 0..32 {
        let (router, alice, carol) = (app.router(), tokens.alice.clone(), tokens.carol.clone());
        writers.spawn(async move {
            let body = json!({"subject": format!("Concurrent {n}"), "description": ""}).to_string();
            let create = axum::http::Request::post("/tickets/")
                .header("authorization", format!("Bearer {alice}"))
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body))
                .unwrap();
            let priority = ["low", "normal", "high", "urgent"][n % 4];
            let update = axum::http::Request::patch(format!("/tickets/{id}"))
                .header("authorization", format!("Bearer {carol}"))
                .header("content-type", "application/json")
                .body(axum::body::Body::from(json!({"priority": priority}).to_string()))
                .unwrap();
            let created = crate::helpers::send_to(router.clone(), create).await;
            let updated = crate::helpers::send_to(router, update).await;
            (created.status, updated.status, created.text, updated.text)
        });
    }
    while let Some(outcome) = writers.join_next().await {
        let (created, updated, created_text, updated_text) = outcome.unwrap();
        assert_eq!(created, StatusCode::CREATED, "{created_text}");
        assert_eq!(updated, StatusCode::OK, "{updated_text}");
    }
    assert_eq!(app.get("/tickets/my", Some(&tokens.alice)).await.json.as_array().unwrap().len(), 33);
}
