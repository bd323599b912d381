//! The HTTP API's connections are bounded: 500 idle connections, connections that trickle a
//! request head and keep-alive connections left idle are all closed after the header timeout
//! (1 s here), while normal requests are served throughout and a topic's event stream lives on;
//! past the connection cap a new connection is closed at once and counted, and once the others
//! are gone requests are served again.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{get, node_with_stdout, tmp};

/// Whether the server closed `s` within `within` (end of stream or reset), rather than keeping
/// it open. Reads and discards anything the server sends first.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// A GET that answers `None` when the connection is closed or reset (over the cap).
fn try_get(url: &str, path: &str) -> Option<(u16, String)> {
    let mut s = connect(url);
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let status = resp.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, resp.split_once("\r\n\r\n")?.1.to_string()))
}

fn connect(url: &str) -> TcpStream {
    TcpStream::connect(url.trim_start_matches("http://").trim_end_matches('/')).unwrap()
}

struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn idle_slow_and_excess_http_connections_are_closed_and_requests_go_on() {
    let dir = tmp("http-limits");
    let limits = [
        "--http-header-timeout-ms",
        "1000",
        "--http-max-connections",
        "600",
    ];
    let (child, url) = node_with_stdout(&dir.join("a"), &limits, std::process::Stdio::null());
    let _node = Kill(child);

    // 500 connections that say nothing, 20 that trickle a request head, one keep-alive
    // connection left idle after a request, and an event stream.
    let mut idle: Vec<TcpStream> = (0..500).map(|_| connect(&url)).collect();
    let mut slow: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = connect(&url);
            s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\n")
                .unwrap();
            s
        })
        .collect();
    let mut kept = connect(&url);
    kept.write_all(b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 12];
    kept.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let mut events = connect(&url);
    events
        .write_all(b"GET /v1/topics/news/events HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    events.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");

    // Normal requests are served while they are held, and the slow ones keep trickling.
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(600) {
        assert_eq!(get(&url, "/v1/status").0, 200);
        for s in &mut slow {
            let _ = s.write_all(b"X");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // All of them are closed within the timeout plus slack; the event stream is not.
    for (what, conns) in [("idle", &mut idle), ("slow-header", &mut slow)] {
        let mut open = 0;
        for s in conns.iter_mut() {
            open += usize::from(!closed_within(s, Duration::from_secs(3)));
        }
        assert_eq!(open, 0, "{open} {what} connections still open");
    }
    assert!(
        closed_within(&mut kept, Duration::from_secs(3)),
        "an idle keep-alive connection stayed open"
    );
    assert!(
        !closed_within(&mut events, Duration::from_millis(500)),
        "the event stream was cut"
    );
    assert_eq!(get(&url, "/v1/status").0, 200);

    // The cap: a second node taking 10 connections at once.
    let limits = [
        "--http-header-timeout-ms",
        "2000",
        "--http-max-connections",
        "10",
    ];
    let (child, url) = node_with_stdout(&dir.join("b"), &limits, std::process::Stdio::null());
    let _capped = Kill(child);
    assert_eq!(get(&url, "/v1/status").0, 200);
    // Ten connections that each hold a place (a connection that just ended may still hold
    // one for a moment: then one of the ten is closed, and they are tried again).
    let mut tries = 0;
    let held = loop {
        let mut held: Vec<TcpStream> = (0..10).map(|_| connect(&url)).collect();
        let mut closed = 0;
        for s in held.iter_mut() {
            closed += usize::from(closed_within(s, Duration::from_millis(100)));
        }
        if closed == 0 {
            break held;
        }
        tries += 1;
        assert!(tries < 20, "ten connections never held their places");
        drop(held);
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut over = connect(&url);
    assert!(
        closed_within(&mut over, Duration::from_millis(500)),
        "the 11th connection was kept"
    );
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    let metrics = loop {
        if let Some((200, body)) = try_get(&url, "/metrics") {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "requests are not served again after the cap"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let refused: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ringvault_http_connections_refused_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the refused connections are counted");
    assert!(refused >= 1, "{refused}");
    let _ = std::fs::remove_dir_all(&dir);
}
