//! The HTTP API of one node: JSON under `/v1`, Prometheus text at `/metrics`, the dashboard at
//! `/`. Errors are JSON `{ "error": ..., "code": ... }` with a fitting status.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use ringvault_net::{Histogram, NetError, NodeHandle, Status};
use ringvault_node::CommandError;
use ringvault_types::Id;
use serde_json::json;

use crate::api::auth::{self, HttpAuth};
use crate::api::conns::{self, ConnCounters, HttpLimits};
use crate::api::objects;
use crate::api::records;
use crate::api::topics;
use crate::node::objects::{ObjectsClient, StorageState};
use crate::node::records::RecordsClient;
use crate::node::topics::TopicsClient;

const DASHBOARD: &str = include_str!("dashboard.html");

/// An API error: HTTP status, a machine-readable code and a message saying what to do.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": self.message, "code": self.code }));
        (self.status, body).into_response()
    }
}

impl From<NetError> for ApiError {
    fn from(e: NetError) -> Self {
        let (status, code) = match &e {
            NetError::Command(CommandError::NotJoined) => {
                (StatusCode::SERVICE_UNAVAILABLE, "not_joined")
            }
            NetError::Command(CommandError::Busy) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            NetError::Command(CommandError::Timeout) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            NetError::Command(CommandError::NotSecure) => (StatusCode::CONFLICT, "not_secure"),
            NetError::Stopped => (StatusCode::SERVICE_UNAVAILABLE, "stopped"),
            _ => (StatusCode::BAD_GATEWAY, "ring_error"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// The client handles of the services a node runs, for the API (`None`: not run here).
#[derive(Clone, Default)]
pub struct Clients {
    /// PAST.
    pub objects: Option<ObjectsClient>,
    /// Scribe.
    pub topics: Option<TopicsClient>,
    /// Signed mutable records.
    pub records: Option<RecordsClient>,
}

#[derive(Clone)]
pub struct App {
    pub node: NodeHandle,
    pub http: SocketAddr,
    /// PAST on this node, if it stores objects.
    pub objects: Option<ObjectsClient>,
    /// Scribe on this node, if it takes part in groups.
    pub topics: Option<TopicsClient>,
    /// Records on this node, if it keeps them.
    pub records: Option<RecordsClient>,
    /// What the server's connections did.
    pub conns: Arc<ConnCounters>,
}

/// An owner key in a path: 64 hex digits, or `self` for the node's operator key (`operator`).
pub fn parse_owner(
    s: &str,
    operator: impl FnOnce() -> Result<ringvault_types::PublicKey, ApiError>,
) -> Result<ringvault_types::PublicKey, ApiError> {
    if s == "self" {
        return operator();
    }
    let bad = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_owner",
            format!("{s:?} is not an owner key; give 64 hex digits (or `self`)"),
        )
    };
    // Hex digits only: `from_str_radix` alone would take a sign ("+f").
    if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let key: [u8; 32] = crate::api::objects::from_hex(s)
        .and_then(|v| v.try_into().ok())
        .ok_or_else(bad)?;
    Ok(ringvault_types::PublicKey(key))
}

/// The router for `node`, whose API listens on `http`.
fn router(
    node: NodeHandle,
    http: SocketAddr,
    clients: Clients,
    conns: Arc<ConnCounters>,
    auth: Arc<HttpAuth>,
) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/v1/status", get(status))
        .route("/v1/route/{key}", get(route))
        .route("/v1/objects", put(objects::put))
        .route(
            "/v1/objects/{id}",
            get(objects::get).delete(objects::delete),
        )
        .route("/v1/objects/{id}/replicas", get(objects::replicas))
        .route("/v1/quota/{owner}", get(objects::quota))
        .route("/v1/topics", get(topics::list))
        .route("/v1/topics/{name}/messages", post(topics::publish))
        .route("/v1/topics/{name}/events", get(topics::events))
        .route("/v1/topics/{name}/anycast", post(topics::anycast))
        .route(
            "/v1/records/{name}",
            put(records::put).delete(records::delete),
        )
        .route("/v1/records/{owner}/{name}", get(records::get))
        .route("/v1/records/{owner}/{name}/events", get(records::events))
        .route("/v1/admin/revocations", post(revocations))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(auth, auth::guard))
        .with_state(App {
            node,
            http,
            objects: clients.objects,
            topics: clients.topics,
            records: clients.records,
            conns,
        })
}

