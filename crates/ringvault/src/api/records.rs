//! The records half of the HTTP API: `PUT /v1/records/{name}` (the body is the value, at most
//! 64 KiB; signed with this node's operator key; the version is `X-Record-Version` or one above
//! the highest a replica holds), `GET /v1/records/{owner}/{name}` (the value; `X-Record-Version`,
//! `X-Record-Timestamp` and `X-Record-Conflict` headers; `owner` is 64 hex digits or `self`) and
//! `DELETE /v1/records/{name}` (a tombstone at the next version), and
//! `GET /v1/records/{owner}/{name}/events`: Server-Sent Events, `event: version` with JSON
//! `{version, timestamp, deleted, value, encoding}` for the current state and then each new
//! version as it is published, every one verified (the owner's signature, higher than the last).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ringvault_records::RecordsError;
use ringvault_types::{PublicKey, Record, RecordValue, MAX_RECORD_VALUE};
use serde_json::json;

use crate::api::http::{check_name_chars, ApiError, App};
use crate::api::objects::{from_hex, to_hex};
use crate::node::records::{RecordsClient, RecordsRequestError};

fn client(app: &App) -> Result<&RecordsClient, ApiError> {
    app.records.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "no_records",
            "this node runs without records",
        )
    })
}

impl From<RecordsRequestError> for ApiError {
    fn from(e: RecordsRequestError) -> Self {
        let e = match e {
            RecordsRequestError::Net(n) => return n.into(),
            other => other,
        };
        let (status, code) = match &e {
            RecordsRequestError::Net(_) => (StatusCode::BAD_GATEWAY, "ring_error"),
            RecordsRequestError::Record(e) => (StatusCode::BAD_REQUEST, e.reason()),
            RecordsRequestError::Records(RecordsError::Invalid(_)) => {
                (StatusCode::BAD_REQUEST, "invalid")
            }
            RecordsRequestError::Records(RecordsError::Stale { .. }) => {
                (StatusCode::CONFLICT, "stale_version")
            }
            RecordsRequestError::Records(RecordsError::Conflict(_)) => {
                (StatusCode::CONFLICT, "conflict")
            }
            RecordsRequestError::Records(RecordsError::Timeout { .. }) => {
                (StatusCode::GATEWAY_TIMEOUT, "timeout")
            }
            RecordsRequestError::Records(RecordsError::NoSpace) => {
                (StatusCode::INSUFFICIENT_STORAGE, "no_space")
            }
            RecordsRequestError::Records(RecordsError::Quorum(_)) => {
                (StatusCode::BAD_REQUEST, "bad_quorum")
            }
            RecordsRequestError::Busy => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            RecordsRequestError::NoGroups => (StatusCode::NOT_IMPLEMENTED, "no_groups"),
            RecordsRequestError::Watch(_) => (StatusCode::SERVICE_UNAVAILABLE, "watch_failed"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

fn name_of(name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > ringvault_types::MAX_RECORD_NAME {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_name",
            format!("a record name is 1 to 255 bytes, got {}", name.len()),
        ));
    }
    check_name_chars("record", name)
}

fn version_header(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(v) = headers.get("x-record-version") else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_version",
                "X-Record-Version is a whole number (the version to write)",
            )
        })
}

/// `PUT /v1/records/{name}`.
pub async fn put(
    State(app): State<App>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    name_of(&name)?;
    if body.len() > MAX_RECORD_VALUE {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "value_too_large",
            format!(
                "a record value is at most {MAX_RECORD_VALUE} bytes, got {}; store it as an object and put its id",
                body.len()
            ),
        ));
    }
    let version = version_header(&headers)?;
    let c = client(&app)?;
    let w = c
        .put(
            &app.node,
            &name,
            RecordValue::Inline(body.to_vec()),
            version,
        )
        .await?;
    Ok(Json(written(&w)))
}

/// `DELETE /v1/records/{name}`: a tombstone above the highest version.
pub async fn delete(
    State(app): State<App>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    name_of(&name)?;
    let version = version_header(&headers)?;
    let c = client(&app)?;
    let w = c
        .put(&app.node, &name, RecordValue::Deleted, version)
        .await?;
    Ok(Json(written(&w)))
}

fn written(w: &ringvault_records::Written) -> serde_json::Value {
    let b = &w.record.body;
    json!({
        "key": w.record.key().to_string(),
        "owner": to_hex(&b.owner.0),
        "name": b.name,
        "version": b.version,
        "deleted": w.record.is_deleted(),
        "acks": w.acks.iter().map(|a| a.node().to_string()).collect::<Vec<_>>(),
    })
}

fn parse_owner(s: &str, app: &App) -> Result<PublicKey, ApiError> {
    if s == "self" {
        return Ok(client(app)?.owner());
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
    let key: [u8; 32] = from_hex(s)
        .and_then(|v| v.try_into().ok())
        .ok_or_else(bad)?;
    Ok(PublicKey(key))
}

/// `GET /v1/records/{owner}/{name}`.
pub async fn get(
    State(app): State<App>,
    Path((owner, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    name_of(&name)?;
    let owner = parse_owner(&owner, &app)?;
    let r = client(&app)?.get(&app.node, owner, &name).await?;
    let Some(record) = r.record else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no replica holds this record",
        ));
    };
    let b = &record.body;
    let headers = [
        ("x-record-version", b.version.to_string()),
        ("x-record-timestamp", b.timestamp.to_string()),
        ("x-record-conflict", r.conflict.to_string()),
    ];
    match &b.value {
        RecordValue::Inline(v) => Ok((headers, v.clone()).into_response()),
        RecordValue::Object(id) => {
            Ok((headers, Json(json!({"object": id.to_string()}))).into_response())
        }
        RecordValue::Deleted => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "deleted",
            format!("the record was deleted at version {}", b.version),
        )),
    }
}

fn version_event(r: &Record) -> Event {
    let b = &r.body;
    let (value, encoding) = match &b.value {
        RecordValue::Inline(v) => match std::str::from_utf8(v) {
            Ok(s) => (json!(s), "utf8"),
            Err(_) => (json!(crate::node::topics::base64(v)), "base64"),
        },
        RecordValue::Object(id) => (json!(id.to_string()), "object"),
        RecordValue::Deleted => (serde_json::Value::Null, "none"),
    };
    Event::default().event("version").data(
        json!({
            "version": b.version,
            "timestamp": b.timestamp,
            "deleted": r.is_deleted(),
            "value": value,
            "encoding": encoding,
        })
        .to_string(),
    )
}

/// `GET /v1/records/{owner}/{name}/events`.
pub async fn events(
    State(app): State<App>,
    Path((owner, name)): Path<(String, String)>,
) -> Result<Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>>, ApiError>
{
    name_of(&name)?;
    let owner = parse_owner(&owner, &app)?;
    let mut watch = client(&app)?.watch(&app.node, owner, &name).await?;
    let current = watch.current().await?;
    let hello = Event::default()
        .event("watching")
        .data(json!({ "owner": to_hex(&owner.0), "name": name }).to_string());
    let first: Vec<Event> = std::iter::once(hello)
        .chain(current.as_ref().map(version_event))
        .collect();
    let stream = futures_util::stream::unfold((first, watch), |(mut first, mut w)| async move {
        if !first.is_empty() {
            let e = first.remove(0);
            return Some((Ok(e), (first, w)));
        }
        let r = w.next().await?;
        Some((Ok(version_event(&r)), (first, w)))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15))))
}
