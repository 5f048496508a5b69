//! Logs and metrics.
//!
//! Logs are structured (text or JSON) and carry the request id; they record
//! method, path and status, never headers, query strings or bodies, which is
//! where credentials travel.

use std::collections::HashMap;
use std::sync::{OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global log subscriber. Safe to call more than once; only the
/// first call has an effect.
pub fn init_logging(format: LogFormat, level: &str) -> anyhow::Result<()> {
    let filter =
        EnvFilter::try_new(level).map_err(|e| anyhow::anyhow!("invalid setting GATEHOUSE_LOG_LEVEL: {e}"))?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
    };
    Ok(())
}

/// How often the samples that histograms took are folded into their
/// buckets. Until then the exporter keeps every sample (about 17 bytes a
/// request); folded only when `/metrics` was scraped, they grew without
/// bound on a service that nobody scraped (docs/benchmarks.md, "Metrics
/// that grew").
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

fn recorder() -> &'static PrometheusHandle {
    recorder_upkept_every(UPKEEP_EVERY)
}

/// The recorder, built on first use with a thread that folds its samples
/// every `every`.
fn recorder_upkept_every(every: Duration) -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("gatehouse_http_request_duration_seconds".into()),
                &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
            )
            .unwrap_or_else(|e| unreachable!("static bucket list: {e}"))
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (tests embedding the app
        // twice share this one); either way the handle renders ours.
        let _ = metrics::set_global_recorder(recorder);
        let upkept = handle.clone();
        let upkeep = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
            loop {
                std::thread::sleep(every);
                upkept.run_upkeep();
            }
        });
        if let Err(e) = upkeep {
            tracing::warn!(error = %e, "cannot start the metrics upkeep; samples are folded only when scraped");
        }
        handle
    })
}

/// Installs the metrics recorder; called when the app is built.
pub fn init_metrics() {
    recorder();
}

/// [`init_metrics`], with the samples folded every `every`: for a test
/// that cannot wait the usual interval. The first call in a process sets
/// it.
#[doc(hidden)]
pub fn init_metrics_upkept_every(every: Duration) {
    recorder_upkept_every(every);
}

pub fn render_metrics() -> String {
    recorder().render()
}

/// Counts requests by route and status, and times them.
///
/// Every label comes from a fixed set, so that no caller can add series:
/// the route is the matched route's template (or `unmatched`), the method
/// one of the standard ones (or `other`), the status one this service sent.
pub async fn track_http(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let (requests, duration) = http_series(route, method, response.status().as_u16());
    requests.increment(1);
    duration.record(started.elapsed().as_secs_f64());
    response
}

/// The request counter and duration histogram of one label set.
type HttpSeries = (metrics::Counter, metrics::Histogram);

/// The handles of each label set's series, registered with the recorder
/// the first time the set is seen. Registering builds the metric's key (its
/// name and three labels, each an allocation) and looks it up in the
/// recorder; done for every request, that was a dozen allocations per
/// request. The sets are as bounded as the labels are (see above). A kept
/// handle stays the one `/metrics` renders because the recorder never
/// drops a series (`recorder_upkept_every` sets no idle timeout); one that
/// did would need these handles forgotten with it.
fn http_series(route: &str, method: &'static str, status: u16) -> HttpSeries {
    type ByRoute = HashMap<String, HashMap<(&'static str, u16), HttpSeries>>;
    static SERIES: OnceLock<RwLock<ByRoute>> = OnceLock::new();
    let series = SERIES.get_or_init(RwLock::default);
    let known = series
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(route)
        .and_then(|r| r.get(&(method, status)).cloned());
    if let Some(known) = known {
        return known;
    }
    let labels = [("route", route.to_owned()), ("method", method.to_owned()), ("status", status.to_string())];
    let registered = (
        metrics::counter!("gatehouse_http_requests_total", &labels),
        metrics::histogram!("gatehouse_http_request_duration_seconds", &labels),
    );
    let mut series = series.write().unwrap_or_else(PoisonError::into_inner);
    series.entry(route.to_owned()).or_default().entry((method, status)).or_insert(registered).clone()
}

/// A request method as a metric label: the methods HTTP defines, else `other`
/// (a method is any token the client likes).
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