/// Serves the API on `listener`, within `limits`, until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    node: NodeHandle,
    clients: Clients,
    limits: HttpLimits,
    auth: HttpAuth,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let http = listener.local_addr()?;
    let conns = Arc::new(ConnCounters::default());
    let app = router(node, http, clients, conns.clone(), Arc::new(auth));
    conns::serve(listener, app, limits, conns, shutdown).await;
    Ok(())
}

async fn dashboard() -> Html<&'static str> {
    Html(DASHBOARD)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    if uri.path().starts_with("/v1/topics//") {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_topic",
            "a topic name is 1 to 256 bytes, got 0",
        );
    }
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; try /v1/status, /v1/route/{key}, /v1/objects, /v1/records, /v1/topics, /metrics or /",
    )
}

async fn status(State(app): State<App>) -> Result<Json<serde_json::Value>, ApiError> {
    let st = app.node.status().await?;
    let mut v = serde_json::to_value(&st)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    v["http"] = json!(format!("http://{}", app.http));
    if let Some(store) = &app.objects {
        if let Some(StorageState {
            usage: u,
            health: h,
            under_replicated,
            audits,
            lookups,
        }) = store.usage(&app.node).await?
        {
            if let Some((a, suspects)) = audits {
                v["audits"] = json!({
                    "sent": a.sent,
                    "passed": a.passed,
                    "failed": a.failed,
                    "missed": a.missed,
                    "answered": a.answered,
                    "accusations": a.accusations,
                    "bytes": a.bytes,
                    "suspects": suspects.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                });
            }
            v["storage"] = json!({
                "under_replicated": under_replicated,
                "capacity": u.capacity,
                "used": u.used,
                "cached": u.cached,
                "free": u.free(),
                "disk_free": u.disk_free,
                "health": {
                    "disk_full": h.disk_full,
                    "io_errors": h.io_errors,
                    "reopened": h.reopened,
                    "discarded": h.discarded,
                    "busy": h.busy,
                },
                "lookups": {
                    "resent": lookups.resent,
                    "unsettled": lookups.unsettled,
                    "handoffs_redone": lookups.handoffs_redone,
                    "latency_ms": lookups.latency.as_millis_f64(),
                },
            });
        }
    }
    Ok(Json(v))
}

/// Parses a key given in a URL: 64 hex digits.
fn parse_key(s: &str) -> Result<Id, ApiError> {
    s.parse().map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_key",
            format!(
                "{s:?} is not a key ({e}); a key is 64 hex digits, e.g. from `ringvault id NAME`"
            ),
        )
    })
}

/// `?secure=R` (1 to 32): route securely to the key's R closest nodes instead of probing the
/// path; no query: a traced probe.
fn route_query(query: Option<&str>) -> Result<Option<u8>, ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m);
    let mut secure = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("secure", v)) => {
                secure = Some(
                    v.parse::<u8>()
                        .ok()
                        .filter(|r| (1..=32).contains(r))
                        .ok_or_else(|| {
                            bad(format!("secure={v:?}: give a replica count from 1 to 32"))
                        })?,
                )
            }
            _ => {
                return Err(bad(format!(
                    "unknown parameter {pair:?}; the one known is secure=R"
                )))
            }
        }
    }
    Ok(secure)
}

async fn route(
    State(app): State<App>,
    key: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Path(key) = key.map_err(|e| {
        let msg = format!("{}; a key is 64 hex digits", e.body_text());
        ApiError::new(StatusCode::BAD_REQUEST, "bad_key", msg)
    })?;
    let key = parse_key(&key)?;
    if let Some(r) = route_query(query.as_deref())? {
        let rep = app.node.secure_route(key, r).await?;
        let to: Vec<_> = rep
            .sent_to
            .iter()
            .map(|c| json!({ "id": c.id.to_string(), "addr": c.addr.to_string() }))
            .collect();
        return Ok(Json(json!({
            "key": key.to_string(),
            "secure": true,
            "replica_set": to,
            "redundant": rep.redundant,
        })));
    }
    let r = app.node.route(key).await?;
    let hops: Vec<_> = r
        .path
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({
                "id": c.id.to_string(),
                "addr": c.addr.to_string(),
                "rtt_ms_to_next": r.hop_rtts.get(i).copied().flatten().map(|d| d.as_millis_f64()),
            })
        })
        .collect();
    Ok(Json(json!({
        "key": key.to_string(),
        "root": { "id": r.root.id.to_string(), "addr": r.root.addr.to_string() },
        "hop_count": r.hops(),
        "hops": hops,
    })))
}

