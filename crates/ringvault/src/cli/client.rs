//! The CLI's HTTP client: plain HTTP/1.1 requests on hyper (already in the tree through axum), so
//! the client adds no crates. Only `http://` URLs: the API is meant for loopback or a trusted
//! network.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;

/// How long a request to the node may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The node's API token, if the user has one: the file `RINGVAULT_HTTP_TOKEN` names, else
/// `http.token` in the config dir. Read once; a file that exists but cannot be used is an
/// error.
fn api_token() -> Result<Option<String>> {
    static TOKEN: std::sync::OnceLock<Result<Option<String>, String>> = std::sync::OnceLock::new();
    let found = TOKEN.get_or_init(|| {
        let path = match std::env::var_os("RINGVAULT_HTTP_TOKEN").filter(|v| !v.is_empty()) {
            Some(p) => std::path::PathBuf::from(p),
            None => match crate::cli::owner_key::config_dir() {
                Ok(d) if d.join("http.token").exists() => d.join("http.token"),
                _ => return Ok(None),
            },
        };
        crate::api::auth::read_token(&path)
            .map(Some)
            .map_err(|e| format!("{e:#}"))
    });
    found.clone().map_err(|e| anyhow!(e))
}

/// Sends `method path` with `body` to the node at `base` and returns the response once its
/// head arrives (within `within`). A node that cannot be reached gives a one-line error naming
/// the URL.
pub async fn open<B>(
    base: &str,
    method: hyper::Method,
    path: &str,
    body: B,
    within: Duration,
) -> Result<hyper::Response<hyper::body::Incoming>>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    open_with(base, method, path, &[], body, within).await
}

/// Like [`open`], with extra request headers. One connection per request.
pub async fn open_with<B>(
    base: &str,
    method: hyper::Method,
    path: &str,
    headers: &[(&str, String)],
    body: B,
    within: Duration,
) -> Result<hyper::Response<hyper::body::Incoming>>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut conn = Connection::new(base);
    conn.open(method, path, headers, body, within).await
}

/// A request body of any kind, for a [`Connection`] that carries several.
pub type AnyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Boxes `body` for a [`Connection`].
pub fn any_body<B>(body: B) -> AnyBody
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// An HTTP/1.1 connection to one node, kept alive across requests (dialled again when the node
/// closed it).
pub struct Connection<B = AnyBody> {
    base: String,
    sender: Option<hyper::client::conn::http1::SendRequest<B>>,
}

impl<B> Connection<B>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    /// A connection to the node at `base` (`http://HOST:PORT`), dialled at the first request.
    pub fn new(base: &str) -> Self {
        Connection {
            base: base.trim_end_matches('/').to_string(),
            sender: None,
        }
    }

    /// Sends `method path` with `body` and returns the response once its head arrives (within
    /// `within`). A node that cannot be reached gives a one-line error naming the URL.
    pub async fn open(
        &mut self,
        method: hyper::Method,
        path: &str,
        headers: &[(&str, String)],
        body: B,
        within: Duration,
    ) -> Result<hyper::Response<hyper::body::Incoming>> {
        let base = self.base.clone();
        let url = format!("{base}{path}");
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| anyhow!("{url} is not a valid URL ({e}); pass --node http://HOST:PORT"))?;
        if uri.scheme_str() != Some("http") {
            bail!("{url}: only http:// node URLs are supported; pass --node http://HOST:PORT");
        }
        let down = |e: &dyn std::fmt::Display| {
            anyhow!("cannot reach the node at {base} ({e}); is it running? start one with `ringvault node` or `ringvault ring`, or pass --node URL")
        };
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or("localhost");
        let mut req = Request::builder()
            .method(method)
            .uri(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
            .header(hyper::header::HOST, authority)
            .header(crate::api::auth::CLIENT_HEADER, "cli");
        if let Some(token) = api_token()? {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        for (name, value) in headers {
            req = req.header(*name, value.as_str());
        }
        let req = req.body(body)?;
        let host = uri.host().unwrap_or("127.0.0.1").to_string();
        let port = uri.port_u16().unwrap_or(80);
        let fetch = async {
            if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
                let stream = tokio::net::TcpStream::connect((host.as_str(), port))
                    .await
                    .map_err(|e| down(&e))?;
                let _ = stream.set_nodelay(true);
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| down(&e))?;
                tokio::spawn(conn);
                self.sender = Some(sender);
            }
            let Some(sender) = self.sender.as_mut() else {
                bail!("no connection to {base}");
            };
            sender.ready().await.map_err(|e| down(&e))?;
            sender.send_request(req).await.map_err(|e| down(&e))
        };
        let r = tokio::time::timeout(within, fetch)
            .await
            .map_err(|_| anyhow!("the node at {base} did not answer within {within:?}"))
            .and_then(|r| r);
        if r.is_err() {
            // Whatever state the connection was left in, the next request starts afresh.
            self.sender = None;
        }
        r
    }
}

