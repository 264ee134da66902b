//! The reference floor for bench/run.py: the least axum + sqlx + jsonwebtoken code that does the
//! work of `GET /tickets/{id}` (verify the JWT, one SELECT of the user, whether the token's session
//! is still open and the ticket, the
//! access rule, JSON out) and of `GET /tickets/embed/{token}` (one SELECT, JSON out), and of three
//! writes, each one transaction after the same user check: `POST /tickets/` (the ticket and its
//! `created` event), `PATCH /tickets/{id}` with a priority (the row locked, changed, its event) and
//! `POST /tickets/{id}/comments` (the row locked, the comment, its event, `updated_at`); the
//! database's own triggers (search document, webhook fan-out) run as for the server. Nothing
//! else: no middleware, no metrics, no limits, no problem+json, no idempotency keys, no service
//! clocks. The server's throughput divided
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
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use sqlx::{AssertSqlSafe, Database, Pool, Postgres, Sqlite};
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
    /// How a write transaction begins (SQLite takes the write lock at once, as the server does).
    begin: &'static str,
    /// Appended to the SELECT of the row a write changes.
    lock_row: &'static str,
}

#[derive(sqlx::FromRow)]
struct Caller {
    role: String,
    active: bool,
    token_version: i32,
    session_open: bool,
}

const CALLER: &str = "SELECT role, active, token_version,
        EXISTS (SELECT 1 FROM refresh_tokens r WHERE r.family = $2 AND r.revoked_at IS NULL) AS session_open
    FROM users WHERE id = $1";

#[derive(Deserialize)]
struct NewTicket {
    subject: String,
    description: String,
    priority: String,
}

#[derive(Deserialize)]
struct PriorityChange {
    priority: String,
}

#[derive(Deserialize)]
struct NewComment {
    body: String,
}

#[derive(Serialize, sqlx::FromRow)]
struct CommentOut {
    id: i64,
    ticket_id: i64,
    author_id: i64,
    body: String,
    internal: bool,
    created_at: DateTime<Utc>,
}

const INSERT_EVENT: &str = "INSERT INTO ticket_events (ticket_id, actor_id, kind, from_value, to_value, comment_id, internal, created_at, event_type)
    VALUES ($1, $2, $3, $4, $5, $6, false, $7, $8)";
const TICKET_COLUMNS: &str = "id, subject, description, status, priority, created_by, assigned_to, embed_token, created_at, updated_at, attachments, sla";

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
        let pool = pool.connect(&url).await.expect("connect");
        App::<Postgres> { pool, key, validation, begin: "BEGIN", lock_row: " FOR UPDATE" }.router()
    } else {
        // As the server opens SQLite: WAL, NORMAL sync, a busy timeout.
        let options = url
            .parse::<sqlx::sqlite::SqliteConnectOptions>()
            .expect("DATABASE_URL")
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(8).test_before_acquire(false);
        let pool = pool.connect_with(options).await.expect("connect");
        App::<Sqlite> { pool, key, validation, begin: "BEGIN IMMEDIATE", lock_row: "" }.router()
    };
    axum::serve(listener, router).await.expect("serve");
}

