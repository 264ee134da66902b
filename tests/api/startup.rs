use ticketdesk::config::{DatabaseUrl, PoolSettings};
use ticketdesk::demo::ensure_demo_users;
use ticketdesk::state::AppState;
use ticketdesk::store::UserFilter;

use crate::helpers::{Backend, EmptyDatabase, TestApp, test_config};

crate::on_both_backends!(
    replicas_starting_together_migrate_once_and_all_work,
    demo_users_exist_only_when_asked_for_and_once,
    a_database_with_names_differing_only_in_case_is_not_migrated,
    idempotency_keys_stored_before_the_upgrade_still_replay,
    long_conversations_are_split_into_search_chunks_on_upgrade,
    events_recorded_before_the_upgrade_get_their_webhook_type,
    history_and_deliveries_survive_the_upgrade_to_service_clocks,
    postings_get_their_update_hour_on_upgrade_and_move_with_the_next_write,
);

/// PostgreSQL only (SQLite keeps a trigger's statements prepared with the statement that fires
/// it): what every ticket write runs inside the database is planned once a connection, not once a
/// write (migration 0025; bench/README.md, "Planned once a connection").
#[tokio::test]
async fn what_every_write_runs_inside_postgres_is_planned_once() {
    crate::helpers::run(planned_once, Backend::Postgres).await;
}

async fn planned_once(app: TestApp) {
    // An SQL function is inlined into the statement calling it only if it calls nothing more
    // volatile than itself; otherwise each call runs as a statement of its own.
    let plan = app.texts("EXPLAIN (VERBOSE) SELECT hour_of(now())").await.join("\n");
    assert!(!plan.contains("hour_of"), "hour_of is inlined: {plan}");
    // A replaced function loses its settings: a migration that replaces it must restate them.
    let settings = app
        .texts(
            "SELECT unnest(proconfig) FROM pg_proc
             WHERE proname = 'ticket_event_to_webhooks' AND pronamespace = current_schema()::regnamespace",
        )
        .await;
    for setting in ["plan_cache_mode=force_generic_plan", "enable_seqscan=off", "jit=off"] {
        assert!(settings.iter().any(|kept| kept == setting), "{setting} is kept: {settings:?}");
    }
}

async fn replicas_starting_together_migrate_once_and_all_work(database: EmptyDatabase) {
    let url = DatabaseUrl::new(database.url.clone());
    let pool = PoolSettings::default();
    let connect = || ticketdesk::store::connect(&url, &pool);
    let (a, b, c, d) = tokio::join!(connect(), connect(), connect(), connect());
    let stores: Vec<_> = [a, b, c, d]
        .into_iter()
        .map(|start| start.unwrap_or_else(|e| panic!("a concurrent start-up failed: {e}")))
        .collect();
    // Every replica sees one schema: a user written through one is read through the others.
    let passwords = ticketdesk::auth::Passwords::new(1, 0);
    assert_eq!(ensure_demo_users(stores[0].as_ref(), &passwords).await.unwrap().len(), 3);
    for store in &stores {
        assert_eq!(store.users(&UserFilter::default(), None, 100).await.unwrap().len(), 3);
    }
}

async fn demo_users_exist_only_when_asked_for_and_once(database: EmptyDatabase) {
    let config = test_config(&database.url);
    let state = AppState::new(
        &config,
        ticketdesk::store::connect(&config.database_url, &config.database_pool).await.unwrap(),
        ticketdesk::files::Files::open(&config.attachments.storage).unwrap(),
        tokio_util::sync::CancellationToken::new(),
    );
    assert!(
        state.store.users(&UserFilter::default(), None, 100).await.unwrap().is_empty(),
        "no user may appear unasked"
    );

    let created = ensure_demo_users(state.store.as_ref(), &state.passwords).await.unwrap();
    assert_eq!(created, ["alice", "bob", "carol"]);
    let before = state.store.user_credentials("alice").await.unwrap().unwrap();

    // A restart with --demo: a new connection, the same database.
    let again = ticketdesk::store::connect(&config.database_url, &config.database_pool).await.unwrap();
    assert!(ensure_demo_users(again.as_ref(), &state.passwords).await.unwrap().is_empty());
    let after = again.user_credentials("alice").await.unwrap().unwrap();
    assert_eq!(before.password_hash, after.password_hash, "existing users are left untouched");
    assert_eq!(before.user, after.user);
    assert_eq!(again.users(&UserFilter::default(), None, 100).await.unwrap().len(), 3);
}

