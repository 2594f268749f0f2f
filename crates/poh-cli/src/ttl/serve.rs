//! The HTTP endpoint of `poh-ttl run --metrics ADDR`: `GET /metrics` (Prometheus text) and
//! `GET /healthz` (200 or 503 with a reason), served by hyper's HTTP/1 server.
//!
//! The exporter crate's own listener cannot serve a second path (it answers every path
//! with the metrics, and a fixed `/health`), nor read the store before it renders; so the
//! recorder is built without it and rendered here ([`crate::ttl::metrics`]).
//!
//! The address binds to loopback unless one is given: `9464` and `:9464` mean
//! `127.0.0.1:9464`; a full address (`0.0.0.0:9464`, `[::]:9464`) is used as given.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use poh_storage::{Stats, StorageManager};
use poh_ttl::health::assess;
use poh_ttl::{Clock, DaemonMonitor, Health, HealthPolicy, ReopeningStore, expiry_lag};
use tokio::net::TcpListener;
use tracing::debug;

use crate::ttl::metrics::{Metrics, Observed};

/// Longest a scrape waits for a store read before answering without it (a hung device
/// must not hang `/metrics` too).
const STORE_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the store's counts (txs, bytes) are reused between scrapes. Counting is one
/// pass over the metadata table (measured: 0.4 s for a million txs, debug build), so it is
/// not repeated for every scraper; a pass that ends makes the next scrape count again.
pub const STORE_COUNTS_MAX_AGE: Duration = Duration::from_secs(10);

/// The store's counts as last read, and which pass they follow.
#[derive(Debug, Clone)]
struct Counts {
    read_at: std::time::Instant,
    after_pass: u64,
    stats: Stats,
}

/// Parses `--metrics`: a port (`9464`, `:9464`) binds to 127.0.0.1; an IP address with a
/// port (`0.0.0.0:9464`, `[::1]:9464`) is used as given. Host names are refused, so what
/// is exposed is never a resolver's choice.
pub fn parse_metrics_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let port = s.strip_prefix(':').unwrap_or(s);
    if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
        return port
            .parse::<u16>()
            .map(|p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p))
            .map_err(|_| format!("{s:?}: the port must be 0 to 65535"));
    }
    s.parse::<SocketAddr>().map_err(|_| {
        format!(
            "{s:?} is not PORT, :PORT or IP:PORT (e.g. 9464 for 127.0.0.1:9464, \
             0.0.0.0:9464, [::1]:9464)"
        )
    })
}

/// What the endpoint answers from: the daemon's metrics and monitor, the store (for its
/// counts), the health policy, and the clock the daemon reads "now" from.
pub struct Endpoint {
    metrics: Metrics,
    monitor: DaemonMonitor,
    store: Arc<ReopeningStore>,
    policy: HealthPolicy,
    clock: Arc<dyn Clock>,
    ttl: Duration,
    /// Also serializes counting, so concurrent scrapes count once.
    counts: tokio::sync::Mutex<Option<Counts>>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("store", &self.store)
            .field("policy", &self.policy)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// An endpoint for the daemon behind `monitor`, expiring txs older than `ttl` from
    /// `store`, on `clock` (the one its manager reads).
    pub fn new(
        metrics: Metrics,
        monitor: DaemonMonitor,
        store: Arc<ReopeningStore>,
        policy: HealthPolicy,
        clock: Arc<dyn Clock>,
        ttl: Duration,
    ) -> Self {
        Self {
            metrics,
            monitor,
            store,
            policy,
            clock,
            ttl,
            counts: tokio::sync::Mutex::new(None),
        }
    }

    /// The daemon's health now.
    pub fn health(&self) -> Health {
        assess(&self.policy, &self.monitor.snapshot(), self.clock.now())
    }

