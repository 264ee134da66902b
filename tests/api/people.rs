use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use ticketdesk::domain::TicketStatus;

use crate::helpers::{EmptyDatabase, OPEN_REGISTRATION, TestApp, json_request_from};

crate::on_both_backends!(
    admins_add_users_who_then_log_in,
    new_usernames_and_passwords_follow_the_rules,
    only_admins_manage_users_and_users_see_themselves,
    a_deactivated_user_is_locked_out_at_once,
    deactivated_agents_cannot_be_assigned,
    admins_cannot_demote_or_deactivate_themselves,
    changing_a_password_needs_the_old_one_and_retires_old_tokens,
    user_listing_filters_and_pages_with_a_link_header,
    self_registration_is_off_by_default,
    self_registration_when_on_makes_customers_only,
    sign_ups_confirm_names_no_faster_than_logins,
);

async fn add_user(
    app: &TestApp,
    admin: &str,
    username: &str,
    password: &str,
    role: &str,
) -> crate::helpers::TestResponse {
    let body = json!({"username": username, "password": password, "role": role});
    app.call(Method::POST, "/users", Some(admin), Some(body)).await
}

async fn patch_user(app: &TestApp, token: &str, id: &Value, body: Value) -> crate::helpers::TestResponse {
    app.call(Method::PATCH, &format!("/users/{id}"), Some(token), Some(body)).await
}

async fn admins_add_users_who_then_log_in(app: TestApp) {
    let carol = app.login("carol", "carol123").await;
    let created = add_user(&app, &carol, "dave", "a long passphrase", "agent").await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.json["id"].as_i64().unwrap();
    assert_eq!(created.header("location"), Some(format!("/users/{id}").as_str()));
    assert_eq!(created.json["role"], "agent");
    assert_eq!(created.json["active"], true);
    assert!(created.json.get("password_hash").is_none() && created.json.get("token_version").is_none());

    let dave = app.login("dave", "a long passphrase").await;
    assert_eq!(app.get("/users/me", Some(&dave)).await.json, created.json);
    let taken = add_user(&app, &carol, "dave", "another passphrase", "customer").await;
    assert!(taken.assert_problem(StatusCode::CONFLICT).contains("taken"));
}

async fn new_usernames_and_passwords_follow_the_rules(app: TestApp) {
    let carol = app.login("carol", "carol123").await;
    for (username, password, expected) in [
        ("ab", "a long passphrase", "username"),
        ("has space", "a long passphrase", "username"),
        ("dave", "short", "8 to 128"),
        ("dave", "password123", "common"),
        ("dave.dave", "Dave.Dave", "username"),
    ] {
        let response = add_user(&app, &carol, username, password, "customer").await;
        let detail = response.assert_problem(StatusCode::UNPROCESSABLE_ENTITY).to_owned();
        assert!(detail.contains(expected), "{username}/{password}: {detail}");
    }
    let bad_role = add_user(&app, &carol, "dave", "a long passphrase", "root").await;
    bad_role.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    let everyone = app.get("/users", Some(&carol)).await.json;
    assert_eq!(everyone.as_array().unwrap().len(), 3, "nothing was stored");
}

async fn only_admins_manage_users_and_users_see_themselves(app: TestApp) {
    let tokens = app.demo_tokens().await;
    let carol_id = json!(app.user_id("carol").await);
    let alice_id = json!(app.user_id("alice").await);
    for token in [&tokens.alice, &tokens.bob] {
        add_user(&app, token, "mallory", "a long passphrase", "admin")
            .await
            .assert_problem(StatusCode::FORBIDDEN);
        patch_user(&app, token, &carol_id, json!({"active": false}))
            .await
            .assert_problem(StatusCode::FORBIDDEN);
        app.get(&format!("/users/{carol_id}"), Some(token)).await.assert_problem(StatusCode::FORBIDDEN);
    }
    assert_eq!(app.get(&format!("/users/{alice_id}"), Some(&tokens.alice)).await.json["username"], "alice");
    assert_eq!(app.get(&format!("/users/{alice_id}"), Some(&tokens.carol)).await.json["username"], "alice");
    app.get("/users/999999", Some(&tokens.carol)).await.assert_problem(StatusCode::NOT_FOUND);
    patch_user(&app, &tokens.carol, &json!(999999), json!({"active": false}))
        .await
        .assert_problem(StatusCode::NOT_FOUND);
    assert_eq!(app.get("/users?active=true", Some(&tokens.carol)).await.json.as_array().unwrap().len(), 3);
}

