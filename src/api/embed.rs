//! The public embed endpoint: a ticket's subject, status, last update and link, for whoever holds
//! its embed token. JSON for chatbots; with `Accept: text/html`, a small status card a web page
//! can put in an iframe. Both carry an ETag, so pollers get `304 Not Modified`.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tower_http::cors::{Any, CorsLayer};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::extract::{Json, Path};
use crate::domain::{PublicTicket, TicketStatus};
use crate::error::{Error, Result};
use crate::state::AppState;

/// How long a client or cache may reuse an answer without asking again; a rotated (leaked) token
/// stops working everywhere within this time.
const MAX_AGE: &str = "max-age=30";

/// The card runs no script and loads nothing; any site may frame it.
const CARD_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors *; base-uri 'none'; form-action 'none'";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(embed))
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
    // A malformed token is as unknown as a well-formed one that matches nothing.
    let not_found = || Error::NotFound("ticket not found");
    let token = Uuid::parse_str(&token).map_err(|_| not_found())?;
    // One database round trip: this lookup is all the route reads.
    let ticket = state.store.public_ticket(token).await?.ok_or_else(not_found)?;

    let html = wants_html(headers);
    let etag = etag(&ticket, html);
    let mut response = if super::etag::client_has(headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let view = EmbedView {
            subject: ticket.subject,
            status: ticket.status.label(),
            last_updated: ticket.updated_at,
            link: state.links.ticket(ticket.embed_token),
        };
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
