//! `ringvault put`, `get`, `reclaim` and `stat`: the storage commands, as clients of a node's
//! HTTP API.
//!
//! What `put` stores belongs to the user's owner key (see [`crate::cli::owner_key`]): the command
//! signs the file certificates itself, one per salt file diversion may try, and the node never
//! sees the key. A file above [`CHUNK_SIZE`] is split here, read one chunk at a time: each chunk
//! is signed and stored as its own object, then the manifest listing them under the file's
//! name. `reclaim` signs a reclaim certificate with the same key. `--operator` does without
//! the user's key: the node's operator key owns the object, as with `curl -T`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::Method;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ringvault_past::{
    encode_certificates, object_id, sign_salts, ChunkedUpload, FileCertificate, ReclaimCertificate,
    Upload, CHUNK_SIZE, UPLOAD_WINDOW,
};
use ringvault_types::{Id, Identity};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::api::objects::{
    to_hex, CERTIFICATES_HEADER, GRANT_HEADER, HOPS_HEADER, RECLAIM_HEADER, SERVED_BY_ADDR_HEADER,
    SERVED_BY_HEADER,
};
use crate::api::stream::ChannelBody;
use crate::cli::client;
use crate::cli::owner_key;
use crate::node::objects::unix_now;

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
/// Pieces a file is read in, for uploads through the operator key.
const PIECE: usize = 1 << 20;
/// Transfers larger than this get a progress bar (when stderr is a terminal).
const PROGRESS_ABOVE: u64 = CHUNK_SIZE as u64;

