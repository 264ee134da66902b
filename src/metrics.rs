//! Prometheus metrics (OpenMetrics text at `/metrics` on `METRICS_ADDR`, never on the public
//! listener), through the `prometheus-client` crate. Every label comes from a fixed set (route
//! templates, the standard methods, status codes), never from raw client input, so however many
//! odd requests arrive the series stay few and memory stays bounded.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{Method, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::auth::HashingMetrics;
use crate::domain::sla_clock::{ClockNews, RecordedNews};
use crate::domain::{NextStep, TicketStatus};
use crate::error::{Error, Result};
use crate::store::Store;

/// Request latency buckets, in seconds: 0.5 ms to 5 s.
const LATENCY_BUCKETS: [f64; 13] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// Webhook delivery attempts, by how they went.
#[derive(Clone)]
pub struct WebhookAttempts(Family<OutcomeLabel, Counter>);

impl WebhookAttempts {
    pub fn count(&self, next: &NextStep) {
        let outcome = match next {
            NextStep::Delivered => "delivered",
            NextStep::RetryAt(_) => "retrying",
            NextStep::GiveUp => "failed",
        };
        self.0.get_or_create(&OutcomeLabel { outcome }).inc();
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BreachLabels {
    metric: &'static str,
    /// Policy names are few and chosen by admins.
    policy: String,
}

/// Service targets missed, by metric and policy, as this server's evaluator recorded them.
#[derive(Clone)]
pub struct SlaBreaches(Family<BreachLabels, Counter>);

impl SlaBreaches {
    pub fn count(&self, recorded: &RecordedNews) {
        if recorded.news == ClockNews::Breached {
            let labels = BreachLabels { metric: recorded.metric.as_str(), policy: recorded.policy.clone() };
            self.0.get_or_create(&labels).inc();
        }
    }
}

/// One open live embed stream, counted until dropped.
pub struct OpenStream(Gauge);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pub struct Metrics {
    registry: Registry,
    embed_streams: Gauge,
    webhook_attempts: WebhookAttempts,
    sla_breaches: SlaBreaches,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RequestLabels, Histogram>,
    in_flight: Gauge,
    login_failures: Counter,
    pool: Family<PoolLabel, Gauge>,
    tickets: Family<StatusLabel, Gauge>,
}

impl Metrics {
    /// The registry, with the password hashing queue's live figures in it.
    pub fn new(hashing: &HashingMetrics, embed_streams_max: usize) -> Self {
        let mut registry = Registry::default();
        let embed_streams = Gauge::default();
        let max_streams: Gauge = Gauge::default();
        let embed_streams_max = i64::try_from(embed_streams_max).unwrap_or(i64::MAX);
        max_streams.set(embed_streams_max);
        registry.register("embed_streams_open", "Live embed streams open now", embed_streams.clone());
        registry.register(
            "embed_streams_max",
            "Live embed streams allowed at once (EMBED_STREAMS_MAX)",
            max_streams,
        );
        let webhook_attempts = WebhookAttempts(Family::default());
        registry.register(
            "webhook_attempts",
            "Webhook delivery attempts: delivered, retrying (failed, tried again later) or failed (gave up)",
            webhook_attempts.0.clone(),
        );
        let sla_breaches = SlaBreaches(Family::default());
        registry.register(
            "sla_breaches",
            "Service targets missed, by metric and policy (counted by the server that recorded them)",
            sla_breaches.0.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        let latency =
            Family::<RequestLabels, Histogram>::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS));
        let in_flight = Gauge::default();
        let login_failures = Counter::default();
        let pool = Family::<PoolLabel, Gauge>::default();
        let tickets = Family::<StatusLabel, Gauge>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template and status",
            requests.clone(),
        );
        registry.register("http_request_duration_seconds", "Time to answer an HTTP request", latency.clone());
        registry.register("http_requests_in_flight", "HTTP requests being answered now", in_flight.clone());
        registry.register(
            "login_failures",
            "Refused logins (wrong password, unknown or deactivated user)",
            login_failures.clone(),
        );
        registry.register(
            "db_pool_connections",
            "Database pool connections by state (idle, in_use, max)",
            pool.clone(),
        );
        registry.register("tickets", "Tickets by status", tickets.clone());
        for (name, help, gauge) in [
            (
                "password_hashes_running",
                "Password hashes (logins, password changes, sign-ups) running now",
                &hashing.running,
            ),
            ("password_hashes_queued", "Password hashes waiting for a core", &hashing.queued),
            ("password_hashes_max_running", "Password hashes allowed to run at once", &hashing.max_running),
            (
                "password_hashes_max_queued",
                "Password hashes allowed to wait (PASSWORD_HASH_QUEUE)",
                &hashing.max_queued,
            ),
        ] {
            registry.register(name, help, gauge.clone());
        }
        registry.register(
            "password_hashes",
            "Password hashes computed (logins, password changes, sign-ups)",
            hashing.computed.clone(),
        );
        registry.register(
            "password_hashes_shed",
            "Requests answered 503 at once because the password hashing queue was full",
            hashing.shed.clone(),
        );
        Self {
            registry,
            embed_streams,
            webhook_attempts,
            sla_breaches,
            requests,
            latency,
            in_flight,
            login_failures,
            pool,
            tickets,
        }
    }

