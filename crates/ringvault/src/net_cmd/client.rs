//! The CLI's HTTP client: a plain HTTP/1.1 GET on hyper (already in the tree through axum), so
//! the client adds no crates. Only `http://` URLs: the API is meant for loopback or a trusted
//! network.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;

/// How long a request to the node may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// GETs `path` from the node at `base`; returns the HTTP status and the parsed JSON body. A node
/// that cannot be reached gives a one-line error naming the URL.
pub async fn get_json(base: &str, path: &str) -> Result<(u16, serde_json::Value)> {
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| anyhow!("{url} is not a valid URL ({e}); pass --node http://HOST:PORT"))?;
    if uri.scheme_str() != Some("http") {
        bail!("{url}: only http:// node URLs are supported; pass --node http://HOST:PORT");
    }
    let host = uri.host().unwrap_or("127.0.0.1").to_string();
    let port = uri.port_u16().unwrap_or(80);
    let down = |e: &dyn std::fmt::Display| {
        anyhow!("cannot reach the node at {base} ({e}); is it running? start one with `ringvault node` or `ringvault ring`, or pass --node URL")
    };
    let fetch = async {
        let stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| down(&e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| down(&e))?;
        tokio::spawn(conn);
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or("localhost");
        let req = Request::get(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
            .header(hyper::header::HOST, authority)
            .body(Empty::<Bytes>::new())?;
        let resp = sender.send_request(req).await.map_err(|e| down(&e))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| down(&e))?
            .to_bytes();
        let json = serde_json::from_slice(&body).map_err(|e| {
            anyhow!("{url} answered {status} with something that is not JSON ({e}); is that a ringvault node?")
        })?;
        Ok::<_, anyhow::Error>((status, json))
    };
    tokio::time::timeout(TIMEOUT, fetch)
        .await
        .map_err(|_| anyhow!("the node at {base} did not answer within {TIMEOUT:?}"))?
}

/// Like [`get_json`], but an error answer from the node becomes an error.
pub async fn get_ok(base: &str, path: &str) -> Result<serde_json::Value> {
    let (status, v) = get_json(base, path).await?;
    if !(200..300).contains(&status) {
        let msg = v["error"].as_str().unwrap_or("unknown error");
        let code = v["code"].as_str().unwrap_or("?");
        bail!("the node at {base} answered {status} ({code}): {msg}");
    }
    Ok(v)
}
