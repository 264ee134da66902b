//! Probes for orchestrators (Kubernetes-style): liveness and readiness, without auth, cheap.

use axum::extract::State;
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
