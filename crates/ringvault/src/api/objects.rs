//! The storage half of the HTTP API: `PUT /v1/objects?name=N&replicas=K`, `GET /v1/objects/{id}`,
//! `GET /v1/objects/{id}/replicas`, `DELETE /v1/objects/{id}`. Each forwards to PAST on this
//! node and turns its result into JSON or bytes; PAST decides everything.
//!
//! Who owns an object: without certificates the node's operator key signs (and owns) what is
//! put through it, so `curl -T FILE` works. A client that keeps its own owner key signs the
//! file certificates itself and sends them in [`CERTIFICATES_HEADER`]; it reclaims with a
//! reclaim certificate in [`RECLAIM_HEADER`]. Both are lowercase hex of the encodings in
//! `ringvault_past` (postcard), so they fit in a header and survive any HTTP client.

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::BodyExt;
use ringvault_past::{
    decode_certificates, object_id as derive_id, ChunkedDownload, ChunkedUpload, Description,
    FileCertificate, Manifest, PastError, PastEvent, ReclaimCertificate, Upload, CHUNK_SIZE,
    DEFAULT_WINDOW, MAX_NAME_LEN, UPLOAD_WINDOW,
};
use ringvault_types::Id;
use serde_json::json;
use tokio::sync::mpsc;

use crate::api::http::{ApiError, App};
use crate::api::stream::ChannelBody;
use crate::node::objects::{ObjectsClient, RequestError};
use crate::node::quota::QuotaError;
use ringvault_accounts::AccountsError;

/// Largest upload accepted. Uploads above [`CHUNK_SIZE`] are stored as chunks plus a
/// manifest, streamed: the node holds one chunk of an upload at a time.
pub const MAX_UPLOAD: u64 = 64 << 30;
/// Replicas when the request names none.
pub const DEFAULT_REPLICAS: u8 = 3;
/// PUT request header: file certificates the client signed with its owner key, certificate 0
/// tried first and the others (further salts) only if file diversion needs them. Lowercase hex
/// of `ringvault_past::encode_certificates`. The object is then at most [`CHUNK_SIZE`] bytes:
/// a client that signs splits larger files into chunks and a manifest itself.
pub const CERTIFICATES_HEADER: &str = "x-ringvault-certificates";
/// DELETE request header: a reclaim certificate the owner signed, lowercase hex of
/// `ReclaimCertificate::to_bytes`. Without it the node's operator key must own the object.
pub const RECLAIM_HEADER: &str = "x-ringvault-reclaim";
/// PUT request header, in a ring that enforces storage quotas: the owner's quota grant,
/// lowercase hex of `Grant::encode` (`ringvault put --grant FILE` sends it). Without it, a PUT
/// with client-signed certificates is refused with 403 `no_grant`.
pub const GRANT_HEADER: &str = "x-ringvault-grant";
/// GET response header: the id (64 hex digits) of the node that served the copy.
pub const SERVED_BY_HEADER: &str = "x-ringvault-served-by";
/// GET response header: that node's QUIC address.
pub const SERVED_BY_ADDR_HEADER: &str = "x-ringvault-served-by-addr";
/// GET response header: overlay hops the lookup took to reach that node (0: this node).
pub const HOPS_HEADER: &str = "x-ringvault-hops";

/// Lowercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Reads hex (either case); `None` for anything else.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::Net(e) => e.into(),
            RequestError::Refused(e) => past_error(e),
            RequestError::Quota(e) => quota_error(e),
        }
    }
}

/// `GET /v1/quota/{owner}`: what the owner's objects occupy on the ring (size × k), as their
/// account managers say. 404 `no_quotas` in a ring that does not enforce quotas.
pub async fn quota(
    State(app): State<App>,
    Path(owner): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let store = client(&app)?;
    let user = crate::api::http::parse_owner(&owner, || Ok(store.owner().public_key()))?;
    match store.balance(&app.node, user).await.map_err(quota_error)? {
        Some(b) => Ok(Json(json!({
            "owner": Id::from_bytes(user.0).to_string(),
            "used": b.used,
            "entries": b.entries,
        }))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_quotas",
            "this ring does not enforce storage quotas (its nodes run without --broker)",
        )),
    }
}

