//! `ringvault record put|get|delete`: signed mutable records from the command line.

use std::io::{Read, Write};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::cli::client;

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn version_header(version: Option<u64>) -> Vec<(&'static str, String)> {
    version
        .map(|v| ("x-record-version", v.to_string()))
        .into_iter()
        .collect()
}

/// How long a write or read may take before the node answers (it waits for the replicas).
const WITHIN: Duration = Duration::from_secs(30);

/// `record put NAME [FILE|-]`.
pub async fn put(
    node: &str,
    name: &str,
    file: Option<&std::path::Path>,
    version: Option<u64>,
    json: bool,
) -> Result<()> {
    let value = match file {
        Some(p) if p.as_os_str() != "-" => {
            std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?
        }
        _ => {
            let mut b = Vec::new();
            std::io::stdin()
                .read_to_end(&mut b)
                .context("cannot read the value from stdin")?;
            b
        }
    };
    if value.len() > ringvault_types::MAX_RECORD_VALUE {
        bail!(
            "a record value is at most {} bytes, got {}; `ringvault put` it as an object and put its id",
            ringvault_types::MAX_RECORD_VALUE,
            value.len()
        );
    }
    write(node, hyper::Method::PUT, name, value, version, json).await
}

/// `record delete NAME`.
pub async fn delete(node: &str, name: &str, version: Option<u64>, json: bool) -> Result<()> {
    write(node, hyper::Method::DELETE, name, Vec::new(), version, json).await
}

async fn write(
    node: &str,
    method: hyper::Method,
    name: &str,
    body: Vec<u8>,
    version: Option<u64>,
    json: bool,
) -> Result<()> {
    let path = format!("/v1/records/{}", enc(name));
    let headers = version_header(version);
    let resp = client::send_with(node, method, &path, &headers, body, WITHIN).await?;
    let (status, v) = client::json_of(node, &path, resp)?;
    client::check(node, status, &v)?;
    if json {
        out!("{v}");
    } else {
        let what = if v["deleted"] == true {
            "deleted"
        } else {
            "wrote"
        };
        out!(
            "{what} {}/{} version {} ({} replicas acknowledged)",
            v["owner"].as_str().unwrap_or("?"),
            v["name"].as_str().unwrap_or("?"),
            v["version"],
            v["acks"].as_array().map_or(0, Vec::len)
        );
    }
    Ok(())
}

/// `record get OWNER/NAME`: the value to stdout (or `out`), the version and any conflict on
/// stderr.
pub async fn get(node: &str, owner_name: &str, out: Option<&std::path::Path>) -> Result<()> {
    let Some((owner, name)) = owner_name.split_once('/') else {
        bail!("give OWNER/NAME: the owner's key in 64 hex digits (or `self` for this node's), a slash, the record's name");
    };
    let path = format!("/v1/records/{}/{}", enc(owner), enc(name));
    let (status, headers, body) =
        client::send_with(node, hyper::Method::GET, &path, &[], Vec::new(), WITHIN).await?;
    if !(200..300).contains(&status) {
        let (status, v) = client::json_of(node, &path, (status, headers, body))?;
        client::check(node, status, &v)?;
        bail!("the node at {node} answered {status}");
    }
    let header = |h: &str| {
        headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .to_string()
    };
    match out {
        Some(p) => {
            std::fs::write(p, &body).with_context(|| format!("cannot write {}", p.display()))?
        }
        None => {
            let mut o = std::io::stdout().lock();
            o.write_all(&body)
                .context("cannot write the value to stdout")?;
            o.flush().ok();
        }
    }
    let mut note = format!("version {}", header("x-record-version"));
    if header("x-record-conflict") == "true" {
        note.push_str(" (a conflict: two writes of this version; the one shown wins everywhere)");
    }
    eprintln!("{note}");
    Ok(())
}

/// `record watch OWNER/NAME`: prints the record's current version, then each new one as it
/// arrives (verified by the node), until Ctrl-C.
pub async fn watch(node: &str, owner_name: &str, json: bool) -> Result<()> {
    let Some((owner, name)) = owner_name.split_once('/') else {
        bail!("give OWNER/NAME: the owner's key in 64 hex digits (or `self` for this node's), a slash, the record's name");
    };
    let path = format!("/v1/records/{}/{}/events", enc(owner), enc(name));
    client::follow_sse(node, &path, |event, data| {
        if json {
            if event == "version" {
                out!("{data}");
            }
            return;
        }
        let v: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
        match event {
            "watching" => eprintln!("watching {owner_name}; Ctrl-C to stop"),
            "version" if v["deleted"] == true => out!("version {}: deleted", v["version"]),
            "version" => {
                let enc = match v["encoding"].as_str() {
                    Some("utf8") | None => "",
                    Some("base64") => " (base64)",
                    Some(_) => " (object id)",
                };
                out!(
                    "version {}{enc}: {}",
                    v["version"],
                    v["value"].as_str().unwrap_or("")
                )
            }
            _ => {}
        }
    })
    .await
}