/// Sends `method path` with `body` to the node at `base`; returns the HTTP status, the
/// response headers and the body.
pub async fn send(
    base: &str,
    method: hyper::Method,
    path: &str,
    body: Vec<u8>,
) -> Result<(u16, hyper::HeaderMap, Bytes)> {
    send_with(base, method, path, &[], body, TIMEOUT).await
}

/// Like [`send`], with extra request headers, waiting `within` for the answer to begin.
pub async fn send_with(
    base: &str,
    method: hyper::Method,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
    within: Duration,
) -> Result<(u16, hyper::HeaderMap, Bytes)> {
    let resp = open_with(
        base,
        method,
        path,
        headers,
        Full::new(Bytes::from(body)),
        within,
    )
    .await?;
    read_all(base, resp).await
}

/// Reads a whole (small) response.
pub async fn read_all(
    base: &str,
    resp: hyper::Response<hyper::body::Incoming>,
) -> Result<(u16, hyper::HeaderMap, Bytes)> {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = tokio::time::timeout(TIMEOUT, resp.into_body().collect())
        .await
        .map_err(|_| anyhow!("the node at {base} did not finish answering within {TIMEOUT:?}"))?
        .map_err(|e| anyhow!("the node at {base} broke off its answer ({e})"))?
        .to_bytes();
    Ok((status, headers, body))
}

/// GETs `path` from the node at `base`; returns the HTTP status and the parsed JSON body.
pub async fn get_json(base: &str, path: &str) -> Result<(u16, serde_json::Value)> {
    json_of(
        base,
        path,
        send(base, hyper::Method::GET, path, Vec::new()).await?,
    )
}

pub fn json_of(
    base: &str,
    path: &str,
    (status, _, body): (u16, hyper::HeaderMap, Bytes),
) -> Result<(u16, serde_json::Value)> {
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let json = serde_json::from_slice(&body).map_err(|e| {
        anyhow!("{url} answered {status} with something that is not JSON ({e}); is that a ringvault node?")
    })?;
    Ok((status, json))
}

/// Fails with the node's one-line error unless `status` is a success.
pub fn check(base: &str, status: u16, v: &serde_json::Value) -> Result<()> {
    if !(200..300).contains(&status) {
        let msg = v["error"].as_str().unwrap_or("unknown error");
        let code = v["code"].as_str().unwrap_or("?");
        bail!("the node at {base} answered {status} ({code}): {msg}");
    }
    Ok(())
}

/// Sends a request whose answer is JSON; an error answer from the node becomes an error.
pub async fn send_ok(
    base: &str,
    method: hyper::Method,
    path: &str,
    body: Vec<u8>,
) -> Result<serde_json::Value> {
    let (status, v) = json_of(base, path, send(base, method, path, body).await?)?;
    check(base, status, &v)?;
    Ok(v)
}

/// Like [`get_json`], but an error answer from the node becomes an error.
pub async fn get_ok(base: &str, path: &str) -> Result<serde_json::Value> {
    let (status, v) = get_json(base, path).await?;
    check(base, status, &v)?;
    Ok(v)
}

/// Opens `path` on the node at `base` as a Server-Sent Events stream and hands each event's
/// name and data to `on_event` until the node closes it (an error answer becomes an error).
pub async fn follow_sse(
    base: &str,
    path: &str,
    mut on_event: impl FnMut(&str, &str),
) -> Result<()> {
    let resp = open(
        base,
        hyper::Method::GET,
        path,
        http_body_util::Empty::<Bytes>::new(),
        Duration::from_secs(30),
    )
    .await?;
    if !resp.status().is_success() {
        let (status, v) = json_of(base, path, read_all(base, resp).await?)?;
        check(base, status, &v)?;
        bail!("the node at {base} answered {status}");
    }
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    let (mut event, mut data) = (String::new(), String::new());
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| anyhow!("the node at {base} broke off the stream ({e})"))?;
        let Some(chunk) = frame.data_ref() else {
            continue;
        };
        buf.extend_from_slice(chunk);
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !data.is_empty() {
                    on_event(&event, &data);
                }
                event.clear();
                data.clear();
            } else if let Some(e) = line.strip_prefix("event:") {
                event = e.trim_start().to_string();
            } else if let Some(d) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(d.strip_prefix(' ').unwrap_or(d));
            }
        }
    }
    bail!("the node at {base} closed the stream")
}