/// Why an insert got no approval, or a reclaim no credit: over quota is 403 `quota_exceeded`
/// with the balance in the message.
fn quota_error(e: QuotaError) -> ApiError {
    let e = match e {
        QuotaError::Net(n) => return n.into(),
        e => e,
    };
    let (status, code, hint) = match &e {
        QuotaError::Net(_) => (StatusCode::BAD_GATEWAY, "net", ""),
        QuotaError::NoGrant => (StatusCode::FORBIDDEN, "no_grant", "nothing was stored"),
        QuotaError::BadGrant(_) => (StatusCode::BAD_REQUEST, "bad_grant", "nothing was stored"),
        QuotaError::Busy => (StatusCode::SERVICE_UNAVAILABLE, "busy", "nothing was stored"),
        QuotaError::Accounts(a) => match a {
            AccountsError::OverQuota { .. } => (
                StatusCode::FORBIDDEN,
                "quota_exceeded",
                "nothing was stored; reclaim objects or ask the broker for a larger grant",
            ),
            AccountsError::Grant(_) => (
                StatusCode::FORBIDDEN,
                "grant_refused",
                "nothing was stored; check the grant's broker, user and dates (`ringvault broker show FILE`)",
            ),
            AccountsError::Duplicate => (StatusCode::CONFLICT, "duplicate", "nothing was changed"),
            AccountsError::NoCredit(_) => (
                StatusCode::CONFLICT,
                "no_credit",
                "the balance was not changed",
            ),
            AccountsError::Timeout | AccountsError::NotJoined => (
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                "the account managers did not answer; retry",
            ),
            AccountsError::Busy => (StatusCode::SERVICE_UNAVAILABLE, "busy", "retry shortly"),
            AccountsError::BadAnswer(_) => (
                StatusCode::BAD_GATEWAY,
                "bad_answer",
                "retry; if it persists, some account managers may be faulty",
            ),
        },
    };
    ApiError::new(status, code, format!("{e}; {hint}"))
}

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
        PastError::Unanswered => (
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "retry; if it persists, check the ring with `ringvault status`",
        ),
        PastError::NotFound => (
            StatusCode::NOT_FOUND,
            "not_found",
            "no node holds this id; check it (the id `ringvault put` printed)",
        ),
        PastError::NotOwner => (
            StatusCode::FORBIDDEN,
            "not_owner",
            "only the owner's key can reclaim it: sign with that key (`ringvault reclaim --key FILE`), or reclaim through the node whose operator key owns it; nothing was changed",
        ),
        PastError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid", "fix the request"),
        PastError::TooFewNodes { nodes, .. } => (
            StatusCode::BAD_REQUEST,
            "too_few_nodes",
            &*format!("ask for at most {nodes} replicas, or add nodes; nothing was stored"),
        ),
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
        PastError::Unapproved => (
            StatusCode::FORBIDDEN,
            "unapproved",
            "the ring enforces quotas and a replica refused the approval; retry, and if it persists check the node's clock and its grant; nothing was stored",
        ),
    };
    ApiError::new(status, code, format!("{e}; {hint}"))
}

fn client(app: &App) -> Result<&ObjectsClient, ApiError> {
    app.objects.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "no_storage",
            "this node runs without storage",
        )
    })
}