/// The floor's routes, generic over the database: the bounds are the types its queries bind and
/// read, said once for every handler.
impl<DB: Database> App<DB>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'r> Row: sqlx::FromRow<'r, DB::Row>,
    for<'r> Embed: sqlx::FromRow<'r, DB::Row>,
    for<'r> Caller: sqlx::FromRow<'r, DB::Row>,
    for<'r> Ticket: sqlx::FromRow<'r, DB::Row>,
    for<'r> CommentOut: sqlx::FromRow<'r, DB::Row>,
    i64: sqlx::Type<DB> + for<'q> sqlx::Encode<'q, DB>,
    String: sqlx::Type<DB> + for<'q> sqlx::Encode<'q, DB>,
    Option<String>: sqlx::Type<DB> + for<'q> sqlx::Encode<'q, DB>,
    Option<i64>: sqlx::Type<DB> + for<'q> sqlx::Encode<'q, DB>,
    for<'q> &'q str: sqlx::Type<DB> + sqlx::Encode<'q, DB>,
    DateTime<Utc>: sqlx::Type<DB> + for<'q> sqlx::Encode<'q, DB>,
    Uuid: sqlx::Type<DB> + for<'q> sqlx::Encode<'q, DB>,
{
    fn router(self) -> Router {
        Router::new()
            .route("/tickets/", post(Self::create))
            .route("/tickets/{id}", get(Self::ticket).patch(Self::patch_priority))
            .route("/tickets/{id}/comments", post(Self::comment))
            .route("/tickets/embed/{token}", get(Self::embed))
            .with_state(Arc::new(self))
    }

    fn claims(&self, headers: &HeaderMap) -> Option<(i64, Claims)> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))?;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).ok()?.claims;
        Some((claims.sub.parse().ok()?, claims))
    }

    /// The caller of a write, checked as the server checks every request: one SELECT.
    async fn caller(&self, headers: &HeaderMap) -> Result<(i64, String), Response> {
        let (user_id, claims) =
            self.claims(headers).ok_or_else(|| StatusCode::UNAUTHORIZED.into_response())?;
        let caller: Option<Caller> = sqlx::query_as(CALLER)
            .bind(user_id)
            .bind(claims.sid)
            .fetch_optional(&self.pool)
            .await
            .map_err(|_| StatusCode::SERVICE_UNAVAILABLE.into_response())?;
        match caller {
            Some(c) if c.active && c.token_version == claims.ver && c.session_open => Ok((user_id, c.role)),
            _ => Err(StatusCode::UNAUTHORIZED.into_response()),
        }
    }

    async fn ticket(State(app): Shared<DB>, Path(id): Path<i64>, headers: HeaderMap) -> Response {
        let Some((user_id, claims)) = app.claims(&headers) else {
            return StatusCode::UNAUTHORIZED.into_response();
        };
        let row: Option<Row> = match sqlx::query_as(USER_AND_TICKET)
            .bind(user_id)
            .bind(id)
            .bind(claims.sid)
            .fetch_optional(&app.pool)
            .await
        {
            Ok(row) => row,
            Err(_) => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
        };
        let Some(row) = row.filter(|row| row.active && row.token_version == claims.ver && row.session_open)
        else {
            return StatusCode::UNAUTHORIZED.into_response();
        };
        match Some(row.ticket).filter(|t| visible(&row.role, user_id, t)) {
            Some(ticket) => with_etag(ticket),
            None => StatusCode::NOT_FOUND.into_response(),
        }
    }

    async fn embed(State(app): Shared<DB>, Path(token): Path<Uuid>) -> Response {
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

    /// The ticket and its `created` event, in one transaction.
    async fn create(State(app): Shared<DB>, headers: HeaderMap, Json(new): Json<NewTicket>) -> Response {
        let (user_id, _) = match app.caller(&headers).await {
            Ok(caller) => caller,
            Err(response) => return response,
        };
        let write = async {
            let now = Utc::now();
            let mut tx = app.pool.begin_with(app.begin).await?;
            let ticket: Ticket = sqlx::query_as(AssertSqlSafe(format!(
                "INSERT INTO tickets (subject, description, status, priority, created_by, embed_token, created_at, updated_at)
                 VALUES ($1, $2, 'open', $3, $4, $5, $6, $6) RETURNING {TICKET_COLUMNS}"
            )))
            .bind(new.subject)
            .bind(new.description)
            .bind(new.priority)
            .bind(user_id)
            .bind(Uuid::new_v4())
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            event(&mut tx, ticket.id, user_id, ("created", None, None, None), now).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(ticket)
        };
        match write.await {
            Ok(ticket) => (StatusCode::CREATED, with_etag(ticket)).into_response(),
            Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        }
    }

    /// The row locked and checked, its priority changed, the event, in one transaction.
    async fn patch_priority(
        State(app): Shared<DB>,
        Path(id): Path<i64>,
        headers: HeaderMap,
        Json(change): Json<PriorityChange>,
    ) -> Response {
        let (user_id, role) = match app.caller(&headers).await {
            Ok(caller) => caller,
            Err(response) => return response,
        };
        let write = async {
            let now = Utc::now();
            let mut tx = app.pool.begin_with(app.begin).await?;
            let Some(ticket) = app.locked_ticket(&mut tx, id, (user_id, &role)).await? else {
                return Ok(None);
            };
            if ticket.priority == change.priority {
                return Ok(Some(ticket));
            }
            let before = ticket.priority;
            let ticket: Ticket = sqlx::query_as(AssertSqlSafe(format!(
                "UPDATE tickets SET priority = $2, updated_at = $3 WHERE id = $1 RETURNING {TICKET_COLUMNS}"
            )))
            .bind(id)
            .bind(change.priority.clone())
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            let kind = ("priority_changed", Some(before), Some(change.priority), None);
            event(&mut tx, id, user_id, kind, now).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Some(ticket))
        };
        answer(write.await.map(|ticket| ticket.map(with_etag)))
    }

    /// The row locked and checked, the comment, its event and `updated_at`, in one transaction.
    async fn comment(
        State(app): Shared<DB>,
        Path(id): Path<i64>,
        headers: HeaderMap,
        Json(new): Json<NewComment>,
    ) -> Response {
        let (user_id, role) = match app.caller(&headers).await {
            Ok(caller) => caller,
            Err(response) => return response,
        };
        let write = async {
            let now = Utc::now();
            let mut tx = app.pool.begin_with(app.begin).await?;
            if app.locked_ticket(&mut tx, id, (user_id, &role)).await?.is_none() {
                return Ok(None);
            }
            let comment: CommentOut = sqlx::query_as(
                "INSERT INTO comments (ticket_id, author_id, body, internal, created_at)
                 VALUES ($1, $2, $3, false, $4) RETURNING id, ticket_id, author_id, body, internal, created_at",
            )
            .bind(id)
            .bind(user_id)
            .bind(new.body)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            event(&mut tx, id, user_id, ("comment_added", None, None, Some(comment.id)), now).await?;
            sqlx::query("UPDATE tickets SET updated_at = $2 WHERE id = $1")
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Some(comment))
        };
        answer(write.await.map(|comment| comment.map(|c| (StatusCode::CREATED, Json(c)))))
    }

    /// The ticket a write changes, its row locked, if the caller (id, role) may see it.
    async fn locked_ticket(
        &self,
        tx: &mut sqlx::Transaction<'static, DB>,
        id: i64,
        (user_id, role): (i64, &str),
    ) -> sqlx::Result<Option<Ticket>> {
        let select = format!("SELECT {TICKET_COLUMNS} FROM tickets WHERE id = $1{}", self.lock_row);
        let ticket: Option<Ticket> =
            sqlx::query_as(AssertSqlSafe(select)).bind(id).fetch_optional(&mut **tx).await?;
        Ok(ticket.filter(|t| visible(role, user_id, t)))
    }
}

