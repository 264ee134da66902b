use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::DateTime;

use crate::helpers::{PUBLIC_BASE_URL, TestApp, sorted_keys};

crate::on_both_backends!(
    embed_needs_no_login_and_shows_only_four_fields,
    unknown_and_malformed_embed_tokens_are_404,
    embed_last_updated_moves_with_the_ticket,
    embed_is_readable_cross_origin_but_other_routes_are_not,
    pollers_get_304_until_the_ticket_changes,
    browsers_get_a_self_contained_status_card,
    hostile_subjects_are_escaped_in_the_card,
);

async fn embed_needs_no_login_and_shows_only_four_fields(app: TestApp) {
    let alice = app.login("alice", "alice123").await;
    let ticket = app.create_ticket(&alice, "App Crash").await;
    let token = &ticket.embed_token.to_string();

    let embed = app.get(&format!("/tickets/embed/{token}"), None).await;
    assert_eq!(embed.status, StatusCode::OK, "{}", embed.text);
    assert_eq!(sorted_keys(&embed.json), ["last_updated", "link", "status", "subject"]);
    assert_eq!(embed.json["subject"], "App Crash");
    assert_eq!(embed.json["status"], "Open");
    assert_eq!(embed.json["link"], format!("{PUBLIC_BASE_URL}/tickets/{token}"));
    assert_eq!(embed.json["last_updated"], serde_json::json!(ticket.updated_at));
    // Nothing about the people or the text leaks, under any name.
    for secret in ["details", "alice", &ticket.created_by.to_string()] {
        assert!(!embed.text.contains(&format!("\"{secret}\"")), "{secret} leaked: {}", embed.text);
    }
}

async fn unknown_and_malformed_embed_tokens_are_404(app: TestApp) {
    let alice = app.login("alice", "alice123").await;
    let ticket = app.create_ticket(&alice, "Hidden").await;
    let id = ticket.id;
    let random = uuid::Uuid::new_v4().to_string();
    let truncated = &ticket.embed_token.to_string()[..35];
    for token in [random.as_str(), truncated, "not-a-uuid", &id.to_string(), "%00", "..%2F..%2Fetc%2Fpasswd"]
    {
        app.get(&format!("/tickets/embed/{token}"), None).await.assert_problem(StatusCode::NOT_FOUND);
    }
}

async fn embed_last_updated_moves_with_the_ticket(app: TestApp) {
    let tokens = app.demo_tokens().await;
    let ticket = app.create_ticket(&tokens.alice, "Moving").await;
    let path = format!("/tickets/embed/{}", ticket.embed_token);
    let before = app.get(&path, None).await.json;

    let id = ticket.id;
    app.set_status(&tokens.carol, id, "in_progress").await;
    let after = app.get(&path, None).await.json;

    assert_eq!(after["status"], "In Progress");
    let parse = |v: &serde_json::Value| DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    assert!(parse(&after["last_updated"]) > parse(&before["last_updated"]), "{before} -> {after}");
}

async fn embed_is_readable_cross_origin_but_other_routes_are_not(app: TestApp) {
    let alice = app.login("alice", "alice123").await;
    let ticket = app.create_ticket(&alice, "Cross origin").await;
    let path = format!("/tickets/embed/{}", ticket.embed_token);

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

fn embed_request(path: &str, accept: &str, if_none_match: Option<&str>) -> Request<Body> {
    let mut request = Request::get(path).header("accept", accept);
    if let Some(etag) = if_none_match {
        request = request.header("if-none-match", etag);
    }
    request.body(Body::empty()).unwrap()
}

async fn pollers_get_304_until_the_ticket_changes(app: TestApp) {
    let tokens = app.demo_tokens().await;
    let ticket = app.create_ticket(&tokens.alice, "Polled").await;
    let path = format!("/tickets/embed/{}", ticket.embed_token);

    let first = app.send(embed_request(&path, "application/json", None)).await;
    let etag = first.header("etag").expect("an ETag").to_owned();
    assert_eq!(first.header("cache-control"), Some("max-age=30"));
    assert_eq!(first.header("vary"), Some("Accept"));

    let unchanged = app.send(embed_request(&path, "application/json", Some(&etag))).await;
    assert_eq!(unchanged.status, StatusCode::NOT_MODIFIED);
    assert!(unchanged.text.is_empty());
    assert_eq!(unchanged.header("etag"), Some(etag.as_str()));
    let weak = app.send(embed_request(&path, "*/*", Some(&format!("\"other\", W/{etag}")))).await;
    assert_eq!(weak.status, StatusCode::NOT_MODIFIED, "weak comparison, lists");

    let html = app.send(embed_request(&path, "text/html", Some(&etag))).await;
    assert_eq!(html.status, StatusCode::OK, "the card has its own ETag");
    assert_ne!(html.header("etag"), Some(etag.as_str()));

    app.set_status(&tokens.carol, ticket.id, "in_progress").await;
    let changed = app.send(embed_request(&path, "application/json", Some(&etag))).await;
    assert_eq!(changed.status, StatusCode::OK);
    assert_eq!(changed.json["status"], "In Progress");
    assert_ne!(changed.header("etag"), Some(etag.as_str()));
}

async fn browsers_get_a_self_contained_status_card(app: TestApp) {
    let alice = app.login("alice", "alice123").await;
    let ticket = app.create_ticket(&alice, "Printer jammed").await;
    let token = &ticket.embed_token.to_string();
    let browser_accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    let card = app.send(embed_request(&format!("/tickets/embed/{token}"), browser_accept, None)).await;
    assert_eq!(card.status, StatusCode::OK);
    assert!(card.header("content-type").unwrap().starts_with("text/html"));
    let csp = card.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors *"), "{csp}");
    assert!(card.header("x-frame-options").is_none(), "web pages may frame it");
    assert_eq!(card.header("referrer-policy"), Some("no-referrer"));
    assert!(card.text.contains("<h1 id=\"subject\">Printer jammed</h1>"), "{}", card.text);
    assert!(card.text.contains(">Open</span>"));
    assert!(card.text.contains(&format!("href=\"{PUBLIC_BASE_URL}/tickets/{token}\"")));
    assert!(card.text.contains("<html lang=\"en\">") && card.text.contains("<time datetime="));
    for external in ["<script", "src=", "<link", "@import", "url("] {
        assert!(!card.text.contains(external), "the card must load nothing: {external}");
    }
    let unknown = app
        .send(embed_request(&format!("/tickets/embed/{}", uuid::Uuid::new_v4()), browser_accept, None))
        .await;
    unknown.assert_problem(StatusCode::NOT_FOUND);
}

async fn hostile_subjects_are_escaped_in_the_card(app: TestApp) {
    let alice = app.login("alice", "alice123").await;
    let hostile = r#"</h1><script>alert("x")</script><img src=x onerror='y'> & "quotes""#;
    let ticket = app.create_ticket(&alice, hostile).await;
    let path = format!("/tickets/embed/{}", ticket.embed_token);
    let card = app.send(embed_request(&path, "text/html", None)).await;
    assert!(
        !card.text.contains("<script") && !card.text.contains("<img") && !card.text.contains("</h1><"),
        "{}",
        card.text
    );
    assert!(
        card.text.contains("&lt;/h1&gt;&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"),
        "{}",
        card.text
    );
    assert!(card.text.contains("onerror=&#39;y&#39;&gt; &amp; &quot;quotes&quot;"), "{}", card.text);
    // JSON carries the subject as data, unchanged.
    assert_eq!(app.get(&path, None).await.json["subject"], hostile);
}