pub(crate) fn object_id(id: Result<Path<String>, PathRejection>) -> Result<Id, ApiError> {
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

/// `name` and `replicas` from a query string, each if given.
fn query_params(query: Option<&str>) -> Result<(Option<String>, Option<u8>), ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m);
    let (mut name, mut replicas) = (None, None);
    let mut seen = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if seen.contains(&k) {
            return Err(bad(format!("{k} is given twice; give it once")));
        }
        seen.push(k);
        let v = percent_encoding::percent_decode_str(&v.replace('+', " "))
            .decode_utf8()
            .map_err(|_| bad(format!("{k} is not UTF-8")))?
            .into_owned();
        match k {
            "name" => name = Some(v),
            "replicas" => {
                replicas =
                    Some(v.parse().ok().filter(|k| *k >= 1).ok_or_else(|| {
                        bad(format!("replicas={v:?}: give a whole number from 1"))
                    })?)
            }
            other => {
                return Err(bad(format!(
                    "unknown parameter {other:?}; use name and replicas"
                )))
            }
        }
    }
    Ok((name, replicas))
}

/// `name` (required) and `replicas` from a query string.
fn put_params(query: Option<&str>) -> Result<(String, u8), ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m);
    let (name, replicas) = query_params(query)?;
    let name = name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad("give the object a name: PUT /v1/objects?name=NAME".into()))?;
    if name.len() > MAX_NAME_LEN {
        return Err(bad(format!("the name is longer than {MAX_NAME_LEN} bytes")));
    }
    crate::api::http::check_name_chars("object", &name)?;
    Ok((name, replicas.unwrap_or(DEFAULT_REPLICAS)))
}

/// The most replicas this ring keeps: the k closest nodes must fit in the leaf set.
async fn check_replicas(app: &App, replicas: u8) -> Result<(), ApiError> {
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
    Ok(())
}

/// The certificates of [`CERTIFICATES_HEADER`].
fn header_certificates(v: &HeaderValue) -> Result<Vec<FileCertificate>, ApiError> {
    let certs = v
        .to_str()
        .ok()
        .and_then(from_hex)
        .and_then(|b| decode_certificates(&b).ok())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_certificate",
                format!("{CERTIFICATES_HEADER} is not hex of encoded file certificates (as `ringvault put` sends them); nothing was stored"),
            )
        })?;
    if certs.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_certificate",
            format!("{CERTIFICATES_HEADER} holds no certificate; nothing was stored"),
        ));
    }
    Ok(certs)
}

/// The grant of [`GRANT_HEADER`], if there is one.
fn header_grant(headers: &HeaderMap) -> Result<Option<ringvault_types::Grant>, ApiError> {
    let Some(v) = headers.get(GRANT_HEADER) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .and_then(from_hex)
        .and_then(|b| ringvault_types::Grant::decode(&b).ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_grant",
                format!("{GRANT_HEADER} is not hex of an encoded grant (as `ringvault put --grant` sends it); nothing was stored"),
            )
        })
}

/// The certificate of [`RECLAIM_HEADER`].
fn header_reclaim(v: &HeaderValue) -> Result<ReclaimCertificate, ApiError> {
    v.to_str()
        .ok()
        .and_then(from_hex)
        .and_then(|b| ReclaimCertificate::from_bytes(&b).ok())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_certificate",
                format!("{RECLAIM_HEADER} is not hex of an encoded reclaim certificate (as `ringvault reclaim` sends it); nothing was changed"),
            )
        })
}

/// The upload broke off (the client went away, or sent a malformed body).
fn broke_off(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "bad_body",
        format!("the upload broke off ({e}); nothing was stored under this name"),
    )
}

/// Reads a whole request body of at most `limit` bytes.
async fn read_body(
    mut body: Body,
    limit: u64,
    over: impl Fn() -> ApiError,
) -> Result<Vec<u8>, ApiError> {
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(broke_off)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if (buf.len() + data.len()) as u64 > limit {
            return Err(over());
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf)
}

fn unexpected() -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "PAST answered a different request; please report this",
    )
}

