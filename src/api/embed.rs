//! The public embed endpoint: a ticket's subject, status, last update and link, for whoever holds
//! its embed token. JSON for chatbots; with `Accept: text/html`, a small status card a web page
//! can put in an iframe. Both carry an ETag, so pollers get `304 Not Modified`. Widgets that
//! want changes as they happen hold `/stream` open instead (server-sent events).

use axum::extract::{Extension, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tower_http::cors::{Any, CorsLayer};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::extract::{ClientAddress, Json, Path};
use crate::domain::{PublicTicket, TicketStatus};
use crate::error::{Error, Result};
use crate::server::{ConnectionHandle, Refusal, Share};
use crate::state::AppState;
use crate::store::TicketWatch;

/// How long a client or cache may reuse an answer without asking again; a rotated (leaked) token
/// stops working everywhere within this time.
const MAX_AGE: &str = "max-age=30";

/// The card runs no script and loads nothing; any site may frame it.
const CARD_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors *; base-uri 'none'; form-action 'none'";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(embed))
        .routes(routes!(stream))
        // Chatbots on any site may read it; it takes no credentials, so no cookie can ride along.
        .layer(
            CorsLayer::new()
                .allow_origin(Any)
                .allow_methods([axum::http::Method::GET])
                // Pollers revalidate with If-None-Match and read the ETag.
                .allow_headers([header::IF_NONE_MATCH])
                .expose_headers([header::ETAG]),
        )
}

/// All a chatbot may show about a ticket; nothing about its people or its text.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "subject": "App crashes on start",
    "status": "In Progress",
    "last_updated": "2026-07-23T12:30:00Z",
    "link": "https://support.example.com/tickets/9f40cb91-6a0e-4b7e-9d3c-2f1e5a7b8c90"
}))]
struct EmbedView {
    subject: String,
    /// Human label: Open, In Progress, Resolved or Closed.
    status: &'static str,
    last_updated: DateTime<Utc>,
    link: String,
}

impl EmbedView {
    fn of(ticket: &PublicTicket, state: &AppState) -> Self {
        EmbedView {
            subject: ticket.subject.clone(),
            status: ticket.status.label(),
            last_updated: ticket.updated_at,
            link: state.links.ticket(ticket.embed_token),
        }
    }
}

/// A ticket's public status, for chatbots and web pages: no login, the embed token is the key.
///
/// JSON by default; `Accept: text/html` gets a self-contained status card for an iframe. Send
/// `If-None-Match` with the last `ETag` to get `304` while nothing changed.
#[utoipa::path(
    get,
    path = "/tickets/embed/{token}",
    tag = "embed",
    params(("token" = Uuid, Path, description = "The ticket's embed token")),
    responses(
        (status = 200, description = "The ticket's public status",
            headers(
                ("ETag" = String, description = "Changes whenever the ticket does"),
                ("Cache-Control" = String, description = "`max-age=30`"),
            ),
            content(
                (EmbedView = "application/json"),
                (String = "text/html", example = "<!doctype html><html lang=\"en\">...</html>"),
            )),
        (status = 304, description = "Not modified since the `If-None-Match` ETag"),
        (status = 404, response = super::docs::NotFound),
    )
)]
async fn embed(
    State(state): State<AppState>,
    Path(token): Path<String>,
    // The whole request, for its headers: a `HeaderMap` argument would copy them all.
    request: Request,
) -> Result<Response> {
    let headers = request.headers();
    let token = embed_token(&token)?;
    // One database round trip: this lookup is all the route reads.
    let ticket = state.store.public_ticket(token).await?.ok_or_else(not_found)?;

    let html = wants_html(headers);
    let etag = etag(&ticket, html);
    let mut response = if super::etag::client_has(headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let view = EmbedView::of(&ticket, &state);
        if html {
            let mut card = Html(render_card(&view, ticket.status)).into_response();
            let card_headers = card.headers_mut();
            card_headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CARD_CSP));
            card_headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
            card
        } else {
            Json(view).into_response()
        }
    };
    let response_headers = response.headers_mut();
    response_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(MAX_AGE));
    response_headers.insert(header::VARY, HeaderValue::from_static("Accept"));
    response_headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if let Ok(value) = HeaderValue::from_str(&etag) {
        response_headers.insert(header::ETAG, value);
    }
    Ok(response)
}

