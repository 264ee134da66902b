//! One helper builds the real application on either backend; every scenario runs on both.

use std::io::Write;
use std::sync::{Arc, Once};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use sqlx::Connection;
use ticketdesk::auth::Passwords;
use ticketdesk::config::Config;
use ticketdesk::domain::{NewUser, Role, Ticket, UserId};
use ticketdesk::state::AppState;
use ticketdesk::store::Store;
use tower::ServiceExt;

pub const JWT_SECRET: &str = "integration-tests-signing-key-0123456789";
pub const PUBLIC_BASE_URL: &str = "https://help.example.test";

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each named scenario `async fn name(fixture: F)` once per backend, as `sqlite::name` and
/// `postgres::name`; `F` is a [`TestApp`], or an [`EmptyDatabase`] for a scenario that starts the
/// app itself (`TestApp::at(&database.url, SETTINGS)`, with settings of its own).
#[macro_export]
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $scenario() {
                    $crate::helpers::run(super::$scenario, $crate::helpers::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $scenario() {
                    $crate::helpers::run(super::$scenario, $crate::helpers::Backend::Postgres).await;
                }
            )*
        }
    };
}

pub async fn run<T, F, Fut>(scenario: F, backend: Backend)
where
    T: Fixture,
    F: FnOnce(T) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Some(database) = TestDatabase::create(backend).await else {
        return;
    };
    scenario(T::set_up(&database).await).await;
    database.drop().await;
}

/// What a scenario starts from.
pub trait Fixture: Sized {
    fn set_up(database: &TestDatabase) -> impl std::future::Future<Output = Self>;
}

impl Fixture for TestApp {
    async fn set_up(database: &TestDatabase) -> Self {
        TestApp::on(database).await
    }
}

/// A database nobody has connected to yet: not migrated, no users.
pub struct EmptyDatabase {
    pub url: String,
}

impl Fixture for EmptyDatabase {
    async fn set_up(database: &TestDatabase) -> Self {
        EmptyDatabase { url: database.url.clone() }
    }
}

/// The Postgres server tests use: TEST_DATABASE_URL, or DATABASE_URL if it names Postgres.
fn postgres_url() -> Option<String> {
    let url = std::env::var("TEST_DATABASE_URL")
        .ok()
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .filter(|url| url.starts_with("postgres://") || url.starts_with("postgresql://"));
    if url.is_none() {
        static NOTICE: Once = Once::new();
        NOTICE.call_once(|| {
            // Written straight to stderr, past the test harness's capture, so it is always seen.
            let _ = writeln!(
                std::io::stderr(),
                "\nNOTICE: TEST_DATABASE_URL is not set: the PostgreSQL half of the suite is SKIPPED \
                 (its tests pass without running). Set TEST_DATABASE_URL=postgres://... to run it.\n"
            );
        });
    }
    url
}

/// A database of its own for one test: a fresh SQLite file, or a fresh Postgres schema.
pub struct TestDatabase {
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    File(std::path::PathBuf),
    Schema { server_url: String, schema: String },
}

impl TestDatabase {
    pub async fn create(backend: Backend) -> Option<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        match backend {
            Backend::Sqlite => {
                let folder = std::env::temp_dir().join("ticketdesk-tests");
                let path = folder.join(format!("{id}.db"));
                let url = format!("sqlite://{}", path.display());
                Some(Self { url, cleanup: Cleanup::File(path) })
            }
            Backend::Postgres => {
                let server_url = postgres_url()?;
                let schema = format!("test_{id}");
                let mut admin = sqlx::PgConnection::connect(&server_url).await.unwrap_or_else(|e| {
                    panic!("TEST_DATABASE_URL is set but PostgreSQL is unreachable: {e}")
                });
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                    .execute(&mut admin)
                    .await
                    .expect("creating the test schema");
                let separator = if server_url.contains('?') { '&' } else { '?' };
                let url = format!("{server_url}{separator}options=-csearch_path%3D{schema}");
                Some(Self { url, cleanup: Cleanup::Schema { server_url, schema } })
            }
        }
    }

    pub async fn drop(self) {
        let _ = std::fs::remove_dir_all(files_folder(&self.url));
        match self.cleanup {
            Cleanup::File(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
            }
            Cleanup::Schema { server_url, schema } => {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&server_url).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                        .execute(&mut admin)
                        .await;
                }
            }
        }
    }
}