/// Stores one object.
async fn insert(
    store: &ObjectsClient,
    app: &App,
    name: String,
    content: Vec<u8>,
    replicas: u8,
) -> Result<ringvault_past::Inserted, ApiError> {
    match store.insert(&app.node, name, content, replicas).await? {
        PastEvent::Inserted(_, Ok(ins)) => Ok(ins),
        PastEvent::Inserted(_, Err(e)) => Err(past_error(e)),
        _ => Err(unexpected()),
    }
}

/// The chunks of one upload through the operator key, stored [`UPLOAD_WINDOW`] at a time
/// (the plan, [`ChunkedUpload`], decides what to store; this drives it). Equal chunks are
/// stored once; if the upload does not end with its manifest stored (an error, or the client
/// went away and the request was dropped), the chunks it stored are reclaimed, those still in
/// flight included once they land, so a failed upload leaves nothing.
struct ChunkUpload {
    plan: ChunkedUpload,
    /// Finished chunk stores: (chunk index, its object id or why it failed).
    done_tx: mpsc::UnboundedSender<(usize, Result<Id, ApiError>)>,
    done_rx: mpsc::UnboundedReceiver<(usize, Result<Id, ApiError>)>,
    store: ObjectsClient,
    app: App,
    replicas: u8,
    kept: bool,
}

impl ChunkUpload {
    fn new(store: &ObjectsClient, app: &App, replicas: u8) -> Result<Self, ApiError> {
        let mut tag = [0u8; 16];
        getrandom::fill(&mut tag).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("the OS random source failed ({e}); nothing was stored"),
            )
        })?;
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Ok(ChunkUpload {
            plan: ChunkedUpload::new(Upload::new(tag), UPLOAD_WINDOW),
            done_tx,
            done_rx,
            store: store.clone(),
            app: app.clone(),
            replicas,
            kept: false,
        })
    }

    /// Starts storing the next chunk (unless the file had the same bytes before), after
    /// waiting for room in the window.
    async fn push(&mut self, piece: Vec<u8>) -> Result<(), ApiError> {
        while !self.plan.has_room() {
            self.collect().await?;
        }
        let Some(job) = self.plan.push(&piece) else {
            return Ok(());
        };
        let (store, app, tx, k) = (
            self.store.clone(),
            self.app.clone(),
            self.done_tx.clone(),
            self.replicas,
        );
        tokio::spawn(async move {
            let r = insert(&store, &app, job.name, piece, k).await;
            let _ = tx.send((job.index, r.map(|ins| ins.cert.id())));
        });
        Ok(())
    }

    /// Waits for one chunk store to finish.
    async fn collect(&mut self) -> Result<(), ApiError> {
        let Some((index, r)) = self.done_rx.recv().await else {
            return Err(unexpected());
        };
        match r {
            Ok(id) => {
                self.plan.stored_as(index, id);
                Ok(())
            }
            Err(e) => {
                self.plan.gave_up(index);
                Err(e)
            }
        }
    }

    /// Waits for every chunk, then stores the manifest under `name`; from then on the chunks
    /// belong to the file.
    async fn finish(mut self, name: String) -> Result<(ringvault_past::Inserted, usize), ApiError> {
        while self.plan.in_flight() > 0 {
            self.collect().await?;
        }
        let m = self.plan.manifest().ok_or_else(unexpected)?;
        let ins = insert(&self.store, &self.app, name, m.to_bytes(), self.replicas).await?;
        self.kept = true;
        Ok((ins, m.chunks.len()))
    }
}

impl Drop for ChunkUpload {
    fn drop(&mut self) {
        if self.kept || (self.plan.stored().is_empty() && self.plan.in_flight() == 0) {
            return;
        }
        let mut plan =
            std::mem::replace(&mut self.plan, ChunkedUpload::new(Upload::new([0; 16]), 1));
        let (_, empty) = mpsc::unbounded_channel();
        let mut done = std::mem::replace(&mut self.done_rx, empty);
        let (store, app, k) = (self.store.clone(), self.app.clone(), self.replicas);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                // The stores still in flight land first: they are taken back too.
                while plan.in_flight() > 0 {
                    match done.recv().await {
                        Some((i, Ok(id))) => plan.stored_as(i, id),
                        Some((i, Err(_))) => plan.gave_up(i),
                        None => break,
                    }
                }
                let ids = plan.stored().to_vec();
                let n = ids.len();
                let left = release_chunks(&store, &app, &ids, k).await;
                tracing::info!(
                    "an upload failed: reclaimed {} of the {n} chunks it stored",
                    n - left.len()
                );
            });
        }
    }
}

