//! HTTP: `/metrics`, `/healthz`, `/readyz`, `/api/status`, the status page at `/`, and
//! whatever routers other parts mount (webhooks). Every replica serves it, leader or not.

pub mod page;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

pub use page::{DriftView, ShardView, UnitView};

/// What the HTTP endpoints show, read fresh on every request.
pub trait StatusSource: Send + Sync + 'static {
    fn units(&self) -> Vec<UnitView>;
    /// The revision last rendered.
    fn revision(&self) -> String;
    /// Ready once every unit has been attempted once (or, on a standby, once it is up).
    fn ready(&self) -> bool;
    fn leading(&self) -> bool;
    /// Who holds each shard (empty without `sync.shards` > 1).
    fn shards(&self) -> Vec<ShardView> {
        Vec::new()
    }
}

#[derive(Clone)]
struct AppState {
    registry: prometheus::Registry,
    status: Arc<dyn StatusSource>,
}

#[derive(Serialize)]
struct StatusDocument {
    revision: String,
    leading: bool,
    ready: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    shards: Vec<ShardView>,
    units: Vec<UnitView>,
}

/// The daemon's router; `extra` is merged in (e.g. the webhook routes).
pub fn router(
    registry: prometheus::Registry,
    status: Arc<dyn StatusSource>,
    extra: Router,
) -> Router {
    let state = AppState { registry, status };
    Router::new()
        .route("/", get(index))
        .route("/api/status", get(api_status))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
        .merge(extra)
}

async fn index(State(s): State<AppState>) -> Html<String> {
    Html(page::render(
        &s.status.units(),
        &s.status.revision(),
        s.status.leading(),
        &s.status.shards(),
    ))
}

async fn api_status(State(s): State<AppState>) -> axum::Json<StatusDocument> {
    axum::Json(StatusDocument {
        revision: s.status.revision(),
        leading: s.status.leading(),
        ready: s.status.ready(),
        shards: s.status.shards(),
        units: s.status.units(),
    })
}

async fn readyz(State(s): State<AppState>) -> Response {
    if s.status.ready() {
        "ready".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: not every unit has been synced once",
        )
            .into_response()
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    let encoder = prometheus::TextEncoder::new();
    match encoder.encode_to_string(&s.registry.gather()) {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Serves until `shutdown` completes.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving HTTP");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