async fn a_deactivated_user_is_locked_out_at_once(app: TestApp) {
    let tokens = app.demo_tokens().await;
    let alice_id = json!(app.user_id("alice").await);
    let ticket = app.create_ticket_id(&tokens.alice, "Mine").await;
    assert_eq!(app.get("/tickets/my", Some(&tokens.alice)).await.status, StatusCode::OK);
    assert_eq!(app.get(&format!("/tickets/{ticket}"), Some(&tokens.alice)).await.status, StatusCode::OK);

    let deactivated = patch_user(&app, &tokens.carol, &alice_id, json!({"active": false})).await;
    assert_eq!(deactivated.json["active"], false, "{}", deactivated.text);
    // Every route, including GET /tickets/{id}, which loads the user in the ticket's own query.
    for path in ["/tickets/my".to_owned(), format!("/tickets/{ticket}"), format!("/tickets/{}", ticket + 99)]
    {
        let refused = app.get(&path, Some(&tokens.alice)).await;
        refused.assert_problem(StatusCode::UNAUTHORIZED);
        assert_eq!(refused.header("www-authenticate"), Some(r#"Bearer error="invalid_token""#), "{path}");
    }

    let login = app.post_form("/auth/token", "username=alice&password=alice123").await;
    let wrong = app.post_form("/auth/token", "username=alice&password=wrong").await;
    login.assert_problem(StatusCode::UNAUTHORIZED);
    assert_eq!(login.text, wrong.text, "a deactivated account looks like a wrong password");

    let inactive = app.get("/users?active=false", Some(&tokens.carol)).await.json;
    assert_eq!(inactive.as_array().unwrap().len(), 1);
    assert_eq!(inactive[0]["username"], "alice");

    patch_user(&app, &tokens.carol, &alice_id, json!({"active": true})).await;
    let again = app.login("alice", "alice123").await;
    assert_eq!(app.get("/tickets/my", Some(&again)).await.status, StatusCode::OK, "reactivated");
    // A token from before the deactivation stays dead: reactivating revives no old session.
    for path in ["/tickets/my".to_owned(), format!("/tickets/{ticket}")] {
        app.get(&path, Some(&tokens.alice)).await.assert_problem(StatusCode::UNAUTHORIZED);
    }
}

async fn deactivated_agents_cannot_be_assigned(app: TestApp) {
    let tokens = app.demo_tokens().await;
    let bob = app.user_id("bob").await;
    let id = app.create_ticket_id(&tokens.alice, "Needs an active agent").await;
    patch_user(&app, &tokens.carol, &json!(bob), json!({"active": false})).await;
    let detail =
        app.assign(&tokens.carol, id, bob).await.assert_problem(StatusCode::UNPROCESSABLE_ENTITY).to_owned();
    assert!(detail.contains("deactivated"), "{detail}");
}

async fn admins_cannot_demote_or_deactivate_themselves(app: TestApp) {
    let carol = app.login("carol", "carol123").await;
    let carol_id = json!(app.user_id("carol").await);
    for body in [json!({"active": false}), json!({"role": "agent"})] {
        patch_user(&app, &carol, &carol_id, body).await.assert_problem(StatusCode::CONFLICT);
    }
    // Saying what already holds is fine.
    assert_eq!(
        patch_user(&app, &carol, &carol_id, json!({"role": "admin", "active": true})).await.status,
        StatusCode::OK
    );
    patch_user(&app, &carol, &carol_id, json!({})).await.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    // Promoting someone else works, and takes effect on their very next request.
    let bob_id = json!(app.user_id("bob").await);
    let bob = app.login("bob", "bob123").await;
    patch_user(&app, &carol, &bob_id, json!({"role": "admin"})).await;
    assert_eq!(app.get("/users", Some(&bob)).await.status, StatusCode::OK);
}

async fn changing_a_password_needs_the_old_one_and_retires_old_tokens(app: TestApp) {
    let alice = app.login("alice", "alice123").await;
    let other_session = app.login("alice", "alice123").await;
    let change = |current: &str, new: &str| {
        app.call(
            Method::PUT,
            "/users/me/password",
            Some(&alice),
            Some(json!({"current_password": current, "new_password": new})),
        )
    };
    change("wrong", "a brand new passphrase").await.assert_problem(StatusCode::FORBIDDEN);
    change("alice123", "password1").await.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        app.get("/users/me", Some(&alice)).await.status,
        StatusCode::OK,
        "refused changes change nothing"
    );

    let ticket = app.create_ticket_id(&alice, "Before the change").await;
    let changed = change("alice123", "a brand new passphrase").await;
    assert_eq!(changed.status, StatusCode::NO_CONTENT, "{}", changed.text);
    for old in [&alice, &other_session] {
        app.get("/users/me", Some(old)).await.assert_problem(StatusCode::UNAUTHORIZED);
        app.get(&format!("/tickets/{ticket}"), Some(old)).await.assert_problem(StatusCode::UNAUTHORIZED);
    }
    app.post_form("/auth/token", "username=alice&password=alice123")
        .await
        .assert_problem(StatusCode::UNAUTHORIZED);
    let fresh = app.login("alice", "a brand new passphrase").await;
    assert_eq!(app.get("/users/me", Some(&fresh)).await.status, StatusCode::OK);
}

async fn user_listing_filters_and_pages_with_a_link_header(app: TestApp) {
    let carol = app.login("carol", "carol123").await;
    for n in 1..=4 {
        add_user(&app, &carol, &format!("agent{n}"), "a long passphrase", "agent").await;
    }
    // bob and agent1..4: five agents, two per page.
    let mut names = Vec::new();
    let mut next = Some("/users?role=agent&limit=2".to_owned());
    let mut pages = 0;
    while let Some(url) = next.take() {
        let page = app.get(&url, Some(&carol)).await;
        assert_eq!(page.status, StatusCode::OK, "{url}: {}", page.text);
        names
            .extend(page.json.as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap().to_owned()));
        next = page.header("link").map(|link| {
            assert!(link.ends_with(r#">; rel="next""#) && link.contains("role=agent"), "{link}");
            link.trim_start_matches('<').split('>').next().unwrap().to_owned()
        });
        pages += 1;
    }
    assert_eq!(names, ["bob", "agent1", "agent2", "agent3", "agent4"]);
    assert_eq!(pages, 3);

    app.get("/users?cursor=bogus", Some(&carol)).await.assert_problem(StatusCode::BAD_REQUEST);
    app.get("/users?limit=0", Some(&carol)).await.assert_problem(StatusCode::BAD_REQUEST);
    app.get("/users?limit=201", Some(&carol)).await.assert_problem(StatusCode::BAD_REQUEST);
    app.get("/users?active=maybe", Some(&carol)).await.assert_problem(StatusCode::BAD_REQUEST);
}

async fn self_registration_is_off_by_default(app: TestApp) {
    let body = json!({"username": "newbie", "password": "a long passphrase"});
    let response = app.call(Method::POST, "/auth/register", None, Some(body)).await;
    assert!(response.assert_problem(StatusCode::FORBIDDEN).contains("disabled"));
    app.post_form("/auth/token", "username=newbie&password=a+long+passphrase")
        .await
        .assert_problem(StatusCode::UNAUTHORIZED);
}

async fn self_registration_when_on_makes_customers_only(database: EmptyDatabase) {
    let app = TestApp::at(&database.url, OPEN_REGISTRATION).await;
    let body = json!({"username": "newbie", "password": "a long passphrase", "role": "admin"});
    let response = app.call(Method::POST, "/auth/register", None, Some(body)).await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);
    assert_eq!(response.json["role"], "customer", "the role cannot be chosen");
    let token = app.login("newbie", "a long passphrase").await;
    assert_eq!(app.create_ticket(&token, "First ticket").await.status, TicketStatus::Open);

    let weak = json!({"username": "weakling", "password": "12345678"});
    app.call(Method::POST, "/auth/register", None, Some(weak))
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    let again = json!({"username": "newbie", "password": "another passphrase"});
    app.call(Method::POST, "/auth/register", None, Some(again)).await.assert_problem(StatusCode::CONFLICT);
}

async fn sign_ups_confirm_names_no_faster_than_logins(database: EmptyDatabase) {
    let app = TestApp::at(&database.url, OPEN_REGISTRATION).await;
    let hashes = |metrics: String| {
        metrics.lines().find_map(|line| line.strip_prefix("password_hashes_total ")).unwrap().to_owned()
    };
    let register = |address: &str, username: &str| {
        let body = json!({"username": username, "password": "a long passphrase"});
        json_request_from(address, Method::POST, "/auth/register", None, &body)
    };
    // A taken name is answered before any hashing.
    let before = hashes(app.metrics().await);
    app.send(register(PROBER, "ALICE")).await.assert_problem(StatusCode::CONFLICT);
    assert_eq!(hashes(app.metrics().await), before, "no password was hashed for a taken name");

    // Every sign-up counts against the address as a failed login would: 50 in all, then locked.
    for i in 1..50 {
        let name = if i % 2 == 0 { "bob".to_owned() } else { format!("probe{i}") };
        let response = app.send(register(PROBER, &name)).await;
        assert!(matches!(response.status, StatusCode::CREATED | StatusCode::CONFLICT), "{}", response.text);
    }
    let locked = app.send(register(PROBER, "carol")).await;
    locked.assert_problem(StatusCode::TOO_MANY_REQUESTS);
    assert!(locked.header("retry-after").is_some());
    // One budget with logins from there; other addresses are unaffected.
    app.login_from(PROBER, "bob", "bob123").await.assert_problem(StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(app.send(register("198.51.100.20", "latecomer")).await.status, StatusCode::CREATED);
}

const PROBER: &str = "203.0.113.99";
