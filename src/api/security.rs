//! Headers every response carries unless its route set its own (the embed card sets a CSP that
//! lets any site frame it; everything else may not be framed).

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

/// Swagger UI's assets are all served from here, with no inline script; it does use inline styles
/// and `data:` images.
pub const DEFAULT_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Sets `name` on every response whose route did not set its own.
pub fn by_default(name: HeaderName, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
}

/// CORS for the authenticated API: only the configured origins (`CORS_ALLOWED_ORIGINS`) may call
/// it from a browser page; with none configured, no page on another origin can. Bearer tokens,
/// not cookies, so credentials are never allowed.
pub fn cors_for(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> =
        origins.iter().filter_map(|origin| HeaderValue::try_from(origin).ok()).collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::PUT])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
            HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([
            header::ETAG,
            header::LOCATION,
            header::LINK,
            header::RETRY_AFTER,
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("idempotent-replayed"),
        ])
        .max_age(std::time::Duration::from_secs(600))
}

/// Longest request target (path and query) the API reads.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Largest header section the API reads (names and values).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Refuses oversized request heads with a problem+json 414 or 431 before any handler runs. (The
/// server loop has a larger hard cap that closes the connection; see `server::MAX_HEAD_BYTES`.)
pub async fn limit_request_head(request: Request, next: Next) -> Response {
    let uri_bytes = request.uri().path_and_query().map_or(0, |target| target.as_str().len());
    if uri_bytes > MAX_URI_BYTES {
        let detail = format!("the request target is {uri_bytes} bytes long; the limit is {MAX_URI_BYTES}");
        return crate::error::problem(StatusCode::URI_TOO_LONG, detail);
    }
    let header_bytes: usize =
        request.headers().iter().map(|(name, value)| name.as_str().len() + value.len()).sum();
    if header_bytes > MAX_HEADER_BYTES {
        let detail = format!("the request headers are {header_bytes} bytes; the limit is {MAX_HEADER_BYTES}");
        return crate::error::problem(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, detail);
    }
    next.run(request).await
}
