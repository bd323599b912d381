//! `ringvault record put|get|delete|watch`: signed mutable records from the command line.
//!
//! A record written here belongs to the user's owner key (see [`crate::cli::owner_key`]): the
//! command signs it and hands the node the whole record, so it is the user's whichever node it
//! goes through; `--operator` has the node sign with its own key instead.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ringvault_types::{Identity, Record, RecordValue};

use crate::api::objects::to_hex;
use crate::cli::{client, owner_key};
use crate::node::objects::unix_now;

/// Who signs a write, and how it is made.
pub struct WriteArgs<'a> {
    /// The user's owner key file (`None`: the default place).
    pub key: Option<&'a Path>,
    /// Have the node sign with its operator key instead.
    pub operator: bool,
    pub version: Option<u64>,
    pub quorum: Option<u8>,
    pub json: bool,
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// How long a write or read may take before the node answers (it waits for the replicas).
const WITHIN: Duration = Duration::from_secs(30);

/// `record put NAME [FILE|-]`.
pub async fn put(node: &str, name: &str, file: Option<&Path>, how: WriteArgs<'_>) -> Result<()> {
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
    write(node, name, RecordValue::Inline(value), how).await
}

/// `record delete NAME`.
pub async fn delete(node: &str, name: &str, how: WriteArgs<'_>) -> Result<()> {
    write(node, name, RecordValue::Deleted, how).await
}

/// The highest version of `owner`'s record `name` the replicas hold (a tombstone's too), 0
/// when none holds it.
async fn highest(node: &str, owner: &Identity, name: &str) -> Result<u64> {
    let path = format!(
        "/v1/records/{}/{}",
        to_hex(&owner.public_key().0),
        enc(name)
    );
    let resp = client::send_with(node, hyper::Method::GET, &path, &[], Vec::new(), WITHIN).await?;
    let version = resp
        .1
        .get("x-record-version")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    match (resp.0, version) {
        (_, Some(v)) => Ok(v),
        (404, None) => Ok(0),
        _ => {
            let (status, v) = client::json_of(node, &path, resp)?;
            client::check(node, status, &v)?;
            bail!("the node at {node} answered {status} without the record's version")
        }
    }
}

async fn write(node: &str, name: &str, value: RecordValue, how: WriteArgs<'_>) -> Result<()> {
    let method = match value {
        RecordValue::Deleted => hyper::Method::DELETE,
        _ => hyper::Method::PUT,
    };
    let path = format!("/v1/records/{}", enc(name));
    let mut headers = Vec::new();
    if let Some(q) = how.quorum {
        headers.push(("x-record-quorum", q.to_string()));
    }
    let body = if how.operator {
        if let Some(v) = how.version {
            headers.push(("x-record-version", v.to_string()));
        }
        match value {
            RecordValue::Inline(v) => v,
            _ => Vec::new(),
        }
    } else {
        let owner = owner_key::load_or_create(&owner_key::path_or_default(how.key)?)?;
        let version = match how.version {
            Some(v) => v,
            None => highest(node, &owner, name).await?.saturating_add(1),
        };
        let record = Record::sign(&owner, name, version, unix_now(), value)
            .with_context(|| format!("cannot make record {name:?}"))?;
        headers.push((crate::api::records::SIGNED_HEADER, to_hex(&record.encode())));
        Vec::new()
    };
    let json = how.json;
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

/// OWNER/NAME split; OWNER `me` is the user's own owner key.
fn owner_and_name(owner_name: &str) -> Result<(String, &str)> {
    let Some((owner, name)) = owner_name.split_once('/') else {
        bail!("give OWNER/NAME: the owner's key in 64 hex digits (`me` for your own key, `self` for the node's), a slash, the record's name");
    };
    if owner == "me" {
        let key = owner_key::load(&owner_key::path_or_default(None)?)?
            .context("you have no owner key yet (it is made by your first `record put`)")?;
        return Ok((to_hex(&key.public_key().0), name));
    }
    Ok((owner.to_string(), name))
}

/// `record get OWNER/NAME`: the value to stdout (or `out`), the version and any conflict on
/// stderr.
pub async fn get(node: &str, owner_name: &str, out: Option<&Path>) -> Result<()> {
    let (owner, name) = owner_and_name(owner_name)?;
    let owner = owner.as_str();
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
    let (owner, name) = owner_and_name(owner_name)?;
    let owner = owner.as_str();
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