/// `POST /v1/admin/revocations`: a revocation list from the ring's CA (armored text, as
/// `ringvault ca revoke` writes it). The node checks it and adopts it if newer.
async fn revocations(
    State(app): State<App>,
    body: String,
) -> Result<Json<serde_json::Value>, ApiError> {
    let list = crate::ca::parse_revocations(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_revocations",
            format!("not a revocation list: {e:#}"),
        )
    })?;
    match app.node.revocations(list).await {
        Ok((adopted, held)) => Ok(Json(json!({ "adopted": adopted, "held": held }))),
        Err(ringvault_net::NetError::Command(e)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_revocations",
            e.to_string(),
        )),
        Err(e) => Err(e.into()),
    }
}

async fn metrics(State(app): State<App>) -> Result<Response, ApiError> {
    let st = app.node.status().await?;
    let mut text = render_metrics(&st);
    counter(
        &mut text,
        "ringvault_http_connections_open",
        "HTTP API connections open now.",
        "gauge",
        app.conns.open.load(Ordering::Relaxed),
    );
    counter(
        &mut text,
        "ringvault_http_connections_refused_total",
        "HTTP API connections closed at once because --http-max-connections were open.",
        "counter",
        app.conns.refused.load(Ordering::Relaxed),
    );
    if let Some(store) = &app.objects {
        if let Some(s) = store.usage(&app.node).await? {
            render_storage_metrics(&mut text, &s);
        }
        if let Some((managed, s)) = store.accounts(&app.node).await? {
            for (name, help, kind, v) in [
                (
                    "ringvault_accounts_managed",
                    "User accounts whose ledger this node keeps as an account manager.",
                    "gauge",
                    managed as u64,
                ),
                (
                    "ringvault_accounts_committed_total",
                    "Ledger entries this node committed as the accounts' proposer.",
                    "counter",
                    s.committed,
                ),
                (
                    "ringvault_accounts_over_quota_total",
                    "Debits refused as over the user's grant.",
                    "counter",
                    s.over_quota,
                ),
                (
                    "ringvault_accounts_bad_grants_total",
                    "Requests refused for a forged, expired, foreign or unknown-broker grant.",
                    "counter",
                    s.bad_grants,
                ),
                (
                    "ringvault_accounts_rounds_total",
                    "Agreement rounds restarted under a higher ballot.",
                    "counter",
                    s.rounds,
                ),
            ] {
                counter(&mut text, name, help, kind, v);
            }
        }
    }
    if let Some(records) = &app.records {
        let r = records.state(&app.node).await?;
        for (name, help, kind, v) in [
            (
                "ringvault_records_held",
                "Signed records this node holds as a replica.",
                "gauge",
                r.held as u64,
            ),
            (
                "ringvault_records_bytes",
                "Encoded bytes of those records.",
                "gauge",
                r.bytes,
            ),
            (
                "ringvault_records_suspect",
                "Records back from a long absence, not served until another replica confirms them.",
                "gauge",
                r.suspect as u64,
            ),
            (
                "ringvault_records_repairs_total",
                "Replicas this node's reads sent a newer version (read repair).",
                "counter",
                r.stats.repairs,
            ),
            (
                "ringvault_records_repair_bytes_total",
                "Bytes of read repair sent.",
                "counter",
                r.stats.repair_bytes,
            ),
            (
                "ringvault_records_answer_bytes_total",
                "Bytes of answers to reads sent.",
                "counter",
                r.stats.answer_bytes,
            ),
            (
                "ringvault_records_maintenance_bytes_total",
                "Bytes of records maintenance sent (offers, wants, records moved).",
                "counter",
                r.stats.maintenance_bytes,
            ),
        ] {
            counter(&mut text, name, help, kind, v);
        }
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

pub(crate) fn counter(
    out: &mut String,
    name: &str,
    help: &str,
    kind: &str,
    v: impl std::fmt::Display,
) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
    );
}

