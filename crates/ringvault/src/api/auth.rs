//! Who may use a node's HTTP API: a bearer token for what changes state (and, if asked, for
//! reads), and the checks that keep a browser from being used against a node it can reach (a
//! page's form posting to it, or a DNS name rebound to its address).
//!
//! - With `--http-token FILE`, PUT, DELETE, POST and opening a topic's event stream need
//!   `Authorization: Bearer TOKEN`; with `--http-token-reads` every request does, except `/`,
//!   `/v1/status` and `/metrics`. Tokens are compared as BLAKE3 hashes, in constant time.
//! - Without a token, a POST (the one method a form can send cross-site) needs a header no form
//!   can set: `x-ringvault-client` (the CLI sends it) or a non-form content type.
//! - The `Host` header must be an IP address, `localhost`, or a name given with `--http-host`:
//!   a page on a DNS name rebound to the node's address is refused.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::http::ApiError;

/// The header the CLI sends with every request: no HTML form can set it.
pub const CLIENT_HEADER: &str = "x-ringvault-client";

/// What the API asks of a request before it reaches a handler.
#[derive(Clone, Debug, Default)]
pub struct HttpAuth {
    /// BLAKE3 of the token, when one is configured.
    token: Option<blake3::Hash>,
    /// Reads need the token too.
    token_reads: bool,
    /// DNS names accepted in `Host` besides IP addresses and `localhost`, lower case.
    hosts: Vec<String>,
}

impl HttpAuth {
    /// The checks for a node: its token file (if any), whether reads need it, and the names
    /// it may be reached by.
    pub fn new(token_file: Option<&Path>, token_reads: bool, hosts: &[String]) -> Result<Self> {
        let token = token_file.map(read_token).transpose()?;
        if token_reads && token.is_none() {
            bail!("--http-token-reads needs a token: give --http-token FILE");
        }
        Ok(HttpAuth {
            token: token.map(|t| blake3::hash(t.as_bytes())),
            token_reads,
            hosts: hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
        })
    }

    /// Whether a token is configured.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }
}

/// Reads a token file, refusing one that others can read.
pub fn read_token(path: &Path) -> Result<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            bail!(
                "the token file {} can be read by other users (mode {:o}); chmod 600 it",
                path.display(),
                mode & 0o777
            );
        }
    }
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?;
    let token = token.trim().to_string();
    if token.len() < 16 {
        bail!(
            "the token in {} is shorter than 16 characters; use a long random one (e.g. `head -c 32 /dev/urandom | base64`)",
            path.display()
        );
    }
    Ok(token)
}

/// Whether `host` (a `Host` header's value) names this node acceptably.
fn host_allowed(auth: &HttpAuth, host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // [v6]:port
        Some(rest) => {
            return rest
                .split(']')
                .next()
                .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
        }
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    let name = name.to_ascii_lowercase();
    name.parse::<std::net::IpAddr>().is_ok() || name == "localhost" || auth.hosts.contains(&name)
}

/// Whether a request changes state (or opens a stream that subscribes the node).
fn changes_state(req: &Request) -> bool {
    req.method() != Method::GET && req.method() != Method::HEAD
        || req.uri().path().ends_with("/events")
}

/// A request no HTML form could have sent: the CLI's header, or a body type forms cannot use.
fn not_a_form(req: &Request) -> bool {
    if req.headers().contains_key(CLIENT_HEADER) {
        return true;
    }
    let simple = [
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "text/plain",
    ];
    match req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        Some(ct) => {
            let ct = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            !simple.contains(&ct.as_str())
        }
        None => false,
    }
}

fn bearer_ok(auth: &HttpAuth, req: &Request) -> bool {
    let Some(want) = auth.token else {
        return true;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    // blake3::Hash compares in constant time.
    given.is_some_and(|t| blake3::hash(t.as_bytes()) == want)
}

/// The middleware: refuses what the checks above do not allow, before any handler runs.
pub async fn guard(State(auth): State<Arc<HttpAuth>>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !host_allowed(&auth, host) {
        return ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "bad_host",
            format!("this node does not answer to the name {host:?}; use its address, localhost, or a name given with --http-host"),
        )
        .into_response();
    }
    let path = req.uri().path();
    let open = matches!(path, "/" | "/v1/status" | "/metrics");
    let changes = changes_state(&req);
    let needs_token = auth.token.is_some() && (changes || (auth.token_reads && !open));
    if needs_token && !bearer_ok(&auth, &req) {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this node needs its API token: send Authorization: Bearer TOKEN (the CLI reads it from RINGVAULT_HTTP_TOKEN or http.token in its config dir); nothing was changed",
        )
        .into_response();
    }
    if changes && auth.token.is_none() && req.method() == Method::POST && !not_a_form(&req) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "not_a_client",
            format!("a POST needs the {CLIENT_HEADER} header or a non-form content type (so that no web page can post here); nothing was changed"),
        )
        .into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_addresses_localhost_or_configured_names() {
        let auth = HttpAuth {
            hosts: vec!["vault.example".into()],
            ..HttpAuth::default()
        };
        for ok in [
            "127.0.0.1:8000",
            "10.0.0.7",
            "[::1]:8000",
            "localhost:8000",
            "LocalHost",
            "vault.example:443",
            "VAULT.example",
        ] {
            assert!(host_allowed(&auth, ok), "{ok}");
        }
        for bad in [
            "evil.example:8000",
            "",
            "127.0.0.1.evil.example",
            "[zz]:1",
            "vault.example.evil",
        ] {
            assert!(!host_allowed(&auth, bad), "{bad}");
        }
    }
}
