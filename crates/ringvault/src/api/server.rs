//! The HTTP API of a server-mode server: the same paths as classic mode where the operation
//! exists there, answered by Byzantine quorum storage. `PUT /v1/objects` (the body, at most
//! 4 MiB, stored under its BLAKE3 hash: server mode's objects are content-addressed and need no
//! certificate), `GET /v1/objects/{id}`, `PUT|DELETE /v1/records/{name}` and `GET
//! /v1/records/{owner}/{name}` (as in classic mode; every write waits for 2f + 1 signed acks,
//! every read is atomic), `POST /v1/server/leave`, `/v1/status` (epoch, committee, ranges,
//! counters), `/metrics` and the dashboard at `/`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use ringvault_bft::{MembershipError, QuorumError, MAX_OBJECT};
use ringvault_net::{ServerOpError, ServerStatus};
use ringvault_types::RecordValue;
use serde_json::json;

use crate::api::auth::{self, HttpAuth};
use crate::api::conns::{self, ConnCounters, HttpLimits};
use crate::api::http::{counter, histogram, parse_owner, ApiError};
use crate::api::records::{name_of, record_response, value_fits, write_headers};
use crate::node::server::{RecordPutError, RecordWritten, ServerApi};

const DASHBOARD: &str = include_str!("server_dashboard.html");

#[derive(Clone)]
struct ServerApp {
    api: ServerApi,
    http: SocketAddr,
    conns: Arc<ConnCounters>,
}

impl From<ServerOpError> for ApiError {
    fn from(e: ServerOpError) -> Self {
        let (status, code) = match &e {
            ServerOpError::Quorum(QuorumError::Unavailable { .. }) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            ServerOpError::Quorum(QuorumError::WrongEpoch(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "wrong_epoch")
            }
            ServerOpError::Quorum(QuorumError::Invalid(_)) => (StatusCode::BAD_REQUEST, "invalid"),
            ServerOpError::Membership(MembershipError::NotMember(_)) => {
                (StatusCode::CONFLICT, "not_member")
            }
            ServerOpError::Membership(MembershipError::NotCommittee) => {
                (StatusCode::CONFLICT, "not_committee")
            }
            ServerOpError::Stopped => (StatusCode::SERVICE_UNAVAILABLE, "stopped"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<RecordPutError> for ApiError {
    fn from(e: RecordPutError) -> Self {
        match e {
            RecordPutError::Server(e) => e.into(),
            RecordPutError::Record(e) => {
                ApiError::new(StatusCode::BAD_REQUEST, e.reason(), e.to_string())
            }
            e @ RecordPutError::Stale { .. } => {
                ApiError::new(StatusCode::CONFLICT, "stale_version", e.to_string())
            }
        }
    }
}

/// Serves a server's API on `listener`, within `limits`, until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    api: ServerApi,
    limits: HttpLimits,
    auth: HttpAuth,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let http = listener.local_addr()?;
    let conns = Arc::new(ConnCounters::default());
    let app = Router::new()
        .route("/", get(dashboard))
        .route("/v1/status", get(status))
        .route("/v1/objects", put(put_object))
        .route("/v1/objects/{id}", get(get_object))
        .route("/v1/records/{name}", put(put_record).delete(delete_record))
        .route("/v1/records/{owner}/{name}", get(get_record))
        .route("/v1/server/leave", post(leave))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        // Room for the largest object; the handlers give the size error (axum's default cap
        // is 2 MB).
        .layer(axum::extract::DefaultBodyLimit::max(
            MAX_OBJECT + (64 << 10),
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(auth),
            auth::guard,
        ))
        .with_state(ServerApp {
            api,
            http,
            conns: conns.clone(),
        });
    conns::serve(listener, app, limits, conns, shutdown).await;
    Ok(())
}

async fn dashboard() -> Html<&'static str> {
    Html(DASHBOARD)
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint in server mode; try /v1/status, /v1/objects, /v1/records, /v1/server/leave, /metrics or /",
    )
}

async fn status_of(app: &ServerApp) -> Result<ServerStatus, ApiError> {
    Ok(app.api.handle.status().await?)
}

async fn status(State(app): State<ServerApp>) -> Result<Json<serde_json::Value>, ApiError> {
    let st = status_of(&app).await?;
    let mut v = serde_json::to_value(&st)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    v["http"] = json!(format!("http://{}", app.http));
    Ok(Json(v))
}

fn no_query(query: Option<&str>, what: &str) -> Result<(), ApiError> {
    match query {
        None | Some("") => Ok(()),
        Some(q) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("unknown query {q:?}: {what}"),
        )),
    }
}

