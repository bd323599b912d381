//! The storage half of the HTTP API: `PUT /v1/objects?name=N&replicas=K`, `GET /v1/objects/{id}`,
//! `GET /v1/objects/{id}/replicas`, `DELETE /v1/objects/{id}`. Each forwards to PAST on this
//! node and turns its result into JSON or bytes; PAST decides everything.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ringvault_past::{PastError, PastEvent, CHUNK_SIZE, MAX_NAME_LEN};
use ringvault_types::Id;
use serde_json::json;

use super::http::{ApiError, App};
use super::storage::StorageClient;

/// Largest object body accepted: one chunk. Larger files are not split yet.
pub const MAX_OBJECT: usize = CHUNK_SIZE;
/// Replicas when the request names none.
pub const DEFAULT_REPLICAS: u8 = 3;

fn past_error(e: PastError) -> ApiError {
    let (status, code, hint) = match &e {
        PastError::Timeout { .. } => (
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "retry; if it persists, check the ring with `ringvault status`",
        ),
        PastError::NoSpace(_) => (
            StatusCode::INSUFFICIENT_STORAGE,
            "no_space",
            "the ring is too full for this object; add nodes or capacity, or store less",
        ),
        PastError::Duplicate => (StatusCode::CONFLICT, "duplicate", "nothing was changed"),
        PastError::NotFound => (
            StatusCode::NOT_FOUND,
            "not_found",
            "no node holds this id; check it (the id `ringvault put` printed)",
        ),
        PastError::NotOwner => (
            StatusCode::FORBIDDEN,
            "not_owner",
            "ask the node that stored it (its key owns it); nothing was changed",
        ),
        PastError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid", "fix the request"),
        PastError::Busy => (
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "nothing was changed",
        ),
        PastError::Storage(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage",
            "the node's disk failed; check its logs",
        ),
    };
    ApiError::new(status, code, format!("{e}; {hint}"))
}

fn client(app: &App) -> Result<&StorageClient, ApiError> {
    app.storage.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "no_storage",
            "this node runs without storage",
        )
    })
}

fn object_id(id: Result<Path<String>, PathRejection>) -> Result<Id, ApiError> {
    let Path(s) = id.map_err(|e| {
        let msg = format!("{}; an object id is 64 hex digits", e.body_text());
        ApiError::new(StatusCode::BAD_REQUEST, "bad_id", msg)
    })?;
    s.parse().map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_id",
            format!("{s:?} is not an object id ({e}); an id is 64 hex digits, as `ringvault put` prints"),
        )
    })
}

/// `name` and `replicas` from a query string.
fn put_params(query: Option<&str>) -> Result<(String, u8), ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m);
    let (mut name, mut replicas) = (None, DEFAULT_REPLICAS);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_encoding::percent_decode_str(&v.replace('+', " "))
            .decode_utf8()
            .map_err(|_| bad(format!("{k} is not UTF-8")))?
            .into_owned();
        match k {
            "name" => name = Some(v),
            "replicas" => {
                replicas = v
                    .parse()
                    .ok()
                    .filter(|k| *k >= 1)
                    .ok_or_else(|| bad(format!("replicas={v:?}: give a whole number from 1")))?
            }
            other => {
                return Err(bad(format!(
                    "unknown parameter {other:?}; use name and replicas"
                )))
            }
        }
    }
    let name = name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad("give the object a name: PUT /v1/objects?name=NAME".into()))?;
    if name.len() > MAX_NAME_LEN {
        return Err(bad(format!("the name is longer than {MAX_NAME_LEN} bytes")));
    }
    Ok((name, replicas))
}

fn unexpected() -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "PAST answered a different request; please report this",
    )
}

pub async fn put(
    State(app): State<App>,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let store = client(&app)?;
    let (name, replicas) = put_params(query.as_deref())?;
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "{}; objects are limited to {MAX_OBJECT} bytes (one chunk) for now",
                e.body_text()
            ),
        ),
        s => ApiError::new(s, "bad_body", e.body_text()),
    })?;
    // k replicas live on the k closest nodes, which must fit in the leaf set.
    let max_k = app
        .node
        .run(|n, _| n.overlay().config().leaf_set_size / 2 + 1)
        .await?;
    if replicas as usize > max_k {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("replicas={replicas} is more than this ring keeps (at most {max_k})"),
        ));
    }
    let size = body.len();
    match store
        .insert(&app.node, name.clone(), body.to_vec(), replicas)
        .await?
    {
        PastEvent::Inserted(_, Ok(ins)) => {
            let receipts: Vec<String> = ins
                .receipts
                .iter()
                .map(|r| r.body.node.to_string())
                .collect();
            let v = json!({
                "id": ins.cert.id().to_string(),
                "name": name,
                "size": size,
                "replicas": replicas,
                "receipts": receipts,
            });
            Ok((StatusCode::CREATED, Json(v)).into_response())
        }
        PastEvent::Inserted(_, Err(e)) => Err(past_error(e)),
        _ => Err(unexpected()),
    }
}