/// A database as the previous release left it (migrations 1 to 3), holding names that differ only
/// in case: the new release refuses to migrate it, and names them.
async fn a_database_with_names_differing_only_in_case_is_not_migrated(database: EmptyDatabase) {
    let insert = "INSERT INTO users (username, password_hash, role, created_at) VALUES
        ('alice', 'x', 'customer', '2026-01-01T00:00:00Z'), ('Alice', 'x', 'customer', '2026-01-01T00:00:00Z'),
        ('bob', 'x', 'agent', '2026-01-01T00:00:00Z'), ('BOB', 'x', 'agent', '2026-01-01T00:00:00Z'),
        ('carol', 'x', 'admin', '2026-01-01T00:00:00Z')";
    as_an_earlier_release_left_it(&database, 3, insert).await;
    let url = DatabaseUrl::new(database.url.clone());
    let refused = ticketdesk::store::connect(&url, &PoolSettings::default()).await.err().expect("refused");
    let message = refused.to_string();
    assert!(message.contains("differ only in case"), "{message}");
    assert!(
        message.contains("Alice (id 2), alice (id 1)") && message.contains("BOB (id 4), bob (id 3)"),
        "{message}"
    );
    assert!(!message.contains("carol"), "{message}");

    // Once an operator renames one of each, it migrates, and the names are unique whatever the case.
    run_sql(
        &database,
        "UPDATE users SET username = 'alice2' WHERE id = 2; UPDATE users SET username = 'bob2' WHERE id = 4",
    )
    .await;
    let store = ticketdesk::store::connect(&url, &PoolSettings::default()).await.expect("migrated");
    let passwords = ticketdesk::auth::Passwords::new(1, 0);
    let taken = ticketdesk::domain::NewUser {
        username: "CAROL".to_owned(),
        password_hash: passwords.hash("a long passphrase").await.unwrap(),
        role: ticketdesk::domain::Role::Customer,
    };
    assert!(matches!(store.create_user(&taken).await, Err(ticketdesk::store::StoreError::Taken(_))));
}

/// A ticket created with an `Idempotency-Key` before migration 0006, which stored the HTTP
/// response: after the upgrade a retry with that key still gets that ticket and creates none.
async fn idempotency_keys_stored_before_the_upgrade_still_replay(database: EmptyDatabase) {
    use ticketdesk::domain::{Description, IdempotencyKey, NewTicket, Priority, Subject, Ticket};
    use ticketdesk::store::Write;

    let first = serde_json::json!({
        "id": 1, "subject": "Printer on fire", "description": "Smoke.", "status": "open",
        "priority": "high", "created_by": 1, "assigned_to": null,
        "embed_token": "9f40cb91-6a0e-4b7e-9d3c-2f1e5a7b8c90",
        "created_at": "2026-07-23T12:00:00.123456Z", "updated_at": "2026-07-23T12:00:00.123456Z"
    });
    let request = serde_json::json!({"subject": "Printer on fire"});
    let key = IdempotencyKey::new(1, "retry-me", "POST /tickets/", &request).unwrap();
    let stored = format!(
        "{}
         INSERT INTO idempotency_keys (user_id, key, fingerprint, status, location, body, created_at)
         VALUES (1, 'retry-me', '{}', 201, '/tickets/1', '{first}', '{}');",
        a_user_and_a_ticket(&database, "alice", "customer", ["Printer on fire", "Smoke.", "high"]),
        key.fingerprint,
        chrono::Utc::now().to_rfc3339(),
    );
    as_an_earlier_release_left_it(&database, 5, &stored).await;

    let url = DatabaseUrl::new(database.url.clone());
    let store = ticketdesk::store::connect(&url, &PoolSettings::default()).await.expect("migrated");
    let retry = NewTicket {
        subject: Subject::parse("Printer on fire").unwrap(),
        description: Description::parse("Smoke.".to_owned()).unwrap(),
        priority: Priority::High,
        created_by: 1,
        attachments: Vec::new(),
    };
    match store.create_ticket(&retry, Some(&key)).await.unwrap() {
        Write::Replayed(ticket) => {
            assert_eq!(ticket, serde_json::from_value::<Ticket>(first).unwrap());
        }
        Write::Written(ticket) => panic!("the retry created ticket {}", ticket.id),
    }
    assert_eq!(store.ticket_counts().await.unwrap().iter().map(|(_, n)| n).sum::<i64>(), 1);
}