/// Reclaims chunks the operator key owns, `k` replicas each; answers the ones that could not
/// be (an id already gone counts as done).
async fn release_chunks(store: &ObjectsClient, app: &App, ids: &[Id], k: u8) -> Vec<Id> {
    let mut left = Vec::new();
    for &id in ids {
        match store.reclaim(&app.node, id, k).await {
            Ok(PastEvent::Reclaimed(_, Ok(_) | Err(PastError::NotFound))) => {}
            other => {
                tracing::warn!("chunk {id} was not reclaimed: {other:?}");
                left.push(id);
            }
        }
    }
    left
}

/// The answer to a PUT: 201 when it stored the object, 200 when every replica held it (the same
/// content, owner and name) already.
fn created(ins: &ringvault_past::Inserted, size: u64, chunks: usize) -> Response {
    let receipts: Vec<String> = ins
        .receipts
        .iter()
        .map(|r| r.body.node.to_string())
        .collect();
    stored_answer(&ins.cert, size, chunks, receipts, ins.already_stored)
}

fn stored_answer(
    cert: &FileCertificate,
    size: u64,
    chunks: usize,
    receipts: Vec<String>,
    already: bool,
) -> Response {
    let b = &cert.body;
    let v = json!({
        "id": cert.id().to_string(),
        "name": b.name,
        "size": size,
        "replicas": b.replicas,
        "receipts": receipts,
        "chunks": chunks,
        "owner": b.owner.id().to_string(),
        "salt": b.salt,
        "already_stored": already,
    });
    let status = if already {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    (status, Json(v)).into_response()
}

/// A large file PUT under a name the operator key already holds (`read`: the body so far).
/// The rest of the body is read and hashed, and nothing is stored: the same bytes as the
/// stored file answer 200 with it (a retried upload), other bytes 409.
async fn put_existing(
    found: Description,
    read: Vec<u8>,
    mut body: Body,
) -> Result<Response, ApiError> {
    let taken = || past_error(PastError::Duplicate);
    let Some(m) = found.manifest else {
        return Err(taken());
    };
    let mut hasher = blake3::Hasher::new();
    hasher.update(&read);
    let mut total = read.len() as u64;
    drop(read);
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(broke_off)?.into_data() else {
            continue;
        };
        total += data.len() as u64;
        if total > m.size {
            return Err(taken());
        }
        hasher.update(&data);
    }
    if total != m.size || *hasher.finalize().as_bytes() != m.hash {
        return Err(taken());
    }
    Ok(stored_answer(
        &found.cert,
        m.size,
        m.chunks.len(),
        Vec::new(),
        true,
    ))
}

