use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{DemoTokens, TestApp};

crate::on_both_backends!(
    filters_combine,
    sorting_by_last_update_and_ascending,
    pages_follow_link_headers_and_keep_filters,
    pages_neither_skip_nor_repeat_when_tickets_arrive_meanwhile,
    full_text_search_covers_subject_description_and_public_comments,
    search_takes_any_text_without_error,
    search_past_the_walk_finds_and_pages_what_a_full_scan_would,
    search_by_update_reads_hour_by_hour_and_pages_what_a_full_scan_would,
    a_long_history_keeps_every_document_bounded_and_stays_searchable,
    bad_listing_parameters_are_400_and_created_by_is_for_admins,
);

fn ids(response: &Value) -> Vec<i64> {
    response.as_array().expect("a JSON array").iter().map(|t| t["id"].as_i64().unwrap()).collect()
}

async fn list(app: &TestApp, token: &str, url: &str) -> Vec<i64> {
    let response = app.get(url, Some(token)).await;
    assert_eq!(response.status, StatusCode::OK, "{url}: {}", response.text);
    ids(&response.json)
}

async fn create(app: &TestApp, token: &str, subject: &str, description: &str, priority: &str) -> i64 {
    let body = json!({"subject": subject, "description": description, "priority": priority});
    let response = app.call(Method::POST, "/tickets/", Some(token), Some(body)).await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);
    response.json["id"].as_i64().unwrap()
}

/// Follows `Link: rel="next"` from `url` to the end; returns every id and the number of pages.
async fn all_pages(app: &TestApp, token: &str, url: &str) -> (Vec<i64>, usize) {
    let pages = app.pages(url, token).await;
    (pages.iter().flat_map(ids).collect(), pages.len())
}

