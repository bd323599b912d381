//! `ringvault put`, `get`, `reclaim` and `stat`: the storage commands, as clients of a node's
//! HTTP API. The node's operator key owns what is put through it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::Method;
use serde_json::Value;
use tokio::io::AsyncReadExt;

use super::client;
use super::stream::ChannelBody;

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

/// How long an upload or download may go without progress.
const STALL: Duration = Duration::from_secs(60);
/// Pieces a file is read in, for uploads.
const PIECE: usize = 1 << 20;

pub async fn put(
    node: &str,
    file: &Path,
    name: Option<String>,
    replicas: u8,
    json: bool,
) -> Result<()> {
    let mut f = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("cannot read {}", file.display()))?;
    let len = f
        .metadata()
        .await
        .with_context(|| format!("cannot read {}", file.display()))?
        .len();
    let name = match name {
        Some(n) => n,
        None => file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .context("give the object a name with --name")?,
    };
    let path = format!("/v1/objects?name={}&replicas={replicas}", encode(&name));
    // Stream the file: at most a few pieces in memory.
    let (tx, body) = ChannelBody::new(Some(len), 2);
    let shown = file.display().to_string();
    tokio::spawn(async move {
        let mut sent = 0u64;
        loop {
            let mut piece = vec![0u8; PIECE];
            let n = match f.read(&mut piece).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = tx
                        .send(Err(std::io::Error::other(format!("{shown}: {e}"))))
                        .await;
                    return;
                }
            };
            if n == 0 || sent >= len {
                return;
            }
            piece.truncate(n);
            sent += n as u64;
            if tx.send(Ok(Bytes::from(piece))).await.is_err() {
                return;
            }
        }
    });
    // The answer comes once every chunk is stored: allow time in proportion to the size.
    let within = STALL + Duration::from_secs(len / (1 << 20));
    let resp = client::open(node, Method::PUT, &path, body, within).await?;
    let (status, headers, bytes) = client::read_all(node, resp).await?;
    let (status, v) = client::json_of(node, &path, (status, headers, bytes))?;
    client::check(node, status, &v)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{}", v["id"].as_str().unwrap_or("?"));
    }
    Ok(())
}

pub async fn get(node: &str, id: &str, output: Option<PathBuf>) -> Result<()> {
    let id = check_id(id)?;
    let path = format!("/v1/objects/{id}");
    let resp = client::open(node, Method::GET, &path, Empty::<Bytes>::new(), STALL).await?;
    if !resp.status().is_success() {
        let (status, headers, bytes) = client::read_all(node, resp).await?;
        let (status, v) = client::json_of(node, &path, (status, headers, bytes))?;
        client::check(node, status, &v)?;
        bail!("the node at {node} answered {status}");
    }
    let want = resp
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = resp.into_body();
    // Write beside the target, then rename: a failed get leaves no partial file.
    let tmp = output.as_ref().map(|p| p.with_extension("ringvault-part"));
    let mut sink: Box<dyn std::io::Write> = match &tmp {
        Some(t) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(t).with_context(|| format!("cannot write {}", t.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut got = 0u64;
    let result: Result<()> = async {
        loop {
            let frame = tokio::time::timeout(STALL, body.frame())
                .await
                .map_err(|_| anyhow!("the download stalled for {STALL:?}"))?;
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|e| anyhow!("the download broke off ({e})"))?;
            if let Ok(data) = frame.into_data() {
                got += data.len() as u64;
                sink.write_all(&data).context("cannot write the output")?;
            }
        }
        if want.is_some_and(|w| w != got) {
            bail!("the download broke off after {got} bytes; retry");
        }
        sink.flush().context("cannot write the output")?;
        Ok(())
    }
    .await;
    drop(sink);
    match (result, tmp, output) {
        (Ok(()), Some(tmp), Some(path)) => {
            std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))
        }
        (Ok(()), _, _) => Ok(()),
        (Err(e), tmp, _) => {
            if let Some(t) = tmp {
                let _ = std::fs::remove_file(t);
            }
            Err(e)
        }
    }
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
    if v["chunks"].as_u64().unwrap_or(0) > 0 {
        println!(
            "chunks    {} (each its own object; the replicas below are the manifest's)",
            v["chunks"]
        );
    }
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