/// A progress bar on stderr for a transfer of `len` bytes; hidden for small transfers and when
/// stderr is not a terminal.
fn progress(len: u64, what: &str) -> ProgressBar {
    if len <= PROGRESS_ABOVE || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

/// Who signs what `put` stores, and the grant that pays for it in a ring that enforces
/// quotas (hex, for [`GRANT_HEADER`]).
struct Signer {
    key: Identity,
    grant: Option<String>,
}

/// The answer to a signed PUT: (status, JSON).
async fn put_signed(
    node: &str,
    certs: &[FileCertificate],
    content: Vec<u8>,
    grant: Option<&str>,
) -> Result<(u16, Value)> {
    let path = "/v1/objects";
    let mut header = vec![(CERTIFICATES_HEADER, to_hex(&encode_certificates(certs)))];
    if let Some(g) = grant {
        header.push((GRANT_HEADER, g.to_string()));
    }
    // Storing takes k round trips after the upload: allow time in proportion to the size.
    let within = STALL + Duration::from_secs(content.len() as u64 / (1 << 20));
    let r = client::send_with(node, Method::PUT, path, &header, content, within).await?;
    client::json_of(node, path, r)
}

/// Attempts of one signed PUT (the first and the retries).
const PUT_ATTEMPTS: u32 = 3;

/// Stores `content` as `name`, signed by `owner`, and answers the node's JSON. A failure that
/// may pass (a timeout, a busy or failing node, a broken connection) is retried, signed anew,
/// after 1 s and then 2 s: the same owner, name and bytes are the same object, so a retry
/// completes it (201) or finds it complete (200), never a duplicate.
async fn put_signed_retrying(
    node: &str,
    owner: &Signer,
    name: &str,
    content: &[u8],
    replicas: u8,
) -> Result<Value> {
    let mut attempt = 1;
    loop {
        let certs = sign_salts(&owner.key, name, content, replicas, unix_now());
        let grant = owner.grant.as_deref();
        let e = match put_signed(node, &certs, content.to_vec(), grant).await {
            Ok((status, v)) if status < 500 => {
                client::check(node, status, &v)?;
                return Ok(v);
            }
            Ok((status, v)) => match client::check(node, status, &v) {
                Err(e) => e,
                Ok(()) => return Ok(v),
            },
            Err(e) => e,
        };
        if attempt >= PUT_ATTEMPTS {
            return Err(e.context(format!("{PUT_ATTEMPTS} attempts to store {name:?} failed")));
        }
        eprintln!("storing {name:?} failed ({e:#}); retrying");
        tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
        attempt += 1;
    }
}

/// What the ring says of object `id` (`/replicas`: size, content hash, ...), if it exists.
async fn stored_info(node: &str, id: &str) -> Result<Option<Value>> {
    let (status, v) = client::get_json(node, &format!("/v1/objects/{id}/replicas")).await?;
    match status {
        200 => Ok(Some(v)),
        404 => Ok(None),
        _ => client::check(node, status, &v).map(|()| None),
    }
}

/// Whether `file` has the size and BLAKE3 hash `info` (a `/replicas` answer) gives.
async fn same_file(file: &mut tokio::fs::File, len: u64, info: &Value) -> Result<bool> {
    if info["size"].as_u64() != Some(len) {
        return Ok(false);
    }
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    file.rewind().await?;
    Ok(info["content_hash"].as_str() == Some(to_hex(hasher.finalize().as_bytes()).as_str()))
}

/// Stores one chunk, `name` (as the plan named it), and returns its id.
async fn put_chunk(
    node: &str,
    owner: &Signer,
    name: &str,
    bytes: &[u8],
    replicas: u8,
) -> Result<Id> {
    let v = put_signed_retrying(node, owner, name, bytes, replicas).await?;
    v["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| anyhow!("the node at {node} answered without a valid id: {v}"))
}

/// Reclaims object `id` with a reclaim certificate `owner` signs: the answer, or `None` when
/// no node holds the id (already reclaimed counts as done).
async fn reclaim_signed(node: &str, owner: &Identity, id: &str) -> Result<Option<Value>> {
    let object = id
        .parse()
        .map_err(|_| anyhow!("{id:?} is not an object id"))?;
    let cert = ReclaimCertificate::issue(owner, object, unix_now());
    let headers = [(RECLAIM_HEADER, to_hex(&cert.to_bytes()))];
    let path = format!("/v1/objects/{id}");
    let r = client::send_with(node, Method::DELETE, &path, &headers, Vec::new(), STALL).await?;
    let (status, v) = client::json_of(node, &path, r)?;
    if status == 404 {
        return Ok(None);
    }
    client::check(node, status, &v)?;
    Ok(Some(v))
}

/// Reclaims the chunks of a large file; answers the ones that could not be, with why.
async fn release_chunks(node: &str, owner: &Identity, ids: &[String]) -> Vec<(String, String)> {
    let bar = if ids.len() > 1 && std::io::stderr().is_terminal() {
        ProgressBar::with_draw_target(Some(ids.len() as u64), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_message("reclaiming chunks");
    let mut left = Vec::new();
    for id in ids {
        if let Err(e) = reclaim_signed(node, owner, id).await {
            left.push((id.clone(), format!("{e:#}")));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    left
}

pub async fn put(
    node: &str,
    file: &Path,
    name: Option<String>,
    replicas: u8,
    (keys, grant): (&crate::cli::KeyArgs, Option<&Path>),
    json: bool,
) -> Result<()> {
    let (key, operator) = (keys.key.as_deref(), keys.operator);
    let name = match name {
        Some(n) => n,
        None => file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .context("give the object a name with --name")?,
    };
    let grant = match grant {
        Some(p) => Some(to_hex(&crate::broker::load_grant(p)?.encode())),
        None => None,
    };
    let v = if operator {
        if grant.is_some() {
            bail!("--grant pays for puts signed with your own key; what the node signs with its operator key is paid by the node's own grant (`ringvault node --grant FILE`)");
        }
        put_operator(node, file, &name, replicas).await?
    } else {
        let key = owner_key::load_or_create(&owner_key::path_or_default(key)?)?;
        put_owned(node, file, &name, replicas, &Signer { key, grant }).await?
    };
    if json {
        out!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        out!("{}", v["id"].as_str().unwrap_or("?"));
    }
    Ok(())
}

/// `put` with the user's key: small files as one signed object, larger ones as signed chunks
/// and a signed manifest, read one chunk at a time.
async fn put_owned(
    node: &str,
    file: &Path,
    name: &str,
    replicas: u8,
    owner: &Signer,
) -> Result<Value> {
    let shown = file.display().to_string();
    let mut f = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("cannot read {shown}"))?;
    let len = f
        .metadata()
        .await
        .with_context(|| format!("cannot read {shown}"))?
        .len();
    if len <= CHUNK_SIZE as u64 {
        let mut content = Vec::with_capacity(len as usize);
        f.read_to_end(&mut content)
            .await
            .with_context(|| format!("cannot read {shown}"))?;
        return put_signed_retrying(node, owner, name, &content, replicas).await;
    }
    // A taken name, decided before any chunk is stored: the same file again is the one
    // stored (a retried put), another file is refused.
    let id0 = object_id(name, &owner.key.public_key(), 0).to_string();
    if let Some(info) = stored_info(node, &id0).await? {
        if same_file(&mut f, len, &info).await? {
            eprintln!("{shown} is already stored as {name:?}");
            let mut v = info;
            v["already_stored"] = json!(true);
            return Ok(v);
        }
        bail!("you already stored another object named {name:?} (id {id0}); pick another --name");
    }
    let mut tag = [0u8; 16];
    getrandom::fill(&mut tag).map_err(|e| anyhow!("the OS random source failed: {e}"))?;
    let mut plan = ChunkedUpload::new(Upload::new(tag), UPLOAD_WINDOW);
    let stored = store_chunks(node, &mut f, len, owner, replicas, &mut plan).await;
    let stored = match stored {
        Ok(total) if total != len => Err(anyhow!(
            "{shown} changed size while it was read ({len} then {total} bytes); put it again"
        )),
        Ok(_) => store_manifest(node, name, owner, replicas, &plan).await,
        Err(e) => Err(e.context(format!("cannot read or store {shown}"))),
    };
    match stored {
        Ok(v) => Ok(v),
        Err(e) => {
            // Nothing is stored under the name: take back the chunks this upload stored.
            let ids: Vec<String> = plan.stored().iter().map(Id::to_string).collect();
            let left = release_chunks(node, &owner.key, &ids).await;
            if left.is_empty() {
                Err(e.context(format!(
                    "nothing named {name:?} was stored (the {} chunks already stored were reclaimed)",
                    ids.len()
                )))
            } else {
                let list: Vec<&str> = left.iter().map(|(id, _)| id.as_str()).collect();
                Err(e.context(format!(
                    "nothing named {name:?} was stored; {} chunks stored on the way could not be reclaimed ({}): `ringvault reclaim` each of {}",
                    left.len(),
                    left[0].1,
                    list.join(" ")
                )))
            }
        }
    }
}

/// Reads `f` one chunk at a time and stores each new one, [`UPLOAD_WINDOW`] at once, as
/// `plan` says (equal chunks once); answers the bytes read once every store has finished. On
/// an error the stores in flight are still waited for, so `plan.stored()` is all there is to
/// take back.
async fn store_chunks(
    node: &str,
    f: &mut tokio::fs::File,
    len: u64,
    owner: &Signer,
    replicas: u8,
    plan: &mut ChunkedUpload,
) -> Result<u64> {
    let bar = progress(len, "put");
    use futures_util::StreamExt;
    let mut flying = futures_util::stream::FuturesUnordered::new();
    let mut total = 0u64;
    let mut failure: Option<anyhow::Error> = None;
    // Each result names its chunk; the first failure stops reading, the rest still land.
    fn settle(plan: &mut ChunkedUpload, (index, r): (usize, Result<Id>)) -> Result<()> {
        match r {
            Ok(id) => {
                plan.stored_as(index, id);
                Ok(())
            }
            Err(e) => {
                plan.gave_up(index);
                Err(e)
            }
        }
    }
    loop {
        while !plan.has_room() {
            if let Some(done) = flying.next().await {
                if let Err(e) = settle(plan, done) {
                    failure.get_or_insert(e);
                }
            }
        }
        if failure.is_some() {
            break;
        }
        // Fill a whole chunk (reads may return less), or what is left of the file.
        let mut buf = vec![0u8; CHUNK_SIZE];
        let mut filled = 0;
        while filled < CHUNK_SIZE {
            match f.read(&mut buf[filled..]).await {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) => {
                    failure.get_or_insert(e.into());
                    break;
                }
            }
        }
        if filled == 0 || failure.is_some() {
            break;
        }
        buf.truncate(filled);
        if let Some(job) = plan.push(&buf) {
            let bar = bar.clone();
            flying.push(async move {
                let r = put_chunk(node, owner, &job.name, &buf, replicas).await;
                bar.inc(buf.len() as u64);
                (job.index, r)
            });
        } else {
            bar.inc(filled as u64);
        }
        total += filled as u64;
    }
    while let Some(done) = flying.next().await {
        if let Err(e) = settle(plan, done) {
            failure.get_or_insert(e);
        }
    }
    bar.finish_and_clear();
    match failure {
        Some(e) => Err(e),
        None => Ok(total),
    }
}

/// Stores the manifest of a large file under its name.
async fn store_manifest(
    node: &str,
    name: &str,
    owner: &Signer,
    replicas: u8,
    plan: &ChunkedUpload,
) -> Result<Value> {
    let m = plan
        .manifest()
        .ok_or_else(|| anyhow!("a chunk of the file was not stored"))?;
    let bytes = m.to_bytes();
    if bytes.len() > CHUNK_SIZE {
        bail!("the file has too many chunks for one signed manifest; split it into smaller files");
    }
    let mut v = put_signed_retrying(node, owner, name, &bytes, replicas).await?;
    v["size"] = json!(m.size);
    v["chunks"] = json!(m.chunks.len());
    Ok(v)
}

/// `put --operator`: streams the file to the node, whose operator key signs (and owns) it; the
/// node chunks a large file itself.
async fn put_operator(node: &str, file: &Path, name: &str, replicas: u8) -> Result<Value> {
    let mut f = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("cannot read {}", file.display()))?;
    let len = f
        .metadata()
        .await
        .with_context(|| format!("cannot read {}", file.display()))?
        .len();
    let path = format!("/v1/objects?name={}&replicas={replicas}", encode(name));
    // Stream the file: at most a few pieces in memory.
    let (tx, body) = ChannelBody::new(Some(len), 2);
    let shown = file.display().to_string();
    let bar = progress(len, "put");
    let sending = bar.clone();
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
            sending.inc(n as u64);
        }
    });
    // The answer comes once every chunk is stored: allow time in proportion to the size.
    let within = STALL + Duration::from_secs(len / (1 << 20));
    let resp = client::open(node, Method::PUT, &path, body, within).await;
    bar.finish_and_clear();
    let (status, headers, bytes) = client::read_all(node, resp?).await?;
    let (status, v) = client::json_of(node, &path, (status, headers, bytes))?;
    client::check(node, status, &v)?;
    Ok(v)
}

