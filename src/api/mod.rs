//! The HTTP API: one module per resource, assembled into one router here.

mod attachments;
mod auth;
pub mod docs;
mod embed;
mod etag;
mod extract;
mod operations;

pub use operations::metrics_router;
mod paging;
mod request_id;
mod security;
mod tickets;
mod users;
mod webhooks;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::{Router, middleware};
use tower::ServiceBuilder;
use tower_http::LatencyUnit;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::error::{Error, problem_for_bare_errors};
use crate::metrics::Metrics;
use crate::state::AppState;

pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The whole application: API routes, `/openapi.json`, Swagger UI at `/docs`.
pub fn router(state: AppState) -> Router {
    let request_timeout = state.request_timeout;
    let (api_routes, openapi) =
        openapi_router(security::cors_for(&state.cors_allowed_origins), state.attachments.max_bytes)
            .split_for_parts();
    api_routes
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi))
        .fallback(|| async { Error::NotFound("no such route") })
        // One `layer` call for the whole stack: axum clones a route's service for every request,
        // and each `layer` call would add a boxed level to that clone. Outermost first.
        .layer(
            ServiceBuilder::new()
                // Every request has an id (the client's `x-request-id`, or a new one) before its
                // span opens, and the response carries it back.
                .layer(SetRequestIdLayer::x_request_id(request_id::RequestIds::new()))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(security::by_default(header::REFERRER_POLICY, "no-referrer"))
                .layer(security::by_default(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
                .layer(security::by_default(header::CONTENT_SECURITY_POLICY, security::DEFAULT_CSP))
                .layer(middleware::from_fn_with_state(state.metrics.clone(), observe))
                .layer(TraceLayer::new_for_http().make_span_with(request_span).on_response(
                    DefaultOnResponse::new().level(Level::INFO).latency_unit(LatencyUnit::Micros),
                ))
                // A request not answered in time (a slow client's body, a stuck query) gets a
                // 408, turned into problem+json above like every bare error status.
                .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, request_timeout))
                .layer(middleware::from_fn(security::limit_request_head))
                .layer(DefaultBodyLimit::max(MAX_BODY_BYTES)),
        )
        .with_state(state)
}

/// The OpenAPI document alone, e.g. for `ticketdesk openapi`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    openapi_router(security::cors_for(&[]), crate::config::DEFAULT_ATTACHMENT_MAX_BYTES).split_for_parts().1
}

/// The routes with their OpenAPI document; also what `openapi.json` is generated from. `cors`
/// covers the API; the embed route has its own, open to every origin.
fn openapi_router(cors: tower_http::cors::CorsLayer, max_upload_bytes: u64) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(docs::ApiDoc::openapi())
        .merge(operations::router())
        .merge(auth::router().layer(cors.clone()))
        .merge(users::router().layer(cors.clone()))
        .merge(tickets::router().layer(cors.clone()))
        .merge(attachments::router(max_upload_bytes).layer(cors.clone()))
        .merge(webhooks::router().layer(cors))
        .merge(embed::router())
}

/// Counts and times the request by its route, then answers a bare error status (from axum or a
/// layer) in problem+json. One middleware, not two: each `from_fn` boxes its future per request.
async fn observe(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let timer = metrics.start(&request);
    let response = next.run(request).await;
    timer.finish(response.status());
    problem_for_bare_errors(response)
}

/// The span every log line of a request runs in. It names the route template, never the raw URI:
/// embed URIs carry secrets, and templates keep the cardinality of log fields low.
fn request_span(request: &Request) -> tracing::Span {
    let route = request.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
    let request_id = request.headers().get("x-request-id").and_then(|id| id.to_str().ok());
    tracing::info_span!("request", request_id, method = %request.method(), route)
}
