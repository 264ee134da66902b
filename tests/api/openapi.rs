use axum::http::StatusCode;
use serde_json::Value;

use crate::helpers::TestApp;

crate::on_both_backends!(
    openapi_documents_every_route_with_errors_and_examples,
    swagger_ui_is_served_offline,
    the_document_describes_what_the_server_accepts,
);

const ROUTES: [(&str, &str); 43] = [
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("post", "/auth/token"),
    ("post", "/auth/refresh"),
    ("post", "/auth/logout"),
    ("post", "/auth/register"),
    ("post", "/users"),
    ("get", "/users/{id}"),
    ("patch", "/users/{id}"),
    ("put", "/users/me/password"),
    ("get", "/users/me"),
    ("get", "/users"),
    ("post", "/tickets/"),
    ("get", "/tickets/"),
    ("get", "/tickets/my"),
    ("get", "/tickets/{id}"),
    ("patch", "/tickets/{id}"),
    ("patch", "/tickets/{id}/assign"),
    ("post", "/tickets/{id}/comments"),
    ("get", "/tickets/{id}/comments"),
    ("get", "/tickets/{id}/events"),
    ("post", "/tickets/{id}/embed-token"),
    ("post", "/webhooks"),
    ("get", "/webhooks"),
    ("get", "/webhooks/{id}"),
    ("patch", "/webhooks/{id}"),
    ("delete", "/webhooks/{id}"),
    ("post", "/webhooks/{id}/rotate-secret"),
    ("get", "/webhooks/{id}/deliveries"),
    ("post", "/calendars"),
    ("get", "/calendars"),
    ("get", "/calendars/{id}"),
    ("put", "/calendars/{id}"),
    ("delete", "/calendars/{id}"),
    ("post", "/sla-policies"),
    ("get", "/sla-policies"),
    ("get", "/sla-policies/{id}"),
    ("put", "/sla-policies/{id}"),
    ("delete", "/sla-policies/{id}"),
    ("post", "/uploads"),
    ("get", "/attachments/{id}"),
    ("delete", "/attachments/{id}"),
    ("get", "/attachments/{id}/content"),
];

async fn openapi_documents_every_route_with_errors_and_examples(app: TestApp) {
    let response = app.get("/openapi.json", None).await;
    assert_eq!(response.status, StatusCode::OK);
    let doc = response.json;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);

    let flow = &doc["components"]["securitySchemes"]["oauth2"]["flows"]["password"];
    assert_eq!(flow["tokenUrl"], "/auth/token", "Swagger UI's Authorize must log in through /auth/token");

    assert!(doc["paths"]["/metrics"].is_null(), "metrics are for the monitoring system, not the public API");
    let embed = &doc["paths"]["/tickets/embed/{token}"]["get"];
    assert!(embed.is_object(), "the embed route is documented");
    assert!(embed.get("security").is_none(), "the embed route needs no login");
    let stream = &doc["paths"]["/tickets/embed/{token}/stream"]["get"];
    assert!(stream.get("security").is_none(), "the embed stream needs no login");
    assert!(stream["responses"]["200"]["content"]["text/event-stream"].is_object(), "{stream}");
    assert!(stream["responses"]["404"].is_object() && stream["responses"]["503"].is_object(), "{stream}");

    let mut operations = 2;
    for (method, path) in ROUTES {
        let operation = &doc["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is not documented");
        operations += 1;
        let responses = operation["responses"].as_object().unwrap();
        assert!(responses.keys().any(|s| s.starts_with('2')), "{method} {path}: no success response");
        let is_probe = path.ends_with("z");
        assert!(
            is_probe || responses.keys().any(|s| s.starts_with('4')),
            "{method} {path}: no error response"
        );
        if !path.starts_with("/auth/") && !is_probe {
            assert_eq!(
                operation["security"][0]["oauth2"],
                Value::Array(vec![]),
                "{method} {path}: not secured"
            );
            assert!(responses.contains_key("401"), "{method} {path}: 401 undocumented");
        }
        let file_upload = operation["requestBody"]["content"].get("multipart/form-data").is_some();
        if file_upload {
            // A form with a file: Swagger UI offers a file picker, there is nothing to pre-fill.
            for status in ["400", "413"] {
                assert!(
                    responses.contains_key(status),
                    "{method} {path}: takes a file but {status} is undocumented"
                );
            }
        } else if let Some(body) = operation.get("requestBody") {
            for status in ["413", "415", "422"] {
                assert!(
                    responses.contains_key(status),
                    "{method} {path}: takes a body but {status} is undocumented"
                );
            }
            let content = body["content"].as_object().unwrap();
            let (_, media) = content.iter().next().unwrap();
            assert!(has_example(&doc, &media["schema"]), "{method} {path}: request body without example");
        }
    }
    let documented: usize =
        doc["paths"].as_object().unwrap().values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(documented, operations, "an operation is documented that this test does not know");

    for (name, error) in doc["components"]["responses"].as_object().unwrap() {
        let media = &error["content"]["application/problem+json"];
        assert!(media["example"]["detail"].is_string(), "error response {name} has no example");
    }
}