/// An event of the ticket's history: (kind, from, to, comment).
type EventFields = (&'static str, Option<String>, Option<String>, Option<i64>);

async fn event<DB: Database>(
    tx: &mut sqlx::Transaction<'static, DB>,
    ticket: i64,
    actor: i64,
    (kind, from, to, comment): EventFields,
    at: DateTime<Utc>,
) -> sqlx::Result<()>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    i64: sqlx::Type<DB> + for<'q> sqlx::Encode<'q, DB>,
    Option<String>: sqlx::Type<DB> + for<'q> sqlx::Encode<'q, DB>,
    Option<i64>: sqlx::Type<DB> + for<'q> sqlx::Encode<'q, DB>,
    for<'q> &'q str: sqlx::Type<DB> + sqlx::Encode<'q, DB>,
    DateTime<Utc>: sqlx::Type<DB> + for<'q> sqlx::Encode<'q, DB>,
{
    let event_type = match kind {
        "created" => "ticket.created",
        "priority_changed" => "ticket.priority_changed",
        _ => "ticket.comment_added",
    };
    sqlx::query(INSERT_EVENT)
        .bind(ticket)
        .bind(actor)
        .bind(kind)
        .bind(from)
        .bind(to)
        .bind(comment)
        .bind(at)
        .bind(event_type)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A write's answer: what it made, 404 for a ticket the caller cannot see, 503 for a failure.
fn answer(outcome: sqlx::Result<Option<impl IntoResponse>>) -> Response {
    match outcome {
        Ok(Some(made)) => made.into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

fn visible(role: &str, user_id: i64, ticket: &Ticket) -> bool {
    match role {
        "admin" => true,
        "agent" => ticket.assigned_to == Some(user_id),
        _ => ticket.created_by == user_id,
    }
}

fn with_etag(ticket: Ticket) -> Response {
    let etag = format!("\"{}-{:x}\"", ticket.id, ticket.updated_at.timestamp_micros());
    ([(header::ETAG, etag)], Json(ticket)).into_response()
}
