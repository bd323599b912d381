//! The binary end to end: the HTTP API and its errors, the client commands, and the daemon's
//! identity and signal handling.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn http_api_serves_status_routes_metrics_and_json_errors_and_the_cli_prints_them() {
    let dir = tmp("api");
    let (mut ring, urls) = start_ring(3, &dir.join("ring"));
    let base = &urls[1];

    // "ring ready" means every node joined; the last join's announcements may still be on
    // their way, so wait (bounded) for the leaf set to take in both other nodes.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let st = loop {
        let (code, body) = get(base, "/v1/status");
        assert_eq!(code, 200, "{body}");
        let st: serde_json::Value = serde_json::from_str(&body).unwrap();
        if st["leaf_set_larger"].as_array().unwrap().len() >= 2 {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "leaf set never filled: {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(st["id"].as_str().unwrap().len(), 64);
    assert_eq!(st["ready"], true);

    let key = "00".repeat(32);
    let (code, body) = get(base, &format!("/v1/route/{key}"));
    assert_eq!(code, 200, "{body}");
    let r: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(r["key"], key);
    assert_eq!(r["root"]["id"].as_str().unwrap().len(), 64);
    let hops = r["hops"].as_array().unwrap();
    assert_eq!(
        hops.first().unwrap()["id"],
        st["id"],
        "the path starts here"
    );
    assert_eq!(
        hops.last().unwrap()["id"],
        r["root"]["id"],
        "the path ends at the root"
    );

    for bad in ["xyz", "0123", &"g".repeat(64), &"0".repeat(65), "%ff%fe"] {
        let (code, body) = get(base, &format!("/v1/route/{bad}"));
        assert_eq!(code, 400, "key {bad:?}: {body}");
        let e: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(e["code"], "bad_key");
        assert!(e["error"].as_str().unwrap().contains("64 hex digits"));
    }
    let (code, body) = get(base, "/v1/nothing");
    assert_eq!(code, 404);
    assert!(body.contains("\"code\":\"not_found\""));

    let (code, metrics) = get(base, "/metrics");
    assert_eq!(code, 200);
    for m in [
        "ringvault_messages_in_total{type=",
        "ringvault_messages_out_total{type=",
        "ringvault_routes_total 1",
        "ringvault_route_hops_bucket{le=\"+Inf\"} 1",
        "ringvault_peer_rtt_seconds_count",
        "ringvault_leaf_set_changes_total",
        "ringvault_failures_detected_total 0",
        "ringvault_connections_open",
    ] {
        assert!(metrics.contains(m), "metrics lack {m}:\n{metrics}");
    }
    let (code, page) = get(base, "/");
    assert_eq!(code, 200);
    assert!(
        page.contains("<svg id=\"ring\"") && !page.contains("https://"),
        "dashboard is self-contained"
    );

    // The client commands against the same node.
    let (ok, out, _) = run(&["status", "--node", base]);
    assert!(ok.success());
    assert!(
        out.contains("LEAF SET") && out.contains(st["id"].as_str().unwrap()),
        "{out}"
    );
    let (ok, out, _) = run(&["route", &key, "--node", base, "--json"]);
    assert!(ok.success());
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["root"], r["root"]);
    let (ok, _, err) = run(&["route", "nonsense", "--node", base]);
    assert_eq!(ok.code(), Some(1));
    assert!(err.contains("400") && err.contains("bad_key"), "{err}");

    let status = ring.signal_and_wait("TERM", Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "ring exit: {status:?}");
    // With the ring gone, the client says which URL failed, in one line, and exits 1.
    let (ok, out, err) = run(&["status", "--node", base]);
    assert_eq!(ok.code(), Some(1));
    assert!(out.is_empty());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains(base.as_str()), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn node_daemon_keeps_its_id_across_restarts_joins_a_ring_and_exits_cleanly_on_sigterm() {
    let dir = tmp("daemon");
    let data = dir.join("a").display().to_string();
    let start = |boot: Option<&str>, data: &str| {
        let mut args = vec![
            "node",
            "--data-dir",
            data,
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
        ];
        if let Some(b) = boot {
            args.extend(["--bootstrap", b]);
        }
        let p = Proc::start(&args);
        let line = p
            .read_until("node ", Duration::from_secs(30))
            .pop()
            .unwrap();
        // "node ID quic ADDR http URL"
        let w: Vec<String> = line.split_whitespace().map(String::from).collect();
        (
            p,
            w[1].clone(),
            w[3].clone(),
            w[5].trim_end_matches('/').to_string(),
        )
    };
    let (mut a, id_a, quic_a, _) = start(None, &data);
    assert_eq!(
        a.signal_and_wait("TERM", Duration::from_secs(30))
            .map(|s| s.success()),
        Some(true)
    );
    let (mut a, id_again, quic_a2, http_a) = start(None, &data);
    assert_eq!(
        id_a, id_again,
        "restart from the same data dir keeps the id"
    );
    let _ = quic_a;

    // A second daemon joins through the first.
    let data_b = dir.join("b").display().to_string();
    let (mut b, id_b, _, http_b) = start(Some(&quic_a2), &data_b);
    assert_ne!(id_b, id_a);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = get(&http_b, "/v1/status");
        let st: serde_json::Value = serde_json::from_str(&body).unwrap();
        let knows_a = body.contains(&id_a);
        if st["ready"] == true && knows_a {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "b never joined a: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, body) = get(&http_a, "/v1/status");
    assert!(body.contains(&id_b), "a does not know b: {body}");

    for p in [&mut b, &mut a] {
        let s = p.signal_and_wait("INT", Duration::from_secs(30));
        assert!(s.is_some_and(|s| s.success()), "daemon exit: {s:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Errors for people and a daemon that outlives its terminal: a CLI error is one line with its
/// causes and no backtrace even under RUST_BACKTRACE=1; a node whose stdout is a full device or
/// a closed pipe keeps serving; a taken HTTP port fails before the node joins anything.
#[test]
fn errors_are_one_line_and_the_daemon_survives_an_unwritable_stdout() {
    let dir = tmp("robust");
    let (status, out, err) = {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_ringvault"))
            .args(["status", "--node", "http://127.0.0.1:9"])
            .env("RUST_BACKTRACE", "1")
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        (
            o.status,
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(
        !err.contains("backtrace") && !err.contains("panicked"),
        "{err}"
    );

    for (name, stdout) in [
        (
            "full",
            std::process::Stdio::from(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open("/dev/full")
                    .unwrap(),
            ),
        ),
        ("pipe", std::process::Stdio::piped()),
    ] {
        let (mut child, url) = node_with_stdout(&dir.join(name), &[], stdout);
        // A closed pipe: the reading end goes away before the node writes its line.
        drop(child.stdout.take());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (code, _) = get(&url, "/v1/status");
            if code == 200 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name}: the node does not serve"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            child.try_wait().unwrap().is_none(),
            "{name}: the node exited"
        );
        let _ = child.kill();
        let _ = child.wait();
    }

    // A taken HTTP port: the node stops before it joins (or starts) a ring.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ringvault"))
        .args(["node", "--data-dir"])
        .arg(dir.join("taken"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--http",
            &format!("127.0.0.1:{port}"),
        ])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot serve HTTP"), "{err}");
    assert!(!err.contains("joined"), "it joined before failing: {err}");
    let _ = std::fs::remove_dir_all(&dir);
}
