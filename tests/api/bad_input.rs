//! Malformed requests of every kind get a problem+json answer with a detail: never a 500.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};

use crate::helpers::TestApp;

crate::on_both_backends!(
    bad_bodies_paths_and_methods_get_clear_problems,
    nothing_is_stored_by_rejected_requests
);

struct Case {
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    body: String,
    expected: StatusCode,
}

fn case(
    method: Method,
    path: &str,
    content_type: Option<&'static str>,
    body: &str,
    expected: StatusCode,
) -> Case {
    Case { method, path: path.to_owned(), content_type, body: body.to_owned(), expected }
}

async fn bad_bodies_paths_and_methods_get_clear_problems(app: TestApp) {
    let tokens = app.demo_tokens().await;
    let id = app.create_ticket_id(&tokens.alice, "Target").await;
    let json = Some("application/json");
    let form = Some("application/x-www-form-urlencoded");
    let huge = format!(r#"{{"subject": "s", "description": "{}"}}"#, "a".repeat(70 * 1024));
    let ticket = format!("/tickets/{id}");
    let assign = format!("/tickets/{id}/assign");
    let comments = format!("/tickets/{id}/comments");
    use StatusCode as S;

    let by_carol = vec![
        // PATCH /tickets/{id}
        case(Method::PATCH, &ticket, json, r#"{"status": "waiting"}"#, S::UNPROCESSABLE_ENTITY),
        case(Method::PATCH, &ticket, json, r#"{"status": null}"#, S::UNPROCESSABLE_ENTITY),
        case(Method::PATCH, "/users/2", json, r#"{"active": false, "role": null}"#, S::UNPROCESSABLE_ENTITY),
        case(Method::PATCH, &ticket, json, r#"{"priority": "critical"}"#, S::UNPROCESSABLE_ENTITY),
        case(Method::PATCH, &ticket, json, r#"{}"#, S::UNPROCESSABLE_ENTITY),
        case(Method::PATCH, &ticket, json, r#"{"status": "open""#, S::BAD_REQUEST),
        case(Method::PATCH, &ticket, json, "", S::BAD_REQUEST),
        case(Method::PATCH, &ticket, Some("text/plain"), r#"{"status": "open"}"#, S::UNSUPPORTED_MEDIA_TYPE),
        case(Method::PATCH, &ticket, None, r#"{"status": "open"}"#, S::UNSUPPORTED_MEDIA_TYPE),
        // PATCH /tickets/{id}/assign
        case(Method::PATCH, &assign, json, r#"{"agent_id": "bob"}"#, S::UNPROCESSABLE_ENTITY),
        case(Method::PATCH, &assign, json, r#"{"agent_id": 1.5}"#, S::UNPROCESSABLE_ENTITY),
        case(Method::PATCH, &assign, json, r#"{"agent_id": 1e30}"#, S::UNPROCESSABLE_ENTITY),
        case(Method::PATCH, &assign, json, r#"{"agent_id": 99999999999999999999}"#, S::UNPROCESSABLE_ENTITY),
        case(Method::PATCH, &assign, json, r#"[]"#, S::UNPROCESSABLE_ENTITY),
        case(Method::PATCH, &assign, json, r#"{}"#, S::UNPROCESSABLE_ENTITY),
        // POST /tickets/{id}/comments
        case(Method::POST, &comments, json, r#"{}"#, S::UNPROCESSABLE_ENTITY),
        case(Method::POST, &comments, json, r#"{"body": "  "}"#, S::UNPROCESSABLE_ENTITY),
        case(Method::POST, &comments, json, r#"{"body": "a\u0000"}"#, S::UNPROCESSABLE_ENTITY),
        case(Method::POST, &comments, json, r#"{"body": "ok", "internal": "yes"}"#, S::UNPROCESSABLE_ENTITY),
        case(
            Method::POST,
            &comments,
            json,
            &format!(r#"{{"body": "{}"}}"#, "b".repeat(10_001)),
            S::UNPROCESSABLE_ENTITY,
        ),
        case(Method::POST, "/tickets/abc/comments", json, r#"{"body": "ok"}"#, S::BAD_REQUEST),
        case(Method::GET, "/tickets/abc/events", None, "", S::BAD_REQUEST),
        case(Method::POST, "/tickets/abc/embed-token", None, "", S::BAD_REQUEST),
        // Path parameters
        case(Method::GET, "/tickets/abc", None, "", S::BAD_REQUEST),
        case(Method::GET, "/tickets/1.5", None, "", S::BAD_REQUEST),
        case(Method::GET, "/tickets/99999999999999999999", None, "", S::BAD_REQUEST),
        case(Method::GET, "/tickets/-1", None, "", S::NOT_FOUND),
        case(Method::GET, "/tickets/0", None, "", S::NOT_FOUND),
        case(Method::PATCH, "/tickets/abc/assign", json, r#"{"agent_id": 2}"#, S::BAD_REQUEST),
        case(Method::PATCH, "/tickets/%F0%28%8C%28", json, r#"{"status": "open"}"#, S::BAD_REQUEST),
        // Users
        case(
            Method::POST,
            "/users",
            json,
            r#"{"username": 5, "password": "long enough", "role": "agent"}"#,
            S::UNPROCESSABLE_ENTITY,
        ),
        case(
            Method::POST,
            "/users",
            json,
            r#"{"username": "x\u0000y", "password": "long enough", "role": "agent"}"#,
            S::UNPROCESSABLE_ENTITY,
        ),
        case(Method::PATCH, "/users/abc", json, r#"{"active": false}"#, S::BAD_REQUEST),
        case(Method::PATCH, "/users/1", json, r#"{"active": "no"}"#, S::UNPROCESSABLE_ENTITY),
        case(Method::PUT, "/users/me/password", json, r#"{}"#, S::UNPROCESSABLE_ENTITY),
        case(
            Method::PUT,
            "/users/me/password",
            json,
            r#"{"current_password": "carol123", "new_password": "\u0000\u0000\u0000\u0000\u0000\u0000\u0000\u0000"}"#,
            S::UNPROCESSABLE_ENTITY,
        ),
        // Queries
        case(Method::GET, "/users?role=", None, "", S::BAD_REQUEST),
        case(Method::GET, "/users?role=agent&role=admin", None, "", S::BAD_REQUEST),
        // Unknown routes and wrong methods
        case(Method::GET, "/nope", None, "", S::NOT_FOUND),
        case(Method::GET, "/tickets/1/nope", None, "", S::NOT_FOUND),
        case(Method::DELETE, &ticket, None, "", S::METHOD_NOT_ALLOWED),
        case(Method::PUT, "/tickets/", json, "{}", S::METHOD_NOT_ALLOWED),
        case(Method::GET, "/auth/token", None, "", S::METHOD_NOT_ALLOWED),
    ];
    let by_alice = vec![
        case(Method::POST, "/tickets/", json, r#"{"subject": "s""#, S::BAD_REQUEST),
        case(Method::POST, "/tickets/", json, r#"{"description": "d"}"#, S::UNPROCESSABLE_ENTITY),
        case(
            Method::POST,
            "/tickets/",
            json,
            r#"{"subject": 5, "description": "d"}"#,
            S::UNPROCESSABLE_ENTITY,
        ),
        case(Method::POST, "/tickets/", json, r#""just a string""#, S::UNPROCESSABLE_ENTITY),
        case(
            Method::POST,
            "/tickets/",
            json,
            r#"{"subject": "a\u0000b", "description": "d"}"#,
            S::UNPROCESSABLE_ENTITY,
        ),
        case(
            Method::POST,
            "/tickets/",
            json,
            r#"{"subject": "s", "description": "\u0000"}"#,
            S::UNPROCESSABLE_ENTITY,
        ),
        case(Method::POST, "/tickets/", json, r#"{"subject": "\ud800", "description": "d"}"#, S::BAD_REQUEST),
        case(Method::POST, "/tickets/", json, &huge, S::PAYLOAD_TOO_LARGE),
        case(Method::POST, "/tickets/", form, "subject=s&description=d", S::UNSUPPORTED_MEDIA_TYPE),
        case(Method::POST, "/tickets/", Some("application/json; charset=utf-8"), "\u{0}", S::BAD_REQUEST),
    ];
    let anonymous = vec![
        case(Method::POST, "/auth/token", form, "username=%00&password=x", S::UNAUTHORIZED),
        case(Method::POST, "/auth/token", form, "username=alice&password=%00", S::UNAUTHORIZED),
        case(Method::POST, "/auth/token", form, "username=%FF&password=x", S::UNAUTHORIZED),
        case(
            Method::POST,
            "/auth/token",
            form,
            &format!("username=alice&password={}", "a".repeat(70 * 1024)),
            S::PAYLOAD_TOO_LARGE,
        ),
        case(
            Method::POST,
            "/auth/token",
            None,
            "username=alice&password=alice123",
            S::UNSUPPORTED_MEDIA_TYPE,
        ),
    ];

    let mut failures = Vec::new();
    for (token, cases) in
        [(Some(&tokens.carol), by_carol), (Some(&tokens.alice), by_alice), (None, anonymous)]
    {
        for case in cases {
            let mut request = Request::builder().method(case.method.clone()).uri(&case.path);
            if let Some(token) = token {
                request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
            }
            if let Some(content_type) = case.content_type {
                request = request.header(header::CONTENT_TYPE, content_type);
            }
            let response = app.send(request.body(Body::from(case.body.clone())).unwrap()).await;
            let is_problem = response.header("content-type") == Some("application/problem+json")
                && response.json["detail"].as_str().is_some_and(|d| !d.is_empty());
            if response.status != case.expected || !is_problem {
                failures.push(format!(
                    "{} {} ({} bytes): got {} {}, want {} problem",
                    case.method,
                    case.path,
                    case.body.len(),
                    response.status,
                    response.text.chars().take(200).collect::<String>(),
                    case.expected
                ));
            }
            if response.status == S::METHOD_NOT_ALLOWED {
                assert!(
                    response.header("allow").is_some(),
                    "405 without Allow: {} {}",
                    case.method,
                    case.path
                );
            }
        }
    }
    assert!(failures.is_empty(), "bad input answered wrongly:\n{}", failures.join("\n"));
}

async fn nothing_is_stored_by_rejected_requests(app: TestApp) {
    let tokens = app.demo_tokens().await;
    let id = app.create_ticket_id(&tokens.alice, "Only one").await;
    let before = app.get(&format!("/tickets/{id}"), Some(&tokens.carol)).await.json;

    for body in [r#"{"subject": "", "description": "d"}"#, r#"{"subject": "a\u0000", "description": "d"}"#] {
        let request = Request::post("/tickets/")
            .header(header::AUTHORIZATION, format!("Bearer {}", tokens.alice))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap();
        app.send(request).await.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    }
    app.set_status(&tokens.carol, id, "waiting").await.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);

    assert_eq!(app.get("/tickets/my", Some(&tokens.alice)).await.json.as_array().unwrap().len(), 1);
    assert_eq!(app.get(&format!("/tickets/{id}"), Some(&tokens.carol)).await.json, before);
}
