//! The OpenAPI document's shared parts: the OAuth2 password flow Swagger UI logs in with, and the
//! error responses routes refer to instead of repeating them.

// The response types below exist only to describe the document; their field is never read.
#![allow(dead_code)]

use utoipa::openapi::security::{Flow, OAuth2, Password, Scopes, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi, ToResponse};

use crate::error::Problem;

pub const SECURITY_SCHEME: &str = "oauth2";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ticket Management API",
        description = "Customers submit tickets, admins assign them to agents, agents resolve them. \
Log in with **Authorize** (try alice/alice123, bob/bob123 or carol/carol123 when the server runs with `--demo`). \
Every error is an RFC 9457 `application/problem+json` document.",
    ),
    modifiers(&OAuth2PasswordFlow),
    components(
        schemas(Problem),
        responses(BadRequest, Unauthorized, Forbidden, NotFound, Unprocessable, PayloadTooLarge, UnsupportedMediaType, Conflict, PreconditionFailed, TooManyRequests),
    ),
    tags(
        (name = "auth", description = "Log in, refresh, log out"),
        (name = "users", description = "Who is who"),
        (name = "tickets", description = "Submit, find, assign and work tickets"),
        (name = "conversation", description = "Replies and internal notes on a ticket"),
        (name = "attachments", description = "Files on tickets and comments: upload, then reference the upload's token"),
        (name = "embed", description = "Public, token-guarded ticket status for chatbots"),
        (name = "webhooks", description = "Signed pushes of ticket changes to other systems (admins)"),
        (name = "service levels", description = "Business calendars and SLA policies: response and resolution targets (admins)"),
        (name = "operations", description = "Health probes"),
    )
)]
pub struct ApiDoc;

struct OAuth2PasswordFlow;

impl Modify for OAuth2PasswordFlow {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            SECURITY_SCHEME,
            SecurityScheme::OAuth2(OAuth2::with_description(
                [Flow::Password(Password::new("/auth/token", Scopes::new()))],
                "Username and password in, bearer JWT out. Leave client_id and client_secret empty.",
            )),
        );
    }
}

/// The request is malformed: a path parameter of the wrong type, a query that does not parse.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    example = json!({"type": "about:blank", "title": "Bad Request", "status": 400,
        "detail": "Invalid URL: Cannot parse `abc` to a `i64`"})
)]
pub struct BadRequest(Problem);

/// No bearer token, or one that is invalid, expired or whose user no longer exists.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(("WWW-Authenticate" = String, description = "`Bearer`, with `error=\"invalid_token\"` when a token was refused")),
    example = json!({"type": "about:blank", "title": "Unauthorized", "status": 401,
        "detail": "the access token is invalid or has expired"})
)]
pub struct Unauthorized(Problem);

/// The caller's role may not use this route.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    example = json!({"type": "about:blank", "title": "Forbidden", "status": 403,
        "detail": "only customers submit tickets"})
)]
pub struct Forbidden(Problem);

/// No such ticket, or one the caller may not see: the two answer alike.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    example = json!({"type": "about:blank", "title": "Not Found", "status": 404, "detail": "ticket not found"})
)]
pub struct NotFound(Problem);

/// The body is well-formed but breaks a rule (a blank subject, an unknown status, a non-agent).
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    example = json!({"type": "about:blank", "title": "Unprocessable Entity", "status": 422,
        "detail": "subject must not be empty"})
)]
pub struct Unprocessable(Problem);

/// The change conflicts with the resource's state: a status the lifecycle does not allow next, a
/// comment on a closed ticket, a username that is taken.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    example = json!({"type": "about:blank", "title": "Conflict", "status": 409,
        "detail": "a ticket cannot go from open to resolved; allowed next states: in_progress"})
)]
pub struct Conflict(Problem);

/// `If-Match` named a version of the ticket that is no longer current: reload it and try again.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    example = json!({"type": "about:blank", "title": "Precondition Failed", "status": 412,
        "detail": "the ticket changed since the ETag in If-Match; reload it and retry"})
)]
pub struct PreconditionFailed(Problem);

/// Too many failed logins for this account or from this address: wait `Retry-After` seconds.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(("Retry-After" = u64, description = "Seconds to wait before trying again")),
    example = json!({"type": "about:blank", "title": "Too Many Requests", "status": 429,
        "detail": "too many failed logins; try again in 4 s"})
)]
pub struct TooManyRequests(Problem);

/// The request body is over 64 KiB.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    example = json!({"type": "about:blank", "title": "Payload Too Large", "status": 413,
        "detail": "Failed to buffer the request body: length limit exceeded"})
)]
pub struct PayloadTooLarge(Problem);

/// The body is not of the content type this route reads.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    example = json!({"type": "about:blank", "title": "Unsupported Media Type", "status": 415,
        "detail": "Expected request with `Content-Type: application/json`"})
)]
pub struct UnsupportedMediaType(Problem);

/// The answers every route that reads a body may give about the body itself: malformed (400), too
/// large (413), of the wrong type (415), or breaking a rule (422).
#[derive(IntoResponses)]
pub enum BodyErrors {
    #[response(status = 400)]
    BadRequest(#[ref_response] BadRequest),
    #[response(status = 413)]
    PayloadTooLarge(#[ref_response] PayloadTooLarge),
    #[response(status = 415)]
    UnsupportedMediaType(#[ref_response] UnsupportedMediaType),
    #[response(status = 422)]
    Unprocessable(#[ref_response] Unprocessable),
}

/// The answers of every route that looks a resource up by the id in its path: a malformed id
/// (400), no valid token (401), and no such resource, or one the caller may not see (404).
#[derive(IntoResponses)]
pub enum LookupErrors {
    #[response(status = 400)]
    BadRequest(#[ref_response] BadRequest),
    #[response(status = 401)]
    Unauthorized(#[ref_response] Unauthorized),
    #[response(status = 404)]
    NotFound(#[ref_response] NotFound),
}
