//! `ringvault publish`, `subscribe`, `anycast` and `topics`: the groups API from the command
//! line.

use std::io::Read;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::cli::client;

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn check_topic(topic: &str) -> Result<()> {
    if topic.is_empty() || topic.len() > ringvault_scribe::MAX_TOPIC_NAME {
        bail!(
            "a topic name is 1 to {} bytes, got {}",
            ringvault_scribe::MAX_TOPIC_NAME,
            topic.len()
        );
    }
    Ok(())
}

/// The message from the command line, or stdin when none is given.
fn message(m: Option<String>) -> Result<Vec<u8>> {
    let data = match m {
        Some(m) => m.into_bytes(),
        None => {
            let mut b = Vec::new();
            std::io::stdin()
                .read_to_end(&mut b)
                .context("cannot read the message from stdin")?;
            b
        }
    };
    if data.is_empty() || data.len() > ringvault_scribe::MAX_PAYLOAD {
        bail!(
            "a message is 1 to {} bytes, got {}",
            ringvault_scribe::MAX_PAYLOAD,
            data.len()
        );
    }
    Ok(data)
}

pub async fn publish(node: &str, topic: &str, msg: Option<String>, json: bool) -> Result<()> {
    check_topic(topic)?;
    let data = message(msg)?;
    let path = format!("/v1/topics/{}/messages", enc(topic));
    let v = client::send_ok(node, hyper::Method::POST, &path, data).await?;
    if json {
        out!("{v}");
    } else {
        out!("published to {topic} (seq {})", v["seq"]);
    }
    Ok(())
}

pub async fn anycast(node: &str, topic: &str, msg: Option<String>, json: bool) -> Result<()> {
    check_topic(topic)?;
    let data = message(msg)?;
    let path = format!("/v1/topics/{}/anycast", enc(topic));
    let v = client::send_ok(node, hyper::Method::POST, &path, data).await?;
    if json {
        out!("{v}");
    } else {
        let by = &v["accepted_by"];
        out!(
            "accepted by {} ({})",
            by["id"].as_str().unwrap_or("?"),
            by["addr"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

pub async fn topics(node: &str, json: bool) -> Result<()> {
    let v = client::get_ok(node, "/v1/topics").await?;
    if json {
        out!("{v}");
        return Ok(());
    }
    let list = v["topics"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        out!("this node takes part in no topic");
        return Ok(());
    }
    out!(
        "{:<24} {:<16} {:<9} {:<16} CHILDREN",
        "NAME",
        "TOPIC ID",
        "ROLE",
        "PARENT"
    );
    let short = |s: &Value| s.as_str().map(|s| s.chars().take(16).collect::<String>());
    for t in list {
        // A node can take part in a topic before it has learnt the name (rare: only when
        // nobody on its side of the tree knew it).
        let name = match t["name"].as_str() {
            Some(n) if n.chars().count() > 24 => n.chars().take(23).collect::<String>() + "…",
            Some(n) => n.to_string(),
            None => "(name unknown)".to_string(),
        };
        let children: Vec<String> = t["children"]
            .as_array()
            .map(|c| {
                c.iter()
                    .map(|c| c["id"].as_str().unwrap_or("?").chars().take(8).collect())
                    .collect()
            })
            .unwrap_or_default();
        let children = if children.is_empty() {
            "-".to_string()
        } else {
            format!("{} ({})", children.len(), children.join(" "))
        };
        out!(
            "{:<24} {:<16} {:<9} {:<16} {}",
            name,
            short(&t["topic_id"]).unwrap_or_default(),
            t["role"].as_str().unwrap_or("?"),
            short(&t["parent"]["id"]).unwrap_or_else(|| "-".into()),
            children
        );
    }
    Ok(())
}

/// Prints one SSE event; events it does not know are skipped.
fn print_event(event: &str, data: &str, json: bool) {
    if json {
        if event == "message" || event == "anycast" {
            out!("{data}");
        }
        return;
    }
    let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
    let from = |k: &str| {
        v[k].as_str()
            .unwrap_or("?")
            .chars()
            .take(16)
            .collect::<String>()
    };
    match event {
        "subscribed" => eprintln!(
            "subscribed to {}; Ctrl-C to stop",
            v["topic"].as_str().unwrap_or("?")
        ),
        "message" => {
            let gap = if v["gap"] == true {
                " (after a gap)"
            } else {
                ""
            };
            let enc = if v["encoding"] == "base64" {
                " base64"
            } else {
                ""
            };
            out!(
                "[{} #{}{gap}{enc}] {}",
                from("publisher"),
                v["seq"],
                v["data"].as_str().unwrap_or("")
            );
        }
        "anycast" => out!(
            "[anycast from {}] {}",
            from("origin"),
            v["data"].as_str().unwrap_or("")
        ),
        _ => {}
    }
}

pub async fn subscribe(node: &str, topic: &str, json: bool) -> Result<()> {
    check_topic(topic)?;
    let path = format!("/v1/topics/{}/events", enc(topic));
    client::follow_sse(node, &path, |event, data| print_event(event, data, json)).await
}
