use axum::http::{Method, StatusCode};
use serde_json::json;
use ticketdesk::domain::Role;

use crate::helpers::TestApp;

crate::on_both_backends!(
    each_demo_user_logs_in_and_gets_a_bearer_token_for_their_role,
    wrong_password_and_unknown_user_get_the_same_401,
    login_needs_both_fields_as_a_form,
    login_accepts_the_password_grant_and_nothing_else,
    users_me_needs_a_token,
    admins_find_agents_to_assign,
    only_admins_list_users,
    usernames_are_one_account_whatever_their_case,
);

async fn each_demo_user_logs_in_and_gets_a_bearer_token_for_their_role(app: TestApp) {
    for (username, password, role) in
        [("alice", "alice123", "customer"), ("bob", "bob123", "agent"), ("carol", "carol123", "admin")]
    {
        let response =
            app.post_form("/auth/token", &format!("username={username}&password={password}")).await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.text);
        assert_eq!(response.json["token_type"], "bearer");
        assert_eq!(response.json["expires_in"], 1800);
        assert_eq!(response.header("cache-control"), Some("no-store"));

        let token = response.json["access_token"].as_str().unwrap();
        let me = app.get("/users/me", Some(token)).await;
        assert_eq!(me.status, StatusCode::OK);
        assert_eq!(me.json["username"], username);
        assert_eq!(me.json["role"], role);
        assert_eq!(me.json["id"], app.user_id(username).await);
        assert!(me.json.get("password_hash").is_none(), "{}", me.text);
    }
}

async fn wrong_password_and_unknown_user_get_the_same_401(app: TestApp) {
    let wrong_password = app.post_form("/auth/token", "username=alice&password=alice124").await;
    let unknown_user = app.post_form("/auth/token", "username=mallory&password=alice123").await;
    let empty_password = app.post_form("/auth/token", "username=alice&password=").await;
    for response in [&wrong_password, &unknown_user, &empty_password] {
        response.assert_problem(StatusCode::UNAUTHORIZED);
        assert_eq!(response.header("www-authenticate"), Some("Bearer"));
        assert!(response.json.get("access_token").is_none());
    }
    assert_eq!(wrong_password.text, unknown_user.text, "the two failures must be indistinguishable");
    assert_eq!(wrong_password.text, empty_password.text);
}

async fn login_needs_both_fields_as_a_form(app: TestApp) {
    app.post_form("/auth/token", "username=alice").await.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    app.post_form("/auth/token", "").await.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    let as_json = app
        .call(Method::POST, "/auth/token", None, Some(json!({"username": "alice", "password": "alice123"})))
        .await;
    as_json.assert_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

async fn login_accepts_the_password_grant_and_nothing_else(app: TestApp) {
    // What Swagger UI's Authorize dialog sends.
    let swagger = app
        .post_form("/auth/token", "grant_type=password&username=alice&password=alice123&scope=&client_id=")
        .await;
    assert_eq!(swagger.status, StatusCode::OK, "{}", swagger.text);
    let other =
        app.post_form("/auth/token", "grant_type=client_credentials&username=alice&password=alice123").await;
    assert!(other.assert_problem(StatusCode::BAD_REQUEST).contains("grant_type"));
}

async fn users_me_needs_a_token(app: TestApp) {
    let response = app.get("/users/me", None).await;
    response.assert_problem(StatusCode::UNAUTHORIZED);
    assert_eq!(response.header("www-authenticate"), Some("Bearer"));
}

async fn admins_find_agents_to_assign(app: TestApp) {
    let erin = app.add_user("erin", "erin-password", Role::Agent).await;
    let carol = app.login("carol", "carol123").await;

    let agents = app.get("/users?role=agent", Some(&carol)).await;
    assert_eq!(agents.status, StatusCode::OK, "{}", agents.text);
    let names: Vec<&str> =
        agents.json.as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap()).collect();
    assert_eq!(names, ["bob", "erin"]);
    assert_eq!(agents.json[1]["id"], erin);

    let everyone = app.get("/users", Some(&carol)).await;
    assert_eq!(everyone.json.as_array().unwrap().len(), 4);

    let bad_role = app.get("/users?role=superuser", Some(&carol)).await;
    bad_role.assert_problem(StatusCode::BAD_REQUEST);
}

async fn only_admins_list_users(app: TestApp) {
    for (username, password) in [("alice", "alice123"), ("bob", "bob123")] {
        let token = app.login(username, password).await;
        app.get("/users?role=agent", Some(&token)).await.assert_problem(StatusCode::FORBIDDEN);
    }
    app.get("/users", None).await.assert_problem(StatusCode::UNAUTHORIZED);
}

async fn usernames_are_one_account_whatever_their_case(app: TestApp) {
    let carol = app.login("carol", "carol123").await;
    for taken in ["Alice", "ALICE", "aLiCe"] {
        let body = json!({"username": taken, "password": "a long passphrase", "role": "customer"});
        let response = app.call(Method::POST, "/users", Some(&carol), Some(body)).await;
        response.assert_problem(StatusCode::CONFLICT);
    }
    // A name keeps the case it was created with, and logs in with any.
    let body = json!({"username": "DaveOps", "password": "a long passphrase", "role": "agent"});
    let created = app.call(Method::POST, "/users", Some(&carol), Some(body)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.json["username"], "DaveOps");
    for spelling in ["daveops", "DAVEOPS", "DaveOps"] {
        let token = app.login(spelling, "a%20long%20passphrase").await;
        assert_eq!(app.get("/users/me", Some(&token)).await.json["username"], "DaveOps");
    }
    // Guesses under other spellings count against the one account.
    for spelling in ["Alice", "ALICE", "aLICE", "alicE", "ALIce"] {
        app.login_from("203.0.113.50", spelling, "guess").await.assert_problem(StatusCode::UNAUTHORIZED);
    }
    app.login_from("203.0.113.50", "alice", "alice123").await.assert_problem(StatusCode::TOO_MANY_REQUESTS);
}
