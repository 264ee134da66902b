use std::io::Write;
use std::process::{Command, Output, Stdio};

use axum::http::StatusCode;

use crate::helpers::{EmptyDatabase, TestApp};

crate::on_both_backends!(
    probes_answer_without_auth,
    readiness_fails_when_migrations_are_missing_or_the_database_is_gone,
    the_cli_creates_the_first_admin_and_manages_users,
    the_cli_prints_the_served_openapi_document,
    metrics_count_requests_by_route_template_and_more,
    the_pool_size_is_configurable,
    the_server_serves_metrics_only_on_the_metrics_address,
);

/// Runs the real binary against the app's database, feeding `stdin`.
fn ticketdesk(app: &TestApp, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ticketdesk"))
        .args(args)
        .env("DATABASE_URL", app.config.database_url.expose())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the ticketdesk binary runs");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout.clone()).unwrap()
}

async fn probes_answer_without_auth(app: TestApp) {
    let health = app.get("/healthz", None).await;
    assert_eq!((health.status, health.json["status"].as_str()), (StatusCode::OK, Some("ok")));
    let ready = app.get("/readyz", None).await;
    assert_eq!(
        (ready.status, ready.json["status"].as_str()),
        (StatusCode::OK, Some("ready")),
        "{}",
        ready.text
    );
}

async fn readiness_fails_when_migrations_are_missing_or_the_database_is_gone(app: TestApp) {
    app.execute("DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)")
        .await;
    let behind = app.get("/readyz", None).await;
    let detail = behind.assert_problem(StatusCode::SERVICE_UNAVAILABLE).to_owned();
    assert!(detail.contains("of") && detail.contains("migrations are applied"), "{detail}");

    app.execute("DROP TABLE _sqlx_migrations").await;
    let gone = app.get("/readyz", None).await;
    assert_eq!(gone.assert_problem(StatusCode::SERVICE_UNAVAILABLE), "the database is unreachable");
    assert!(!gone.text.contains("_sqlx_migrations"), "no database error text reaches the client");
    assert_eq!(
        app.get("/healthz", None).await.status,
        StatusCode::OK,
        "liveness does not depend on the database"
    );
}

async fn the_cli_creates_the_first_admin_and_manages_users(app: TestApp) {
    let created =
        stdout(&ticketdesk(&app, &["user", "create", "root", "--role", "admin"], "a long passphrase\n"));
    assert!(created.starts_with("created root (admin) with id "), "{created}");
    let root = app.login("root", "a long passphrase").await;
    assert_eq!(app.get("/users", Some(&root)).await.status, StatusCode::OK, "root is an admin");

    let admins = stdout(&ticketdesk(&app, &["user", "list", "--role", "admin"], ""));
    let lines: Vec<&str> = admins.lines().collect();
    assert_eq!(lines.len(), 2, "{admins}");
    assert!(
        lines[0].ends_with("\tcarol\tadmin\ttrue") && lines[1].ends_with("\troot\tadmin\ttrue"),
        "{admins}"
    );

    let alice = app.login("alice", "alice123").await;
    stdout(&ticketdesk(&app, &["user", "set-password", "alice"], "a fresh passphrase\r\n"));
    app.get("/users/me", Some(&alice)).await.assert_problem(StatusCode::UNAUTHORIZED);
    app.login("alice", "a fresh passphrase").await;

    let bob = app.login("bob", "bob123").await;
    stdout(&ticketdesk(&app, &["user", "deactivate", "bob"], ""));
    app.get("/users/me", Some(&bob)).await.assert_problem(StatusCode::UNAUTHORIZED);

    for (args, stdin, complaint) in [
        (&["user", "create", "weak", "--role", "agent"][..], "12345678\n", "common"),
        (&["user", "create", "root", "--role", "agent"][..], "another passphrase\n", "taken"),
        (&["user", "set-password", "nobody"][..], "a fine passphrase\n", "no user"),
        (&["user", "create", "x y", "--role", "agent"][..], "a fine passphrase\n", "username"),
    ] {
        let output = ticketdesk(&app, args, stdin);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && stderr.contains(complaint), "{args:?}: {stderr}");
        assert!(!stderr.contains(stdin.trim()), "a password was echoed: {stderr}");
    }
    stdout(&ticketdesk(&app, &["migrate"], ""));
}

async fn the_cli_prints_the_served_openapi_document(app: TestApp) {
    let printed: serde_json::Value =
        serde_json::from_str(&stdout(&ticketdesk(&app, &["openapi"], ""))).unwrap();
    assert_eq!(printed, app.get("/openapi.json", None).await.json);
}