/// The folder a test's files are kept in: one per database, shared by its replicas.
pub fn files_folder(database_url: &str) -> std::path::PathBuf {
    let name = ticketdesk::domain::sha256_hex(&[database_url.as_bytes()]);
    std::env::temp_dir().join("ticketdesk-tests").join(format!("files-{}", &name[..16]))
}

pub fn test_config(database_url: &str) -> Config {
    test_config_with(database_url, &[])
}

/// The test configuration with some settings added or replaced.
pub fn test_config_with(database_url: &str, settings: &[(&str, &str)]) -> Config {
    Config::from_lookup(|name| {
        if let Some((_, value)) = settings.iter().find(|(setting, _)| *setting == name) {
            return Some((*value).to_owned());
        }
        match name {
            "DATABASE_URL" => Some(database_url.to_owned()),
            "JWT_SECRET" => Some(JWT_SECRET.to_owned()),
            "PUBLIC_BASE_URL" => Some(PUBLIC_BASE_URL.to_owned()),
            "ATTACHMENT_STORAGE" => Some(files_folder(database_url).display().to_string()),
            _ => None,
        }
    })
    .expect("test configuration is valid")
}

/// The real router over a real database, with the demo users alice, bob and carol.
pub struct TestApp {
    router: Router,
    /// What `METRICS_ADDR` serves.
    metrics: Router,
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub files: ticketdesk::files::Files,
    pub passwords: Passwords,
    /// What this app's SLA evaluator counts (tests run it with their own clock).
    pub sla_breaches: ticketdesk::metrics::SlaBreaches,
    /// Stops this app's webhook delivery and streams when the app is dropped.
    _shutdown: tokio_util::sync::DropGuard,
}

/// Anyone may sign up.
pub const OPEN_REGISTRATION: &[(&str, &str)] = &[("SELF_REGISTRATION", "true")];

/// This server delivers no webhooks (another would), so only requests touch the database.
pub const NO_WEBHOOK_DELIVERY: &[(&str, &str)] = &[("WEBHOOK_MAX_CONCURRENT", "0")];

/// Requests are cut off after one second.
pub const ONE_SECOND_TIMEOUT: &[(&str, &str)] = &[("REQUEST_TIMEOUT_SECS", "1")];

impl TestApp {
    pub async fn on(database: &TestDatabase) -> Self {
        Self::with_settings(database, &[]).await
    }

    pub async fn with_settings(database: &TestDatabase, settings: &[(&str, &str)]) -> Self {
        Self::from_config(test_config_with(&database.url, settings)).await
    }

    /// The app on the database `url` names (e.g. through a proxy), with the test settings and
    /// `settings`.
    pub async fn at(url: &str, settings: &[(&str, &str)]) -> Self {
        Self::from_config(test_config_with(url, settings)).await
    }

    /// Another replica of this app: its own pool and router on the same database.
    pub async fn replica(&self) -> Self {
        Self::from_config(self.config.clone()).await
    }

    async fn from_config(config: Config) -> Self {
        let store = ticketdesk::store::connect(&config.database_url, &config.database_pool)
            .await
            .expect("connecting the store");
        let shutdown = tokio_util::sync::CancellationToken::new();
        let files =
            ticketdesk::files::Files::open(&config.attachments.storage).expect("opening the file storage");
        let state = AppState::new(&config, store.clone(), files.clone(), shutdown.clone());
        ticketdesk::demo::ensure_demo_users(state.store.as_ref(), &state.passwords)
            .await
            .expect("creating demo users");
        if config.webhooks.max_concurrent > 0 {
            let attempts = state.metrics.webhook_attempts();
            ticketdesk::webhooks::start(store, &config.webhooks, attempts, shutdown.clone());
        }
        Self {
            _shutdown: shutdown.drop_guard(),
            store: state.store.clone(),
            files,
            passwords: state.passwords.clone(),
            sla_breaches: state.metrics.sla_breaches(),
            metrics: ticketdesk::api::metrics_router(state.clone()),
            router: ticketdesk::api::router(state),
            config,
        }
    }

    /// Runs the SLA evaluator once as of `now`; returns how many events it recorded.
    pub async fn check_clocks_at(&self, now: chrono::DateTime<chrono::Utc>) -> usize {
        ticketdesk::clocks::check_due(self.store.as_ref(), &self.sla_breaches, now)
            .await
            .expect("checking clocks")
    }

