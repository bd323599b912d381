//! The HTTP API's guards: a token for what changes state (and for reads when asked), a token
//! file others can read refused, POSTs no web form could send, and Host names that are
//! addresses, localhost or configured (no DNS rebinding). The CLI sends the token it is given.

mod common;
mod daemons;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{node_with_stdout, tmp};
use daemons::{http, json};

const TOKEN: &str = "correct-horse-battery-staple-4242";

struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write_token(path: &Path, mode: u32) {
    std::fs::write(path, format!("{TOKEN}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

fn status(url: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> u16 {
    http(url, method, path, headers, body).0
}

#[test]
fn the_api_needs_its_token_refuses_form_posts_and_foreign_host_names() {
    let dir = tmp("http-auth");
    let token = dir.join("api.token");
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("authorization", bearer.as_str())];

    // A token file others can read: the node does not start.
    write_token(&token, 0o644);
    let out = Command::new(env!("CARGO_BIN_EXE_ringvault"))
        .args(["node", "--data-dir"])
        .arg(dir.join("loose"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--http-token",
        ])
        .arg(&token)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("can be read by other users"), "{err}");

    // With a private token: writes need it, reads do not.
    write_token(&token, 0o600);
    let t = token.display().to_string();
    let (child, url) = node_with_stdout(&dir.join("a"), &["--http-token", &t], Stdio::null());
    let _a = Kill(child);
    let put = "/v1/objects?name=guarded&replicas=1";
    assert_eq!(status(&url, "PUT", put, &[], b"secret"), 401);
    let wrong = [("authorization", "Bearer not-the-token-at-all")];
    assert_eq!(status(&url, "PUT", put, &wrong, b"secret"), 401);
    let (st, _, b) = http(&url, "PUT", put, &auth, b"secret");
    assert_eq!(st, 201, "{}", String::from_utf8_lossy(&b));
    let id = json(&b)["id"].as_str().unwrap().to_string();
    assert_eq!(
        status(&url, "GET", &format!("/v1/objects/{id}"), &[], b""),
        200
    );
    assert_eq!(
        status(&url, "DELETE", &format!("/v1/objects/{id}"), &[], b""),
        401
    );
    let publish = "/v1/topics/news/messages";
    let cli = [("x-ringvault-client", "test")];
    assert_eq!(status(&url, "POST", publish, &cli, b"hi"), 401);
    assert_eq!(status(&url, "POST", publish, &auth, b"hi"), 202);
    assert_eq!(status(&url, "GET", "/v1/topics/news/events", &[], b""), 401);
    assert_eq!(status(&url, "GET", "/v1/status", &[], b""), 200);
    // A page on a DNS name rebound to this address is refused; localhost is fine.
    let raw = raw_get(&url, "evil.example:8000");
    assert!(raw.starts_with("HTTP/1.1 421"), "{raw}");
    assert!(raw_get(&url, "localhost").starts_with("HTTP/1.1 200"));

    // The CLI sends the token it is given, and says what is wrong without it.
    let file = dir.join("f.txt");
    std::fs::write(&file, b"from the cli").unwrap();
    let cli_put = |with_token: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ringvault"));
        c.args(["put", "--operator", "--replicas", "1", "--node", &url])
            .arg(&file)
            .env("RINGVAULT_CONFIG_DIR", dir.join("cli-config"))
            .env_remove("RINGVAULT_HTTP_TOKEN");
        if with_token {
            c.env("RINGVAULT_HTTP_TOKEN", &token);
        }
        c.output().unwrap()
    };
    let out = cli_put(false);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{:?}",
        out
    );
    let out = cli_put(true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Reads too, when asked: all but /, /v1/status and /metrics.
    let (child, url) = node_with_stdout(
        &dir.join("b"),
        &["--http-token", &t, "--http-token-reads"],
        Stdio::null(),
    );
    let _b = Kill(child);
    assert_eq!(
        status(&url, "GET", &format!("/v1/objects/{id}"), &[], b""),
        401
    );
    assert_eq!(status(&url, "GET", "/v1/route/00", &[], b""), 401);
    assert_eq!(status(&url, "GET", "/metrics", &[], b""), 200);
    assert_eq!(status(&url, "GET", "/v1/status", &[], b""), 200);

    // No token: a POST needs a header no form can send; PUT (curl -T) works as before.
    let (child, url) = node_with_stdout(&dir.join("c"), &[], Stdio::null());
    let _c = Kill(child);
    let form = [("content-type", "application/x-www-form-urlencoded")];
    assert_eq!(status(&url, "POST", publish, &form, b"a=1"), 403);
    assert_eq!(status(&url, "POST", publish, &[], b"hi"), 403);
    assert_eq!(status(&url, "POST", publish, &cli, b"hi"), 202);
    let octets = [("content-type", "application/octet-stream")];
    assert_eq!(status(&url, "POST", publish, &octets, b"hi"), 202);
    assert_eq!(
        status(&url, "PUT", "/v1/objects?name=open&replicas=1", &[], b"x"),
        201
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A GET of /v1/status with `host` as the Host header: the whole response as text.
fn raw_get(url: &str, host: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(url.trim_start_matches("http://")).unwrap();
    write!(
        s,
        "GET /v1/status HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}
