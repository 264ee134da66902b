//! Login throttling: state in the database, so it holds across replicas.

use std::time::Duration;

use axum::http::StatusCode;

use crate::helpers::{EmptyDatabase, TestApp, TestResponse, json_request_from, login_request_from, send_to};

crate::on_both_backends!(
    five_failures_lock_that_account_from_that_address_only_and_briefly,
    a_success_resets_the_count,
    failures_count_across_replicas,
    parallel_guesses_are_all_counted,
    one_address_spraying_many_accounts_is_locked,
    a_login_flood_beyond_the_hashing_queue_is_shed_at_once,
    a_stolen_token_guesses_the_password_no_faster_than_logins,
    guesses_from_elsewhere_cannot_lock_the_real_user_out_of_a_known_address,
);

const ATTACKER: &str = "203.0.113.66";
const REAL_USER: &str = "198.51.100.7";

#[track_caller]
fn assert_throttled(response: &TestResponse) -> u64 {
    let detail = response.assert_problem(StatusCode::TOO_MANY_REQUESTS);
    assert!(detail.contains("try again"), "{detail}");
    let retry_after: u64 = response.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=900).contains(&retry_after), "{retry_after}");
    retry_after
}

async fn five_failures_lock_that_account_from_that_address_only_and_briefly(app: TestApp) {
    for _ in 0..5 {
        let guess = app.login_from(ATTACKER, "alice", "guess").await;
        guess.assert_problem(StatusCode::UNAUTHORIZED);
    }
    // Even the right password is refused now from there, without being checked.
    let locked = app.login_from(ATTACKER, "alice", "alice123").await;
    assert_eq!(assert_throttled(&locked), 1, "the first lock lasts a second");
    // The real user, elsewhere, is not locked out; other accounts from the attacker's address neither.
    assert_eq!(app.login_from(REAL_USER, "alice", "alice123").await.status, StatusCode::OK);
    assert_eq!(app.login_from(ATTACKER, "bob", "bob123").await.status, StatusCode::OK);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The lock has passed; another failure locks again, twice as long.
    app.login_from(ATTACKER, "alice", "guess").await.assert_problem(StatusCode::UNAUTHORIZED);
    assert_eq!(assert_throttled(&app.login_from(ATTACKER, "alice", "guess").await), 2);
}

async fn a_success_resets_the_count(app: TestApp) {
    for _ in 0..4 {
        app.login_from(ATTACKER, "alice", "typo").await.assert_problem(StatusCode::UNAUTHORIZED);
    }
    assert_eq!(app.login_from(ATTACKER, "alice", "alice123").await.status, StatusCode::OK);
    for _ in 0..4 {
        app.login_from(ATTACKER, "alice", "typo").await.assert_problem(StatusCode::UNAUTHORIZED);
    }
    assert_eq!(app.login_from(ATTACKER, "alice", "alice123").await.status, StatusCode::OK, "not locked");
}

async fn failures_count_across_replicas(app: TestApp) {
    let replica = app.replica().await;
    for attempt in 0..5 {
        let server = if attempt % 2 == 0 { &app } else { &replica };
        server.login_from(ATTACKER, "carol", "guess").await.assert_problem(StatusCode::UNAUTHORIZED);
    }
    assert_throttled(&app.login_from(ATTACKER, "carol", "carol123").await);
    assert_throttled(&replica.login_from(ATTACKER, "carol", "carol123").await);
}

async fn parallel_guesses_are_all_counted(app: TestApp) {
    let guesses: Vec<_> = (0..16)
        .map(|i| {
            let router = app.router();
            let guess = login_request_from(ATTACKER, "alice", &format!("guess{i}"));
            tokio::spawn(async move { send_to(router, guess).await.status })
        })
        .collect();
    let mut checked = 0;
    for guess in guesses {
        match guess.await.unwrap() {
            StatusCode::UNAUTHORIZED => checked += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}"),
        }
    }
    // Each attempt is counted before its password is checked, so a burst gets no more guesses
    // than a patient attacker.
    assert_eq!(checked, 5, "passwords checked");
}

async fn one_address_spraying_many_accounts_is_locked(app: TestApp) {
    for i in 0..50 {
        let response = app.login_from(ATTACKER, &format!("user{i}"), "Password1").await;
        response.assert_problem(StatusCode::UNAUTHORIZED);
    }
    assert_throttled(&app.login_from(ATTACKER, "bob", "bob123").await);
    assert_eq!(app.login_from(REAL_USER, "bob", "bob123").await.status, StatusCode::OK);
}

