//! Service clocks on tickets: started by the matching policy, paused while waiting on the
//! customer, met by replies and resolution, warned and breached once by the evaluator (run here
//! with a clock of the test's choosing), seen by staff only.

use axum::http::{Method, StatusCode};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::helpers::{DemoTokens, TestApp};

crate::on_both_backends!(
    a_new_ticket_gets_its_policys_targets_and_only_staff_see_them,
    replies_and_resolution_meet_targets_once,
    waiting_on_the_customer_pauses_the_clocks,
    the_evaluator_warns_and_breaches_once_with_history_webhooks_and_metrics,
    two_servers_record_each_breach_once,
    a_priority_change_counts_the_time_used_against_the_new_target,
    staff_list_tickets_by_sla_state_and_next_due_time,
    a_running_evaluator_records_a_breach_within_seconds_of_its_time,
);

/// Urgent tickets: first reply in 60 minutes, next reply in 30, resolved in 8 hours, warned 15
/// minutes before; everything else: resolved in 3 days. Around the clock.
async fn policies(app: &TestApp, tokens: &DemoTokens) {
    for body in [
        json!({"name": "Urgent", "position": 1, "conditions": {"priorities": ["urgent"]},
               "targets": [{"metric": "first_response", "minutes": 60}, {"metric": "next_response", "minutes": 30},
                           {"metric": "resolution", "minutes": 480}],
               "warn_before_minutes": 15}),
        json!({"name": "Everything else", "position": 2, "targets": [{"metric": "resolution", "minutes": 4320}]}),
    ] {
        let created = app.call(Method::POST, "/sla-policies", Some(&tokens.carol), Some(body)).await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    }
}

/// Alice's urgent ticket, assigned to bob and in progress; returns its id.
async fn urgent_ticket(app: &TestApp, tokens: &DemoTokens) -> i64 {
    let body = json!({"subject": "Down", "description": "Nothing works", "priority": "urgent"});
    let created = app.call(Method::POST, "/tickets/", Some(&tokens.alice), Some(body)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.json["id"].as_i64().unwrap();
    assert_eq!(app.assign(&tokens.carol, id, app.user_id("bob").await).await.status, StatusCode::OK);
    assert_eq!(app.set_status(&tokens.bob, id, "in_progress").await.status, StatusCode::OK);
    id
}

async fn sla(app: &TestApp, token: &str, id: i64) -> Value {
    app.get(&format!("/tickets/{id}"), Some(token)).await.json["sla"].clone()
}

fn target<'a>(sla: &'a Value, metric: &str) -> &'a Value {
    sla["targets"].as_array().unwrap().iter().find(|t| t["metric"] == metric).unwrap_or(&Value::Null)
}

fn time(value: &Value) -> DateTime<Utc> {
    value.as_str().unwrap_or_else(|| panic!("not a time: {value}")).parse().unwrap()
}

