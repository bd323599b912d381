//! The groups half of the HTTP API (Scribe): `POST /v1/topics/{name}/messages`,
//! `GET /v1/topics/{name}/events` (Server-Sent Events), `POST /v1/topics/{name}/anycast` and
//! `GET /v1/topics`. A topic is named by a string of 1 to 256 bytes; the same name is the same
//! topic on every node.
//!
//! Each SSE event is `event: message` (or `event: anycast`) with JSON data:
//! `{"publisher", "seq", "gap", "data", "encoding"}` where `data` is the message as UTF-8 text
//! (`"encoding": "utf8"`) or, when it is not valid UTF-8, base64 (`"encoding": "base64"`).

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::Json;
use futures_util::stream::Stream;
use ringvault_scribe::ScribeError;
use ringvault_types::Id;
use serde_json::{json, Value};

use crate::api::http::{ApiError, App};
use crate::node::topics::{self, TopicError, TopicEvent, TopicsClient};

fn client(app: &App) -> Result<&TopicsClient, ApiError> {
    app.topics.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "no_groups",
            "this node runs without groups",
        )
    })
}

fn scribe_error(e: ScribeError) -> ApiError {
    let (status, code) = match &e {
        ScribeError::BadTopicName(_) => (StatusCode::BAD_REQUEST, "bad_topic"),
        ScribeError::BadPayload(_) => (StatusCode::BAD_REQUEST, "bad_message"),
        ScribeError::TooManyTopics => (StatusCode::SERVICE_UNAVAILABLE, "too_many_topics"),
        ScribeError::NoTaker => (StatusCode::NOT_FOUND, "no_taker"),
        ScribeError::Timeout => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
    };
    ApiError::new(status, code, e.to_string())
}

impl From<TopicError> for ApiError {
    fn from(e: TopicError) -> Self {
        match e {
            TopicError::Scribe(e) => scribe_error(e),
            TopicError::Net(e) => e.into(),
        }
    }
}

fn topic(name: Result<Path<String>, PathRejection>) -> Result<(String, Id), ApiError> {
    let Path(name) = name.map_err(|e| {
        let msg = format!("{}; a topic name is 1 to 256 bytes", e.body_text());
        ApiError::new(StatusCode::BAD_REQUEST, "bad_topic", msg)
    })?;
    crate::api::http::check_name_chars("topic", &name)?;
    let id = topics::check_name(&name).map_err(scribe_error)?;
    Ok((name, id))
}

fn check_message(body: &[u8]) -> Result<(), ApiError> {
    if body.is_empty() || body.len() > ringvault_scribe::MAX_PAYLOAD {
        return Err(scribe_error(ScribeError::BadPayload(body.len())));
    }
    Ok(())
}

/// `POST /v1/topics/{name}/messages`: publishes the body; 202 with the sequence number.
pub async fn publish(
    State(app): State<App>,
    name: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let (name, id) = topic(name)?;
    check_message(&body)?;
    let seq = client(&app)?
        .publish(&app.node, &name, body.to_vec())
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "topic": name, "topic_id": id.to_string(), "seq": seq })),
    ))
}

/// `POST /v1/topics/{name}/anycast`: sends the body to one member that accepts it.
pub async fn anycast(
    State(app): State<App>,
    name: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let (name, id) = topic(name)?;
    check_message(&body)?;
    let c = client(&app)?.anycast(&app.node, id, body.to_vec()).await?;
    Ok(Json(json!({
        "topic": name,
        "topic_id": id.to_string(),
        "accepted_by": { "id": c.id.to_string(), "addr": c.addr.to_string() },
    })))
}

/// `GET /v1/topics`: the topics this node takes part in, as member, forwarder or root, with
/// their names (`null` until this node has learnt the name from the tree), parent and children.
pub async fn list(State(app): State<App>) -> Result<Json<Value>, ApiError> {
    let topics = client(&app)?.topics(&app.node).await?;
    let contact = |c: &ringvault_types::Contact| json!({ "id": c.id.to_string(), "addr": c.addr.to_string() });
    let v: Vec<Value> = topics
        .iter()
        .map(|t| {
            let role = if t.root {
                "root"
            } else if t.member {
                "member"
            } else {
                "forwarder"
            };
            json!({
                "name": t.name,
                "topic_id": t.topic.to_string(),
                "role": role,
                "member": t.member,
                "root": t.root,
                "parent": t.parent.as_ref().map(contact),
                "children": t.children.iter().map(contact).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({ "topics": v })))
}

fn data_json(data: &[u8]) -> (String, &'static str) {
    match std::str::from_utf8(data) {
        Ok(s) => (s.to_string(), "utf8"),
        Err(_) => (topics::base64(data), "base64"),
    }
}

fn sse_event(ev: TopicEvent) -> Event {
    match ev {
        TopicEvent::Message {
            publisher,
            seq,
            data,
            gap,
        } => {
            let (data, encoding) = data_json(&data);
            Event::default().event("message").data(
                json!({
                    "publisher": publisher.to_string(),
                    "seq": seq,
                    "gap": gap,
                    "data": data,
                    "encoding": encoding,
                })
                .to_string(),
            )
        }
        TopicEvent::Anycast { origin, payload } => {
            let (data, encoding) = data_json(&payload);
            Event::default().event("anycast").data(
                json!({
                    "origin": origin.id.to_string(),
                    "data": data,
                    "encoding": encoding,
                })
                .to_string(),
            )
        }
    }
}

/// `GET /v1/topics/{name}/events`: subscribes the node and streams the topic's messages as
/// Server-Sent Events until the client goes away (then the node unsubscribes, unless another
/// stream still listens).
pub async fn events(
    State(app): State<App>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let (name, id) = topic(name)?;
    let sub = client(&app)?.subscribe(&app.node, &name).await?;
    let hello = Event::default()
        .event("subscribed")
        .data(json!({ "topic": name, "topic_id": id.to_string() }).to_string());
    let stream = futures_util::stream::unfold((Some(hello), sub), |(first, mut sub)| async move {
        if let Some(h) = first {
            return Some((Ok(h), (None, sub)));
        }
        let ev = sub.rx.recv().await?;
        Some((Ok(sse_event(ev)), (None, sub)))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