async fn filters_combine(app: TestApp) {
    let DemoTokens { alice, bob, carol } = app.demo_tokens().await;
    let dave_id = app.add_user("dave", "dave-password", ticketdesk::domain::Role::Customer).await;
    let dave = app.login("dave", "dave-password").await;
    let bob_id = app.user_id("bob").await;
    let urgent_open = create(&app, &alice, "Server down", "", "urgent").await;
    let urgent_working = create(&app, &alice, "Mail down", "", "urgent").await;
    let low = create(&app, &alice, "Typo", "", "low").await;
    let daves = create(&app, &dave, "Dave's", "", "normal").await;
    app.assign(&carol, urgent_working, bob_id).await;
    app.assign(&carol, daves, bob_id).await;
    app.set_status(&bob, urgent_working, "in_progress").await;

    assert_eq!(list(&app, &carol, "/tickets/?priority=urgent").await, [urgent_working, urgent_open]);
    assert_eq!(list(&app, &carol, "/tickets/?priority=urgent&status=open").await, [urgent_open]);
    assert_eq!(list(&app, &carol, &format!("/tickets/?assigned_to={bob_id}")).await, [daves, urgent_working]);
    assert_eq!(list(&app, &carol, "/tickets/?assigned_to=none").await, [low, urgent_open]);
    assert_eq!(list(&app, &carol, &format!("/tickets/?created_by={dave_id}")).await, [daves]);
    assert_eq!(list(&app, &alice, "/tickets/my?status=in_progress").await, [urgent_working]);
    assert_eq!(list(&app, &bob, "/tickets/?priority=urgent").await, [urgent_working], "still only bob's own");
    assert_eq!(list(&app, &bob, "/tickets/?assigned_to=none").await, Vec::<i64>::new());

    let now = app.get(&format!("/tickets/{urgent_working}"), Some(&carol)).await.json["updated_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let since = now.replace('+', "%2B");
    assert_eq!(list(&app, &carol, &format!("/tickets/?updated_since={since}")).await, [urgent_working]);
    assert_eq!(list(&app, &carol, "/tickets/?updated_since=2000-01-01T00:00:00Z").await.len(), 4);
}

async fn sorting_by_last_update_and_ascending(app: TestApp) {
    let DemoTokens { alice, carol, .. } = app.demo_tokens().await;
    let first = create(&app, &alice, "first", "", "normal").await;
    let second = create(&app, &alice, "second", "", "normal").await;
    let third = create(&app, &alice, "third", "", "normal").await;
    app.set_status(&carol, first, "closed").await;

    assert_eq!(list(&app, &carol, "/tickets/").await, [third, second, first]);
    assert_eq!(list(&app, &carol, "/tickets/?direction=asc").await, [first, second, third]);
    assert_eq!(list(&app, &carol, "/tickets/?sort=updated").await, [first, third, second]);
    assert_eq!(list(&app, &alice, "/tickets/my?sort=updated&direction=asc").await, [second, third, first]);
}

async fn pages_follow_link_headers_and_keep_filters(app: TestApp) {
    let DemoTokens { alice, carol, .. } = app.demo_tokens().await;
    let mut urgent = Vec::new();
    for n in 0..7 {
        urgent.push(create(&app, &alice, &format!("urgent {n}"), "", "urgent").await);
        create(&app, &alice, &format!("low {n}"), "", "low").await;
    }
    urgent.reverse();
    let (all, pages) = all_pages(&app, &carol, "/tickets/?priority=urgent&limit=3").await;
    assert_eq!((all.clone(), pages), (urgent.clone(), 3));

    // By last update too, after touching the oldest one.
    app.set_status(&carol, *urgent.last().unwrap(), "closed").await;
    let (by_update, _) = all_pages(&app, &carol, "/tickets/?priority=urgent&limit=2&sort=updated").await;
    let mut expected = vec![*urgent.last().unwrap()];
    expected.extend(&urgent[..6]);
    assert_eq!(by_update, expected);

    let first = app.get("/tickets/?priority=urgent&limit=3", Some(&carol)).await;
    let link = first.header("link").unwrap().to_owned();
    assert!(
        link.starts_with("</tickets/?priority=urgent&limit=3&cursor=") && link.ends_with(r#">; rel="next""#),
        "{link}"
    );
    let cursor = link.split("cursor=").nth(1).unwrap().split('>').next().unwrap();
    let other_order = app.get(&format!("/tickets/?sort=updated&cursor={cursor}"), Some(&carol)).await;
    other_order.assert_problem(StatusCode::BAD_REQUEST);
    let (mine, _) = all_pages(&app, &alice, "/tickets/my?limit=5").await;
    assert_eq!(mine.len(), 14);
    assert!(
        app.get("/tickets/?limit=200", Some(&carol)).await.header("link").is_none(),
        "one page holds all"
    );
}

async fn pages_neither_skip_nor_repeat_when_tickets_arrive_meanwhile(app: TestApp) {
    let DemoTokens { alice, carol, .. } = app.demo_tokens().await;
    let mut original = Vec::new();
    for n in 0..6 {
        original.push(create(&app, &alice, &format!("t{n}"), "", "normal").await);
    }
    original.reverse();
    let first = app.get("/tickets/?limit=3", Some(&carol)).await;
    let next = first.header("link").unwrap().trim_start_matches('<').split('>').next().unwrap().to_owned();
    create(&app, &alice, "arrived between pages", "", "normal").await;
    let second = app.get(&next, Some(&carol)).await;
    let mut seen = ids(&first.json);
    seen.extend(ids(&second.json));
    assert_eq!(seen, original, "an OFFSET would have repeated a ticket here");
}

async fn full_text_search_covers_subject_description_and_public_comments(app: TestApp) {
    let DemoTokens { alice, bob, carol } = app.demo_tokens().await;
    let printer =
        create(&app, &alice, "Printer on fire", "Smoke everywhere near the office printer", "urgent").await;
    let crash = create(&app, &alice, "App crashes", "It crashed twice after updating", "normal").await;
    let billing = create(&app, &alice, "Invoice question", "Why two invoices?", "low").await;
    app.assign(&carol, billing, app.user_id("bob").await).await;
    let comment = |id: i64, body: &str, internal: bool| {
        app.comment(&bob, id, json!({"body": body, "internal": internal}))
    };
    assert_eq!(comment(billing, "Refund issued via wire transfer", false).await.status, StatusCode::CREATED);
    assert_eq!(
        comment(billing, "customer seems angry, escalate to finance", true).await.status,
        StatusCode::CREATED
    );

    assert_eq!(list(&app, &carol, "/tickets/?q=printer").await, [printer]);
    assert_eq!(list(&app, &carol, "/tickets/?q=smoke%20office").await, [printer], "every word, in any field");
    assert_eq!(list(&app, &carol, "/tickets/?q=printer%20invoice").await, Vec::<i64>::new());
    assert_eq!(list(&app, &carol, "/tickets/?q=crash").await, [crash], "stemmed: crash ~ crashes, crashed");
    assert_eq!(list(&app, &carol, "/tickets/?q=refund").await, [billing], "public comments count");
    assert_eq!(
        list(&app, &carol, "/tickets/?q=escalate").await,
        Vec::<i64>::new(),
        "internal notes never do"
    );
    assert_eq!(list(&app, &alice, "/tickets/my?q=wire").await, [billing]);
    assert_eq!(
        list(&app, &bob, "/tickets/?q=printer").await,
        Vec::<i64>::new(),
        "search stays within what one may see"
    );
    assert_eq!(list(&app, &carol, "/tickets/?q=invoice&priority=low&status=open").await, [billing]);

    // SQLite's index keeps its own copy of the text (internal notes never enter it), so even a
    // rebuild cannot bring one in. (Postgres keeps the document in the ticket row.)
    if app.config.database_url.expose().starts_with("sqlite") {
        app.execute("INSERT INTO tickets_fts (tickets_fts) VALUES ('rebuild')").await;
    }
    for (token, url) in [(&carol, "/tickets/?q=escalate"), (&alice, "/tickets/my?q=escalate%20finance")] {
        assert_eq!(list(&app, token, url).await, Vec::<i64>::new(), "internal notes never match: {url}");
    }
}

async fn search_takes_any_text_without_error(app: TestApp) {
    let DemoTokens { alice, carol, .. } = app.demo_tokens().await;
    let quoted = create(&app, &alice, "Quote \"flange\" please", "", "normal").await;
    for q in [
        "%22",
        "%22this%22",
        "*",
        "OR",
        "NOT",
        "a%20OR%20b",
        "NEAR(a%20b)",
        "-",
        "'",
        "%5C",
        "%E2%98%83",
        "the",
        "col:x",
        "(",
        "%F0%9F%92%A5",
    ] {
        let response = app.get(&format!("/tickets/?q={q}"), Some(&carol)).await;
        assert_eq!(response.status, StatusCode::OK, "q={q}: {}", response.text);
    }
    assert_eq!(list(&app, &carol, "/tickets/?q=%22flange%22").await, [quoted]);
}

async fn bad_listing_parameters_are_400_and_created_by_is_for_admins(app: TestApp) {
    let DemoTokens { alice, bob, carol } = app.demo_tokens().await;
    for query in [
        "status=waiting",
        "priority=asap",
        "assigned_to=bob",
        "created_by=me",
        "updated_since=yesterday",
        "updated_since=2026-01-01T00:00:00+01:00",
        "sort=size",
        "direction=up",
        "q=",
        "q=%20%20",
        "q=%00",
        "limit=-1",
        "limit=1000",
        "cursor=abc",
    ] {
        app.get(&format!("/tickets/?{query}"), Some(&carol)).await.assert_problem(StatusCode::BAD_REQUEST);
    }
    let long = "x".repeat(201);
    app.get(&format!("/tickets/?q={long}"), Some(&carol)).await.assert_problem(StatusCode::BAD_REQUEST);
    app.get("/tickets/?created_by=1", Some(&bob)).await.assert_problem(StatusCode::FORBIDDEN);
    app.get("/tickets/my?created_by=1", Some(&alice)).await.assert_problem(StatusCode::FORBIDDEN);
}

/// 5,000 tickets, more than twice what a search walks before it asks the index: every shape of search finds
/// and pages exactly what testing every ticket would, in order, across the walk's end.
async fn search_past_the_walk_finds_and_pages_what_a_full_scan_would(app: TestApp) {
    const BULK: i64 = 5000;
    let DemoTokens { alice, carol, .. } = app.demo_tokens().await;
    let alice_id = app.user_id("alice").await;
    // Every tenth is about a printer; updates are shuffled so the two orders differ; the oldest
    // ones hold rare words, far behind the newest 2,000, and one sits exactly where the walk ends.
    let edge = BULK - 1999;
    let sqlite = app.config.database_url.expose().starts_with("sqlite");
    let (numbers, token, updated) = if sqlite {
        (
            format!(
                "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {BULK}) SELECT n FROM g"
            ),
            "randomblob(16)",
            format!(
                "strftime('%Y-%m-%dT%H:%M:%S', '2026-01-01', '+' || ((n * 7919) % {BULK}) || ' seconds') || '+00:00'"
            ),
        )
    } else {
        (
            format!("SELECT n FROM generate_series(1, {BULK}) n"),
            "gen_random_uuid()",
            format!("TIMESTAMPTZ '2026-01-01 00:00:00+00' + make_interval(secs => (n * 7919) % {BULK})"),
        )
    };
    app.execute(&format!(
        "INSERT INTO tickets (subject, description, status, priority, created_by, embed_token, created_at, updated_at)
         SELECT 'Bulk ' || n,
                CASE WHEN n = 5 THEN 'flux capacitor' WHEN n = {edge} THEN 'quokka' WHEN n % 10 = 0 THEN 'printer jam'
                     WHEN n <= 600 THEN 'legacy mainframe'
                     WHEN n > {BULK} - 600 THEN 'shiny gadget' ELSE 'nothing to see' END,
                CASE WHEN n % 3 = 0 THEN 'open' ELSE 'closed' END, 'normal', {alice_id}, {token}, {updated}, {updated}
         FROM ({numbers}) AS numbers ORDER BY n"
    ))
    .await;
    let app = &app;
    let bulk_id = async |n: i64| {
        let found =
            app.texts(&format!("SELECT CAST(id AS TEXT) FROM tickets WHERE subject = 'Bulk {n}'")).await;
        found[0].parse::<i64>().unwrap()
    };
    let (rare, commented, noted) = (bulk_id(5).await, bulk_id(7).await, bulk_id(9).await);
    for (ticket, body, internal) in [(commented, "zebra crossing", false), (noted, "okapi sighting", true)] {
        app.execute(&format!(
            "INSERT INTO comments (ticket_id, author_id, body, internal, created_at)
             VALUES ({ticket}, {alice_id}, '{body}', {}, '2026-01-02T00:00:00+00:00')",
            if internal { "TRUE" } else { "FALSE" }
        ))
        .await;
    }

    assert_eq!(list(app, &carol, "/tickets/?q=flux").await, [rare], "a rare word far behind the walk");
    let last_walked = bulk_id(edge).await;
    assert_eq!(list(app, &carol, "/tickets/?q=quokka").await, [last_walked], "the walk's last ticket");
    assert_eq!(list(app, &carol, "/tickets/?q=zebra").await, [commented], "a public comment, far behind");
    assert_eq!(list(app, &carol, "/tickets/?q=okapi").await, Vec::<i64>::new(), "never an internal note");
    assert_eq!(list(app, &carol, "/tickets/?q=flux&status=closed&sort=updated").await, [rare]);
    assert_eq!(list(app, &alice, "/tickets/my?q=%22flux%20capacitor%22").await, [rare], "a phrase");

    // What testing every ticket gives, in each order; then the same through pages of 50. The
    // legacy mainframe is in the oldest 600 only, the shiny gadget in the newest 600: their
    // matches start far behind the walk (oldest first for the gadget), and a page of 200 closed
    // ones takes more than one read in id order.
    let expected = async |description: &str, status: Option<&str>, by_update: bool| {
        let status = status.map(|s| format!(" AND status = '{s}'")).unwrap_or_default();
        let order = if by_update { "tickets.updated_at DESC, tickets.id DESC" } else { "tickets.id DESC" };
        let sql = format!(
            "SELECT CAST(id AS TEXT) FROM tickets WHERE description = '{description}'{status} ORDER BY {order}"
        );
        app.texts(&sql).await.iter().map(|id| id.parse().unwrap()).collect::<Vec<i64>>()
    };
    for (url, description, status, by_update) in [
        ("/tickets/?q=printer&limit=50", "printer jam", None, false),
        ("/tickets/?q=printer&limit=50&sort=updated", "printer jam", None, true),
        ("/tickets/?q=printer%20jam&limit=50&status=open", "printer jam", Some("open"), false),
        ("/tickets/?q=printer&limit=50&status=open&sort=updated", "printer jam", Some("open"), true),
        ("/tickets/?q=mainframe&limit=50", "legacy mainframe", None, false),
        ("/tickets/?q=mainframe%20legacy&limit=200&status=closed", "legacy mainframe", Some("closed"), false),
        ("/tickets/?q=%22legacy%20mainframe%22&limit=50&sort=updated", "legacy mainframe", None, true),
    ] {
        let want = expected(description, status, by_update).await;
        let limit = if url.contains("limit=200") { 200 } else { 50 };
        assert!(want.len() > limit, "{url}: more than one page");
        let (got, pages) = all_pages(app, &carol, url).await;
        assert_eq!(got, want, "{url}");
        assert_eq!(pages, want.len().div_ceil(limit), "{url}");
    }
    let (mine, _) = all_pages(app, &alice, "/tickets/my?q=mainframe&limit=100").await;
    assert_eq!(mine, expected("legacy mainframe", None, false).await, "in a customer's scope");
    for (url, description, status) in [
        ("/tickets/?q=printer&limit=50&direction=asc", "printer jam", None),
        ("/tickets/?q=gadget&limit=50&direction=asc", "shiny gadget", None),
        ("/tickets/?q=shiny&limit=50&direction=asc&status=closed", "shiny gadget", Some("closed")),
    ] {
        let (oldest_first, _) = all_pages(app, &carol, url).await;
        let mut want = expected(description, status, false).await;
        want.reverse();
        assert_eq!(oldest_first, want, "{url}: ascending too");
    }
}

/// `count` made-up words, different for each `seed`: text a search index cannot compress.
fn distinct_words(seed: u64, count: usize) -> String {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let mut words = Vec::with_capacity(count);
    for _ in 0..count {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let word: String = (0..9).map(|i| (b'a' + ((state >> (8 + 5 * i)) % 26) as u8) as char).collect();
        words.push(word);
    }
    words.join(" ")
}

/// Sorted by update, a word absent from the recent updates is read from the index an hour of
/// updates at a time (migration 0021). Tickets moved to a later hour, an hour holding more matches
/// than a batch reads, words that came with a comment and a long conversation's chunk must all
/// take their place by update time. Past a first page, the walk finds the rest: each first page
/// here needs the index, and more than one batch of it.
async fn search_by_update_reads_hour_by_hour_and_pages_what_a_full_scan_would(app: TestApp) {
    const BULK: i64 = 12_000;
    let DemoTokens { carol, .. } = app.demo_tokens().await;
    let alice_id = app.user_id("alice").await;
    let sqlite = app.config.database_url.expose().starts_with("sqlite");
    let at = |minutes: &str| {
        if sqlite {
            format!(
                "strftime('%Y-%m-%dT%H:%M:%S', '2026-01-01', '+' || (({minutes}) * 60) || ' seconds') || '+00:00'"
            )
        } else {
            format!("TIMESTAMPTZ '2026-01-01 00:00:00+00' + make_interval(secs => ({minutes}) * 60)")
        }
    };
    let (numbers, token) = if sqlite {
        (
            format!(
                "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {BULK}) SELECT n FROM g"
            ),
            "randomblob(16)",
        )
    } else {
        (format!("SELECT n FROM generate_series(1, {BULK}) n"), "gen_random_uuid()")
    };
    // Updates a minute apart over 200 hours, shuffled against the ids. `archived` is in one
    // ticket in two of the oldest 5,000 updates, one in fifteen of them open; `fresh` in one in
    // two of the newest 3,000. One ticket in three is open otherwise.
    let minute = format!("(n * 7919) % {BULK}");
    let updated = at(&minute);
    app.execute(&format!(
        "INSERT INTO tickets (subject, description, status, priority, created_by, embed_token, created_at, updated_at)
         SELECT 'Bulk ' || n,
                CASE WHEN n % 2 = 1 THEN 'nothing to see' WHEN {minute} < 5000 THEN 'archived records'
                     WHEN {minute} >= 9000 THEN 'fresh records' ELSE 'nothing to see' END,
                CASE WHEN n % 2 = 0 AND {minute} < 5000 AND n % 30 <> 0 THEN 'closed'
                     WHEN n % 3 = 0 THEN 'open' ELSE 'closed' END,
                'normal', {alice_id}, {token}, {updated}, {updated}
         FROM ({numbers}) AS numbers ORDER BY n"
    ))
    .await;
    let app = &app;
    let matching = async |condition: &str| {
        let sql = format!(
            "SELECT CAST(id AS TEXT) FROM tickets WHERE {condition} ORDER BY tickets.updated_at, tickets.id"
        );
        app.texts(&sql).await.iter().map(|id| id.parse().unwrap()).collect::<Vec<i64>>()
    };
    let archived = matching("description = 'archived records'").await;
    let unrelated = matching("description = 'nothing to see' AND status = 'open'").await;
    // (By SQL, as the triggers see any write.) The matches of minutes 3,000 to 4,000, about 500,
    // move into the word's last hour but two, shuffled against their ids there: more than a
    // batch. The three first updated move past the newest of the word. Two old open tickets get
    // the word from a comment, one of them (in hour 70) in the chunk of a long conversation.
    let (from, to) = (at("3000"), at("4000"));
    let dense = at("4860 + (id * 7) % 3600 / 60.0");
    app.execute(&format!(
        "UPDATE tickets SET updated_at = {dense}
         WHERE description = 'archived records' AND updated_at >= {from} AND updated_at < {to}"
    ))
    .await;
    let moved = &archived[..3];
    let moved_list = moved.iter().map(i64::to_string).collect::<Vec<_>>().join(", ");
    let later = at("5000 + id % 7");
    app.execute(&format!("UPDATE tickets SET updated_at = {later} WHERE id IN ({moved_list})")).await;
    let within = format!("updated_at >= {} AND updated_at < {}", at("4200"), at("4300"));
    let chunked =
        matching(&format!("description = 'nothing to see' AND status = 'open' AND {within}")).await[0];
    let commented = unrelated[500];
    let long = "x".repeat(8200);
    for (ticket, body) in
        [(commented, "archived on request"), (chunked, long.as_str()), (chunked, "archived at last")]
    {
        app.execute(&format!(
            "INSERT INTO comments (ticket_id, author_id, body, internal, created_at)
             VALUES ({ticket}, {alice_id}, '{body}', FALSE, '2026-01-05T00:00:00+00:00')"
        ))
        .await;
    }
    let in_dense_hour =
        matching(&format!("updated_at >= {} AND updated_at < {}", at("4860"), at("4920"))).await;
    assert!(in_dense_hour.len() > 400, "{} in the dense hour", in_dense_hour.len());

    let expected = async |word: &str, filter: &str, descending: bool| {
        let found = match word {
            "archived" => format!("description = 'archived records' OR id IN ({commented}, {chunked})"),
            _ => "description = 'fresh records'".to_owned(),
        };
        let direction = if descending { "DESC" } else { "ASC" };
        let sql = format!(
            "SELECT CAST(id AS TEXT) FROM tickets WHERE ({found}){filter}
             ORDER BY tickets.updated_at {direction}, tickets.id {direction}"
        );
        app.texts(&sql).await.iter().map(|id| id.parse().unwrap()).collect::<Vec<i64>>()
    };
    for (url, word, filter, descending) in [
        ("/tickets/?q=archived&limit=50&sort=updated", "archived", "", true),
        ("/tickets/?q=archived&limit=100&sort=updated&status=open", "archived", " AND status = 'open'", true),
        ("/tickets/?q=fresh&limit=50&sort=updated&direction=asc", "fresh", "", false),
    ] {
        let want = expected(word, filter, descending).await;
        let (got, pages) = all_pages(app, &carol, url).await;
        assert_eq!(got, want, "{url}");
        assert!(pages > 1, "{url}: {pages} pages");
    }
    if !sqlite {
        // Both words in every posting read, the phrase in none: PostgreSQL tests it again.
        let reversed = list(app, &carol, "/tickets/?q=%22records%20archived%22&sort=updated").await;
        assert_eq!(reversed, Vec::<i64>::new());
    }
    let newest = list(app, &carol, "/tickets/?q=archived&limit=5&sort=updated").await;
    assert!(moved.iter().all(|id| newest.contains(id)), "moved to a later hour: {newest:?} has {moved:?}");
}

async fn a_long_history_keeps_every_document_bounded_and_stays_searchable(app: TestApp) {
    let DemoTokens { alice, bob, carol } = app.demo_tokens().await;
    let id = create(&app, &alice, "Plotter saga", "It jams", "normal").await;
    app.assign(&carol, id, app.user_id("bob").await).await;
    let comment = |token: &str, body: String, internal: bool| {
        let (app, token) = (&app, token.to_owned());
        async move { app.comment(&token, id, json!({"body": body, "internal": internal})).await }
    };
    let first = comment(&bob, "Try the aardvarkish reset first".into(), false).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    // 130 comments of 1,000 different words each: more than one tsvector may hold (1 MB of
    // lexemes), so a single document per ticket failed here with a 500.
    for n in 0..130 {
        let reply = comment(&bob, distinct_words(n, 1_000), false).await;
        assert_eq!(reply.status, StatusCode::CREATED, "comment {n}: {}", reply.text);
    }
    let last = comment(&alice, "Still jammed: zebrafied paper everywhere".into(), false).await;
    assert_eq!(last.status, StatusCode::CREATED, "{}", last.text);
    comment(&bob, "Internal: wombatry suspected".into(), true).await;

    for (words, why) in [
        ("aardvarkish", "the first comment"),
        ("zebrafied", "the last comment"),
        ("plotter%20zebrafied", "the subject with the last comment"),
        ("jammed%20zebrafied", "two words of the last comment"),
    ] {
        assert_eq!(list(&app, &carol, &format!("/tickets/?q={words}")).await, [id], "{why}");
    }
    assert_eq!(
        list(&app, &carol, "/tickets/?q=wombatry").await,
        Vec::<i64>::new(),
        "internal notes stay out"
    );

    // The ticket's own document stopped growing after its first 8,192 characters of comments;
    // the rest lies in chunks of about that size, each rewritten only while it is the newest.
    let chunks = app
        .texts(&format!("SELECT CAST(count(*) AS TEXT) FROM ticket_search_chunks WHERE ticket_id = {id}"))
        .await;
    let chunks: usize = chunks[0].parse().unwrap();
    // Each 10,000-character comment starts in a window of its own.
    assert_eq!(chunks, 130, "chunks for the long comments past the first window and the last");
    let own_document = if app.config.database_url.expose().starts_with("sqlite") {
        format!("SELECT CAST(length(comments) AS TEXT) FROM tickets_fts WHERE rowid = {id}")
    } else {
        // Its lexemes: the subject's, the description's and those of the first comments.
        format!("SELECT CAST(length(search) AS TEXT) FROM tickets WHERE id = {id}")
    };
    let own: usize = app.texts(&own_document).await[0].parse().unwrap();
    assert!(own < 8_192 + 10_000, "the ticket's own document holds {own}");
    let largest = if app.config.database_url.expose().starts_with("sqlite") {
        "SELECT CAST(max(length(body)) AS TEXT) FROM ticket_search_chunks"
    } else {
        "SELECT CAST(max(length(document)) AS TEXT) FROM ticket_search_chunks"
    };
    let largest: usize = app.texts(largest).await[0].parse().unwrap();
    assert!(largest < 8_192 + 10_000 + 200, "a chunk holds {largest}");
}