async fn put_object(
    State(app): State<ServerApp>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    no_query(
        query.as_deref(),
        "server mode stores an object under the hash of its bytes, on its fixed replica group: it takes no name or replica count",
    )?;
    if body.len() > MAX_OBJECT {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "server mode stores objects of at most {MAX_OBJECT} bytes, got {}",
                body.len()
            ),
        ));
    }
    let size = body.len();
    let (id, acks) = app.api.put_object(body.to_vec()).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": id.to_string(), "size": size, "acks": acks })),
    )
        .into_response())
}

async fn get_object(
    State(app): State<ServerApp>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = crate::api::objects::object_id(id)?;
    match app.api.get_object(id).await? {
        Some(bytes) => {
            Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
        }
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "a quorum of the object's replica group has no object with this id",
        )),
    }
}

fn written(w: &RecordWritten) -> serde_json::Value {
    let b = &w.record.body;
    json!({
        "key": w.record.key().to_string(),
        "owner": crate::api::objects::to_hex(&b.owner.0),
        "name": b.name,
        "version": b.version,
        "deleted": w.record.is_deleted(),
        "acks": w.acks,
    })
}

async fn write_record(
    app: &ServerApp,
    name: &str,
    headers: &HeaderMap,
    value: RecordValue,
    body_empty: bool,
) -> Result<Json<serde_json::Value>, ApiError> {
    let deleting = value == RecordValue::Deleted;
    let h = write_headers(headers, name, deleting)?;
    if h.quorum.is_some() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_quorum",
            "server mode's writes always wait for 2f + 1 signed acks; drop X-Record-Quorum",
        ));
    }
    let w = match h.signed {
        Some(_) if !body_empty => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "with X-Record-Signed the value is in the record; send no body",
            ))
        }
        Some(record) => app.api.put_signed(record).await?,
        None => app.api.put_record(name, value, h.version).await?,
    };
    Ok(Json(written(&w)))
}

async fn put_record(
    State(app): State<ServerApp>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    name_of(&name)?;
    value_fits(body.len())?;
    let empty = body.is_empty();
    let value = RecordValue::Inline(body.to_vec());
    write_record(&app, &name, &headers, value, empty).await
}

async fn delete_record(
    State(app): State<ServerApp>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    name_of(&name)?;
    write_record(&app, &name, &headers, RecordValue::Deleted, true).await
}

async fn get_record(
    State(app): State<ServerApp>,
    Path((owner, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    name_of(&name)?;
    no_query(
        query.as_deref(),
        "server mode's reads always ask a quorum (there is no local=true)",
    )?;
    let owner = parse_owner(&owner, || Ok(app.api.operator()))?;
    match app.api.get_record(owner, &name).await? {
        Some(record) => Ok(record_response(&record, [])),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "a quorum of the record's replica group holds no such record",
        )),
    }
}

async fn leave(State(app): State<ServerApp>) -> Result<Json<serde_json::Value>, ApiError> {
    app.api.handle.leave().await?;
    let st = status_of(&app).await?;
    Ok(Json(json!({
        "leaving": true,
        "epoch": st.epoch,
        "message": "asked the committee; this server leaves at the next epoch change and the daemon then exits",
    })))
}

