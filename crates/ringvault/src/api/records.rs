//! The records half of the HTTP API: `PUT /v1/records/{name}` (the body is the value, at most
//! 64 KiB; signed with this node's operator key; the version is `X-Record-Version` or one above
//! the highest a replica holds; or, with `X-Record-Signed`, a whole record the user signed with
//! their own key, in hex, and no body), `GET /v1/records/{owner}/{name}` (the value;
//! `X-Record-Version`, `X-Record-Timestamp` and `X-Record-Conflict` headers, also on the 404 of
//! a deleted record, and `X-Record-Answers` and `X-Record-Repaired`: replicas that answered, and
//! those sent the newest state because they lagged; `owner` is 64 hex digits or `self`;
//! `?local=true`: only what this node holds as a replica, asking nobody) and `DELETE /v1/records/{name}` (a tombstone at the next version,
//! or a signed one in `X-Record-Signed`); writes take `X-Record-Quorum` (acknowledgements to wait
//! for, 1 to k; default k); and
//! `GET /v1/records/{owner}/{name}/events`: Server-Sent Events, `event: version` with JSON
//! `{version, timestamp, deleted, value, encoding}` for the current state and then each new
//! version as it is published, every one verified (the owner's signature, higher than the last).

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ringvault_records::RecordsError;
use ringvault_types::{record_key, PublicKey, Record, RecordValue, MAX_RECORD_VALUE};
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

pub(crate) fn name_of(name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > ringvault_types::MAX_RECORD_NAME {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_name",
            format!("a record name is 1 to 255 bytes, got {}", name.len()),
        ));
    }
    check_name_chars("record", name)
}

/// A record value of `len` bytes fits inline (413 `value_too_large` when it does not).
pub(crate) fn value_fits(len: usize) -> Result<(), ApiError> {
    if len > MAX_RECORD_VALUE {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "value_too_large",
            format!(
                "a record value is at most {MAX_RECORD_VALUE} bytes, got {len}; store it as an object and put its id"
            ),
        ));
    }
    Ok(())
}

/// A whole-number header, if given.
fn number_header<T: std::str::FromStr>(
    headers: &HeaderMap,
    name: &str,
    code: &'static str,
    what: &str,
) -> Result<Option<T>, ApiError> {
    let Some(v) = headers.get(name) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, code, format!("{name} is {what}")))
}

/// How a write is made: `X-Record-Version`, `X-Record-Quorum`, and a record the user signed
/// (`X-Record-Signed`) for `name` and this operation (`deleting`).
pub(crate) struct WriteHeaders {
    pub(crate) version: Option<u64>,
    pub(crate) quorum: Option<u8>,
    pub(crate) signed: Option<Record>,
}

pub(crate) fn write_headers(
    headers: &HeaderMap,
    name: &str,
    deleting: bool,
) -> Result<WriteHeaders, ApiError> {
    let version = number_header(
        headers,
        "x-record-version",
        "bad_version",
        "a whole number (the version to write)",
    )?;
    let quorum = number_header(
        headers,
        "x-record-quorum",
        "bad_quorum",
        "a whole number (acknowledgements to wait for, 1 to k)",
    )?;
    let signed = match headers.get(SIGNED_HEADER) {
        None => None,
        Some(v) => Some(signed_record(v, name, deleting)?),
    };
    if signed.is_some() && version.is_some() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "a signed record carries its version; drop X-Record-Version",
        ));
    }
    Ok(WriteHeaders {
        version,
        quorum,
        signed,
    })
}

/// Request header: a whole record signed with the user's own key, lowercase hex of its
/// encoding (`ringvault record put --key` makes one).
pub const SIGNED_HEADER: &str = "x-record-signed";

