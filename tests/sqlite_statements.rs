//! What reaches SQLite: every statement sqlx runs is logged as a `sqlx::query` event, on whatever
//! thread runs it (SQLite's worker threads included), so this binary counts them all with one
//! global subscriber. It holds this one test alone, so no other test's statements are counted.
//! tests/api/round_trips.rs counts PostgreSQL's round trips on the wire.

#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::StatusCode;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::{Layer, Registry};

use helpers::{Backend, EmptyDatabase, NO_WEBHOOK_DELIVERY, TestApp};

struct CountStatements(Arc<AtomicUsize>);

impl<S: tracing::Subscriber> Layer<S> for CountStatements {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() == "sqlx::query" {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[tokio::test]
async fn a_ticket_read_and_an_embed_read_are_one_statement_each() {
    let statements = Arc::new(AtomicUsize::new(0));
    let subscriber = Registry::default().with(CountStatements(statements.clone()));
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber in this binary");
    helpers::run(
        async |database: EmptyDatabase| {
            let app = TestApp::at(&database.url, NO_WEBHOOK_DELIVERY).await;
            one_statement_per_hot_read(app, statements).await
        },
        Backend::Sqlite,
    )
    .await;
}

async fn one_statement_per_hot_read(app: TestApp, statements: Arc<AtomicUsize>) {
    let alice = app.login("alice", "alice123").await;
    let ticket = app.create_ticket(&alice, "Counted").await;
    let (id, embed) = (ticket.id, ticket.embed_token.to_string());
    let (read, shown) = (format!("/tickets/{id}"), format!("/tickets/embed/{embed}"));
    for (path, token) in [(&read, Some(alice.as_str())), (&shown, None)] {
        let before = statements.load(Ordering::SeqCst);
        for _ in 0..10 {
            assert_eq!(app.get(path, token).await.status, StatusCode::OK);
        }
        assert_eq!(statements.load(Ordering::SeqCst) - before, 10, "10 × GET {path}: one statement each");
    }
    assert!(statements.load(Ordering::SeqCst) > 20, "the login and the create ran statements too");
}