fn not_found() -> Error {
    Error::NotFound("ticket not found")
}

/// A malformed token is as unknown as a well-formed one that matches nothing.
fn embed_token(raw: &str) -> Result<Uuid> {
    Uuid::parse_str(raw).map_err(|_| not_found())
}

/// How often an idle stream sends a comment line, so proxies and clients know it is alive.
const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// A ticket's public status as it changes: server-sent events, for chat widgets.
///
/// First the embed view as it is now, then a new one (same fields as `GET /tickets/embed/{token}`)
/// each time what it shows changes, from whichever server made the change; a `:` comment line
/// every 15 s while nothing does. When the embed token is rotated, an `event: gone` ends the
/// stream. A stream lasts at most `EMBED_STREAM_MAX_SECS` (less up to a tenth); a browser's
/// `EventSource` reconnects by itself after that or a network break. The answer comes as
/// `HTTP/1.0` with `Connection: close`: its body runs until the connection closes.
#[utoipa::path(
    get,
    path = "/tickets/embed/{token}/stream",
    tag = "embed",
    params(("token" = Uuid, Path, description = "The ticket's embed token")),
    responses(
        (status = 200, description = "Server-sent events: `data: <embed view JSON>` on each change; `event: gone` when the token is rotated",
            content_type = "text/event-stream",
            body = String,
            example = "data: {\"subject\":\"App crashes on start\",\"status\":\"Open\",\"last_updated\":\"2026-07-23T12:30:00Z\",\"link\":\"https://support.example.com/tickets/9f40cb91-6a0e-4b7e-9d3c-2f1e5a7b8c90\"}\n\n"),
        (status = 404, response = super::docs::NotFound),
        (status = 429, description = "This client address holds `EMBED_STREAMS_PER_CLIENT` streams already",
            content_type = "application/problem+json", body = crate::error::Problem),
        (status = 503, description = "As many streams are open as `EMBED_STREAMS_MAX` allows; poll instead",
            content_type = "application/problem+json", body = crate::error::Problem),
    )
)]
async fn stream(
    State(state): State<AppState>,
    Path(token): Path<String>,
    ClientAddress(client): ClientAddress,
    connection: Option<Extension<ConnectionHandle>>,
) -> Result<Response> {
    let token = embed_token(&token)?;
    let ticket = state.store.public_ticket(token).await?.ok_or_else(not_found)?;
    let share = state.embed_streams.take(Some(client)).map_err(|refusal| match refusal {
        Refusal::Full => Error::Unavailable(
            "too many live embed streams are open; poll GET /tickets/embed/{token} instead".into(),
        ),
        Refusal::ClientFull => Error::ClientLimit(
            "this address holds as many live embed streams as one client may; close one or poll instead",
        ),
    })?;
    // Followed before the view is read again, so no change after that read goes unseen.
    let changes = state.store.watch(ticket.id).await?;
    let ticket = state.store.public_ticket(token).await?.ok_or_else(not_found)?;
    // From here the connection counts as a stream, not among ordinary connections, so streams
    // can never crowd out logins and reads.
    if let Some(Extension(connection)) = connection {
        connection.become_stream();
    }
    let lifetime = Box::pin(tokio::time::sleep(lifetime(state.embed_stream_max_lifetime)));
    let _held = OpenStream { _share: share, _gauge: state.metrics.open_embed_stream() };
    let following =
        Following { state, shown: ticket, changes, lifetime, started: false, ended: false, _held };
    // A plain stream, polled by the response body: when the client goes, it is dropped with it.
    let events = futures_util::stream::unfold(following, |mut following| async move {
        let event = following.next().await?;
        Some((Ok::<_, std::convert::Infallible>(event), following))
    });
    let mut response = Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// What an open stream holds until it ends: its place in the streams' budget and the gauge.
struct OpenStream {
    _share: Share,
    _gauge: crate::metrics::OpenStream,
}

/// One live stream: the view it showed last, and what ends it.
struct Following {
    state: AppState,
    shown: PublicTicket,
    changes: TicketWatch,
    lifetime: std::pin::Pin<Box<tokio::time::Sleep>>,
    started: bool,
    ended: bool,
    _held: OpenStream,
}

impl Following {
    /// The view as it is, then again whenever it changes; `None` once the token was rotated
    /// (after `gone`), the stream has lasted its lifetime, or the server stops.
    async fn next(&mut self) -> Option<Event> {
        if self.ended {
            return None;
        }
        if !self.started {
            self.started = true;
            return self.view(&self.shown);
        }
        loop {
            tokio::select! {
                () = self.changes.changed() => {}
                () = self.state.shutdown.cancelled() => return None,
                // The browser's EventSource reconnects by itself, to whichever server is least busy.
                () = &mut self.lifetime => return None,
            }
            match self.state.store.public_ticket(self.shown.embed_token).await {
                Ok(Some(now)) if now == self.shown => {}
                Ok(Some(now)) => {
                    self.shown = now;
                    return self.view(&self.shown);
                }
                Ok(None) => {
                    self.ended = true;
                    return Some(Event::default().event("gone").data("the embed token was rotated"));
                }
                // The database is away: the stream stays; once it is back, every stream reads again.
                Err(error) => tracing::warn!(%error, "a live embed stream could not read its ticket"),
            }
        }
    }

    fn view(&self, ticket: &PublicTicket) -> Option<Event> {
        Event::default().json_data(EmbedView::of(ticket, &self.state)).ok()
    }
}

/// `max` less up to a tenth, at random, so streams opened together do not all reconnect at once.
fn lifetime(max: std::time::Duration) -> std::time::Duration {
    let mut random = [0u8; 2];
    let fraction = match getrandom::fill(&mut random) {
        Ok(()) => f64::from(u16::from_le_bytes(random)) / f64::from(u16::MAX),
        Err(_) => 0.0,
    };
    max.mul_f64(1.0 - fraction / 10.0)
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// Changes when the ticket changes (every change moves `updated_at`) and differs per form.
fn etag(ticket: &PublicTicket, html: bool) -> String {
    format!("\"{:x}-{}\"", ticket.updated_at.timestamp_micros(), if html { "html" } else { "json" })
}

fn render_card(view: &EmbedView, status: TicketStatus) -> String {
    let subject = escape_html(&view.subject);
    let link = escape_html(&view.link);
    let updated = view.last_updated.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let shown = view.last_updated.format("%Y-%m-%d %H:%M UTC");
    let (status_class, label) = (status.as_str(), view.status);
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{subject}: {label}</title>
<style>
  body {{ margin: 0; font: 15px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2330; background: #fff; }}
  .card {{ border: 1px solid #d5d9e0; border-radius: 8px; padding: 14px 16px; max-width: 480px; }}
  h1 {{ font-size: 16px; margin: 0 0 8px; overflow-wrap: anywhere; }}
  .badge {{ display: inline-block; padding: 2px 10px; border-radius: 999px; font-weight: 600; font-size: 13px; }}
  .open {{ background: #dbeafe; color: #1e3a8a; }}
  .in_progress {{ background: #fef3c7; color: #78350f; }}
  .pending {{ background: #fce7f3; color: #831843; }}
  .resolved {{ background: #dcfce7; color: #14532d; }}
  .closed {{ background: #e5e7eb; color: #1f2937; }}
  p {{ margin: 8px 0 0; }}
  a {{ color: #1d4ed8; }}
</style>
</head>
<body>
<main class="card" aria-labelledby="subject">
  <h1 id="subject">{subject}</h1>
  <p>Status: <span class="badge {status_class}">{label}</span></p>
  <p>Last updated <time datetime="{updated}">{shown}</time></p>
  <p><a href="{link}" target="_top" rel="noopener noreferrer">View the ticket</a></p>
</main>
</body>
</html>
"#
    )
}

/// Escapes text for HTML element content and quoted attribute values.
fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escaping_covers_markup_and_both_quotes() {
        assert_eq!(
            escape_html(r#"<a href="x" onclick='y'>&</a>"#),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
    }
}