async fn metrics_count_requests_by_route_template_and_more(app: TestApp) {
    let tokens = app.demo_tokens().await;
    let ticket = app.create_ticket(&tokens.alice, "Counted").await;
    let id = ticket.id;
    app.create_ticket(&tokens.alice, "Counted too").await;
    app.set_status(&tokens.carol, id, "closed").await;
    for _ in 0..3 {
        app.get(&format!("/tickets/{id}"), Some(&tokens.alice)).await;
    }
    app.get(&format!("/tickets/embed/{}", ticket.embed_token), None).await;
    app.post_form("/auth/token", "username=alice&password=nope").await;
    app.get("/no/such/route", None).await;
    // Invented methods, each different: they must not mint series of their own.
    for i in 0..50 {
        let method =
            axum::http::Method::from_bytes(format!("QQQQ{i}{}", "Q".repeat(500)).as_bytes()).unwrap();
        app.call(method, "/healthz", None, None).await;
    }

    let text = app.metrics().await;
    for expected in [
        r#"http_requests_total{method="GET",route="/tickets/{id}",status="200"} 3"#,
        r#"http_requests_total{method="POST",route="/auth/token",status="401"} 1"#,
        r#"http_requests_total{method="GET",route="/tickets/embed/{token}",status="200"} 1"#,
        r#"http_requests_total{method="GET",route="unmatched",status="404"} 1"#,
        r#"http_requests_total{method="other",route="/healthz",status="405"} 50"#,
        "password_hashes_running 0",
        "password_hashes_queued 0",
        "password_hashes_max_queued 32",
        "password_hashes_shed_total 0",
        r#"http_request_duration_seconds_count{method="GET",route="/tickets/{id}",status="200"} 3"#,
        r#"http_request_duration_seconds_bucket{le="0.0005",method="GET",route="/tickets/{id}",status="200"}"#,
        "http_requests_in_flight 0",
        "login_failures_total 1",
        r#"tickets{status="open"} 1"#,
        r#"tickets{status="closed"} 1"#,
        r#"tickets{status="in_progress"} 0"#,
        r#"db_pool_connections{state="max"}"#,
        "# EOF",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(!text.contains(&ticket.embed_token.to_string()), "raw paths never become labels");
    assert!(!text.contains("QQQQ"), "raw methods never become labels");
    // Not on the public listener, whoever asks.
    app.get("/metrics", None).await.assert_problem(StatusCode::NOT_FOUND);
    app.get("/metrics", Some(&tokens.carol)).await.assert_problem(StatusCode::NOT_FOUND);
}

const THREE_CONNECTIONS: &[(&str, &str)] = &[("DATABASE_MAX_CONNECTIONS", "3")];

async fn the_pool_size_is_configurable(database: EmptyDatabase) {
    let app = TestApp::at(&database.url, THREE_CONNECTIONS).await;
    let alice = app.login("alice", "alice123").await;
    // More concurrent requests than connections: they queue for one, none fails.
    let reads: Vec<_> = (0..12)
        .map(|_| {
            let request = axum::http::Request::get("/tickets/my")
                .header("authorization", format!("Bearer {alice}"))
                .body(axum::body::Body::empty())
                .unwrap();
            tokio::spawn(crate::helpers::send_to(app.router(), request))
        })
        .collect();
    for read in reads {
        assert_eq!(read.await.unwrap().status, StatusCode::OK);
    }
    let metrics = app.metrics().await;
    assert!(metrics.contains(r#"db_pool_connections{state="max"} 3"#), "{metrics}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A plain HTTP/1.1 GET on a fresh connection; the status line, or nothing if refused.
fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

async fn the_server_serves_metrics_only_on_the_metrics_address(app: TestApp) {
    let (api, metrics) = (free_port(), free_port());
    let mut server = Command::new(env!("CARGO_BIN_EXE_ticketdesk"))
        .env("DATABASE_URL", app.config.database_url.expose())
        .env("BIND_ADDR", format!("127.0.0.1:{api}"))
        .env("METRICS_ADDR", format!("127.0.0.1:{metrics}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the ticketdesk binary runs");
    let mut ready = false;
    for _ in 0..200 {
        if http_get(api, "/healthz").is_some_and(|answer| answer.starts_with("HTTP/1.1 200")) {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let scraped = http_get(metrics, "/metrics").unwrap_or_default();
    let public = http_get(api, "/metrics").unwrap_or_default();
    let other = http_get(metrics, "/healthz").unwrap_or_default();
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(ready, "the server did not come up");
    assert!(scraped.starts_with("HTTP/1.1 200") && scraped.contains("http_requests_total"), "{scraped}");
    assert!(scraped.contains(r#"route="/healthz""#), "the API's requests are counted: {scraped}");
    assert!(public.starts_with("HTTP/1.1 404"), "{public}");
    assert!(other.starts_with("HTTP/1.1 404"), "only /metrics on the metrics address: {other}");
}