/// A PUT with client-signed certificates: one object, exactly as certified.
async fn put_signed(
    app: &App,
    store: &ObjectsClient,
    query: Option<&str>,
    (certs, grant): (Vec<FileCertificate>, Option<ringvault_types::Grant>),
    body: Body,
) -> Result<Response, ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m);
    let first = certs[0].body.clone();
    crate::api::http::check_name_chars("object", &first.name)?;
    let (name, replicas) = query_params(query)?;
    if let Some(n) = name.filter(|n| *n != first.name) {
        return Err(bad(format!(
            "name={n:?}, but the certificate is for {:?}; leave name out or make them agree",
            first.name
        )));
    }
    if let Some(k) = replicas.filter(|k| *k != first.replicas) {
        return Err(bad(format!(
            "replicas={k}, but the certificate says {}; leave replicas out or make them agree",
            first.replicas
        )));
    }
    check_replicas(app, first.replicas).await?;
    if first.size > CHUNK_SIZE as u64 {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("a client-signed object is at most {CHUNK_SIZE} bytes; split larger files into chunks and a manifest, each signed (`ringvault put` does); nothing was stored"),
        ));
    }
    let size = first.size;
    let content = read_body(body, size, || {
        bad(format!(
            "the body is longer than the {size} bytes the certificate says; nothing was stored"
        ))
    })
    .await?;
    match store
        .insert_signed(&app.node, certs, content, grant)
        .await?
    {
        PastEvent::Inserted(_, Ok(ins)) => Ok(created(&ins, size, 0)),
        PastEvent::Inserted(_, Err(e)) => Err(past_error(e)),
        _ => Err(unexpected()),
    }
}

/// Refuses a body whose announced length is over the limit before any of it is read (so a
/// client sending `Expect: 100-continue` is told at once, not invited to send it): 64 GiB, or
/// one chunk with client-signed certificates.
fn refuse_oversized(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(v) = headers.get(header::CONTENT_LENGTH) else {
        return Ok(());
    };
    let len: u64 = v
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "Content-Length is not a byte count; nothing was stored",
            )
        })?;
    let (limit, what) = if headers.contains_key(CERTIFICATES_HEADER) {
        (CHUNK_SIZE as u64, "a client-signed object")
    } else {
        (MAX_UPLOAD, "an upload")
    };
    if len > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "{what} is at most {limit} bytes, this one says {len}; nothing was read or stored"
            ),
        ));
    }
    Ok(())
}

pub async fn put(
    State(app): State<App>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let store = client(&app)?;
    refuse_oversized(&headers)?;
    if let Some(v) = headers.get(CERTIFICATES_HEADER) {
        let certs = header_certificates(v)?;
        let grant = header_grant(&headers)?;
        return put_signed(&app, store, query.as_deref(), (certs, grant), body).await;
    }
    let (name, replicas) = put_params(query.as_deref())?;
    check_replicas(&app, replicas).await?;
    let mut body = body;
    let mut buf: Vec<u8> = Vec::new();
    let mut total: u64 = 0;
    let mut chunks: Option<ChunkUpload> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(broke_off)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len() as u64;
        if total > MAX_UPLOAD {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("uploads are limited to {MAX_UPLOAD} bytes; nothing was stored"),
            ));
        }
        buf.extend_from_slice(&data);
        while buf.len() > CHUNK_SIZE {
            let upload = match chunks.as_mut() {
                Some(c) => c,
                None => {
                    // A taken name: decided before any chunk is stored.
                    let id = derive_id(&name, &store.owner().public_key(), 0);
                    if let PastEvent::Described(_, Ok(d)) = store.describe(&app.node, id).await? {
                        return put_existing(d, buf, body).await;
                    }
                    chunks.insert(ChunkUpload::new(store, &app, replicas)?)
                }
            };
            let rest = buf.split_off(CHUNK_SIZE);
            upload.push(std::mem::replace(&mut buf, rest)).await?;
        }
    }
    let (ins, chunks) = match chunks {
        None => (insert(store, &app, name.clone(), buf, replicas).await?, 0),
        Some(mut upload) => {
            if !buf.is_empty() {
                upload.push(std::mem::take(&mut buf)).await?;
            }
            upload.finish(name.clone()).await?
        }
    };
    Ok(created(&ins, total, chunks))
}