/// SLA events in the ticket's history as staff see it: (kind, metric).
async fn sla_events(app: &TestApp, token: &str, id: i64) -> Vec<(String, String)> {
    let events = app.get(&format!("/tickets/{id}/events"), Some(token)).await;
    events
        .json
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"].as_str().unwrap().starts_with("sla_"))
        .map(|e| (e["kind"].as_str().unwrap().to_owned(), e["to"].as_str().unwrap().to_owned()))
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

async fn a_new_ticket_gets_its_policys_targets_and_only_staff_see_them(app: TestApp) {
    let tokens = app.demo_tokens().await;
    policies(&app, &tokens).await;
    let before = Utc::now();
    let id = urgent_ticket(&app, &tokens).await;
    let seen = sla(&app, &tokens.bob, id).await;
    assert_eq!(seen["policy"], "Urgent", "{seen}");
    let metrics: Vec<&str> =
        seen["targets"].as_array().unwrap().iter().map(|t| t["metric"].as_str().unwrap()).collect();
    assert_eq!(metrics, ["first_response", "resolution"], "next response waits for a customer reply");
    let first = target(&seen, "first_response");
    assert_eq!(first["status"], "active");
    let due = time(&first["due_at"]);
    assert!(due >= before + TimeDelta::minutes(60) && due <= Utc::now() + TimeDelta::minutes(60), "{due}");

    // Customers and the embed never see SLA data; the admin does.
    let alices = app.get(&format!("/tickets/{id}"), Some(&tokens.alice)).await;
    assert!(alices.json.get("sla").is_none(), "{}", alices.text);
    let listed = app.get("/tickets/my", Some(&tokens.alice)).await;
    assert!(listed.json[0].get("sla").is_none(), "{}", listed.text);
    assert_eq!(sla(&app, &tokens.carol, id).await, seen);
    let embed_token = alices.json["embed_token"].as_str().unwrap().to_owned();
    let embed = app.get(&format!("/tickets/embed/{embed_token}"), None).await;
    assert!(!embed.text.contains("sla") && !embed.text.contains("due"), "{}", embed.text);

    // A normal ticket falls under the second policy; with no policy matching, no sla at all.
    let normal = app.create_ticket(&tokens.alice, "Question").await;
    let seen = sla(&app, &tokens.carol, normal.id).await;
    assert_eq!(
        (seen["policy"].as_str(), seen["targets"].as_array().map(Vec::len)),
        (Some("Everything else"), Some(1))
    );
    app.execute("DELETE FROM sla_policies").await;
    let uncovered = app.create_ticket(&tokens.alice, "Another").await;
    assert!(
        app.get(&format!("/tickets/{}", uncovered.id), Some(&tokens.carol)).await.json.get("sla").is_none()
    );
}

async fn replies_and_resolution_meet_targets_once(app: TestApp) {
    let tokens = app.demo_tokens().await;
    policies(&app, &tokens).await;
    let id = urgent_ticket(&app, &tokens).await;
    // An internal note is no response; the customer's own reply neither.
    app.comment(&tokens.bob, id, json!({"body": "looking", "internal": true})).await;
    app.comment(&tokens.alice, id, json!({"body": "any news?"})).await;
    assert_eq!(target(&sla(&app, &tokens.bob, id).await, "first_response")["status"], "active");
    assert!(sla_events(&app, &tokens.bob, id).await.is_empty());

    app.comment(&tokens.bob, id, json!({"body": "On it"})).await;
    let seen = sla(&app, &tokens.bob, id).await;
    assert_eq!(target(&seen, "first_response")["status"], "achieved");
    assert_eq!(target(&seen, "first_response")["due_at"], Value::Null);
    // The customer answers: the next response is due; staff answer it.
    app.comment(&tokens.alice, id, json!({"body": "thanks, it is still down"})).await;
    assert_eq!(target(&sla(&app, &tokens.bob, id).await, "next_response")["status"], "active");
    app.comment(&tokens.bob, id, json!({"body": "restarting it"})).await;
    assert_eq!(target(&sla(&app, &tokens.bob, id).await, "next_response")["status"], "achieved");
    app.comment(&tokens.bob, id, json!({"body": "done"})).await;
    app.set_status(&tokens.bob, id, "resolved").await;
    assert_eq!(target(&sla(&app, &tokens.bob, id).await, "resolution")["status"], "achieved");
    assert_eq!(
        sla_events(&app, &tokens.bob, id).await,
        pairs(&[
            ("sla_achieved", "first_response"),
            ("sla_achieved", "next_response"),
            ("sla_achieved", "resolution")
        ])
    );
    // Staff-only history, written by the server itself.
    let events = app.get(&format!("/tickets/{id}/events"), Some(&tokens.bob)).await;
    let achieved =
        events.json.as_array().unwrap().iter().find(|e| e["kind"] == "sla_achieved").unwrap().clone();
    assert_eq!((achieved["actor_id"].clone(), achieved["from"].clone()), (Value::Null, json!("Urgent")));
    assert!(sla_events(&app, &tokens.alice, id).await.is_empty(), "customers see no SLA history");

    // A reopen resumes the resolution clock; resolving again is no second achievement.
    app.comment(&tokens.alice, id, json!({"body": "it broke again"})).await;
    assert_eq!(target(&sla(&app, &tokens.bob, id).await, "resolution")["status"], "active");
    app.set_status(&tokens.bob, id, "in_progress").await;
    app.set_status(&tokens.bob, id, "resolved").await;
    let achievements =
        sla_events(&app, &tokens.bob, id).await.into_iter().filter(|(_, m)| m == "resolution").count();
    assert_eq!(achievements, 1);
}

async fn waiting_on_the_customer_pauses_the_clocks(app: TestApp) {
    let tokens = app.demo_tokens().await;
    policies(&app, &tokens).await;
    let id = urgent_ticket(&app, &tokens).await;
    let running = time(&target(&sla(&app, &tokens.bob, id).await, "resolution")["due_at"]);
    app.set_status(&tokens.bob, id, "pending").await;
    let paused = sla(&app, &tokens.bob, id).await;
    for metric in ["first_response", "resolution"] {
        assert_eq!(
            (target(&paused, metric)["status"].as_str(), &target(&paused, metric)["due_at"]),
            (Some("paused"), &Value::Null)
        );
    }
    // A paused clock does not breach, however late it gets.
    assert_eq!(app.check_clocks_at(Utc::now() + TimeDelta::days(30)).await, 0);
    // The customer's reply ends the wait: back in progress, the clocks run on, later than before.
    app.comment(&tokens.alice, id, json!({"body": "here is the log"})).await;
    let resumed = sla(&app, &tokens.bob, id).await;
    assert_eq!(app.get(&format!("/tickets/{id}"), Some(&tokens.bob)).await.json["status"], "in_progress");
    assert_eq!(target(&resumed, "resolution")["status"], "active");
    assert!(time(&target(&resumed, "resolution")["due_at"]) >= running, "{resumed}");
}

async fn the_evaluator_warns_and_breaches_once_with_history_webhooks_and_metrics(app: TestApp) {
    let tokens = app.demo_tokens().await;
    policies(&app, &tokens).await;
    // Behind the API's back: the test has no public address for it to accept.
    app.execute(
        "INSERT INTO webhooks (url, events, secret, active, include_embed_token, created_at, updated_at)
         VALUES ('https://hooks.example.com/sla', ',ticket.sla_breached,', 'whsec_x', TRUE, FALSE,
                 '2026-07-23T12:00:00Z', '2026-07-23T12:00:00Z')",
    )
    .await;
    let id = urgent_ticket(&app, &tokens).await;
    let due = time(&target(&sla(&app, &tokens.bob, id).await, "first_response")["due_at"]);

    assert_eq!(app.check_clocks_at(due - TimeDelta::minutes(16)).await, 0, "nothing due yet");
    assert_eq!(app.check_clocks_at(due - TimeDelta::minutes(15)).await, 1, "the warning");
    assert_eq!(app.check_clocks_at(due - TimeDelta::minutes(1)).await, 0, "warned once");
    assert_eq!(app.check_clocks_at(due + TimeDelta::seconds(1)).await, 1, "the breach");
    assert_eq!(app.check_clocks_at(due + TimeDelta::hours(1)).await, 0, "breached once");
    let seen = sla(&app, &tokens.bob, id).await;
    assert_eq!(target(&seen, "first_response")["status"], "breached");
    assert_eq!(time(&target(&seen, "first_response")["breached_at"]), due);
    assert_eq!(
        sla_events(&app, &tokens.bob, id).await,
        pairs(&[("sla_warning", "first_response"), ("sla_breached", "first_response")])
    );
    // A late reply is no achievement; the target stays breached.
    app.comment(&tokens.bob, id, json!({"body": "sorry for the wait"})).await;
    assert_eq!(target(&sla(&app, &tokens.bob, id).await, "first_response")["status"], "breached");
    assert_eq!(sla_events(&app, &tokens.bob, id).await.len(), 2);

    // The webhook subscribed to breaches has exactly the breach queued; the metric counts it.
    let queued = app.texts("SELECT event_type FROM webhook_deliveries").await;
    assert_eq!(queued, ["ticket.sla_breached"]);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("sla_breaches_total{metric=\"first_response\",policy=\"Urgent\"} 1"),
        "{metrics}"
    );
}