    /// Counts a new live embed stream until the guard is dropped.
    pub fn open_embed_stream(&self) -> OpenStream {
        self.embed_streams.inc();
        OpenStream(self.embed_streams.clone())
    }

    pub fn sla_breaches(&self) -> SlaBreaches {
        self.sla_breaches.clone()
    }

    pub fn webhook_attempts(&self) -> WebhookAttempts {
        self.webhook_attempts.clone()
    }

    /// Starts counting and timing `request`, by its route template; the timer records it when
    /// finished (a request dropped half way only leaves the in-flight count).
    pub fn start(&self, request: &Request) -> RequestTimer<'_> {
        self.in_flight.inc();
        RequestTimer {
            metrics: self,
            method: method_label(request.method()),
            route: request
                .extensions()
                .get::<MatchedPath>()
                .map_or("unmatched", MatchedPath::as_str)
                .to_owned(),
            started: Instant::now(),
        }
    }

    pub fn login_failed(&self) {
        self.login_failures.inc();
    }

    /// Refreshes the gauges read from the database, then renders everything.
    pub async fn render(&self, store: &dyn Store) -> Result<String> {
        let pool = store.pool_stats();
        for (state, value) in
            [("idle", pool.idle), ("in_use", pool.size.saturating_sub(pool.idle)), ("max", pool.max)]
        {
            self.pool.get_or_create(&PoolLabel { state }).set(i64::from(value));
        }
        let counts = store.ticket_counts().await?;
        for status in TicketStatus::ALL {
            let count = counts.iter().find(|(s, _)| s == status).map_or(0, |(_, n)| *n);
            self.tickets.get_or_create(&StatusLabel { status: status.as_str() }).set(count);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .map_err(|e| Error::Internal(format!("encoding metrics failed: {e}")))?;
        Ok(text)
    }
}

/// One request being counted and timed.
pub struct RequestTimer<'a> {
    metrics: &'a Metrics,
    method: &'static str,
    route: String,
    started: Instant,
}

impl RequestTimer<'_> {
    pub fn finish(mut self, status: StatusCode) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let route = std::mem::take(&mut self.route);
        let labels = RequestLabels { method: self.method, route, status: status.as_u16() };
        self.metrics.requests.get_or_create(&labels).inc();
        self.metrics.latency.get_or_create(&labels).observe(elapsed);
    }
}

impl Drop for RequestTimer<'_> {
    fn drop(&mut self) {
        self.metrics.in_flight.dec();
    }
}

/// The request's method as a label: the standard ones by name, any other (`curl -X QQQQ`) as
/// `other`, so clients cannot mint new series.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"];
    KNOWN.into_iter().find(|known| *known == method.as_str()).unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invented_methods_share_one_label() {
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        let invented = Method::from_bytes(&[b'Q'; 4000]).unwrap();
        assert_eq!(method_label(&invented), "other");
        assert_eq!(method_label(&Method::from_bytes(b"get").unwrap()), "other", "methods are case-sensitive");
    }
}
