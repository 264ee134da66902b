use ticketdesk::config::{DatabaseUrl, PoolSettings};
use ticketdesk::demo::ensure_demo_users;
use ticketdesk::state::AppState;
use ticketdesk::store::UserFilter;

use crate::helpers::{EmptyDatabase, test_config};

crate::on_both_backends!(
    replicas_starting_together_migrate_once_and_all_work,
    demo_users_exist_only_when_asked_for_and_once,
    a_database_with_names_differing_only_in_case_is_not_migrated,
);

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
    use sqlx::Connection;
    let backend = if database.url.starts_with("sqlite") { "sqlite" } else { "postgres" };
    let mut migrator =
        sqlx::migrate::Migrator::new(std::path::Path::new(&format!("migrations/{backend}"))).await.unwrap();
    migrator.migrations = std::borrow::Cow::Owned(migrator.migrations[..3].to_vec());
    let insert = "INSERT INTO users (username, password_hash, role, created_at) VALUES
        ('alice', 'x', 'customer', '2026-01-01T00:00:00Z'), ('Alice', 'x', 'customer', '2026-01-01T00:00:00Z'),
        ('bob', 'x', 'agent', '2026-01-01T00:00:00Z'), ('BOB', 'x', 'agent', '2026-01-01T00:00:00Z'),
        ('carol', 'x', 'admin', '2026-01-01T00:00:00Z')";
    if backend == "sqlite" {
        let options: sqlx::sqlite::SqliteConnectOptions = database.url.parse().unwrap();
        let mut connection =
            sqlx::SqliteConnection::connect_with(&options.create_if_missing(true)).await.unwrap();
        migrator.run(&mut connection).await.unwrap();
        sqlx::raw_sql(insert).execute(&mut connection).await.unwrap();
    } else {
        let mut connection = sqlx::PgConnection::connect(&database.url).await.unwrap();
        migrator.run(&mut connection).await.unwrap();
        sqlx::raw_sql(insert).execute(&mut connection).await.unwrap();
    }
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
    if backend == "sqlite" {
        let mut connection = sqlx::SqliteConnection::connect(&database.url).await.unwrap();
        sqlx::raw_sql("UPDATE users SET username = 'alice2' WHERE id = 2; UPDATE users SET username = 'bob2' WHERE id = 4")
            .execute(&mut connection)
            .await
            .unwrap();
    } else {
        let mut connection = sqlx::PgConnection::connect(&database.url).await.unwrap();
        sqlx::raw_sql("UPDATE users SET username = 'alice2' WHERE id = 2; UPDATE users SET username = 'bob2' WHERE id = 4")
            .execute(&mut connection)
            .await
            .unwrap();
    }
    let store = ticketdesk::store::connect(&url, &PoolSettings::default()).await.expect("migrated");
    let passwords = ticketdesk::auth::Passwords::new(1, 0);
    let taken = ticketdesk::domain::NewUser {
        username: "CAROL".to_owned(),
        password_hash: passwords.hash("a long passphrase").await.unwrap(),
        role: ticketdesk::domain::Role::Customer,
    };
    assert!(matches!(store.create_user(&taken).await, Err(ticketdesk::error::Error::Conflict(_))));
}