/// A ticket whose public comments run past the first 8,192 characters, indexed as one document
/// before migration 0011: after the upgrade its comments are in bounded chunks and each word is
/// still found; the internal note still is not.
async fn long_conversations_are_split_into_search_chunks_on_upgrade(database: EmptyDatabase) {
    let filler = "filler ".repeat(714);
    let marks = ["firstmark", "secondmark", "thirdmark", "fourthmark", "lastmark"];
    let comments: Vec<String> = marks
        .iter()
        .map(|mark| {
            format!(
                "INSERT INTO comments (ticket_id, author_id, body, internal, created_at)
                 VALUES (1, 1, '{mark} {filler}', FALSE, '2026-07-23T12:00:00Z');"
            )
        })
        .collect();
    let stored = format!(
        "{}
         {}
         INSERT INTO comments (ticket_id, author_id, body, internal, created_at)
         VALUES (1, 1, 'hiddenmark', TRUE, '2026-07-23T12:00:00Z');",
        a_user_and_a_ticket(&database, "dana", "customer", ["Scanner saga", "It jams.", "normal"]),
        comments.concat()
    );
    as_an_earlier_release_left_it(&database, 10, &stored).await;

    let app = crate::helpers::TestApp::at(&database.url, &[]).await;
    let carol = app.login("carol", "carol123").await;
    let found = |word: &'static str| {
        let (app, carol) = (&app, &carol);
        async move { app.get(&format!("/tickets/?q={word}"), Some(carol)).await.json }
    };
    for word in ["firstmark", "secondmark", "thirdmark", "fourthmark", "lastmark", "scanner%20lastmark"] {
        assert_eq!(found(word).await[0]["id"], 1, "{word}");
    }
    assert_eq!(found("hiddenmark").await, serde_json::json!([]));
    // Comments 3 and 4 start in the second 8,192 characters, comment 5 in the third.
    let chunks = app.texts("SELECT CAST(chunk AS TEXT) FROM ticket_search_chunks ORDER BY chunk").await;
    assert_eq!(chunks, ["1", "2"]);
    // Each comment's characters and the space that joins it to the next.
    let expected: usize = marks.iter().map(|mark| mark.len() + 1 + filler.len() + 1).sum();
    assert_eq!(app.texts("SELECT CAST(search_length AS TEXT) FROM tickets").await, [expected.to_string()]);
}

/// Migration 0012 writes each event's webhook type with it; events recorded before get theirs.
async fn events_recorded_before_the_upgrade_get_their_webhook_type(database: EmptyDatabase) {
    let stored = format!(
        "{}
         INSERT INTO ticket_events (ticket_id, actor_id, kind, from_value, to_value, internal, created_at)
         VALUES (1, 1, 'status_changed', 'open', 'in_progress', FALSE, '2026-07-23T12:00:00Z'),
                (1, 1, 'comment_added', NULL, NULL, FALSE, '2026-07-23T12:00:00Z'),
                (1, 1, 'comment_added', NULL, NULL, TRUE, '2026-07-23T12:00:00Z');",
        a_user_and_a_ticket(&database, "dana", "agent", ["Old", "", "normal"]),
    );
    as_an_earlier_release_left_it(&database, 11, &stored).await;
    let app = crate::helpers::TestApp::at(&database.url, &[]).await;
    let types = app.texts("SELECT event_type FROM ticket_events ORDER BY id").await;
    assert_eq!(types, ["ticket.status_changed", "ticket.comment_added", "ticket.internal_note_added"]);
}