/// Prometheus text of a server's counters.
pub fn render_metrics(st: &ServerStatus) -> String {
    let mut out = String::new();
    let m = &st.membership;
    let r = &st.replica;
    let d = &st.metrics;
    let gauges: [(&str, &str, u64); 6] = [
        ("ringvault_server_epoch", "The epoch in force.", st.epoch),
        (
            "ringvault_server_members",
            "Servers in the configuration in force.",
            st.members.len() as u64,
        ),
        (
            "ringvault_server_serving",
            "1 while the configuration's lease runs (the server serves its ranges).",
            st.serving as u64,
        ),
        (
            "ringvault_server_on_committee",
            "1 when this server holds a committee seat.",
            st.members.iter().any(|v| v.id == st.id && v.seat.is_some()) as u64,
        ),
        (
            "ringvault_server_syncing",
            "1 while its replica takes a range over (it answers NotReady meanwhile).",
            st.syncing as u64,
        ),
        (
            "ringvault_server_items",
            "Items its replica holds.",
            st.items as u64,
        ),
    ];
    for (name, help, v) in gauges {
        counter(&mut out, name, help, "gauge", v);
    }
    let counters: [(&str, &str, u64); 17] = [
        (
            "ringvault_server_configs_adopted_total",
            "Configurations adopted.",
            m.adopted,
        ),
        (
            "ringvault_server_decisions_total",
            "Epochs this committee member decided.",
            m.decisions,
        ),
        (
            "ringvault_server_view_changes_total",
            "Consensus rounds started beyond round 0 (view changes).",
            m.view_changes,
        ),
        (
            "ringvault_server_evictions_total",
            "Members evicted by adopted configurations.",
            m.evictions,
        ),
        (
            "ringvault_server_invalid_proposals_total",
            "Proposals judged invalid (not prevoted).",
            m.invalid_proposals,
        ),
        (
            "ringvault_server_membership_refused_total",
            "Membership messages refused (bad signature, wrong committee, forged configuration).",
            m.refused,
        ),
        (
            "ringvault_server_equivocations_total",
            "Equivocations seen.",
            m.equivocations,
        ),
        (
            "ringvault_server_acks_total",
            "Writes this replica acked.",
            r.acked,
        ),
        (
            "ringvault_server_replica_refused_total",
            "Requests this replica refused.",
            r.refused,
        ),
        (
            "ringvault_server_taken_over_total",
            "Items taken over at epoch changes.",
            r.taken_over,
        ),
        (
            "ringvault_server_forged_total",
            "Forged items refused (in hand-overs and in replies).",
            r.forged + st.client.forged,
        ),
        (
            "ringvault_server_written_back_total",
            "Records written back by atomic reads.",
            st.client.written_back,
        ),
        (
            "ringvault_server_puts_total",
            "Writes that reached a quorum.",
            d.puts_ok,
        ),
        (
            "ringvault_server_put_failures_total",
            "Writes that failed.",
            d.puts_failed,
        ),
        (
            "ringvault_server_gets_total",
            "Reads that completed.",
            d.gets_ok,
        ),
        (
            "ringvault_server_get_failures_total",
            "Reads that failed.",
            d.gets_failed,
        ),
        (
            "ringvault_server_decode_errors_total",
            "Frames that did not decode.",
            d.decode_errors,
        ),
    ];
    for (name, help, v) in counters {
        counter(&mut out, name, help, "counter", v);
    }
    counter(
        &mut out,
        "ringvault_server_not_ready_seconds_total",
        "Time its replica spent not ready after epoch changes and restarts.",
        "counter",
        r.not_ready_ms as f64 / 1e3,
    );
    histogram(
        &mut out,
        "ringvault_server_put_latency_seconds",
        "Latency of completed writes.",
        &d.put_latency_ms,
        1e-3,
    );
    histogram(
        &mut out,
        "ringvault_server_get_latency_seconds",
        "Latency of completed reads.",
        &d.get_latency_ms,
        1e-3,
    );
    counter(
        &mut out,
        "ringvault_connections_open",
        "QUIC connections open now.",
        "gauge",
        st.connections_open,
    );
    counter(
        &mut out,
        "ringvault_bytes_in_total",
        "Bytes received in frames.",
        "counter",
        st.bytes_in,
    );
    counter(
        &mut out,
        "ringvault_bytes_out_total",
        "Bytes sent in frames.",
        "counter",
        st.bytes_out,
    );
    out
}

async fn metrics(State(app): State<ServerApp>) -> Result<Response, ApiError> {
    let st = status_of(&app).await?;
    let mut text = render_metrics(&st);
    counter(
        &mut text,
        "ringvault_http_connections_open",
        "HTTP API connections open now.",
        "gauge",
        app.conns.open.load(Ordering::Relaxed),
    );
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}