pub(crate) fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram, scale: f64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let mut acc = 0;
    for (b, c) in h.bounds.iter().zip(&h.counts) {
        acc += c;
        let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {acc}", b * scale);
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count());
    let _ = writeln!(
        out,
        "{name}_sum {}\n{name}_count {}",
        h.sum * scale,
        h.count()
    );
}

/// Refuses a name (of an object or a topic) with control characters: NUL, newlines and escapes
/// break logs, terminals and the files people save objects under.
pub fn check_name_chars(what: &str, name: &str) -> Result<(), ApiError> {
    match name.chars().find(|c| c.is_control()) {
        Some(c) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_name",
            format!(
                "the {what} name contains the control character {c:?}; use printable characters"
            ),
        )),
        None => Ok(()),
    }
}

/// The store's space and faults, in Prometheus text.
fn render_audit_metrics(out: &mut String, (a, suspects): &(ringvault_past::AuditStats, Vec<Id>)) {
    for (name, help, kind, v) in [
        (
            "ringvault_audits_sent_total",
            "Audit challenges this node sent (first and second tries).",
            "counter",
            a.sent,
        ),
        (
            "ringvault_audits_passed_total",
            "Audits answered correctly.",
            "counter",
            a.passed,
        ),
        (
            "ringvault_audits_failed_total",
            "Audits answered wrongly (signed evidence of dropped data).",
            "counter",
            a.failed,
        ),
        (
            "ringvault_audits_missed_total",
            "Audits unanswered twice in a row (accusations made).",
            "counter",
            a.missed,
        ),
        (
            "ringvault_audits_answered_total",
            "Challenges this node answered.",
            "counter",
            a.answered,
        ),
        (
            "ringvault_audits_accusations_total",
            "Accusations received from leaf set members.",
            "counter",
            a.accusations,
        ),
        (
            "ringvault_audits_bytes_total",
            "Bytes of audit messages sent.",
            "counter",
            a.bytes,
        ),
        (
            "ringvault_audits_suspects",
            "Leaf set members this node suspects of dropping data.",
            "gauge",
            suspects.len() as u64,
        ),
    ] {
        counter(out, name, help, kind, v);
    }
}

fn render_storage_metrics(out: &mut String, s: &StorageState) {
    if let Some(a) = &s.audits {
        render_audit_metrics(out, a);
    }
    let (u, h) = (&s.usage, &s.health);
    for (name, help, kind, v) in [
        (
            "ringvault_store_under_replicated",
            "Replicas held here whose object is known to be on fewer than k nodes.",
            "gauge",
            s.under_replicated as u64,
        ),
        (
            "ringvault_lookup_resends_total",
            "Tries of this node's lookups routed again: no answer came in a few times the usual lookup latency, or a root refused as unsettled.",
            "counter",
            s.lookups.resent,
        ),
        (
            "ringvault_lookup_unsettled_total",
            "Tries of this node's lookups that a root refused as unsettled (a node near the object failed lately), each followed by another.",
            "counter",
            s.lookups.unsettled,
        ),
        (
            "ringvault_lookup_handoffs_redone_total",
            "Lookups this node handed to a holder that then proved unresponsive, and handed on to the next.",
            "counter",
            s.lookups.handoffs_redone,
        ),
        (
            "ringvault_lookup_latency_microseconds",
            "The smoothed time this node's lookups take to be answered by another node on the first try.",
            "gauge",
            s.lookups.latency.as_micros(),
        ),
        (
            "ringvault_store_capacity_bytes",
            "Bytes of replicas this node offers (--capacity).",
            "gauge",
            u.capacity,
        ),
        (
            "ringvault_store_used_bytes",
            "Bytes held as primary or diverted replicas.",
            "gauge",
            u.used,
        ),
        (
            "ringvault_store_cached_bytes",
            "Bytes held as cache.",
            "gauge",
            u.cached,
        ),
        (
            "ringvault_store_free_bytes",
            "Bytes a new replica may use: the capacity left, at most what the disk has.",
            "gauge",
            u.free(),
        ),
        (
            "ringvault_store_disk_full_total",
            "Writes refused because the disk had no room.",
            "counter",
            h.disk_full,
        ),
        (
            "ringvault_store_io_errors_total",
            "Store operations that failed with an I/O error.",
            "counter",
            h.io_errors,
        ),
        (
            "ringvault_store_reopened_total",
            "Times the store reopened its database after an I/O error.",
            "counter",
            h.reopened,
        ),
        (
            "ringvault_store_discarded_total",
            "Copies found damaged on read and discarded.",
            "counter",
            h.discarded,
        ),
        (
            "ringvault_store_busy_total",
            "Writes refused because too much was waiting to be written (back-pressure).",
            "counter",
            h.busy,
        ),
    ] {
        counter(out, name, help, kind, v);
    }
    if let Some(d) = u.disk_free {
        counter(
            out,
            "ringvault_store_disk_free_bytes",
            "Bytes the filesystem can still take for this store (its share, less a reserve).",
            "gauge",
            d,
        );
    }
}