    /// Adds a user beside the demo ones; returns their id.
    pub async fn add_user(&self, username: &str, password: &str, role: Role) -> UserId {
        let password_hash = self.passwords.hash(password).await.unwrap();
        let user = NewUser { username: username.to_owned(), password_hash, role };
        self.store.create_user(&user).await.expect("a new username").id
    }

    /// Runs SQL on the app's database behind its back.
    pub async fn execute(&self, sql: &str) {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        let url = self.config.database_url.expose();
        if url.starts_with("sqlite") {
            let mut connection = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::raw_sql(sql).execute(&mut connection).await.unwrap();
        } else {
            let mut connection = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::raw_sql(sql).execute(&mut connection).await.unwrap();
        }
    }

    /// The first column, as text, of every row `sql` selects on the app's database.
    pub async fn texts(&self, sql: &str) -> Vec<String> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        let url = self.config.database_url.expose();
        if url.starts_with("sqlite") {
            let mut connection = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::query_scalar(sql).fetch_all(&mut connection).await.unwrap()
        } else {
            let mut connection = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query_scalar(sql).fetch_all(&mut connection).await.unwrap()
        }
    }

    /// A login attempt as if from `address` (the peer of the connection).
    pub async fn login_from(&self, address: &str, username: &str, password: &str) -> TestResponse {
        self.send(login_request_from(address, username, password)).await
    }

    pub async fn user_id(&self, username: &str) -> UserId {
        self.store.user_credentials(username).await.unwrap().expect("user exists").user.id
    }

    pub async fn send(&self, request: Request<Body>) -> TestResponse {
        send_to(self.router.clone(), request).await
    }

    /// What the metrics listener answers to `GET /metrics`.
    pub async fn metrics(&self) -> String {
        let response =
            send_to(self.metrics.clone(), Request::get("/metrics").body(Body::empty()).unwrap()).await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.text);
        assert!(response.header("content-type").unwrap().starts_with("application/openmetrics-text"));
        response.text
    }

    /// The router itself, e.g. to send requests from spawned tasks.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// A request with an optional bearer token and an optional JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> TestResponse {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some(json) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        self.send(request.body(body).unwrap()).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> TestResponse {
        self.call(Method::GET, path, token, None).await
    }

    /// Each page of a listing, following `Link: rel="next"` from `url` to the end.
    pub async fn pages(&self, url: &str, token: &str) -> Vec<Value> {
        let (mut pages, mut next) = (Vec::new(), Some(url.to_owned()));
        while let Some(url) = next.take() {
            let page = self.get(&url, Some(token)).await;
            assert_eq!(page.status, StatusCode::OK, "{url}: {}", page.text);
            next = page
                .header("link")
                .map(|link| link.trim_start_matches('<').split('>').next().unwrap().to_owned());
            pages.push(page.json);
        }
        pages
    }

    pub async fn post_form(&self, path: &str, form: &str) -> TestResponse {
        let request = Request::post(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form.to_owned()))
            .unwrap();
        self.send(request).await
    }

    pub async fn login(&self, username: &str, password: &str) -> String {
        let response =
            self.post_form("/auth/token", &format!("username={username}&password={password}")).await;
        assert_eq!(response.status, StatusCode::OK, "login as {username}: {}", response.text);
        response.json["access_token"].as_str().expect("an access token").to_owned()
    }

    /// Tokens for alice (customer), bob (agent) and carol (admin).
    pub async fn demo_tokens(&self) -> DemoTokens {
        DemoTokens {
            alice: self.login("alice", "alice123").await,
            bob: self.login("bob", "bob123").await,
            carol: self.login("carol", "carol123").await,
        }
    }

    /// Alice (or whoever `token` is) submits a ticket; returns it.
    pub async fn create_ticket(&self, token: &str, subject: &str) -> Ticket {
        let body = serde_json::json!({"subject": subject, "description": "details"});
        let response = self.call(Method::POST, "/tickets/", Some(token), Some(body)).await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);
        response.body()
    }

    /// Alice (or whoever `token` is) submits a ticket; returns its id.
    pub async fn create_ticket_id(&self, token: &str, subject: &str) -> i64 {
        self.create_ticket(token, subject).await.id
    }

    /// A reply (`{"body"}`) or an internal note (`{"body", "internal": true}`) on ticket `id`.
    pub async fn comment(&self, token: &str, id: i64, body: Value) -> TestResponse {
        self.call(Method::POST, &format!("/tickets/{id}/comments"), Some(token), Some(body)).await
    }

    /// Alice submits a ticket and carol assigns it to bob; returns its id.
    pub async fn bobs_ticket(&self, tokens: &DemoTokens, subject: &str) -> i64 {
        let id = self.create_ticket_id(&tokens.alice, subject).await;
        let assigned = self.assign(&tokens.carol, id, self.user_id("bob").await).await;
        assert_eq!(assigned.status, StatusCode::OK, "{}", assigned.text);
        id
    }

    /// `POST /uploads` of `bytes` as the form field `file`, named `filename`, declared as
    /// `content_type`.
    pub async fn upload(
        &self,
        token: &str,
        filename: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> TestResponse {
        let boundary = "ticketdesk-test-boundary-7d1f";
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
             Content-Type: {content_type}\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(bytes);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let request = Request::post("/uploads")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, format!("multipart/form-data; boundary={boundary}"))
            .body(Body::from(body))
            .unwrap();
        self.send(request).await
    }

    /// Uploads `bytes` as `filename`; returns the upload's token.
    pub async fn upload_token(&self, token: &str, filename: &str, bytes: &[u8]) -> String {
        let uploaded = self.upload(token, filename, "application/octet-stream", bytes).await;
        assert_eq!(uploaded.status, StatusCode::CREATED, "{}", uploaded.text);
        uploaded.json["token"].as_str().expect("a token").to_owned()
    }

    pub async fn assign(&self, admin_token: &str, ticket_id: i64, agent_id: UserId) -> TestResponse {
        let body = serde_json::json!({"agent_id": agent_id});
        self.call(Method::PATCH, &format!("/tickets/{ticket_id}/assign"), Some(admin_token), Some(body)).await
    }

    pub async fn set_status(&self, token: &str, ticket_id: i64, status: &str) -> TestResponse {
        let body = serde_json::json!({"status": status});
        self.call(Method::PATCH, &format!("/tickets/{ticket_id}"), Some(token), Some(body)).await
    }
}