    /// Reads the store (without reopening it: that is the daemon's job) and renders every
    /// metric. The expiry lag is read at every scrape, through the timestamp index; the
    /// counts at most every [`STORE_COUNTS_MAX_AGE`] and after each pass.
    pub async fn render_metrics(&self) -> String {
        let now = self.clock.now();
        let snap = self.monitor.snapshot();
        let (counts, lag_secs) = match self.store.current() {
            Some(store) => (
                self.counts(&store, snap.stats.passes + snap.stats.failures)
                    .await,
                self.lag(&store, now).await,
            ),
            None => (None, None),
        };
        let observed = Observed {
            store: counts,
            lag_secs,
            health: assess(&self.policy, &snap, now),
            reopens: self.store.reopens(),
            stats: snap.stats,
        };
        self.metrics.refresh(&observed)
    }

    /// The store's counts: reused if read after the last pass ended and recently enough.
    async fn counts(&self, store: &StorageManager, passes_ended: u64) -> Option<Stats> {
        let mut cached = self.counts.lock().await;
        if let Some(c) = cached.as_ref()
            && c.after_pass == passes_ended
            && c.read_at.elapsed() < STORE_COUNTS_MAX_AGE
        {
            return Some(c.stats.clone());
        }
        let stats = read("count the store", store.stats()).await?;
        *cached = Some(Counts {
            read_at: std::time::Instant::now(),
            after_pass: passes_ended,
            stats: stats.clone(),
        });
        Some(stats)
    }

    /// How long ago the oldest expired tx passed its TTL (0 if none): one indexed lookup.
    async fn lag(&self, store: &StorageManager, now: f64) -> Option<f64> {
        let ttl = self.ttl.as_secs_f64();
        let oldest = read(
            "find the oldest expired tx",
            store.find_expired(now, ttl, None, 1),
        )
        .await?;
        Some(expiry_lag(
            now,
            self.ttl,
            oldest.first().map(|r| r.timestamp),
        ))
    }

    async fn respond(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        if path != "/metrics" && path != "/healthz" {
            return text(
                StatusCode::NOT_FOUND,
                "not found: this endpoint serves /metrics and /healthz\n".into(),
            );
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".into());
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        if path == "/healthz" {
            return match self.health() {
                Health::Healthy(why) => text(StatusCode::OK, format!("ok: {why}\n")),
                Health::Unhealthy(why) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("unhealthy: {why}\n"),
                ),
            };
        }
        let mut r = Response::new(Full::new(Bytes::from(self.render_metrics().await)));
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        r
    }
}

/// A store read for a scrape, bounded by [`STORE_READ_TIMEOUT`]; `None` (logged at
/// DEBUG) if it fails or hangs: the scrape answers without it.
async fn read<T>(
    what: &str,
    fut: impl std::future::Future<Output = Result<T, poh_storage::StorageError>>,
) -> Option<T> {
    match tokio::time::timeout(STORE_READ_TIMEOUT, fut).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            debug!(error = %poh_storage::error_chain(&e), "metrics: cannot {what}");
            None
        }
        Err(_) => {
            debug!("metrics: {what}: timed out");
            None
        }
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Serves `endpoint` on `listener` until `shutdown` completes: each connection on its own
/// task, HTTP/1.1 with keep-alive. Accept errors (out of descriptors, say) are logged and
/// the loop goes on after a short pause.
pub async fn serve(
    listener: TcpListener,
    endpoint: Arc<Endpoint>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let ep = endpoint.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let ep = ep.clone();
                async move { Ok::<_, Infallible>(ep.respond(&req).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(%peer, error = %e, "metrics endpoint: connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_alone_binds_to_loopback_and_a_full_address_is_used_as_given() {
        let lo = |p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p);
        assert_eq!(parse_metrics_addr("9464"), Ok(lo(9464)));
        assert_eq!(parse_metrics_addr(":9464"), Ok(lo(9464)));
        assert_eq!(parse_metrics_addr("0"), Ok(lo(0)));
        assert_eq!(
            parse_metrics_addr("0.0.0.0:9464"),
            Ok("0.0.0.0:9464".parse().unwrap())
        );
        assert_eq!(
            parse_metrics_addr("[::1]:9464"),
            Ok("[::1]:9464".parse().unwrap())
        );
        for bad in [
            "",
            ":",
            "99999",
            "localhost:9464",
            "127.0.0.1",
            "x",
            "9464x",
        ] {
            assert!(parse_metrics_addr(bad).is_err(), "{bad:?} accepted");
        }
    }
}