/// Resolves a schema (or its `$ref`) and says whether it carries an example.
fn has_example(doc: &Value, schema: &Value) -> bool {
    match schema["$ref"].as_str() {
        Some(reference) => {
            let name = reference.trim_start_matches("#/components/schemas/");
            !doc["components"]["schemas"][name]["examples"].is_null()
                || !doc["components"]["schemas"][name]["example"].is_null()
        }
        None => !schema["examples"].is_null() || !schema["example"].is_null(),
    }
}

async fn swagger_ui_is_served_offline(app: TestApp) {
    let page = app.get("/docs/", None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.header("content-type").unwrap().starts_with("text/html"));
    assert!(page.text.contains("swagger-ui"), "{}", page.text);
    let initializer = app.get("/docs/swagger-initializer.js", None).await;
    assert_eq!(initializer.status, StatusCode::OK);
    assert!(initializer.text.contains("/openapi.json"), "{}", initializer.text);
    let bundle = app.get("/docs/swagger-ui-bundle.js", None).await;
    assert_eq!(bundle.status, StatusCode::OK, "the UI's script is vendored in the binary");
    assert!(bundle.text.len() > 100_000);
}

async fn the_document_describes_what_the_server_accepts(app: TestApp) {
    let doc = app.get("/openapi.json", None).await.json;
    // No optional parameter carries an example: Swagger UI turns it into a pre-filled value.
    for (path, operations) in doc["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                let optional = parameter["required"] != true;
                let named = format!("{method} {path} {}", parameter["name"]);
                // Swagger UI pre-fills from any of these.
                for prefill in
                    [&parameter["example"], &parameter["examples"], &parameter["schema"]["default"]]
                {
                    assert!(!optional || prefill.is_null(), "{named} would be pre-filled with {prefill}");
                }
                if parameter["name"] == "cursor" {
                    assert_eq!(parameter["schema"]["minLength"], 1, "{named}: an empty cursor is refused");
                }
            }
        }
    }
    app.get("/tickets/my?cursor=", Some(&app.login("alice", "alice123").await))
        .await
        .assert_problem(StatusCode::BAD_REQUEST);
    // `integer` in JSON Schema includes 2.0; so does the server.
    let tokens = app.demo_tokens().await;
    let id = app.create_ticket_id(&tokens.alice, "Float id").await;
    let bob = app.user_id("bob").await;
    let body = serde_json::json!({"agent_id": bob as f64});
    assert!(body.to_string().contains(".0"), "{body}");
    let path = format!("/tickets/{id}/assign");
    let assigned = app.call(axum::http::Method::PATCH, &path, Some(&tokens.carol), Some(body)).await;
    assert_eq!(assigned.status, StatusCode::OK, "{}", assigned.text);
    assert_eq!(assigned.json["assigned_to"], bob);
    let half = serde_json::json!({"agent_id": 2.5});
    app.call(axum::http::Method::PATCH, &path, Some(&tokens.carol), Some(half))
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
}
