//! Signed mutable records through the HTTP API and the CLI on a local ring (`ringvault ring`):
//! written through one node and read through others at their highest version, an older version
//! refused with 409, a delete read back as such, bad names and oversized values refused with
//! JSON errors, `ringvault record` doing the same from the command line, and `record watch`
//! printing every new version in order.

mod common;
mod daemons;

use std::time::Duration;

use common::{run, start_ring, start_ring_with, tmp};
use daemons::{http, json, request};

#[test]
fn records_are_written_overwritten_deleted_and_read_through_other_nodes() {
    let dir = tmp("records");
    let (mut ring, urls) = start_ring(6, &dir);
    let writer = &urls[1];

    // Write and overwrite through node 1; the acks come from k = 3 replicas.
    let (s, b) = request(writer, "PUT", "/v1/records/profile", b"version one");
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let v = json(&b);
    assert_eq!(v["version"], 1);
    assert_eq!(v["acks"].as_array().map(Vec::len), Some(3));
    let owner = v["owner"].as_str().unwrap().to_string();
    let (s, b) = request(writer, "PUT", "/v1/records/profile", b"version two");
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json(&b)["version"], 2);

    // Read through every other node: the highest version, with its headers.
    for url in urls.iter().filter(|u| *u != writer) {
        let (s, headers, body) = http(
            url,
            "GET",
            &format!("/v1/records/{owner}/profile"),
            &[],
            b"",
        );
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(body, b"version two");
        let h = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(h("x-record-version").as_deref(), Some("2"));
        assert_eq!(h("x-record-conflict").as_deref(), Some("false"));
    }

    // An older version is refused and changes nothing.
    let (s, _, b) = http(
        writer,
        "PUT",
        "/v1/records/profile",
        &[("x-record-version", "1")],
        b"old",
    );
    assert_eq!(s, 409);
    assert_eq!(json(&b)["code"], "stale_version");
    let (s, _, body) = http(
        &urls[4],
        "GET",
        &format!("/v1/records/{owner}/profile"),
        &[],
        b"",
    );
    assert_eq!((s, body.as_slice()), (200, &b"version two"[..]));

    // Bad requests get JSON errors.
    let (s, b) = request(writer, "PUT", "/v1/records/a%00b", b"x");
    assert_eq!((s, json(&b)["code"].as_str()), (400, Some("bad_name")));
    let big = vec![7u8; ringvault_types::MAX_RECORD_VALUE + 1];
    let (s, b) = request(writer, "PUT", "/v1/records/big", &big);
    assert_eq!(
        (s, json(&b)["code"].as_str()),
        (413, Some("value_too_large"))
    );
    let (s, b) = request(writer, "GET", "/v1/records/not-hex/profile", b"");
    assert_eq!((s, json(&b)["code"].as_str()), (400, Some("bad_owner")));
    // 64 bytes that are not 64 hex digits (multi-byte characters; a sign): refused, no panic.
    let euros = format!("{}a", "%E2%82%AC".repeat(21));
    let signed = format!("+{}", "f".repeat(63));
    for owner in [euros, signed] {
        let (s, b) = request(writer, "GET", &format!("/v1/records/{owner}/profile"), b"");
        assert_eq!((s, json(&b)["code"].as_str()), (400, Some("bad_owner")));
    }
    let (s, b) = request(
        &urls[3],
        "GET",
        &format!("/v1/records/{owner}/never-written"),
        b"",
    );
    assert_eq!((s, json(&b)["code"].as_str()), (404, Some("not_found")));

    // Delete: a tombstone at the next version; reads say it was deleted.
    let (s, b) = request(writer, "DELETE", "/v1/records/profile", b"");
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(
        (json(&b)["version"].as_u64(), json(&b)["deleted"].as_bool()),
        (Some(3), Some(true))
    );
    let (s, b) = request(
        &urls[5],
        "GET",
        &format!("/v1/records/{owner}/profile"),
        b"",
    );
    assert_eq!((s, json(&b)["code"].as_str()), (404, Some("deleted")));

    // The CLI: put from a file, signed with the user's own key, through one node; get by
    // OWNER/NAME through another; again, and the version goes up. --operator: the node signs.
    let file = dir.join("value.txt");
    std::fs::write(&file, b"from the cli").unwrap();
    let f = file.display().to_string();
    let key = dir.join("me.key").display().to_string();
    let (st, out, err) = run(&[
        "record", "put", "cli", &f, "--key", &key, "--node", writer, "--json",
    ]);
    assert!(st.success(), "{out}{err}");
    let user = json(out.as_bytes())["owner"].as_str().unwrap().to_string();
    assert_ne!(user, owner, "the user's key, not the node's");
    assert_eq!(json(out.as_bytes())["version"], 1);
    let (st, out, err) = run(&[
        "record", "put", "cli", &f, "--key", &key, "--node", &urls[4],
    ]);
    assert!(st.success(), "{out}{err}");
    assert!(out.contains("version 2"), "{out}");
    let (st, out, err) = run(&["record", "get", &format!("{user}/cli"), "--node", &urls[2]]);
    assert!(st.success(), "{out}{err}");
    assert_eq!(out, "from the cli");
    assert!(err.contains("version 2"), "{err}");
    let (st, out, err) = run(&["record", "put", "cli", &f, "--operator", "--node", writer]);
    assert!(st.success(), "{out}{err}");
    assert!(out.contains(&format!("{owner}/cli version 1")), "{out}");
    let (st, _, err) = run(&["record", "get", "no-slash", "--node", &urls[2]]);
    assert!(!st.success());
    assert!(err.contains("OWNER/NAME"), "{err}");

    // A record signed elsewhere (the user's own key), handed over whole through the API.
    // (Forged ones are refused in records_churn.rs.)
    let signer = ringvault_types::Identity::from_secret_bytes([9; 32]);
    let hex = |r: &ringvault_types::Record| -> String {
        r.encode().iter().map(|b| format!("{b:02x}")).collect()
    };
    let good = ringvault_types::Record::sign(
        &signer,
        "signed",
        1,
        0,
        ringvault_types::RecordValue::Inline(b"genuine".to_vec()),
    )
    .unwrap();
    let (s, _, b) = http(
        &urls[3],
        "PUT",
        "/v1/records/signed",
        &[("x-record-signed", &hex(&good))],
        b"",
    );
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let signer_hex: String = signer
        .public_key()
        .0
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let (s, _, body) = http(
        &urls[5],
        "GET",
        &format!("/v1/records/{signer_hex}/signed"),
        &[],
        b"",
    );
    assert_eq!((s, body.as_slice()), (200, &b"genuine"[..]));
    let (s, b) = request(&urls[5], "GET", &format!("/v1/records/{owner}/signed"), b"");
    assert_eq!(
        (s, json(&b)["code"].as_str()),
        (404, Some("not_found")),
        "nothing under the stolen owner"
    );

    // Watch: the current version first, then every new one written elsewhere, in order.
    let (s, b) = request(writer, "PUT", "/v1/records/watched", b"first");
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let who = format!("{owner}/watched");
    let watcher = common::Proc::start(&["record", "watch", &who, "--node", &urls[3]]);
    let first = watcher.read_until("version 1", Duration::from_secs(30));
    assert!(first.last().unwrap().ends_with(": first"), "{first:?}");
    // Publish only once the watcher's node hangs in the record's tree.
    let key = json(&b)["key"].as_str().unwrap().to_string();
    let topic = format!("record:{key}");
    daemons::wait_for(
        Duration::from_secs(30),
        "the watcher joins the tree",
        || {
            let (_, b) = request(&urls[3], "GET", "/v1/topics", b"");
            json(&b)["topics"].as_array().is_some_and(|ts| {
                ts.iter().any(|t| {
                    t["name"] == topic.as_str() && (t["root"] == true || !t["parent"].is_null())
                })
            })
        },
    );
    for value in ["second", "third"] {
        let (s, b) = request(writer, "PUT", "/v1/records/watched", value.as_bytes());
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    }
    let (s, _) = request(writer, "DELETE", "/v1/records/watched", b"");
    assert_eq!(s, 200);
    let seen = watcher.read_until("version 4", Duration::from_secs(30));
    assert_eq!(
        seen,
        vec![
            "version 2: second".to_string(),
            "version 3: third".to_string(),
            "version 4: deleted".to_string()
        ]
    );
    drop(watcher);

    ring.signal_and_wait("TERM", Duration::from_secs(30));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn in_a_secure_ring_records_go_through_secure_routing() {
    let dir = tmp("records-secure");
    let (mut ring, urls) = start_ring_with(6, &dir, &["--mode", "secure"]);
    let (s, b) = request(&urls[1], "PUT", "/v1/records/profile", b"secure one");
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let v = json(&b);
    assert_eq!(v["acks"].as_array().map(Vec::len), Some(3), "{v}");
    let owner = v["owner"].as_str().unwrap().to_string();
    let (s, b) = request(&urls[1], "PUT", "/v1/records/profile", b"secure two");
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    for url in &urls {
        let (s, _, body) = http(
            url,
            "GET",
            &format!("/v1/records/{owner}/profile"),
            &[],
            b"",
        );
        assert_eq!(
            (s, body.as_slice()),
            (200, &b"secure two"[..]),
            "through {url}"
        );
    }
    ring.signal_and_wait("TERM", Duration::from_secs(30));
    let _ = std::fs::remove_dir_all(&dir);
}