/// Streams the file a manifest describes: [`DEFAULT_WINDOW`] chunks fetched at once (each a
/// lookup of its own object), each verified against the manifest and asked again, after the
/// plan's delay, if it fails, sent in order; memory is bounded by the window. A chunk that cannot be had aborts the body
/// (the client sees it truncated).
fn stream_manifest(store: ObjectsClient, app: App, manifest: Manifest) -> Body {
    let (tx, body) = ChannelBody::new(Some(manifest.size), 1);
    tokio::spawn(async move {
        let mut plan = ChunkedDownload::new(manifest, DEFAULT_WINDOW);
        let mut fetching = tokio::task::JoinSet::new();
        let fail = |e: String| {
            tracing::warn!("a large object's download failed: {e}");
            std::io::Error::other(e)
        };
        loop {
            while let Some((i, id)) = plan.next_fetch() {
                let (store, app) = (store.clone(), app.clone());
                let delay: std::time::Duration = plan.delay_before(i).into();
                fetching.spawn(async move {
                    tokio::time::sleep(delay).await;
                    (i, store.lookup(&app.node, id).await)
                });
            }
            let Some(joined) = fetching.join_next().await else {
                break;
            };
            let Ok((i, r)) = joined else {
                let _ = tx.send(Err(fail("a chunk fetch stopped".into()))).await;
                return;
            };
            let checked = match r {
                Ok(PastEvent::Found(_, Ok(f))) => plan.arrived(i, f.content),
                other => {
                    tracing::debug!("chunk {i}: {other:?}; asking again");
                    plan.failed(i)
                }
            };
            if let Err(e @ ringvault_past::ChunkError::Unavailable(_)) = checked {
                let _ = tx.send(Err(fail(e.to_string()))).await;
                return;
            }
            while let Some(bytes) = plan.pop_ready() {
                if tx.send(Ok(Bytes::from(bytes))).await.is_err() {
                    return; // the client went away
                }
            }
        }
        if let Err(e) = plan.finish() {
            let _ = tx.send(Err(fail(e.to_string()))).await;
        }
    });
    Body::new(body)
}

