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
mod service_levels;
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
    let (api, uploads) =
        openapi_routers(security::cors_for(&state.cors_allowed_origins), state.attachments.max_bytes);
    let (api_routes, mut openapi) = api.split_for_parts();
    let (upload_routes, upload_docs) = uploads.split_for_parts();
    openapi.merge(upload_docs);
    let api_routes = api_routes
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi))
        .fallback(|| async { Error::NotFound("no such route") });
    // Layers apply to the routes a router has when they are added: uploads get the same stack
    // with their own deadline, since a file takes longer to send than any other request.
    with_layers(api_routes, &state, state.request_timeout)
        .merge(with_layers(upload_routes, &state, state.attachments.upload_timeout))
        .with_state(state)
}

/// Every request's layers, with `timeout` as its deadline.
fn with_layers(routes: Router<AppState>, state: &AppState, timeout: std::time::Duration) -> Router<AppState> {
    // One `layer` call for the whole stack: axum clones a route's service for every request,
    // and each `layer` call would add a boxed level to that clone. Outermost first.
    routes.layer(
        ServiceBuilder::new()
            // Every request has an id (the client's `x-request-id`, or a new one) before its
            // span opens, and the response carries it back.
            .layer(SetRequestIdLayer::x_request_id(request_id::RequestIds::new()))
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(security::by_default(header::REFERRER_POLICY, "no-referrer"))
            .layer(security::by_default(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
            .layer(security::by_default(header::CONTENT_SECURITY_POLICY, security::DEFAULT_CSP))
            .layer(middleware::from_fn_with_state(state.metrics.clone(), observe))
            .layer(
                TraceLayer::new_for_http().make_span_with(request_span).on_response(
                    DefaultOnResponse::new().level(Level::INFO).latency_unit(LatencyUnit::Micros),
                ),
            )
            // A request not answered in time (a slow client's body, a stuck query) gets a
            // 408, turned into problem+json above like every bare error status.
            .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, timeout))
            .layer(middleware::from_fn(security::limit_request_head))
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES)),
    )
}

/// The OpenAPI document alone, e.g. for `ticketdesk openapi`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (api, uploads) =
        openapi_routers(security::cors_for(&[]), crate::config::DEFAULT_ATTACHMENT_MAX_BYTES);
    api.merge(uploads).split_for_parts().1
}

/// The routes with their OpenAPI document (what `openapi.json` is generated from): the API's, and
/// apart from them the file uploads, which get a deadline of their own. `cors` covers the API; the
/// embed route has its own, open to every origin.
fn openapi_routers(
    cors: tower_http::cors::CorsLayer,
    max_upload_bytes: u64,
) -> (OpenApiRouter<AppState>, OpenApiRouter<AppState>) {
    let api = OpenApiRouter::with_openapi(docs::ApiDoc::openapi())
        .merge(operations::router())
        .merge(auth::router().layer(cors.clone()))
        .merge(users::router().layer(cors.clone()))
        .merge(tickets::router().layer(cors.clone()))
        .merge(attachments::router().layer(cors.clone()))
        .merge(webhooks::router().layer(cors.clone()))
        .merge(service_levels::router().layer(cors.clone()))
        .merge(embed::router());
    (api, attachments::upload_router(max_upload_bytes).layer(cors))
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