/// Which node served a GET, from its headers.
fn served_by(h: &hyper::HeaderMap) -> Value {
    let text = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).map(String::from);
    json!({
        "served_by": {"id": text(SERVED_BY_HEADER), "addr": text(SERVED_BY_ADDR_HEADER)},
        "hops": text(HOPS_HEADER).and_then(|v| v.parse::<u64>().ok()),
        "chunked": text("x-ringvault-chunked").as_deref() == Some("true"),
        "api_node": text("x-ringvault-node"),
    })
}

pub async fn get(
    node: &str,
    id: &str,
    output: Option<PathBuf>,
    verbose: bool,
    json: bool,
) -> Result<()> {
    let id = check_id(id)?;
    // `-o -` is stdout.
    let output = output.filter(|p| p.as_os_str() != "-");
    let path = format!("/v1/objects/{id}");
    let resp = client::open(node, Method::GET, &path, Empty::<Bytes>::new(), STALL).await?;
    if !resp.status().is_success() {
        let (status, headers, bytes) = client::read_all(node, resp).await?;
        let (status, v) = client::json_of(node, &path, (status, headers, bytes))?;
        client::check(node, status, &v)?;
        bail!("the node at {node} answered {status}");
    }
    let mut report = served_by(resp.headers());
    if verbose && !json {
        // Before the bytes: for a chunked object this is the manifest's lookup.
        eprintln!(
            "served by {} at {}, {} hops{}",
            report["served_by"]["id"].as_str().unwrap_or("?"),
            report["served_by"]["addr"].as_str().unwrap_or("?"),
            report["hops"],
            if report["chunked"] == true {
                " (the manifest; each chunk is looked up on its own)"
            } else {
                ""
            }
        );
    }
    let want = resp
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let bar = progress(want.unwrap_or(0), "get");
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
                bar.inc(data.len() as u64);
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
    bar.finish_and_clear();
    drop(sink);
    let done = match (result, tmp, &output) {
        (Ok(()), Some(tmp), Some(path)) => {
            std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
        }
        (Ok(()), _, _) => Ok(()),
        (Err(e), tmp, _) => {
            if let Some(t) = tmp {
                let _ = std::fs::remove_file(t);
            }
            Err(e)
        }
    };
    done?;
    if json {
        // On stderr: stdout may be carrying the object's bytes.
        report["id"] = json!(id);
        report["size"] = json!(got);
        eprintln!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

pub async fn reclaim(
    node: &str,
    id: &str,
    key: Option<&Path>,
    operator: bool,
    json: bool,
) -> Result<()> {
    let id = check_id(id)?;
    let v = if operator {
        // The node reclaims a large file's chunks itself: its key owns them.
        let path = format!("/v1/objects/{id}");
        let r = client::send_with(node, Method::DELETE, &path, &[], Vec::new(), STALL).await?;
        let (status, v) = client::json_of(node, &path, r)?;
        client::check(node, status, &v)?;
        v
    } else {
        let path = owner_key::path_or_default(key)?;
        // A key created now could own nothing: only an existing key is worth signing with.
        let owner = owner_key::load(&path)?.ok_or_else(|| {
            anyhow!(
                "no owner key at {}; pass the key that stored the object with --key FILE, or --operator for objects the node's key owns",
                path.display()
            )
        })?;
        reclaim_owned(node, &owner, id).await?
    };
    if json {
        out!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let n = v["released_by"].as_array().map(Vec::len).unwrap_or(0);
        match v["chunks_released"].as_u64().unwrap_or(0) {
            0 => out!("reclaimed {id} ({n} nodes released it)"),
            c => out!("reclaimed {id} ({n} nodes released it) and its {c} chunks"),
        }
    }
    Ok(())
}

/// Reclaims object `id` with the user's key; for a large file, every chunk first (each with
/// its own certificate), then the manifest, so that a reclaim cut short can be run again.
async fn reclaim_owned(node: &str, owner: &Identity, id: &str) -> Result<Value> {
    let (status, info) = client::get_json(node, &format!("/v1/objects/{id}/replicas")).await?;
    client::check(node, status, &info)?;
    let mut chunks: Vec<String> = Vec::new();
    // Another key's object: the node refuses the reclaim below, before any chunk is touched.
    if info["owner"].as_str() == Some(owner.id().to_string().as_str()) {
        // Each chunk once, in file order (a manifest may list up to a million).
        let mut seen = std::collections::BTreeSet::new();
        for c in info["chunk_ids"].as_array().into_iter().flatten() {
            let c = c
                .as_str()
                .ok_or_else(|| anyhow!("the node at {node} listed a chunk that is not an id"))?;
            if seen.insert(c) {
                chunks.push(c.to_string());
            }
        }
    }
    let left = release_chunks(node, owner, &chunks).await;
    if let Some((first, why)) = left.first() {
        bail!(
            "{} of the file's {} chunks could not be reclaimed (chunk {first}: {why}); the file is kept, run reclaim again",
            left.len(),
            chunks.len()
        );
    }
    let mut v = reclaim_signed(node, owner, id)
        .await?
        .ok_or_else(|| anyhow!("no node holds {id} any more (reclaimed meanwhile?)"))?;
    v["chunks_released"] = json!(chunks.len());
    Ok(v)
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
        out!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    out!("id        {}", v["id"].as_str().unwrap_or("?"));
    out!("name      {}", v["name"].as_str().unwrap_or("?"));
    out!("size      {} bytes", v["size"]);
    if v["chunks"].as_u64().unwrap_or(0) > 0 {
        out!(
            "chunks    {} (each its own object; the replicas below are the manifest's)",
            v["chunks"]
        );
    }
    out!("replicas  {}", v["replicas"]);
    out!("owner     {}", short(&v["owner"]));
    out!(
        "root      {} {} ({} hops)",
        short(&v["root"]["id"]),
        v["root"]["addr"].as_str().unwrap_or("?"),
        v["hops_to_root"]
    );
    out!("replica set (as the node at {node} sees it):");
    for c in v["replica_set_seen_from_here"]
        .as_array()
        .into_iter()
        .flatten()
    {
        out!(
            "  {} {}",
            short(&c["id"]),
            c["addr"].as_str().unwrap_or("?")
        );
    }
    let here = &v["this_node"];
    out!(
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