/// Migration 0015 lets events have no actor, which on SQLite rebuilds `ticket_events` while
/// webhook deliveries point into it: every event, delivery and status comes through.
async fn history_and_deliveries_survive_the_upgrade_to_service_clocks(database: EmptyDatabase) {
    let stored = format!(
        "{}
         INSERT INTO webhooks (url, events, secret, active, include_embed_token, created_at, updated_at)
         VALUES ('https://hooks.example.com/x', ',ticket.status_changed,', 'whsec_x', TRUE, FALSE,
                 '2026-07-23T12:00:00Z', '2026-07-23T12:00:00Z');
         INSERT INTO ticket_events (ticket_id, actor_id, kind, from_value, to_value, internal, created_at, event_type)
         VALUES (1, 1, 'created', NULL, 'open', FALSE, '2026-07-23T12:00:00Z', 'ticket.created'),
                (1, 1, 'status_changed', 'open', 'in_progress', FALSE, '2026-07-23T12:01:00Z', 'ticket.status_changed');
         UPDATE tickets SET status = 'in_progress';",
        a_user_and_a_ticket(&database, "dana", "agent", ["Old", "", "normal"]),
    );
    as_an_earlier_release_left_it(&database, 14, &stored).await;
    let app = crate::helpers::TestApp::at(&database.url, &[]).await;
    assert_eq!(app.texts("SELECT kind FROM ticket_events ORDER BY id").await, ["created", "status_changed"]);
    assert_eq!(
        app.texts("SELECT CAST(event_id AS TEXT) FROM webhook_deliveries").await,
        ["2"],
        "not fanned out again"
    );
    assert_eq!(app.texts("SELECT status FROM tickets").await, ["in_progress"]);
    let tokens = app.demo_tokens().await;
    let id = app.create_ticket_id(&tokens.alice, "After the upgrade").await;
    let events = app.get(&format!("/tickets/{id}/events"), Some(&tokens.carol)).await;
    assert_eq!(events.json[0]["id"], 3, "ids go on after the old ones: {}", events.text);
}

/// SQL for user 1 and their open ticket 1 (`[subject, description, priority]`) as an earlier
/// release stored them.
/// Migration 0021 files every word of a ticket, its comments' too, under the hour of its last
/// update; a write in a later hour moves them all.
async fn postings_get_their_update_hour_on_upgrade_and_move_with_the_next_write(database: EmptyDatabase) {
    let sqlite = database.url.starts_with("sqlite");
    let stored = format!(
        "{}
         INSERT INTO comments (ticket_id, author_id, body, internal, created_at)
         VALUES (1, 1, 'zebra crossing', FALSE, '2026-07-23T12:00:00Z');",
        a_user_and_a_ticket(&database, "dana", "customer", ["Scanner saga", "It jams.", "normal"]),
    );
    // Every migration before 0021 (SQLite's folder skips some numbers).
    let earlier = std::fs::read_dir(if sqlite { "migrations/sqlite" } else { "migrations/postgres" })
        .unwrap()
        .filter(|file| file.as_ref().unwrap().file_name().to_string_lossy().as_ref() < "0021")
        .count();
    as_an_earlier_release_left_it(&database, earlier, &stored).await;

    let app = crate::helpers::TestApp::at(&database.url, &[]).await;
    let hours_of = async |word: &str| {
        let sql = if sqlite {
            format!(
                "SELECT CAST(rowid >> 32 AS TEXT) FROM tickets_fts_by_update
                 WHERE tickets_fts_by_update MATCH '{word}' AND rowid & 4294967295 = 1"
            )
        } else {
            format!(
                "SELECT CAST(updated_hour AS TEXT) FROM ticket_words WHERE ticket_id = 1 AND word = '{word}'"
            )
        };
        app.texts(&sql).await
    };
    let stored_hour = (chrono::DateTime::parse_from_rfc3339("2026-07-23T12:00:00Z").unwrap().timestamp()
        / 3600)
        .to_string();
    for word in ["scanner", "jam", "zebra"] {
        assert_eq!(hours_of(word).await, [stored_hour.as_str()], "{word}");
    }

    let carol = app.login("carol", "carol123").await;
    let body = serde_json::json!({"priority": "high"});
    let changed = app.call(axum::http::Method::PATCH, "/tickets/1", Some(&carol), Some(body)).await;
    assert_eq!(changed.status, axum::http::StatusCode::OK, "{}", changed.text);
    let updated_at = changed.json["updated_at"].as_str().unwrap();
    let now_hour = (chrono::DateTime::parse_from_rfc3339(updated_at).unwrap().timestamp() / 3600).to_string();
    for word in ["scanner", "jam", "zebra"] {
        assert_eq!(hours_of(word).await, [now_hour.as_str()], "{word}");
    }
}

