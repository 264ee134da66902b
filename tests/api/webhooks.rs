//! Webhooks against a real receiver listening on a local port: management, signatures, order,
//! retries, internal notes kept out, address checks, and the outbox surviving a restart.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

use crate::helpers::{EmptyDatabase, TestApp};

crate::on_both_backends!(
    only_admins_manage_webhooks_and_the_secret_is_shown_once,
    webhook_input_is_checked,
    private_addresses_are_refused_at_registration_and_at_delivery,
    deliveries_are_signed_in_order_and_keep_internal_notes_out,
    a_failed_delivery_is_retried_with_the_same_id_and_holds_back_the_next,
    a_delivery_that_keeps_failing_is_marked_failed,
    the_outbox_survives_a_restart,
    two_servers_deliver_each_event_once,
    redirects_are_not_followed,
    a_slow_receiver_times_out_without_holding_up_the_api,
    a_busy_ticket_gets_every_delivery_in_order_while_they_are_sent,
    a_stalled_receiver_does_not_hold_up_a_fast_one,
    claims_take_the_oldest_due_deliveries_of_active_webhooks,
    attempts_recorded_together_each_take_their_own_outcome,
    a_stopping_server_gives_back_the_deliveries_it_claimed_ahead,
    a_receiver_that_answers_with_a_body_keeps_one_connection,
    a_claim_holds_a_delivery_until_its_lease_ends_or_it_is_given_back,
);

/// Webhooks may reach the receiver on 127.0.0.1, and retries come after a second.
pub const RECEIVING: &[(&str, &str)] =
    &[("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true"), ("WEBHOOK_RETRY_SECS", "1,1")];

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: String,
    /// The sending end of the connection it came on.
    peer: SocketAddr,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

#[derive(Default)]
struct Log {
    received: Vec<Received>,
    /// Answers 500 to this many requests before answering 204.
    failures_left: usize,
}

/// An HTTP server on a local port that records every request.
struct Receiver {
    url: String,
    log: Arc<Mutex<Log>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    async fn start(failures: usize) -> Self {
        let log = Arc::new(Mutex::new(Log { received: Vec::new(), failures_left: failures }));
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(record))
            // Answers 200 with a body, as many real receivers do.
            .route(
                "/chatty",
                axum::routing::post(|log, peer, headers, body| async move {
                    (record(log, peer, headers, body).await, "accepted ".repeat(200))
                }),
            )
            .route("/moved", axum::routing::post(|| async { axum::response::Redirect::temporary("/hook") }))
            .route(
                "/slow",
                axum::routing::post(|| async {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    StatusCode::NO_CONTENT
                }),
            )
            // Never answers within the attempt's timeout (10 s by default).
            .route(
                "/stalled",
                axum::routing::post(|| async {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    StatusCode::NO_CONTENT
                }),
            )
            .with_state(log.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await.unwrap();
        });
        Self { url, log, task }
    }

    fn fail_next(&self, failures: usize) {
        self.log.lock().unwrap().failures_left = failures;
    }

    fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap().received.clone()
    }

    /// Waits (10 s at most) until `count` requests have arrived; returns them all.
    async fn wait_for(&self, count: usize) -> Vec<Received> {
        for _ in 0..500 {
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("expected {count} deliveries, got {:#?}", self.received());
    }
}

async fn record(
    State(log): State<Arc<Mutex<Log>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let mut log = log.lock().unwrap();
    log.received.push(Received { headers, body, peer });
    if log.failures_left > 0 {
        log.failures_left -= 1;
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    }
}

/// Registers a webhook as carol (admin); returns its JSON, secret included.
async fn register(app: &TestApp, carol: &str, url: &str, events: &[&str]) -> Value {
    let response =
        app.call(Method::POST, "/webhooks", Some(carol), Some(json!({"url": url, "events": events}))).await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);
    assert_eq!(response.header("cache-control"), Some("no-store"), "the answer shows the secret");
    response.json
}

/// Checks a delivery's signature the way a receiver would, with nothing from the server's code.
fn assert_signed(delivery: &Received, secret: &str) {
    let key = STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let id = delivery.header("webhook-id");
    let timestamp = delivery.header("webhook-timestamp");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.{}", delivery.body).as_bytes());
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    assert_eq!(delivery.header("webhook-signature"), expected, "{delivery:?}");
    let sent: i64 = timestamp.parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - sent).abs() < 60, "timestamp {sent} is not now");
    assert!(id.starts_with("msg_"), "{id}");
}

fn types(received: &[Received]) -> Vec<String> {
    received.iter().map(|r| r.json()["type"].as_str().unwrap().to_owned()).collect()
}

async fn deliveries(app: &TestApp, carol: &str, webhook: &Value) -> Vec<Value> {
    let response = app.get(&format!("/webhooks/{}/deliveries", webhook["id"]), Some(carol)).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    response.json.as_array().unwrap().clone()
}

