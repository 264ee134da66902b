use ticketdesk::config::{DatabaseUrl, PoolSettings};
use ticketdesk::demo::ensure_demo_users;
use ticketdesk::state::AppState;
use ticketdesk::store::UserFilter;

use crate::helpers::{EmptyDatabase, test_config};

crate::on_both_backends!(
    replicas_starting_together_migrate_once_and_all_work,
    demo_users_exist_only_when_asked_for_and_once
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
