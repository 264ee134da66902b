//! Headers every response carries unless its route set its own (the embed card sets a CSP that
//! lets any site frame it; everything else may not be framed).

use axum::http::{HeaderName, HeaderValue, header};
use axum::response::Response;

/// Swagger UI's assets are all served from here, with no inline script; it does use inline styles
/// and `data:` images.
const DEFAULT_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

const DEFAULTS: [(HeaderName, &str); 3] = [
    (header::CONTENT_SECURITY_POLICY, DEFAULT_CSP),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
];

pub async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in DEFAULTS {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    response
}
