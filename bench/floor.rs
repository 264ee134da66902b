//! The reference floor for bench/run.py: the least axum + sqlx + jsonwebtoken code that does the
//! work of `GET /tickets/{id}` (verify the JWT, one SELECT of the user, whether the token's session
//! is still open and the ticket, the
//! access rule, JSON out) and of `GET /tickets/embed/{token}` (one SELECT, JSON out), and nothing
//! else: no middleware, no metrics, no limits, no problem+json. The server's throughput divided
//! by this one's, measured in the same run, is what the server's own work costs.
//!
//! It uses the server's pool settings (size, no ping before each checkout), so the ratio compares
//! what happens around the query, not two ways of pooling.
//!
//!     DATABASE_URL=... JWT_SECRET=... BIND_ADDR=127.0.0.1:8001 cargo run --release --example floor

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use sqlx::{Database, Pool, Postgres, Sqlite};
use uuid::Uuid;

const USER_AND_TICKET: &str = "SELECT u.role, u.active, u.token_version,
        EXISTS (SELECT 1 FROM refresh_tokens r WHERE r.family = $3 AND r.revoked_at IS NULL) AS session_open,
        t.id, t.subject, t.description, t.status, t.priority, t.created_by, t.assigned_to,
        t.embed_token, t.created_at, t.updated_at, t.attachments, t.sla
    FROM users u JOIN tickets t ON t.id = $2 WHERE u.id = $1";
const BY_EMBED_TOKEN: &str =
    "SELECT subject, status, updated_at, embed_token FROM tickets WHERE embed_token = $1";

#[derive(sqlx::FromRow)]
struct Row {
    role: String,
    active: bool,
    token_version: i32,
    session_open: bool,
    #[sqlx(flatten)]
    ticket: Ticket,
}

#[derive(Serialize, sqlx::FromRow)]
struct Ticket {
    id: i64,
    subject: String,
    description: String,
    status: String,
    priority: String,
    created_by: i64,
    assigned_to: Option<i64>,
    embed_token: Uuid,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    #[sqlx(try_from = "String")]
    attachments: Files,
    /// The service targets' summary (JSON, for staff), read and written back as the server does.
    #[sqlx(try_from = "Option<String>")]
    #[serde(skip_serializing_if = "Sla::is_none")]
    sla: Sla,
}

#[derive(Serialize)]
#[serde(transparent)]
struct Sla(Option<serde_json::Value>);

impl Sla {
    fn is_none(&self) -> bool {
        self.0.is_none()
    }
}

impl TryFrom<Option<String>> for Sla {
    type Error = serde_json::Error;

    fn try_from(column: Option<String>) -> Result<Self, Self::Error> {
        column.map(|text| serde_json::from_str(&text)).transpose().map(Sla)
    }
}

/// A ticket's files, kept as a JSON array beside it: read and written back, as the server does.
#[derive(Serialize)]
#[serde(transparent)]
struct Files(Vec<serde_json::Value>);

impl TryFrom<String> for Files {
    type Error = serde_json::Error;

    fn try_from(column: String) -> Result<Self, Self::Error> {
        serde_json::from_str(&column).map(Files)
    }
}

#[derive(sqlx::FromRow)]
struct Embed {
    subject: String,
    status: String,
    updated_at: DateTime<Utc>,
    embed_token: Uuid,
}

/// The embed's JSON, as the server writes it.
#[derive(Serialize)]
struct EmbedView {
    subject: String,
    status: &'static str,
    last_updated: DateTime<Utc>,
    link: String,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    ver: i32,
    sid: Uuid,
}

struct App<DB: Database> {
    pool: Pool<DB>,
    key: DecodingKey,
    validation: Validation,
}

type Shared<DB> = State<Arc<App<DB>>>;

#[tokio::main]
async fn main() {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let secret = std::env::var("JWT_SECRET").expect("JWT_SECRET");
    let address: SocketAddr = std::env::var("BIND_ADDR").expect("BIND_ADDR").parse().expect("BIND_ADDR");
    let _ = ticketdesk::auth::hs256::PROVIDER.install_default();
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "iat", "sub", "iss"]);
    validation.set_issuer(&["ticketdesk"]);
    validation.leeway = 0;
    let key = DecodingKey::from_secret(secret.as_bytes());
    let listener = tokio::net::TcpListener::bind(address).await.expect("bind");
    let router = if url.starts_with("postgres") {
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(16).test_before_acquire(false);
        app::<Postgres>(pool.connect(&url).await.expect("connect"), key, validation)
    } else {
        let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(8).test_before_acquire(false);
        app::<Sqlite>(pool.connect(&url).await.expect("connect"), key, validation)
    };
    axum::serve(listener, router).await.expect("serve");
}

fn app<DB: Database>(pool: Pool<DB>, key: DecodingKey, validation: Validation) -> Router
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'r> Row: sqlx::FromRow<'r, DB::Row>,
    for<'r> Embed: sqlx::FromRow<'r, DB::Row>,
    i64: sqlx::Type<DB> + for<'q> sqlx::Encode<'q, DB>,
    Uuid: sqlx::Type<DB> + for<'q> sqlx::Encode<'q, DB>,
{
    Router::new()
        .route("/tickets/{id}", get(ticket::<DB>))
        .route("/tickets/embed/{token}", get(embed::<DB>))
        .with_state(Arc::new(App { pool, key, validation }))
}

async fn ticket<DB: Database>(State(app): Shared<DB>, Path(id): Path<i64>, headers: HeaderMap) -> Response
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'r> Row: sqlx::FromRow<'r, DB::Row>,
    i64: sqlx::Type<DB> + for<'q> sqlx::Encode<'q, DB>,
    Uuid: sqlx::Type<DB> + for<'q> sqlx::Encode<'q, DB>,
{
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(claims) = token.and_then(|t| jsonwebtoken::decode::<Claims>(t, &app.key, &app.validation).ok())
    else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let Ok(user_id) = claims.claims.sub.parse::<i64>() else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let row: Option<Row> = match sqlx::query_as(USER_AND_TICKET)
        .bind(user_id)
        .bind(id)
        .bind(claims.claims.sid)
        .fetch_optional(&app.pool)
        .await
    {
        Ok(row) => row,
        Err(_) => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
    };
    let Some(row) =
        row.filter(|row| row.active && row.token_version == claims.claims.ver && row.session_open)
    else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let visible = |t: &Ticket| match row.role.as_str() {
        "admin" => true,
        "agent" => t.assigned_to == Some(user_id),
        _ => t.created_by == user_id,
    };
    match Some(row.ticket).filter(visible) {
        Some(ticket) => {
            let etag = format!("\"{}-{:x}\"", ticket.id, ticket.updated_at.timestamp_micros());
            ([(header::ETAG, etag)], Json(ticket)).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn embed<DB: Database>(State(app): Shared<DB>, Path(token): Path<Uuid>) -> Response
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'r> Embed: sqlx::FromRow<'r, DB::Row>,
    Uuid: sqlx::Type<DB> + for<'q> sqlx::Encode<'q, DB>,
{
    match sqlx::query_as::<_, Embed>(BY_EMBED_TOKEN).bind(token).fetch_optional(&app.pool).await {
        Ok(Some(embed)) => {
            let status = match embed.status.as_str() {
                "open" => "Open",
                "in_progress" => "In Progress",
                "resolved" => "Resolved",
                _ => "Closed",
            };
            let link = format!("https://support.example.com/tickets/{}", embed.embed_token);
            Json(EmbedView { subject: embed.subject, status, last_updated: embed.updated_at, link })
                .into_response()
        }
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}