/// `POST /auth/token` as if sent from `address` (the peer of the connection).
pub fn login_request_from(address: &str, username: &str, password: &str) -> Request<Body> {
    let request = Request::post("/auth/token")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("username={username}&password={password}")))
        .unwrap();
    sent_from(address, request)
}

/// `request` as if sent over a connection from `address`.
pub fn sent_from(address: &str, mut request: Request<Body>) -> Request<Body> {
    let peer: std::net::SocketAddr = format!("{address}:40000").parse().expect("an IPv4 address");
    request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
    request
}

/// A JSON request with an optional bearer token, as if sent from `address`.
pub fn json_request_from(
    address: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: &Value,
) -> Request<Body> {
    let mut request =
        Request::builder().method(method).uri(path).header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    sent_from(address, request.body(Body::from(body.to_string())).unwrap())
}

pub async fn send_to(router: Router, request: Request<Body>) -> TestResponse {
    let response = router.oneshot(request).await.expect("the router is infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.expect("reading the body").to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    TestResponse { status, headers, text, json }
}

pub struct DemoTokens {
    pub alice: String,
    pub bob: String,
    pub carol: String,
}

/// A JSON object's keys, sorted: for asserting exactly which fields a response has.
pub fn sorted_keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value.as_object().expect("a JSON object").keys().map(String::as_str).collect();
    keys.sort_unstable();
    keys
}

#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

impl TestResponse {
    /// The body as `T` (a `Ticket`, a `Vec<Comment>`, ...): fails the test if it is not one.
    #[track_caller]
    pub fn body<T: serde::de::DeserializeOwned>(&self) -> T {
        match serde_json::from_str(&self.text) {
            Ok(body) => body,
            Err(error) => panic!("not a {}: {error}; body: {}", std::any::type_name::<T>(), self.text),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// Asserts an RFC 9457 problem with this status and a non-empty detail; returns the detail.
    #[track_caller]
    pub fn assert_problem(&self, status: StatusCode) -> &str {
        assert_eq!(self.status, status, "body: {}", self.text);
        assert_eq!(self.header("content-type"), Some("application/problem+json"), "body: {}", self.text);
        assert_eq!(self.json["status"], status.as_u16(), "body: {}", self.text);
        assert!(self.json["title"].is_string() && self.json["type"].is_string(), "body: {}", self.text);
        let detail = self.json["detail"].as_str().unwrap_or_default();
        assert!(!detail.is_empty(), "problem without detail: {}", self.text);
        detail
    }
}