async fn two_servers_record_each_breach_once(app: TestApp) {
    let tokens = app.demo_tokens().await;
    policies(&app, &tokens).await;
    // More than one batch (200) comes due: on PostgreSQL each server runs several side by side.
    let alice = app.user_id("alice").await;
    for n in 0..120 {
        let ticket = ticketdesk::domain::NewTicket {
            subject: ticketdesk::domain::Subject::parse(&format!("Outage {n}")).unwrap(),
            description: ticketdesk::domain::Description::parse("down".into()).unwrap(),
            priority: ticketdesk::domain::Priority::Urgent,
            created_by: alice,
            attachments: Vec::new(),
        };
        app.store.create_ticket(&ticket, None).await.unwrap();
    }
    let other = app.replica().await;
    let late = Utc::now() + TimeDelta::days(1);
    let (a, b) = tokio::join!(app.check_clocks_at(late), other.check_clocks_at(late));
    // Per ticket: first response warned and breached, resolution warned and breached.
    assert_eq!(a + b, 120 * 4, "{a} + {b}");
    let repeated = app
        .texts(
            "SELECT CAST(ticket_id AS TEXT) FROM ticket_events WHERE kind LIKE 'sla_%'
             GROUP BY ticket_id, kind, to_value HAVING count(*) > 1",
        )
        .await;
    assert!(repeated.is_empty(), "recorded twice: {repeated:?}");
    let per_ticket = app
        .texts("SELECT CAST(count(*) AS TEXT) FROM ticket_events WHERE kind LIKE 'sla_%' GROUP BY ticket_id")
        .await;
    assert_eq!(per_ticket, vec!["4".to_owned(); 120]);
    // A restart: a new server finds nothing left to record.
    assert_eq!(app.replica().await.check_clocks_at(late).await, 0);
}