pub async fn get(
    State(app): State<App>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let store = client(&app)?;
    let id = object_id(id)?;
    let (held_here, looked_up) = store.lookup_noting_local(&app.node, id).await?;
    match looked_up {
        PastEvent::Found(_, Ok(found)) if found.cert.id() == id => {
            let chunked = Manifest::is_manifest(&found.content);
            let mut r = if chunked {
                let m = Manifest::from_bytes(&found.content).map_err(|e| {
                    ApiError::new(StatusCode::BAD_GATEWAY, "bad_manifest", e.to_string())
                })?;
                stream_manifest(store.clone(), app.clone(), m).into_response()
            } else {
                found.content.into_response()
            };
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            if let Ok(v) = HeaderValue::from_str(&app.node.contact().id.to_string()) {
                h.insert("x-ringvault-node", v);
            }
            // Who served the copy (for a chunked object: the manifest; each chunk is looked
            // up on its own as the body streams).
            if let Ok(v) = HeaderValue::from_str(&found.server.id.to_string()) {
                h.insert(SERVED_BY_HEADER, v);
            }
            if let Ok(v) = HeaderValue::from_str(&found.server.addr.to_string()) {
                h.insert(SERVED_BY_ADDR_HEADER, v);
            }
            h.insert(HOPS_HEADER, HeaderValue::from(u16::from(found.hops)));
            if chunked {
                h.insert("x-ringvault-chunked", HeaderValue::from_static("true"));
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
    RawQuery(query): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    let store = client(&app)?;
    let id = object_id(id)?;
    if query.as_deref() == Some("local=true") {
        // Only what this node holds, read from its disk and verified: no lookup, no route (a
        // lookup would leave a cached copy here).
        let held = store.verified_local(&app.node, id).await?.map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage",
                format!("this node could not read its copy ({e}); it still holds what it confirmed: retry"),
            )
        })?;
        return Ok(Json(json!({
            "id": id.to_string(),
            "this_node": {
                "id": app.node.contact().id.to_string(),
                "holds": held.map(|(k, _)| format!("{k:?}").to_lowercase()),
                "size": held.map(|(_, s)| s),
            },
        })));
    }
    let (cert, manifest) = match store.describe(&app.node, id).await? {
        PastEvent::Described(_, Ok(d)) => (d.cert, d.manifest),
        PastEvent::Described(_, Err(e)) => return Err(past_error(e)),
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
        "size": manifest.as_ref().map_or(cert.body.size, |m| m.size),
        "content_hash": to_hex(&manifest.as_ref().map_or(cert.body.content_hash, |m| m.hash)),
        "chunks": manifest.as_ref().map_or(0, |m| m.chunks.len()),
        "chunk_ids": manifest.as_ref().map(|m| m.chunks.iter().map(|c| c.id.to_string()).collect::<Vec<_>>()),
        "replicas": k,
        "owner": cert.body.owner.id().to_string(),
        "root": contact(&root.root),
        "hops_to_root": root.hops(),
        "replica_set_seen_from_here": seen.iter().map(contact).collect::<Vec<_>>(),
        "note": "the replica set is the k closest nodes as this node's leaf set sees them; exact when this node is near the id; for a chunked object it is the manifest's (each chunk has its own: stat its chunk id)",
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
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let store = client(&app)?;
    let id = object_id(id)?;
    let signed = headers
        .get(RECLAIM_HEADER)
        .map(header_reclaim)
        .transpose()?;
    if let Some(rc) = signed.as_ref().filter(|rc| rc.object != id) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_certificate",
            format!(
                "the reclaim certificate is for {}, not {id}; nothing was changed",
                rc.object
            ),
        ));
    }
    // The certificate names the owner and k; only the owner's key can reclaim.
    let found = match store.describe(&app.node, id).await? {
        PastEvent::Described(_, Ok(d)) => d,
        PastEvent::Described(_, Err(e)) => return Err(past_error(e)),
        _ => return Err(unexpected()),
    };
    let cert = found.cert;
    let k = cert.body.replicas;
    let mut chunks_released = 0;
    let result = match signed {
        Some(rc) => {
            // Checked here for a clear 403; every holder checks again before it lets go. A
            // signed reclaim releases this object only: a client that keeps its key signs a
            // reclaim for each chunk of a large file itself (`ringvault reclaim` does).
            if rc.verify(&cert).is_err() {
                return Err(past_error(PastError::NotOwner));
            }
            store.reclaim_signed(&app.node, rc, k).await?
        }
        None => {
            if cert.body.owner != store.owner().public_key() {
                return Err(past_error(PastError::NotOwner));
            }
            // A large file: its chunks first, so that a reclaim cut short can be run again
            // (the manifest still lists them).
            if let Some(m) = found.manifest {
                let ids = m.distinct_chunks();
                let left = release_chunks(store, &app, &ids, k).await;
                if !left.is_empty() {
                    return Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "incomplete",
                        format!(
                            "{} of the file's {} chunks could not be reclaimed yet; the file is kept, reclaim it again",
                            left.len(),
                            ids.len()
                        ),
                    ));
                }
                chunks_released = ids.len();
            }
            store.reclaim(&app.node, id, k).await?
        }
    };
    match result {
        PastEvent::Reclaimed(_, Ok(receipts)) => Ok(Json(json!({
            "id": id.to_string(),
            "reclaimed": true,
            "released_by": receipts.iter().map(|r| r.node.to_string()).collect::<Vec<_>>(),
            "chunks_released": chunks_released,
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
        assert!(put_params(Some("name=a%00b")).is_err());
        assert!(put_params(Some("name=a%0Ab")).is_err());
        assert!(put_params(Some("name=x&name=y")).is_err());
        assert_eq!(query_params(Some("replicas=2")).ok(), Some((None, Some(2))));
    }

    #[test]
    fn hex_round_trips_and_refuses_garbage() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(from_hex(&to_hex(&bytes)), Some(bytes));
        assert_eq!(from_hex("0aFF"), Some(vec![10, 255]));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex("é0"), None);
        assert_eq!(from_hex(""), Some(vec![]));
    }
}