/// The record in `X-Record-Signed`, checked: it decodes, is named `name`, and is a tombstone
/// exactly when `deleting`.
fn signed_record(v: &HeaderValue, name: &str, deleting: bool) -> Result<Record, ApiError> {
    let invalid = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid", m);
    let bytes = v
        .to_str()
        .ok()
        .and_then(from_hex)
        .ok_or_else(|| invalid(format!("{SIGNED_HEADER} is not hex")))?;
    let r = Record::decode(&bytes).map_err(|e| invalid(format!("{SIGNED_HEADER}: {e}")))?;
    if r.body.name != name {
        return Err(invalid(format!(
            "the signed record is named {:?}, not {name:?}",
            r.body.name
        )));
    }
    if r.is_deleted() != deleting {
        let m = if deleting {
            "DELETE takes a signed tombstone (a record with no value)"
        } else {
            "PUT takes a signed record with a value; delete with DELETE"
        };
        return Err(invalid(m.into()));
    }
    // Its signature is the records service's to check (a 400 `invalid` from `put`).
    Ok(r)
}

/// `PUT /v1/records/{name}`.
pub async fn put(
    State(app): State<App>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    name_of(&name)?;
    value_fits(body.len())?;
    let h = write_headers(&headers, &name, false)?;
    let c = client(&app)?;
    let w = match h.signed {
        Some(record) => {
            if !body.is_empty() {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "with X-Record-Signed the value is in the record; send no body",
                ));
            }
            c.put_signed(&app.node, record, h.quorum).await?
        }
        None => {
            let value = RecordValue::Inline(body.to_vec());
            c.put(&app.node, &name, value, h.version, h.quorum).await?
        }
    };
    Ok(Json(written(&w)))
}

/// `DELETE /v1/records/{name}`: a tombstone above the highest version.
pub async fn delete(
    State(app): State<App>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    name_of(&name)?;
    let h = write_headers(&headers, &name, true)?;
    let c = client(&app)?;
    let w = match h.signed {
        Some(record) => c.put_signed(&app.node, record, h.quorum).await?,
        None => {
            c.put(&app.node, &name, RecordValue::Deleted, h.version, h.quorum)
                .await?
        }
    };
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
    crate::api::http::parse_owner(s, || Ok(client(app)?.owner()))
}

/// `GET /v1/records/{owner}/{name}`.
pub async fn get(
    State(app): State<App>,
    Path((owner, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    name_of(&name)?;
    let owner = parse_owner(&owner, &app)?;
    let key = record_key(&owner, &name);
    match query.as_deref() {
        None | Some("") => {}
        Some("local=true") => {
            // What this node holds as a replica, asking nobody.
            let held = client(&app)?.held(&app.node, key).await?;
            return Ok(Json(json!({
                "key": key.to_string(),
                "this_node": app.node.contact().id.to_string(),
                "version": held.as_ref().map(|r| r.body.version),
                "deleted": held.as_ref().map(Record::is_deleted),
            }))
            .into_response());
        }
        Some(q) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("unknown query {q:?}; the one known is local=true"),
            ))
        }
    }
    let r = client(&app)?.get(&app.node, owner, &name).await?;
    let Some(record) = r.record else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no replica holds this record",
        ));
    };
    Ok(record_response(
        &record,
        [
            ("x-record-conflict", r.conflict.to_string()),
            ("x-record-answers", r.answers.to_string()),
            ("x-record-repaired", r.repaired.to_string()),
        ],
    ))
}

/// A record as `GET` answers it: the value (an object's id as JSON; a tombstone as a 404
/// `deleted`), with its version and timestamp and `extra` in headers.
pub(crate) fn record_response<const N: usize>(
    record: &Record,
    extra: [(&'static str, String); N],
) -> Response {
    let b = &record.body;
    let mut headers = vec![
        ("x-record-version", b.version.to_string()),
        ("x-record-timestamp", b.timestamp.to_string()),
    ];
    headers.extend(extra);
    let headers = axum::response::AppendHeaders(headers);
    match &b.value {
        RecordValue::Inline(v) => (headers, v.clone()).into_response(),
        RecordValue::Object(id) => {
            (headers, Json(json!({"object": id.to_string()}))).into_response()
        }
        // The version goes along, so a writer can write above the tombstone.
        RecordValue::Deleted => (
            StatusCode::NOT_FOUND,
            headers,
            ApiError::new(
                StatusCode::NOT_FOUND,
                "deleted",
                format!("the record was deleted at version {}", b.version),
            ),
        )
            .into_response(),
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