async fn a_priority_change_counts_the_time_used_against_the_new_target(app: TestApp) {
    let tokens = app.demo_tokens().await;
    policies(&app, &tokens).await;
    let ticket = app.create_ticket(&tokens.alice, "Slow").await;
    assert_eq!(app.assign(&tokens.carol, ticket.id, app.user_id("bob").await).await.status, StatusCode::OK);
    let seen = sla(&app, &tokens.bob, ticket.id).await;
    assert_eq!(seen["policy"], "Everything else");
    // An hour of the ticket's life has passed (as if it had been created an hour ago).
    let hour_ago = (Utc::now() - TimeDelta::hours(1)).to_rfc3339();
    app.execute(&format!(
        "UPDATE sla_clocks SET running_since = '{hour_ago}' WHERE ticket_id = {}",
        ticket.id
    ))
    .await;
    let raised = app
        .call(
            Method::PATCH,
            &format!("/tickets/{}", ticket.id),
            Some(&tokens.bob),
            Some(json!({"priority": "urgent"})),
        )
        .await;
    assert_eq!(raised.status, StatusCode::OK, "{}", raised.text);
    let seen = sla(&app, &tokens.bob, ticket.id).await;
    assert_eq!(seen["policy"], "Urgent");
    // 8 hours to resolve, one of them used: due in about 7.
    let due = time(&target(&seen, "resolution")["due_at"]);
    let left = due - Utc::now();
    assert!(left > TimeDelta::minutes(419) && left <= TimeDelta::minutes(420), "{left}");
    assert_eq!(
        target(&seen, "first_response"),
        &Value::Null,
        "the old policy had no first-response clock to carry over"
    );
}