/// Waits (4 s at most) until the webhook's newest delivery has been attempted once; returns it.
async fn after_first_attempt(app: &TestApp, carol: &str, webhook: &Value) -> Value {
    for _ in 0..200 {
        let newest = deliveries(app, carol, webhook).await[0].clone();
        if newest["attempts"] == 1 {
            return newest;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never attempted: {:#?}", deliveries(app, carol, webhook).await);
}

/// Waits (10 s at most) until every delivery of the webhook is in `state`.
async fn wait_until_all(app: &TestApp, carol: &str, webhook: &Value, state: &str) -> Vec<Value> {
    for _ in 0..500 {
        let listed = deliveries(app, carol, webhook).await;
        if !listed.is_empty() && listed.iter().all(|d| d["state"] == state) {
            return listed;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("deliveries never all {state}: {:#?}", deliveries(app, carol, webhook).await);
}

async fn only_admins_manage_webhooks_and_the_secret_is_shown_once(app: TestApp) {
    let tokens = app.demo_tokens().await;
    let body = json!({"url": "https://hooks.example.com/in", "events": ["ticket.created"]});
    for token in [&tokens.alice, &tokens.bob] {
        let refused = app.call(Method::POST, "/webhooks", Some(token), Some(body.clone())).await;
        refused.assert_problem(StatusCode::FORBIDDEN);
        app.get("/webhooks", Some(token)).await.assert_problem(StatusCode::FORBIDDEN);
    }
    app.get("/webhooks", None).await.assert_problem(StatusCode::UNAUTHORIZED);

    // A literal public address needs no DNS, so this runs offline.
    let url = "https://203.0.114.7/in";
    let created = register(&app, &tokens.carol, url, &["ticket.status_changed", "ticket.created"]).await;
    let id = created["id"].as_i64().unwrap();
    let secret = created["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(STANDARD.decode(&secret[6..]).unwrap().len(), 32);
    assert_eq!(created["events"], json!(["ticket.created", "ticket.status_changed"]));
    assert_eq!(created["active"], true);
    app.create_ticket(&tokens.alice, "Told to the webhook").await;
    let deliveries = format!("SELECT CAST(count(*) AS TEXT) FROM webhook_deliveries WHERE webhook_id = {id}");
    assert_eq!(app.texts(&deliveries).await, ["1"]);

    let shown = app.get(&format!("/webhooks/{id}"), Some(&tokens.carol)).await;
    assert_eq!(shown.status, StatusCode::OK);
    assert!(shown.json.get("secret").is_none() && !shown.text.contains(secret), "{}", shown.text);
    let listed = app.get("/webhooks", Some(&tokens.carol)).await;
    assert_eq!(listed.json.as_array().unwrap().len(), 1);
    assert!(!listed.text.contains(secret));
    for token in [&tokens.alice, &tokens.bob] {
        app.get(&format!("/webhooks/{id}"), Some(token)).await.assert_problem(StatusCode::FORBIDDEN);
        let path = format!("/webhooks/{id}/deliveries");
        app.get(&path, Some(token)).await.assert_problem(StatusCode::FORBIDDEN);
    }

    let paused = app
        .call(Method::PATCH, &format!("/webhooks/{id}"), Some(&tokens.carol), Some(json!({"active": false})))
        .await;
    assert_eq!((paused.status, &paused.json["active"]), (StatusCode::OK, &json!(false)));
    assert_eq!(paused.json["url"], url);

    let rotated =
        app.call(Method::POST, &format!("/webhooks/{id}/rotate-secret"), Some(&tokens.carol), None).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.text);
    assert_eq!(rotated.header("cache-control"), Some("no-store"));
    let new_secret = rotated.json["secret"].as_str().unwrap();
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);
    let stored = app.texts(&format!("SELECT secret FROM webhooks WHERE id = {id}")).await;
    assert_eq!(stored, [new_secret]);

    let deleted = app.call(Method::DELETE, &format!("/webhooks/{id}"), Some(&tokens.carol), None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(app.texts(&deliveries).await, ["0"], "its deliveries go with it");
    app.get(&format!("/webhooks/{id}"), Some(&tokens.carol)).await.assert_problem(StatusCode::NOT_FOUND);
    let again = app.call(Method::DELETE, &format!("/webhooks/{id}"), Some(&tokens.carol), None).await;
    again.assert_problem(StatusCode::NOT_FOUND);
}

async fn webhook_input_is_checked(app: TestApp) {
    let carol = app.login("carol", "carol123").await;
    let post = |body: Value| {
        let (app, carol) = (&app, &carol);
        async move { app.call(Method::POST, "/webhooks", Some(carol), Some(body)).await }
    };
    for (body, status) in [
        (json!({"url": "https://203.0.114.7/", "events": []}), StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({"url": "https://203.0.114.7/", "events": ["ticket.exploded"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"url": "ftp://203.0.114.7/", "events": ["ticket.created"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"url": "https://u:p@203.0.114.7/", "events": ["ticket.created"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!({"url": "not a url", "events": ["ticket.created"]}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"events": ["ticket.created"]}), StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        post(body.clone()).await.assert_problem(status);
    }
    let created = register(&app, &carol, "https://203.0.114.7/", &["ticket.created"]).await;
    let path = format!("/webhooks/{}", created["id"]);
    for body in [json!({}), json!({"events": []}), json!({"url": "gopher://x/"}), json!({"active": null})] {
        let response = app.call(Method::PATCH, &path, Some(&carol), Some(body.clone())).await;
        response.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    }
    // None of them changed the webhook.
    let unchanged = app.get(&path, Some(&carol)).await.json;
    assert_eq!(unchanged["url"], created["url"]);
    assert_eq!((&unchanged["events"], &unchanged["active"]), (&created["events"], &created["active"]));
    app.call(Method::PATCH, "/webhooks/999", Some(&carol), Some(json!({"active": true})))
        .await
        .assert_problem(StatusCode::NOT_FOUND);
    app.get("/webhooks/999/deliveries", Some(&carol)).await.assert_problem(StatusCode::NOT_FOUND);
    app.get("/webhooks/abc", Some(&carol)).await.assert_problem(StatusCode::BAD_REQUEST);
}

async fn private_addresses_are_refused_at_registration_and_at_delivery(app: TestApp) {
    let receiver = Receiver::start(0).await;
    let carol = app.login("carol", "carol123").await;
    for url in [
        receiver.url.as_str(),
        "http://localhost/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.8/",
        "http://192.168.1.1/",
        "http://[::1]/",
        "http://[fd00:ec2::254]/",
        "http://[::ffff:127.0.0.1]/",
        "http://0x7f.1/",
        "http://2130706433/",
        "http://0.0.0.0/",
        // IPv6 ranges that carry or reach IPv4 or special networks:
        "http://[64:ff9b:1::a9fe:a9fe]/",
        "http://[::ffff:0:7f00:1]/",
        "http://[2002:7f00:1::1]/",
        "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
        "http://[100::1]/",
        "http://no-such-host.invalid/",
    ] {
        let body = json!({"url": url, "events": ["ticket.created"]});
        let refused = app.call(Method::POST, "/webhooks", Some(&carol), Some(body)).await;
        let detail = refused.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
        // One answer for every refusal, naming no address: no oracle for internal names.
        assert_eq!(detail, ticketdesk::webhooks::NOT_PUBLIC, "{url}");
    }
    let created = register(&app, &carol, "https://203.0.114.7/", &["ticket.created"]).await;
    let moved = json!({"url": "http://127.0.0.1:9/"});
    let path = format!("/webhooks/{}", created["id"]);
    app.call(Method::PATCH, &path, Some(&carol), Some(moved))
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(app.get("/webhooks", Some(&carol)).await.json.as_array().unwrap().len() == 1);

    // A URL that got past registration (stored before, or its name since pointed inside) is
    // checked again when a delivery is made.
    app.execute(&format!("UPDATE webhooks SET url = '{}' WHERE id = {}", receiver.url, created["id"])).await;
    let alice = app.login("alice", "alice123").await;
    app.create_ticket(&alice, "Aimed inside").await;
    let listed = wait_until_all(&app, &carol, &created, "pending").await;
    let delivery = &after_first_attempt(&app, &carol, &created).await;
    assert_eq!(delivery["attempts"], 1, "{listed:?}");
    assert!(delivery["last_error"].as_str().unwrap().contains("refused"), "{delivery}");
    assert!(delivery["last_status"].is_null());

    // A name is checked as it is resolved for the request itself.
    let by_name = receiver.url.replace("127.0.0.1", "localhost");
    app.execute(&format!("UPDATE webhooks SET url = '{by_name}' WHERE id = {}", created["id"])).await;
    app.create_ticket(&alice, "Aimed inside by name").await;
    let named = after_first_attempt(&app, &carol, &created).await;
    let error = named["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("localhost resolves to no public address"), "{named}");
    assert!(receiver.received().is_empty(), "nothing may reach the private address");
}

async fn deliveries_are_signed_in_order_and_keep_internal_notes_out(database: EmptyDatabase) {
    let app = TestApp::at(&database.url, RECEIVING).await;
    let receiver = Receiver::start(0).await;
    let notes = Receiver::start(0).await;
    let tokens = app.demo_tokens().await;
    let all_public = [
        "ticket.created",
        "ticket.assigned",
        "ticket.unassigned",
        "ticket.status_changed",
        "ticket.priority_changed",
        "ticket.comment_added",
        "ticket.embed_token_rotated",
    ];
    let webhook = register(&app, &tokens.carol, &receiver.url, &all_public).await;
    let secret = webhook["secret"].as_str().unwrap().to_owned();
    let note_hook = register(&app, &tokens.carol, &notes.url, &["ticket.internal_note_added"]).await;
    assert_eq!(note_hook["include_embed_token"], false);
    // This one asks for the embed token in its payloads; the other gets none.
    let opt_in = json!({"include_embed_token": true});
    let path = format!("/webhooks/{}", note_hook["id"]);
    let opted = app.call(Method::PATCH, &path, Some(&tokens.carol), Some(opt_in)).await;
    assert_eq!(opted.json["include_embed_token"], true, "{}", opted.text);

    let ticket = app.create_ticket(&tokens.alice, "Printer on fire").await;
    let (id, embed_token) = (ticket.id, &ticket.embed_token.to_string());
    app.assign(&tokens.carol, id, app.user_id("bob").await).await;
    app.set_status(&tokens.bob, id, "in_progress").await;
    let trace = app.upload_token(&tokens.bob, "trace.txt", b"secret stack trace").await;
    let note = json!({"body": "Known bug #12", "internal": true, "attachments": [trace]});
    assert_eq!(app.comment(&tokens.bob, id, note).await.status, StatusCode::CREATED);
    let changelog = app.upload_token(&tokens.bob, "changelog.txt", b"2.2: the printer stays cool").await;
    let reply = json!({"body": "Fixed in 2.2", "attachments": [changelog]});
    assert_eq!(app.comment(&tokens.bob, id, reply).await.status, StatusCode::CREATED);
    let urgent = json!({"priority": "urgent"});
    app.call(Method::PATCH, &format!("/tickets/{id}"), Some(&tokens.carol), Some(urgent)).await;
    app.call(Method::POST, &format!("/tickets/{id}/embed-token"), Some(&tokens.alice), None).await;

    let received = receiver.wait_for(6).await;
    assert_eq!(
        types(&received),
        [
            "ticket.created",
            "ticket.assigned",
            "ticket.status_changed",
            "ticket.comment_added",
            "ticket.priority_changed",
            "ticket.embed_token_rotated"
        ]
    );
    for delivery in &received {
        assert_signed(delivery, &secret);
        assert_eq!(delivery.header("content-type"), "application/json");
        let body = delivery.json();
        assert_eq!(body["data"]["ticket"]["id"], id, "{body}");
        assert_eq!(body["data"]["event"]["ticket_id"], id, "{body}");
        assert!(body["timestamp"].is_string(), "{body}");
        assert!(!delivery.body.contains("Known bug"), "an internal note leaked: {body}");
        assert!(!delivery.body.contains("trace.txt"), "an internal note's file leaked: {body}");
        assert!(!delivery.body.contains("the printer stays cool"), "metadata only, never bytes: {body}");
        assert!(body["data"]["ticket"].get("embed_token").is_none(), "not asked for: {body}");
        assert!(!delivery.body.contains(embed_token), "{body}");
    }
    let ids: std::collections::HashSet<&str> = received.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids.len(), 6, "each delivery has an id of its own");
    let status_changed = received[2].json();
    assert_eq!(
        (&status_changed["data"]["event"]["from"], &status_changed["data"]["event"]["to"]),
        (&json!("open"), &json!("in_progress"))
    );
    let commented = received[3].json();
    assert_eq!(commented["data"]["comment"]["body"], "Fixed in 2.2");
    let file = &commented["data"]["comment"]["attachments"][0];
    assert_eq!((&file["filename"], &file["size"]), (&json!("changelog.txt"), &json!(27)), "{commented}");
    assert!(received[0].json()["data"].get("comment").is_none());

    let noted = notes.wait_for(1).await;
    assert_eq!(types(&noted), ["ticket.internal_note_added"]);
    assert_eq!(noted[0].json()["data"]["comment"]["body"], "Known bug #12");
    assert_eq!(noted[0].json()["data"]["comment"]["internal"], true);
    assert_eq!(noted[0].json()["data"]["comment"]["attachments"][0]["filename"], "trace.txt");
    // The ticket as it is when the payload is built: its embed token may have been rotated since.
    let shown = noted[0].json()["data"]["ticket"]["embed_token"].as_str().map(uuid::Uuid::parse_str);
    assert!(matches!(shown, Some(Ok(_))), "{:?}", noted[0].body);
    assert_signed(&noted[0], note_hook["secret"].as_str().unwrap());

    let listed = wait_until_all(&app, &tokens.carol, &webhook, "delivered").await;
    assert_eq!(listed.len(), 6);
    assert_eq!(listed[0]["type"], "ticket.embed_token_rotated", "newest first");
    for delivery in &listed {
        assert_eq!((&delivery["attempts"], &delivery["last_status"]), (&json!(1), &json!(204)), "{delivery}");
        assert!(delivery["delivered_at"].is_string() && delivery["next_attempt_at"].is_null(), "{delivery}");
    }
    let sent: Vec<&str> = received.iter().rev().map(|r| r.header("webhook-id")).collect();
    let shown: Vec<&str> = listed.iter().map(|d| d["message_id"].as_str().unwrap()).collect();
    assert_eq!(sent, shown, "the log names each delivery by the webhook-id it was sent with");
    // Paged like tickets.
    let page = app.get(&format!("/webhooks/{}/deliveries?limit=4", webhook["id"]), Some(&tokens.carol)).await;
    assert_eq!(page.json.as_array().unwrap().len(), 4);
    assert!(page.header("link").unwrap().contains("rel=\"next\""));
    assert_eq!(receiver.received().len(), 6, "each delivery was attempted once, and so sent once");
}

async fn a_failed_delivery_is_retried_with_the_same_id_and_holds_back_the_next(database: EmptyDatabase) {
    let app = TestApp::at(&database.url, RECEIVING).await;
    let receiver = Receiver::start(2).await;
    let tokens = app.demo_tokens().await;
    let webhook = register(&app, &tokens.carol, &receiver.url, &["ticket.created", "ticket.assigned"]).await;
    app.bobs_ticket(&tokens, "Retried").await;

    let received = receiver.wait_for(4).await;
    // The assignment waited for the creation, through two failures a second apart.
    assert_eq!(types(&received), ["ticket.created", "ticket.created", "ticket.created", "ticket.assigned"]);
    let first_id = received[0].header("webhook-id");
    assert!(received[..3].iter().all(|r| r.header("webhook-id") == first_id && r.body == received[0].body));
    assert_ne!(received[3].header("webhook-id"), first_id);
    for delivery in &received {
        assert_signed(delivery, webhook["secret"].as_str().unwrap());
    }
    let listed = wait_until_all(&app, &tokens.carol, &webhook, "delivered").await;
    let created = listed.iter().find(|d| d["type"] == "ticket.created").unwrap();
    assert_eq!((&created["attempts"], &created["last_status"]), (&json!(3), &json!(204)), "{created}");
}

async fn a_delivery_that_keeps_failing_is_marked_failed(database: EmptyDatabase) {
    let app = TestApp::at(&database.url, RECEIVING).await;
    let receiver = Receiver::start(usize::MAX).await;
    let tokens = app.demo_tokens().await;
    let webhook =
        register(&app, &tokens.carol, &receiver.url, &["ticket.created", "ticket.status_changed"]).await;
    let id = app.bobs_ticket(&tokens, "Never heard").await;
    app.set_status(&tokens.bob, id, "in_progress").await;
    // Two retries (WEBHOOK_RETRY_SECS=1,1): three attempts, then the next event's turn.
    let received = receiver.wait_for(4).await;
    assert_eq!(
        types(&received)[..4],
        ["ticket.created", "ticket.created", "ticket.created", "ticket.status_changed"]
    );
    receiver.fail_next(0);
    let listed = deliveries(&app, &tokens.carol, &webhook).await;
    let created = listed.iter().find(|d| d["type"] == "ticket.created").unwrap();
    assert_eq!(created["state"], "failed", "{created}");
    assert_eq!((&created["attempts"], &created["last_status"]), (&json!(3), &json!(500)), "{created}");
    assert!(created["last_error"].as_str().unwrap().contains("500"), "{created}");
    assert!(created["next_attempt_at"].is_null());
}

/// As [`RECEIVING`], but a failed attempt is retried after two seconds, once.
pub const RECEIVING_SLOWLY: &[(&str, &str)] =
    &[("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true"), ("WEBHOOK_RETRY_SECS", "2")];

async fn the_outbox_survives_a_restart(database: EmptyDatabase) {
    let app = TestApp::at(&database.url, RECEIVING_SLOWLY).await;
    let receiver = Receiver::start(usize::MAX).await;
    let tokens = app.demo_tokens().await;
    let webhook = register(&app, &tokens.carol, &receiver.url, &["ticket.created"]).await;
    app.create_ticket(&tokens.alice, "Across a restart").await;
    let first = receiver.wait_for(1).await;
    after_first_attempt(&app, &tokens.carol, &webhook).await;
    let config = app.config.clone();
    drop(app);
    // While no server runs, the receiver comes back; the retry is due two seconds after the
    // first attempt, when only the restarted server can make it.
    receiver.fail_next(0);
    let restarted = TestApp::at(config.database_url.expose(), RECEIVING_SLOWLY).await;
    let received = receiver.wait_for(2).await;
    assert_eq!(received[1].header("webhook-id"), first[0].header("webhook-id"), "the same delivery, retried");
    assert_eq!(received[1].body, first[0].body);
    let listed = wait_until_all(&restarted, &tokens.carol, &webhook, "delivered").await;
    assert_eq!((listed.len(), &listed[0]["attempts"]), (1, &json!(2)));
}

async fn two_servers_deliver_each_event_once(database: EmptyDatabase) {
    let app = TestApp::at(&database.url, RECEIVING).await;
    let receiver = Receiver::start(0).await;
    let other = app.replica().await;
    let tokens = app.demo_tokens().await;
    let webhook =
        register(&app, &tokens.carol, &receiver.url, &["ticket.created", "ticket.status_changed"]).await;
    let mut ids = Vec::new();
    for n in 0..10 {
        let server = if n % 2 == 0 { &app } else { &other };
        let id = server.create_ticket_id(&tokens.alice, &format!("Ticket {n}")).await;
        server.assign(&tokens.carol, id, app.user_id("bob").await).await;
        ids.push(id);
    }
    for (n, id) in ids.iter().enumerate() {
        let server = if n % 2 == 0 { &other } else { &app };
        server.set_status(&tokens.bob, *id, "in_progress").await;
    }
    receiver.wait_for(20).await;
    // Each delivery made once: a second attempt anywhere would have counted in its record.
    let listed = wait_until_all(&app, &tokens.carol, &webhook, "delivered").await;
    assert_eq!(listed.len(), 20);
    assert!(listed.iter().all(|delivery| delivery["attempts"] == 1), "{listed:#?}");
    let received = receiver.received();
    assert_eq!(received.len(), 20, "each event once between both servers: {:#?}", types(&received));
    let unique: std::collections::HashSet<&str> = received.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(unique.len(), 20);
    for id in ids {
        let of_ticket: Vec<String> = received
            .iter()
            .filter(|r| r.json()["data"]["ticket"]["id"] == id)
            .map(|r| r.json()["type"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(of_ticket, ["ticket.created", "ticket.status_changed"], "ticket {id}");
    }
}

async fn redirects_are_not_followed(database: EmptyDatabase) {
    let app = TestApp::at(&database.url, RECEIVING).await;
    let receiver = Receiver::start(0).await;
    let carol = app.login("carol", "carol123").await;
    let moved = receiver.url.replace("/hook", "/moved");
    let webhook = register(&app, &carol, &moved, &["ticket.created"]).await;
    let alice = app.login("alice", "alice123").await;
    app.create_ticket(&alice, "Redirected").await;
    let delivery = after_first_attempt(&app, &carol, &webhook).await;
    assert_eq!(
        (&delivery["last_status"], &delivery["state"]),
        (&json!(307), &json!("pending")),
        "{delivery}"
    );
    assert!(receiver.received().is_empty(), "the redirect's target got nothing");
}

/// Attempts time out after a second.
pub const QUICK_TIMEOUT: &[(&str, &str)] =
    &[("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true"), ("WEBHOOK_TIMEOUT_SECS", "1")];

async fn a_slow_receiver_times_out_without_holding_up_the_api(database: EmptyDatabase) {
    let app = TestApp::at(&database.url, QUICK_TIMEOUT).await;
    let receiver = Receiver::start(0).await;
    let carol = app.login("carol", "carol123").await;
    let slow = receiver.url.replace("/hook", "/slow");
    let webhook = register(&app, &carol, &slow, &["ticket.created"]).await;
    let alice = app.login("alice", "alice123").await;
    let id = app.create_ticket_id(&alice, "Slowly heard").await;
    // While the attempt waits on the receiver, the API answers as ever.
    for _ in 0..5 {
        let started = std::time::Instant::now();
        assert_eq!(app.get(&format!("/tickets/{id}"), Some(&alice)).await.status, StatusCode::OK);
        assert!(started.elapsed() < Duration::from_millis(500), "{:?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let delivery = after_first_attempt(&app, &carol, &webhook).await;
    assert!(delivery["last_error"].as_str().unwrap_or_default().contains("timed out"), "{delivery}");
    assert!(delivery["last_status"].is_null() && delivery["state"] == "pending", "{delivery}");
}

/// Changes to one ticket keep coming while its deliveries are being sent and finished, from two
/// servers: each delivery queued behind another is made due exactly when that one is done.
async fn a_busy_ticket_gets_every_delivery_in_order_while_they_are_sent(database: EmptyDatabase) {
    let app = TestApp::at(&database.url, RECEIVING).await;
    let receiver = Receiver::start(0).await;
    let other = app.replica().await;
    let tokens = app.demo_tokens().await;
    register(&app, &tokens.carol, &receiver.url, &["ticket.priority_changed"]).await;
    let id = app.create_ticket_id(&tokens.alice, "Busy").await;
    let priorities = ["high", "low", "urgent", "normal"];
    for n in 0..24 {
        let server = if n % 2 == 0 { &app } else { &other };
        let body = json!({"priority": priorities[n % 4]});
        let changed =
            server.call(Method::PATCH, &format!("/tickets/{id}"), Some(&tokens.carol), Some(body)).await;
        assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    }
    let received = receiver.wait_for(24).await;
    let steps: Vec<(String, String)> = received
        .iter()
        .map(|r| {
            let event = &r.json()["data"]["event"];
            (event["from"].as_str().unwrap().to_owned(), event["to"].as_str().unwrap().to_owned())
        })
        .collect();
    let mut expected = Vec::new();
    let mut before = "normal";
    for n in 0..24 {
        expected.push((before.to_owned(), priorities[n % 4].to_owned()));
        before = priorities[n % 4];
    }
    assert_eq!(steps, expected, "every change, once, in order");
}

/// Four delivery slots, two of them at most for any one webhook.
pub const FOUR_SLOTS: &[(&str, &str)] = &[
    ("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true"),
    ("WEBHOOK_MAX_CONCURRENT", "4"),
    ("WEBHOOK_MAX_CONCURRENT_PER_WEBHOOK", "2"),
];

async fn a_stalled_receiver_does_not_hold_up_a_fast_one(database: EmptyDatabase) {
    let app = TestApp::at(&database.url, FOUR_SLOTS).await;
    let receiver = Receiver::start(0).await;
    let tokens = app.demo_tokens().await;
    // A receiver that answers nothing until each attempt times out (10 s), with a backlog of
    // six deliveries: more than all the slots.
    let stalled = receiver.url.replace("/hook", "/stalled");
    register(&app, &tokens.carol, &stalled, &["ticket.created"]).await;
    for n in 0..6 {
        app.create_ticket(&tokens.alice, &format!("For the stalled receiver {n}")).await;
    }
    let fast = Receiver::start(0).await;
    register(&app, &tokens.carol, &fast.url, &["ticket.created"]).await;
    for n in 1..=3 {
        let created = std::time::Instant::now();
        app.create_ticket(&tokens.alice, &format!("For the fast receiver {n}")).await;
        fast.wait_for(n).await;
        let took = created.elapsed();
        // Without a share per webhook it would wait for a stalled attempt to time out.
        assert!(took < Duration::from_secs(3), "delivery {n} took {took:?} beside the stalled receiver");
    }
}

/// What the delivery worker claims, asked of the store directly (this server delivers none):
/// the oldest due deliveries first, up to the limit, none of a paused webhook's, none twice.
async fn claims_take_the_oldest_due_deliveries_of_active_webhooks(database: EmptyDatabase) {
    use ticketdesk::domain::InFlight;
    let settings = [crate::helpers::NO_WEBHOOK_DELIVERY[0], RECEIVING[0]];
    let app = TestApp::at(&database.url, &settings).await;
    let tokens = app.demo_tokens().await;
    let running = register(&app, &tokens.carol, "http://127.0.0.1:9/a", &["ticket.created"]).await;
    let paused = register(&app, &tokens.carol, "http://127.0.0.1:9/b", &["ticket.created"]).await;
    let mut tickets = Vec::new();
    for n in 0..5 {
        tickets.push(app.create_ticket(&tokens.alice, &format!("Queued {n}")).await.id);
    }
    let pause = json!({"active": false});
    let paused_now = app
        .call(Method::PATCH, &format!("/webhooks/{}", paused["id"]), Some(&tokens.carol), Some(pause))
        .await;
    assert_eq!(paused_now.status, StatusCode::OK);

    let lease = chrono::Utc::now() + chrono::Duration::minutes(1);
    let claim_beside = async |limit, in_flight: &InFlight| {
        let claimed = app.store.claim_deliveries(limit, lease, in_flight).await.unwrap();
        claimed.iter().map(|d| (d.webhook_id, d.ticket_id)).collect::<Vec<_>>()
    };
    let claim = async |limit| claim_beside(limit, &InFlight::new(10)).await;
    let running_id = running["id"].as_i64().unwrap();
    let first = claim(3).await;
    assert_eq!(first, tickets[..3].iter().map(|&t| (running_id, t)).collect::<Vec<_>>(), "oldest first");
    let mut busy = InFlight::new(3);
    for _ in 0..3 {
        busy.started(running_id);
    }
    assert_eq!(claim_beside(10, &busy).await, [], "its share is in flight");
    busy.finished(running_id);
    assert_eq!(claim_beside(10, &busy).await, [(running_id, tickets[3])], "room for one");
    let rest = claim(10).await;
    assert_eq!(rest, [(running_id, tickets[4])], "the paused one's wait");

    let resume = json!({"active": true});
    app.call(Method::PATCH, &format!("/webhooks/{}", paused["id"]), Some(&tokens.carol), Some(resume)).await;
    let resumed = claim(10).await;
    let paused_id = paused["id"].as_i64().unwrap();
    assert_eq!(resumed, tickets.iter().map(|&t| (paused_id, t)).collect::<Vec<_>>(), "once active, in order");
}

/// A claim's lease, asked of the store directly (this server delivers none): while it runs the
/// delivery is claimed by no one else; once it has ended, or the delivery is given back, the
/// delivery is due again, in its place in the queue.
async fn a_claim_holds_a_delivery_until_its_lease_ends_or_it_is_given_back(database: EmptyDatabase) {
    use ticketdesk::domain::InFlight;
    let settings = [crate::helpers::NO_WEBHOOK_DELIVERY[0], RECEIVING[0]];
    let app = TestApp::at(&database.url, &settings).await;
    let tokens = app.demo_tokens().await;
    let webhook = register(&app, &tokens.carol, "http://127.0.0.1:9/a", &["ticket.created"]).await;
    let first = app.create_ticket(&tokens.alice, "Leased").await.id;
    let second = app.create_ticket(&tokens.alice, "Behind it").await.id;
    let claim = async |lease: chrono::DateTime<chrono::Utc>| {
        let claimed = app.store.claim_deliveries(1, lease, &InFlight::new(10)).await.unwrap();
        claimed.into_iter().map(|d| (d.id, d.ticket_id)).collect::<Vec<_>>()
    };
    let ended = chrono::Utc::now() - chrono::Duration::seconds(1);
    let running = chrono::Utc::now() + chrono::Duration::minutes(1);
    let lapsed = claim(ended).await;
    assert_eq!(lapsed.iter().map(|c| c.1).collect::<Vec<_>>(), [first]);
    assert_eq!(claim(running).await, lapsed, "its lease has ended: due again, still first in line");
    let listed = deliveries(&app, &tokens.carol, &webhook).await;
    let shown = listed.iter().find(|d| d["ticket_id"] == first).unwrap()["next_attempt_at"].as_str().unwrap();
    let shown: chrono::DateTime<chrono::Utc> = shown.parse().unwrap();
    assert!((shown - running).num_milliseconds().abs() < 1, "next attempted when its lease ends: {shown}");
    assert_eq!(claim(running).await.iter().map(|c| c.1).collect::<Vec<_>>(), [second], "held by its lease");
    assert_eq!(claim(running).await, [], "both held");
    app.store.release_deliveries(&[lapsed[0].0]).await.unwrap();
    assert_eq!(claim(running).await, lapsed, "given back: due at once");
}

/// Attempts recorded in one call, asked of the store directly (this server delivers none): each
/// delivery takes its own outcome; each one done, delivered or given up, makes its ticket's next
/// delivery due, while one to be retried keeps the body it sent and holds its ticket's next back.
async fn attempts_recorded_together_each_take_their_own_outcome(database: EmptyDatabase) {
    use ticketdesk::domain::{AttemptOutcome, InFlight, NextStep};
    let settings = [crate::helpers::NO_WEBHOOK_DELIVERY[0], RECEIVING[0]];
    let app = TestApp::at(&database.url, &settings).await;
    let tokens = app.demo_tokens().await;
    let events = ["ticket.created", "ticket.priority_changed"];
    let webhook = register(&app, &tokens.carol, "http://127.0.0.1:9/a", &events).await;
    let mut tickets = Vec::new();
    for subject in ["Delivered", "Retried", "Given up"] {
        let id = app.create_ticket(&tokens.alice, subject).await.id;
        let high = Some(json!({"priority": "high"}));
        let changed = app.call(Method::PATCH, &format!("/tickets/{id}"), Some(&tokens.carol), high).await;
        assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
        tickets.push(id);
    }
    let lease = chrono::Utc::now() + chrono::Duration::minutes(1);
    let claim = async || {
        let mut due = app.store.claim_deliveries(10, lease, &InFlight::new(10)).await.unwrap();
        due.sort_by_key(|delivery| delivery.ticket_id);
        due
    };
    let created = claim().await;
    let claimed: Vec<i64> = created.iter().map(|delivery| delivery.ticket_id).collect();
    assert_eq!(claimed, tickets, "each ticket's creation; its change waits behind it");
    let sent = r#"{"sent":"once"}"#;
    let outcome = |status: u16, next| AttemptOutcome {
        body: sent.to_owned(),
        status: Some(status),
        error: (status != 204).then(|| format!("the receiver answered {status}")),
        next,
    };
    let retry_at = chrono::Utc::now() - chrono::Duration::seconds(1);
    let outcomes = [
        outcome(204, NextStep::Delivered),
        outcome(500, NextStep::RetryAt(retry_at)),
        outcome(500, NextStep::GiveUp),
    ];
    let attempts: Vec<_> = created.clone().into_iter().zip(outcomes).collect();
    app.store.record_attempts(&attempts).await.unwrap();

    let listed = deliveries(&app, &tokens.carol, &webhook).await;
    let creation = |ticket: i64| {
        listed.iter().find(|d| d["ticket_id"] == ticket && d["type"] == "ticket.created").unwrap().clone()
    };
    let states: Vec<(Value, Value, Value)> = tickets
        .iter()
        .map(|&ticket| {
            let delivery = creation(ticket);
            (delivery["state"].clone(), delivery["attempts"].clone(), delivery["last_status"].clone())
        })
        .collect();
    assert_eq!(
        states,
        [
            (json!("delivered"), json!(1), json!(204)),
            (json!("pending"), json!(1), json!(500)),
            (json!("failed"), json!(1), json!(500)),
        ]
    );

    let next = claim().await;
    let due: Vec<(i64, i64, Option<&str>)> =
        next.iter().map(|d| (d.ticket_id, d.event_id, d.body.as_deref())).collect();
    let changed_event = |ticket: i64| {
        let delivery =
            listed.iter().find(|d| d["ticket_id"] == ticket && d["type"] == "ticket.priority_changed");
        delivery.unwrap()["event_id"].as_i64().unwrap()
    };
    assert_eq!(
        due,
        [
            (tickets[0], changed_event(tickets[0]), None),
            (tickets[1], created[1].event_id, Some(sent)),
            (tickets[2], changed_event(tickets[2]), None),
        ],
        "the retry again with the same body; the next changes of the other two"
    );
}

/// A server claims more of a webhook's deliveries than the webhook's share lets it send at once;
/// when it stops, those it has not sent are given back, and another server sends them at once
/// rather than when their claims would have run out (70 s here).
async fn a_stopping_server_gives_back_the_deliveries_it_claimed_ahead(database: EmptyDatabase) {
    let one_at_a_time = [RECEIVING[0], ("WEBHOOK_MAX_CONCURRENT_PER_WEBHOOK", "1")];
    let first = TestApp::at(&database.url, &one_at_a_time).await;
    let receiver = Receiver::start(0).await;
    let tokens = first.demo_tokens().await;
    let slow = receiver.url.replace("/hook", "/slow");
    let webhook = register(&first, &tokens.carol, &slow, &["ticket.created"]).await;
    for n in 0..4 {
        first.create_ticket(&tokens.alice, &format!("Claimed ahead {n}")).await;
    }
    // All four claimed, though only one is being sent: each claim's lease runs a minute ahead.
    let mut claimed = Vec::new();
    for _ in 0..250 {
        let lease_from = chrono::Utc::now() + chrono::Duration::seconds(45);
        claimed = deliveries(&first, &tokens.carol, &webhook).await;
        let leased = |d: &Value| {
            d["next_attempt_at"].as_str().and_then(|at| at.parse::<chrono::DateTime<chrono::Utc>>().ok())
                > Some(lease_from)
        };
        if claimed.len() == 4 && claimed.iter().all(leased) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(claimed.len(), 4);
    let second = first.replica().await;
    let fast = json!({"url": receiver.url});
    let moved = second
        .call(Method::PATCH, &format!("/webhooks/{}", webhook["id"]), Some(&tokens.carol), Some(fast))
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.text);
    drop(first);
    // The three not yet sent, by the second server, within wait_for's ten seconds.
    let received = receiver.wait_for(3).await;
    assert_eq!(received.len(), 3);
    let listed = wait_until_all(&second, &tokens.carol, &webhook, "delivered").await;
    assert!(listed.iter().all(|delivery| delivery["attempts"] == 1), "each attempted once: {listed:#?}");
}

/// Deliveries to one receiver share its connection, one after the other, even when it answers
/// with a body the sender never reads: a connection per delivery (a TLS handshake each, over
/// HTTPS) would cost more than the delivery. Fails if the sender's client keeps no idle
/// connections, or is built anew per attempt.
async fn a_receiver_that_answers_with_a_body_keeps_one_connection(database: EmptyDatabase) {
    let app = TestApp::at(&database.url, RECEIVING).await;
    let receiver = Receiver::start(0).await;
    let tokens = app.demo_tokens().await;
    let chatty = receiver.url.replace("/hook", "/chatty");
    register(&app, &tokens.carol, &chatty, &["ticket.created", "ticket.priority_changed"]).await;
    let id = app.create_ticket(&tokens.alice, "Printer on fire").await.id;
    for priority in ["high", "low", "urgent", "normal"] {
        let change = json!({"priority": priority});
        app.call(Method::PATCH, &format!("/tickets/{id}"), Some(&tokens.carol), Some(change)).await;
    }
    let received = receiver.wait_for(5).await;
    assert_eq!(received.len(), 5, "{received:#?}");
    let connections: std::collections::HashSet<SocketAddr> = received.iter().map(|r| r.peer).collect();
    assert_eq!(
        connections.len(),
        1,
        "one after the other, every delivery on the first connection: {connections:?}"
    );
}
