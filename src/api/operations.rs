//! For operators: probes for orchestrators (Kubernetes-style liveness and readiness), on the API's
//! listener, and Prometheus metrics, on their own (`METRICS_ADDR`). None needs auth; the probes
//! are cheap.

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::Json;
use crate::error::Result;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz))
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({"status": "ok"}))]
struct Health {
    status: &'static str,
}

/// Liveness: the process is up and serving. Touches nothing else.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "Alive", body = Health))
)]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: the database answers and every migration this server knows is applied. One query.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready to serve", body = Health, example = json!({"status": "ready"})),
        (status = 503, description = "Not ready: the database is unreachable or behind on migrations",
            body = crate::error::Problem, content_type = "application/problem+json",
            example = json!({"type": "about:blank", "title": "Service Unavailable", "status": 503,
                "detail": "the database is unreachable"})),
    )
)]
async fn readyz(State(state): State<AppState>) -> Result<Json<Health>> {
    state.store.ready().await?;
    Ok(Json(Health { status: "ready" }))
}

/// `GET /metrics` alone, for the metrics listener: Prometheus text with requests and latency by
/// route template and status, requests in flight, database pool connections, the password hashing
/// queue, refused logins, tickets by status. Not part of the public API or its document: it
/// counts logins and runs a query per scrape, so only the monitoring system should reach it.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .fallback(|| async { crate::error::Error::NotFound("only /metrics is served here") })
        .with_state(state)
}

async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse> {
    let text = state.metrics.render(state.store.as_ref()).await?;
    Ok(([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text))
}