/// Prometheus text exposition of a node's counters.
pub fn render_metrics(st: &Status) -> String {
    let m = &st.metrics;
    let o = &st.overlay;
    let mut out = String::new();
    for (name, help, map) in [
        (
            "ringvault_messages_in_total",
            "Overlay messages received, by type.",
            &m.messages_in,
        ),
        (
            "ringvault_messages_out_total",
            "Overlay messages sent, by type.",
            &m.messages_out,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (kind, n) in map {
            let _ = writeln!(out, "{name}{{type=\"{kind}\"}} {n}");
        }
    }
    let name = "ringvault_peers_failed_total";
    let _ = writeln!(
        out,
        "# HELP {name} Peers declared failed, by what showed it.\n# TYPE {name} counter"
    );
    for (cause, n) in &m.peers_failed_by_cause {
        let _ = writeln!(out, "{name}{{cause=\"{cause}\"}} {n}");
    }
    counter(
        &mut out,
        "ringvault_ready",
        "1 when the node has joined a ring.",
        "gauge",
        st.ready as u8,
    );
    counter(
        &mut out,
        "ringvault_leaf_set_size",
        "Leaf set members.",
        "gauge",
        st.leaf_set_smaller.len() + st.leaf_set_larger.len(),
    );
    counter(
        &mut out,
        "ringvault_routing_table_entries",
        "Routing table entries.",
        "gauge",
        st.routing_table.len(),
    );
    counter(
        &mut out,
        "ringvault_routes_total",
        "Route probes that reached a root.",
        "counter",
        m.routes_ok,
    );
    counter(
        &mut out,
        "ringvault_route_failures_total",
        "Route probes that failed.",
        "counter",
        m.routes_failed,
    );
    histogram(
        &mut out,
        "ringvault_route_hops",
        "Overlay hops per route probe.",
        &m.route_hops,
        1.0,
    );
    histogram(
        &mut out,
        "ringvault_route_latency_seconds",
        "Route probe latency.",
        &m.route_latency_ms,
        1e-3,
    );
    histogram(
        &mut out,
        "ringvault_peer_rtt_seconds",
        "Measured round-trip times to peers.",
        &m.probe_rtt_ms,
        1e-3,
    );
    counter(
        &mut out,
        "ringvault_probe_failures_total",
        "Proximity probes that could not reach the peer.",
        "counter",
        m.probes_failed,
    );
    counter(
        &mut out,
        "ringvault_leaf_set_changes_total",
        "Leaf set membership changes.",
        "counter",
        o.leaf_changes,
    );
    counter(
        &mut out,
        "ringvault_failures_detected_total",
        "Peers declared failed.",
        "counter",
        o.peers_failed,
    );
    counter(
        &mut out,
        "ringvault_messages_delivered_total",
        "Routed messages delivered here as root.",
        "counter",
        o.delivered,
    );
    counter(
        &mut out,
        "ringvault_messages_forwarded_total",
        "Routed messages forwarded.",
        "counter",
        o.forwarded,
    );
    counter(
        &mut out,
        "ringvault_joins_refused_total",
        "Joins this node, as bootstrap, refused to start: their address started too many.",
        "counter",
        o.joins_refused,
    );
    counter(
        &mut out,
        "ringvault_reroutes_total",
        "Messages re-routed after a hop failure.",
        "counter",
        o.reroutes,
    );
    counter(
        &mut out,
        "ringvault_hop_timeouts_total",
        "Hops not acknowledged within their peer's round-trip-based timeout.",
        "counter",
        o.hop_timeouts,
    );
    counter(
        &mut out,
        "ringvault_suspicions_total",
        "Peers suspected after a missed hop acknowledgement (routed around and pinged).",
        "counter",
        o.suspicions,
    );
    counter(
        &mut out,
        "ringvault_suspicions_cleared_total",
        "Suspects that answered before they were declared failed.",
        "counter",
        o.suspicions_cleared,
    );
    counter(
        &mut out,
        "ringvault_decode_errors_total",
        "Frames that did not decode (dropped).",
        "counter",
        m.decode_errors,
    );
    counter(
        &mut out,
        "ringvault_bad_frames_total",
        "Streams dropped for an invalid frame length.",
        "counter",
        m.bad_frames,
    );
    counter(
        &mut out,
        "ringvault_connections_open",
        "QUIC connections open.",
        "gauge",
        m.connections_open,
    );
    counter(
        &mut out,
        "ringvault_connections_dialed_total",
        "QUIC connections dialed.",
        "counter",
        m.connections_dialed,
    );
    counter(
        &mut out,
        "ringvault_connections_accepted_total",
        "QUIC connections accepted.",
        "counter",
        m.connections_accepted,
    );
    counter(
        &mut out,
        "ringvault_connections_refused_total",
        "Incoming connections refused.",
        "counter",
        m.connections_refused,
    );
    let _ = writeln!(
        out,
        "# HELP ringvault_peers_refused_total Peers refused in secure mode, by reason: at the handshake, or named in a message without a certificate (unvouched_contact).\n# TYPE ringvault_peers_refused_total counter"
    );
    for (reason, n) in &m.peers_refused {
        let _ = writeln!(
            out,
            "ringvault_peers_refused_total{{reason=\"{reason}\"}} {n}"
        );
    }
    for (name, help, v) in [
        (
            "ringvault_revocations_adopted_total",
            "Newer revocation lists adopted (from the operator or a peer).",
            m.revocations_adopted,
        ),
        (
            "ringvault_revocations_refused_total",
            "Revocation lists refused: not signed by the ring's CA, or malformed.",
            m.revocations_refused,
        ),
    ] {
        counter(&mut out, name, help, "counter", v);
    }
    if let ringvault_net::SecurityStatus::Secure {
        revocations_version,
        revocations_stale,
        cert_not_after,
        ..
    } = &st.security
    {
        counter(
            &mut out,
            "ringvault_revocations_version",
            "Version of the revocation list this node holds.",
            "gauge",
            revocations_version,
        );
        counter(
            &mut out,
            "ringvault_revocations_stale",
            "1 when the revocation list is past its next update (revocations may be missing).",
            "gauge",
            *revocations_stale as u8,
        );
        counter(
            &mut out,
            "ringvault_certificate_not_after_seconds",
            "When this node's certificate expires (Unix seconds).",
            "gauge",
            cert_not_after,
        );
    }
    counter(
        &mut out,
        "ringvault_connect_failures_total",
        "Dials that failed.",
        "counter",
        m.connect_failures,
    );
    counter(
        &mut out,
        "ringvault_send_queue_drops_total",
        "Messages dropped on a full peer queue.",
        "counter",
        m.queue_drops,
    );
    counter(
        &mut out,
        "ringvault_write_failures_total",
        "Messages that could not be written.",
        "counter",
        m.write_failures,
    );
    counter(
        &mut out,
        "ringvault_uptime_seconds",
        "Seconds since the node started.",
        "gauge",
        st.uptime_secs,
    );
    out
}
