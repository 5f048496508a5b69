//! Gatehouse: the HTTP service.
//!
//! This crate is the only one that knows HTTP. [`app`] builds the one router
//! (tests drive it directly); [`serve`] runs it on a listener until a shutdown
//! signal (main and the multi-process tests). Everything a handler needs is
//! in [`AppState`], built by [`bootstrap`].

mod audit;
pub mod config;
mod configure;
mod connections;
mod cookies;
mod directory;
mod dns;
mod domains;
mod error;
mod external_auth;
mod extract;
mod housekeeping;
mod keys;
mod mail;
mod master_keys;
mod openapi;
mod pages;
mod password_reset;
mod password_signin;
mod passwords;
mod portal_access;
mod routes;
mod saml;
mod scim;
mod server;
mod sessions;
mod signin;
mod sso;
mod state;
pub mod telemetry;
mod throttle;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use gatehouse_core::Clock;
use gatehouse_store::Store;
use tokio::net::TcpListener;
use tower_http::LatencyUnit;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

pub use config::{RawSettings, Settings};
pub use dns::DnsResolver;
pub use error::ApiError;
pub use mail::MailSettings;
pub use master_keys::{MasterKeyAction, run as master_key_command};
pub use server::Limits;
pub use state::AppState;

/// Request bodies above this are refused with 413 before they are parsed.
pub(crate) const BODY_LIMIT: usize = 64 * 1024;

/// The whole HTTP surface.
///
/// The middleware every request passes through is one stack, given to the
/// router in one `layer` call. axum wraps each route in each layer it is
/// given, boxing the result every time, and clones the chain of boxes on
/// every request (each `from_fn` middleware clones what it wraps again):
/// applied one layer at a time, the eight below cost a sign-in about fifty
/// allocations before its handler ran (docs/benchmarks.md, "One middleware
/// stack"). Listed from the outside in.
pub fn app(state: AppState) -> Router {
    telemetry::init_metrics();
    let request_id = HeaderName::from_static("x-request-id");
    let middleware = tower::ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<_>| {
                    let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
                    tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path())
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO).latency_unit(LatencyUnit::Micros)),
        )
        .layer(PropagateRequestIdLayer::new(request_id))
        .layer(CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(ApiError::Internal("handler panicked".into()))
        }))
        .layer(axum::middleware::from_fn(telemetry::track_http))
        // Outside the body's timeout and limit, which change the body's
        // type (axum's `from_fn` takes only its own); it covers the whole
        // handler all the same.
        .layer(axum::middleware::from_fn_with_state(state.clone(), deadline))
        // A body that stalls for longer than a client may take fails to
        // read (and its request with a 400).
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(state.settings().limits.client_timeout))
        .layer(DefaultBodyLimit::max(BODY_LIMIT));
    Router::new()
        .merge(routes::login::router())
        .merge(routes::admin::router())
        .merge(routes::external_auth::router())
        .merge(routes::scim::router())
        .merge(routes::connections::router())
        .merge(routes::domains::router())
        .merge(routes::portal_links::router())
        .merge(routes::sso::router())
        .merge(routes::saml::router())
        .merge(routes::well_known::router())
        .merge(routes::ops::router())
        .merge(pages::router(state.clone()))
        .fallback(|| async { ApiError::NotFound("route") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware)
        .with_state(state)
}

/// Ends any request that takes longer than the configured request timeout,
/// whatever it is waiting for: a slow body, an upstream, the database.
async fn deadline(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let limit = state.settings().request_timeout;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => axum::response::IntoResponse::into_response(ApiError::RequestTimeout(limit)),
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then drains
/// (see `server`).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.settings().limits;
    // Accepted on a runtime worker, not on the thread that called: hyper
    // allocates each connection's response-head buffer as it is accepted,
    // and on the calling thread those came from a malloc arena of its own
    // that none of the request work reuses (about 2 MiB less at the peak
    // of 1,000 sign-ins in flight; docs/benchmarks.md, "A correction").
    // Dropping `serve` (an aborted task) still stops it.
    let serving = tokio::spawn(server::run(listener, app(state.clone()), limits, shutdown));
    tokio_util::task::AbortOnDropHandle::new(serving).await.map_err(std::io::Error::other)??;
    // Work that outlived its request (a forwarded password reset) ends too,
    // within the time any request is allowed.
    let background = state.background();
    background.close();
    if tokio::time::timeout(state.settings().request_timeout, background.wait()).await.is_err() {
        tracing::warn!(left = background.len(), "background work still running at shutdown");
    }
    Ok(())
}

/// Opens the database (creating the embedded one on first start), the master
/// key and the signing key, and returns the state to serve with.
pub async fn bootstrap(settings: Settings, clock: Arc<dyn Clock>) -> anyhow::Result<AppState> {
    gatehouse_session::check_crypto_backend()?;
    if settings.embedded_database {
        create_private_dir(&settings.data_dir)?;
    }
    let master_keys = master_keys::MasterKeyStore::load(&settings.master_key)?;
    let store = Store::open(&settings.database_url).await.context("cannot open the database")?;
    let alg = settings.signing_alg;
    let outbound = gatehouse_passthrough::OutboundClient::new(settings.allow_private_targets)
        .context("cannot build the HTTP client")?;
    let mailer = settings
        .mail
        .as_ref()
        .map(mail::Mailer::new)
        .transpose()
        .map_err(|why| anyhow::anyhow!("cannot set up mail: {why}"))?;
    let state = AppState::new(settings, store, master_keys, clock, outbound, mailer);
    state.keys().ensure_signing_key(alg).await.context("cannot load the signing keys")?;
    housekeeping::spawn(&state);
    Ok(state)
}

pub(crate) fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {}", dir.display()))?;
    }
    Ok(())
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down; draining in-flight requests");
}

/// Whether a SCIM user filter is evaluated by the database rather than user
/// by user: the integration tests check that the filters they compare with
/// the in-memory matcher really take the database's path.
#[doc(hidden)]
pub fn scim_filter_runs_in_the_database(filter: &gatehouse_scim::filter::Filter) -> bool {
    scim::user_condition(filter).is_some()
}