fn a_user_and_a_ticket(database: &EmptyDatabase, username: &str, role: &str, ticket: [&str; 3]) -> String {
    let [subject, description, priority] = ticket;
    // SQLite keeps UUIDs as 16-byte blobs.
    let embed_token = if database.url.starts_with("sqlite") {
        "X'9f40cb916a0e4b7e9d3c2f1e5a7b8c90'"
    } else {
        "'9f40cb91-6a0e-4b7e-9d3c-2f1e5a7b8c90'"
    };
    format!(
        "INSERT INTO users (username, password_hash, role, created_at)
         VALUES ('{username}', 'x', '{role}', '2026-01-01T00:00:00Z');
         INSERT INTO tickets (subject, description, priority, status, created_by, embed_token, created_at, updated_at)
         VALUES ('{subject}', '{description}', '{priority}', 'open', 1, {embed_token},
                 '2026-07-23T12:00:00.123456Z', '2026-07-23T12:00:00.123456Z');"
    )
}

/// Applies the first `migrations` of this backend's folder to the empty database, then runs `sql`.
async fn as_an_earlier_release_left_it(database: &EmptyDatabase, migrations: usize, sql: &str) {
    let backend = if database.url.starts_with("sqlite") { "sqlite" } else { "postgres" };
    let mut migrator =
        sqlx::migrate::Migrator::new(std::path::Path::new(&format!("migrations/{backend}"))).await.unwrap();
    migrator.migrations = std::borrow::Cow::Owned(migrator.migrations[..migrations].to_vec());
    execute(database, Some(&migrator), sql).await;
}

async fn run_sql(database: &EmptyDatabase, sql: &str) {
    execute(database, None, sql).await;
}

/// Runs `migrator`, if any, then `sql`, on one connection to the test database (creating the
/// SQLite file if need be).
async fn execute(database: &EmptyDatabase, migrator: Option<&sqlx::migrate::Migrator>, sql: &str) {
    use sqlx::Connection;
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    if database.url.starts_with("sqlite") {
        let options: sqlx::sqlite::SqliteConnectOptions = database.url.parse().unwrap();
        let mut connection =
            sqlx::SqliteConnection::connect_with(&options.create_if_missing(true)).await.unwrap();
        if let Some(migrator) = migrator {
            migrator.run(&mut connection).await.unwrap();
        }
        sqlx::raw_sql(sql).execute(&mut connection).await.unwrap();
    } else {
        let mut connection = sqlx::PgConnection::connect(&database.url).await.unwrap();
        if let Some(migrator) = migrator {
            migrator.run(&mut connection).await.unwrap();
        }
        sqlx::raw_sql(sql).execute(&mut connection).await.unwrap();
    }
}