pub async fn get(
    State(app): State<App>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let store = client(&app)?;
    let id = object_id(id)?;
    let held_here = store
        .local(&app.node, id)
        .await?
        .and_then(|h| h.kind)
        .is_some();
    match store.lookup(&app.node, id).await? {
        PastEvent::Found(_, Ok(found)) if found.cert.id() == id => {
            let mut r = found.content.into_response();
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            if let Ok(v) = HeaderValue::from_str(&app.node.contact().id.to_string()) {
                h.insert("x-ringvault-node", v);
            }
            h.insert(
                "x-ringvault-local-copy",
                HeaderValue::from_static(if held_here { "true" } else { "false" }),
            );
            Ok(r)
        }
        PastEvent::Found(_, Ok(_)) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "wrong_object",
            "a node answered with another object; retry",
        )),
        PastEvent::Found(_, Err(e)) => Err(past_error(e)),
        _ => Err(unexpected()),
    }
}

pub async fn replicas(
    State(app): State<App>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let store = client(&app)?;
    let id = object_id(id)?;
    let cert = match store.lookup(&app.node, id).await? {
        PastEvent::Found(_, Ok(found)) => found.cert,
        PastEvent::Found(_, Err(e)) => return Err(past_error(e)),
        _ => return Err(unexpected()),
    };
    let k = cert.body.replicas as usize;
    let root = app.node.route(id).await?;
    let seen = app
        .node
        .run(move |n, now| {
            n.with_service::<ringvault_past::Past, _>(now, |_, kbr| kbr.replica_set(&id, k))
        })
        .await?
        .unwrap_or_default();
    let local = store.local(&app.node, id).await?;
    let contact =
        |c: &ringvault_types::Contact| json!({"id": c.id.to_string(), "addr": c.addr.to_string()});
    Ok(Json(json!({
        "id": id.to_string(),
        "name": cert.body.name,
        "size": cert.body.size,
        "replicas": k,
        "owner": cert.body.owner.id().to_string(),
        "root": contact(&root.root),
        "hops_to_root": root.hops(),
        "replica_set_seen_from_here": seen.iter().map(contact).collect::<Vec<_>>(),
        "note": "the replica set is the k closest nodes as this node's leaf set sees them; exact when this node is near the id",
        "this_node": {
            "id": app.node.contact().id.to_string(),
            "holds": local.as_ref().and_then(|l| l.kind).map(|(k, _)| format!("{k:?}").to_lowercase()),
            "pointer_to": local.as_ref().and_then(|l| l.pointer).map(|c| contact(&c)),
        },
    })))
}

pub async fn delete(
    State(app): State<App>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let store = client(&app)?;
    let id = object_id(id)?;
    // The certificate names the owner and k; only the owner's key can reclaim.
    let cert = match store.lookup(&app.node, id).await? {
        PastEvent::Found(_, Ok(found)) => found.cert,
        PastEvent::Found(_, Err(e)) => return Err(past_error(e)),
        _ => return Err(unexpected()),
    };
    if cert.body.owner != store.owner().public_key() {
        return Err(past_error(PastError::NotOwner));
    }
    match store.reclaim(&app.node, id, cert.body.replicas).await? {
        PastEvent::Reclaimed(_, Ok(receipts)) => Ok(Json(json!({
            "id": id.to_string(),
            "reclaimed": true,
            "released_by": receipts.iter().map(|r| r.node.to_string()).collect::<Vec<_>>(),
        }))),
        PastEvent::Reclaimed(_, Err(e)) => Err(past_error(e)),
        _ => Err(unexpected()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_parameters_are_checked() {
        assert_eq!(
            put_params(Some("name=a%20b&replicas=2")).ok().map(|p| p.1),
            Some(2)
        );
        assert_eq!(
            put_params(Some("name=a+b")).ok().map(|p| p.0),
            Some("a b".to_string())
        );
        assert!(put_params(None).is_err());
        assert!(put_params(Some("name=x&replicas=0")).is_err());
        assert!(put_params(Some("name=x&replicas=many")).is_err());
        assert!(put_params(Some("name=x&colour=red")).is_err());
    }
}