const NO_HASHING_QUEUE: &[(&str, &str)] = &[("PASSWORD_HASH_QUEUE", "0")];

async fn a_login_flood_beyond_the_hashing_queue_is_shed_at_once(database: EmptyDatabase) {
    let app = TestApp::at(&database.url, NO_HASHING_QUEUE).await;
    // Each from its own address, so throttling does not stop them first.
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let flood: Vec<_> = (0..4 * cores)
        .map(|i| {
            let router = app.router();
            let guess = login_request_from(&format!("203.0.113.{}", i + 1), "alice", "guess");
            tokio::spawn(async move { send_to(router, guess).await })
        })
        .collect();
    let (mut checked, mut shed) = (0, 0);
    for response in flood {
        let response = response.await.unwrap();
        match response.status {
            StatusCode::UNAUTHORIZED => checked += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                let detail = response.assert_problem(StatusCode::SERVICE_UNAVAILABLE);
                assert!(detail.contains("busy"), "{detail}");
                assert_eq!(response.header("retry-after"), Some("1"));
                shed += 1;
            }
            other => panic!("unexpected {other}: {}", response.text),
        }
    }
    assert!(checked >= 1 && shed >= 1, "{checked} checked, {shed} shed");
    let metrics = app.metrics().await;
    assert!(metrics.contains(&format!("password_hashes_shed_total {shed}\n")), "{metrics}");
    assert!(metrics.contains("password_hashes_queued 0\n"), "{metrics}");
    // Once the flood has passed, logins work again.
    assert_eq!(app.login_from(REAL_USER, "alice", "alice123").await.status, StatusCode::OK);
}

/// `PUT /users/me/password` with `token`, as if sent from `address`.
fn change_password_from(address: &str, token: &str, current: &str) -> axum::http::Request<axum::body::Body> {
    let body = serde_json::json!({"current_password": current, "new_password": "a brand new passphrase"});
    json_request_from(address, axum::http::Method::PUT, "/users/me/password", Some(token), &body)
}

async fn a_stolen_token_guesses_the_password_no_faster_than_logins(app: TestApp) {
    let stolen = app.login("alice", "alice123").await;
    let replica = app.replica().await;
    for guess in 0..5 {
        let server = if guess % 2 == 0 { &app } else { &replica };
        let response = server.send(change_password_from(ATTACKER, &stolen, &format!("guess{guess}"))).await;
        response.assert_problem(StatusCode::FORBIDDEN);
    }
    // Locked, on every replica, even for the right password, which is not even checked.
    assert_throttled(&app.send(change_password_from(ATTACKER, &stolen, "alice123")).await);
    assert_throttled(&replica.send(change_password_from(ATTACKER, &stolen, "alice123")).await);
    // The same counter as logins: logging in as alice from there is locked too.
    assert_throttled(&app.login_from(ATTACKER, "alice", "alice123").await);
    // The password is unchanged; the real user elsewhere is unaffected and may change it.
    assert_eq!(app.login_from(REAL_USER, "alice", "alice123").await.status, StatusCode::OK);
    let changed = app.send(change_password_from(REAL_USER, &stolen, "alice123")).await;
    assert_eq!(changed.status, StatusCode::NO_CONTENT, "{}", changed.text);
}

async fn guesses_from_elsewhere_cannot_lock_the_real_user_out_of_a_known_address(app: TestApp) {
    // The real user has logged in from home before.
    assert_eq!(app.login_from(REAL_USER, "bob", "bob123").await.status, StatusCode::OK);
    // Attackers on four addresses spend their guesses until the account itself is locked.
    for attacker in 1..=4 {
        for _ in 0..5 {
            let guess = app.login_from(&format!("203.0.113.{attacker}"), "bob", "guess").await;
            guess.assert_problem(StatusCode::UNAUTHORIZED);
        }
    }
    // The account is locked: from an address it never logged in from, even the right password waits.
    assert_throttled(&app.login_from("192.0.2.77", "bob", "bob123").await);
    // From home it is judged by its own counter, which is clean: in at once.
    assert_eq!(app.login_from(REAL_USER, "bob", "bob123").await.status, StatusCode::OK);
    // A known address is still locked by its own failures, like any other.
    for _ in 0..5 {
        app.login_from(REAL_USER, "bob", "typo").await.assert_problem(StatusCode::UNAUTHORIZED);
    }
    assert_throttled(&app.login_from(REAL_USER, "bob", "bob123").await);
}