/// The ids of every page of `path` (following `Link: rel="next"`), in order.
async fn all_pages(app: &TestApp, token: &str, path: &str) -> Vec<i64> {
    let mut ids = Vec::new();
    let mut next = Some(path.to_owned());
    while let Some(path) = next.take() {
        let page = app.get(&path, Some(token)).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.text);
        ids.extend(page.json.as_array().unwrap().iter().map(|t| t["id"].as_i64().unwrap()));
        next = page.header("link").map(|link| {
            let url = link.trim_start_matches('<').split('>').next().unwrap();
            url[url.find("/tickets").unwrap()..].to_owned()
        });
    }
    ids
}

async fn staff_list_tickets_by_sla_state_and_next_due_time(app: TestApp) {
    let tokens = app.demo_tokens().await;
    policies(&app, &tokens).await;
    let later = app.create_ticket(&tokens.alice, "Whenever").await.id; // resolution in 3 days
    let first = urgent_ticket(&app, &tokens).await; // first response in an hour
    let waiting = urgent_ticket(&app, &tokens).await;
    app.set_status(&tokens.bob, waiting, "pending").await;
    let second = urgent_ticket(&app, &tokens).await;

    let by_due = all_pages(&app, &tokens.carol, "/tickets?sort=sla_due&direction=asc&limit=1").await;
    assert_eq!(by_due, [first, second, later], "soonest first, paused ones have no due time");
    let latest_first = all_pages(&app, &tokens.carol, "/tickets?sort=sla_due&limit=2").await;
    assert_eq!(latest_first, [later, second, first]);
    assert_eq!(all_pages(&app, &tokens.carol, "/tickets?sla_status=paused").await, [waiting]);
    let soon = (Utc::now() + TimeDelta::hours(2)).to_rfc3339().replace('+', "%2B");
    let mut due_soon = all_pages(&app, &tokens.carol, &format!("/tickets?sla_due_before={soon}")).await;
    due_soon.sort();
    assert_eq!(due_soon, [first, second]);
    // bob's own queue, by due time.
    assert_eq!(all_pages(&app, &tokens.bob, "/tickets?sort=sla_due&direction=asc").await, [first, second]);

    app.check_clocks_at(Utc::now() + TimeDelta::hours(2)).await;
    let mut breached = all_pages(&app, &tokens.carol, "/tickets?sla_status=breached").await;
    breached.sort();
    assert_eq!(breached, [first, second]);
    assert_eq!(all_pages(&app, &tokens.carol, "/tickets?sla_status=active").await, [later]);

    // Customers never filter or sort by what they cannot see.
    for path in [
        "/tickets/my?sla_status=breached",
        "/tickets/my?sort=sla_due",
        "/tickets/my?sla_due_before=2026-01-01T00:00:00Z",
    ] {
        app.get(path, Some(&tokens.alice)).await.assert_problem(StatusCode::FORBIDDEN);
    }
}

async fn a_running_evaluator_records_a_breach_within_seconds_of_its_time(app: TestApp) {
    let tokens = app.demo_tokens().await;
    policies(&app, &tokens).await;
    let id = urgent_ticket(&app, &tokens).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let evaluator = ticketdesk::clocks::start(
        app.store.clone(),
        app.sla_breaches.clone(),
        ticketdesk::clocks::CHECK_EVERY,
        shutdown.clone(),
    );
    // The first response comes due now (as if its hour had passed).
    let now = Utc::now();
    let stamp = if app.config.database_url.expose().starts_with("sqlite") {
        format!("'{}'", now.to_rfc3339())
    } else {
        format!("'{}'::timestamptz", now.to_rfc3339())
    };
    app.execute(&format!(
        "UPDATE sla_clocks SET due_at = {stamp}, next_check_at = {stamp}, warned = TRUE
         WHERE ticket_id = {id} AND metric = 'first_response'"
    ))
    .await;
    let deadline = now + TimeDelta::seconds(5);
    while sla_events(&app, &tokens.bob, id).await.is_empty() {
        assert!(Utc::now() < deadline, "no breach recorded within 5 s of the due time");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(sla_events(&app, &tokens.bob, id).await, pairs(&[("sla_breached", "first_response")]));
    shutdown.cancel();
    evaluator.await.unwrap();
}
