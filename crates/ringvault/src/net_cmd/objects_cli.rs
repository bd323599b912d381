//! `ringvault put`, `get`, `reclaim` and `stat`: the storage commands, as clients of a node's
//! HTTP API. The node's operator key owns what is put through it.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use hyper::Method;
use serde_json::Value;

use super::client;
use super::objects::MAX_OBJECT;

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// An id as the user typed it, checked before anything is sent.
fn check_id(id: &str) -> Result<&str> {
    let t = id.trim();
    if t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("{id:?} is not an object id; an id is 64 hex digits, as `ringvault put` prints");
    }
    Ok(t)
}

pub async fn put(
    node: &str,
    file: &Path,
    name: Option<String>,
    replicas: u8,
    json: bool,
) -> Result<()> {
    let meta =
        std::fs::metadata(file).with_context(|| format!("cannot read {}", file.display()))?;
    if meta.len() > MAX_OBJECT as u64 {
        bail!(
            "{} is {} bytes; objects are limited to {MAX_OBJECT} bytes for now (large files are not split yet)",
            file.display(),
            meta.len()
        );
    }
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let name = match name {
        Some(n) => n,
        None => file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .context("give the object a name with --name")?,
    };
    let path = format!("/v1/objects?name={}&replicas={replicas}", encode(&name));
    let v = client::send_ok(node, Method::PUT, &path, bytes).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{}", v["id"].as_str().unwrap_or("?"));
    }
    Ok(())
}

pub async fn get(node: &str, id: &str, output: Option<PathBuf>) -> Result<()> {
    let id = check_id(id)?;
    let (bytes, _) = client::get_bytes(node, &format!("/v1/objects/{id}")).await?;
    match output {
        Some(path) => {
            // Write beside the target, then rename: a failed get leaves no partial file.
            let tmp = path.with_extension("ringvault-part");
            std::fs::write(&tmp, &bytes)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            std::fs::rename(&tmp, &path)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes).context("cannot write to stdout")?;
            out.flush().context("cannot write to stdout")?;
        }
    }
    Ok(())
}

pub async fn reclaim(node: &str, id: &str, json: bool) -> Result<()> {
    let id = check_id(id)?;
    let v = client::send_ok(
        node,
        Method::DELETE,
        &format!("/v1/objects/{id}"),
        Vec::new(),
    )
    .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let n = v["released_by"].as_array().map(Vec::len).unwrap_or(0);
        println!("reclaimed {id} ({n} nodes released it)");
    }
    Ok(())
}

fn short(v: &Value) -> String {
    v.as_str()
        .map(|s| s.chars().take(16).collect())
        .unwrap_or_else(|| "-".into())
}

pub async fn stat(node: &str, id: &str, json: bool) -> Result<()> {
    let id = check_id(id)?;
    let v = client::get_ok(node, &format!("/v1/objects/{id}/replicas")).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("id        {}", v["id"].as_str().unwrap_or("?"));
    println!("name      {}", v["name"].as_str().unwrap_or("?"));
    println!("size      {} bytes", v["size"]);
    println!("replicas  {}", v["replicas"]);
    println!("owner     {}", short(&v["owner"]));
    println!(
        "root      {} {} ({} hops)",
        short(&v["root"]["id"]),
        v["root"]["addr"].as_str().unwrap_or("?"),
        v["hops_to_root"]
    );
    println!("replica set (as the node at {node} sees it):");
    for c in v["replica_set_seen_from_here"]
        .as_array()
        .into_iter()
        .flatten()
    {
        println!(
            "  {} {}",
            short(&c["id"]),
            c["addr"].as_str().unwrap_or("?")
        );
    }
    let here = &v["this_node"];
    println!(
        "this node {} holds: {}{}",
        short(&here["id"]),
        here["holds"].as_str().unwrap_or("nothing"),
        here["pointer_to"]["addr"]
            .as_str()
            .map(|a| format!(", diverted to {a}"))
            .unwrap_or_default()
    );
    Ok(())
}
