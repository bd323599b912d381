//! Client-held owner keys on loopback: five `ringvault node` daemons, two users with their own
//! keys (one in a config dir, one in a key file; never $HOME).
//!
//! Alice puts a small file and a large one (chunked and signed on her side) with the CLI; her key
//! is created on first use, private. Both come back byte for byte through other nodes, with the
//! node that served them and the hops. Bob's key cannot reclaim Alice's object (403, and the
//! object stays readable), nor can a node's operator key; Alice's can. Bad certificates get
//! their 400 and store nothing. The operator-key path (a plain PUT, as `curl -T` sends) still
//! works. Reclaiming a large file releases its chunks too, on either path, and an upload
//! that breaks off takes back the chunks it had stored.

mod common;
mod daemons;

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::tmp;
use daemons::{http, json, request, start_daemon, wait_for, Daemon};
use ringvault_past::{encode_certificates, FileCertificate};
use ringvault_types::Identity;
use serde_json::Value;

const NODES: usize = 5;

struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the CLI as a user whose config dir is `config` and whose home is `home`.
fn cli(home: &Path, config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringvault"))
        .args(args)
        .env("HOME", home)
        .env("RINGVAULT_CONFIG_DIR", config)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("RINGVAULT_NODE")
        .env_remove("RINGVAULT_KEY")
        .output()
        .expect("run ringvault")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Fails the test with the command's stderr unless it succeeded; returns its stdout.
fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        text(&out.stderr),
        text(&out.stdout)
    );
    text(&out.stdout)
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Deterministic bytes.
fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

/// The owner id of the key in `file`.
fn owner_id(file: &Path) -> String {
    let bytes: [u8; 32] = std::fs::read(file).unwrap().try_into().unwrap();
    Identity::from_secret_bytes(bytes).id().to_string()
}

/// The nodes that hold a replica (primary or diverted, not a cached copy) of `id`.
fn holders(nodes: &[Daemon], id: &str) -> Vec<String> {
    nodes
        .iter()
        .filter(|d| {
            let (_, b) = request(
                &d.http,
                "GET",
                &format!("/v1/objects/{id}/replicas?local=true"),
                b"",
            );
            let held = json(&b)["this_node"]["holds"].clone();
            held == "primary" || held == "diverted"
        })
        .map(|d| d.id.clone())
        .collect()
}

/// The distinct chunk ids of large object `id`, as `/replicas` lists them.
fn chunk_ids(node: &Daemon, id: &str) -> Vec<String> {
    let (status, b) = request(
        &node.http,
        "GET",
        &format!("/v1/objects/{id}/replicas"),
        b"",
    );
    assert_eq!(status, 200, "{}", text(&b));
    let mut ids: Vec<String> = json(&b)["chunk_ids"]
        .as_array()
        .expect("a chunked object lists its chunks")
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Replica bytes stored over all nodes.
fn used(nodes: &[Daemon]) -> u64 {
    nodes
        .iter()
        .map(|d| {
            let (_, b) = request(&d.http, "GET", "/v1/status", b"");
            json(&b)["storage"]["used"].as_u64().expect("storage.used")
        })
        .sum()
}

/// Every chunk (and the object) is released: no node holds a replica of any of them.
fn assert_released(nodes: &[Daemon], ids: &[String]) {
    for id in ids {
        wait_for(Duration::from_secs(20), "replicas released", || {
            holders(nodes, id).is_empty()
        });
    }
}

#[test]
fn users_own_what_they_put_with_their_keys_and_only_the_owner_reclaims() {
    let dir = tmp("owner-keys");
    let _cleanup = Cleanup(dir.clone());
    let config = dir.join("fast.toml");
    std::fs::write(
        &config,
        "[overlay]\nleaf_set_size = 8\nkeepalive_ms = 1000\nfailure_timeout_ms = 6000\nhop_timeout_ms = 1500\njoin_timeout_ms = 5000\n",
    )
    .unwrap();
    let mut nodes: Vec<Daemon> = Vec::new();
    for i in 0..NODES {
        let boot: Vec<String> = nodes.iter().rev().take(2).map(|d| d.quic.clone()).collect();
        nodes.push(start_daemon(
            &dir.join(format!("n{i}")),
            &config,
            &boot,
            "256MiB",
        ));
    }
    wait_for(Duration::from_secs(60), "full leaf sets", || {
        nodes.iter().all(|d| {
            let (_, b) = request(&d.http, "GET", "/v1/status", b"");
            let v = json(&b);
            let n = |k: &str| v[k].as_array().map_or(0, Vec::len);
            n("leaf_set_smaller") + n("leaf_set_larger") >= NODES - 1
        })
    });
    let ids: Vec<&str> = nodes.iter().map(|d| d.id.as_str()).collect();
    let home = dir.join("home");
    let alice = dir.join("alice-config");
    let bob = dir.join("bob-config");
    let bob_key = dir.join("keys").join("bob.key");

    // Alice's first put creates her key, private, in her config dir.
    let small = content(1, 100_000);
    let small_file = dir.join("small.bin");
    std::fs::write(&small_file, &small).unwrap();
    let out = cli(
        &home,
        &alice,
        &[
            "put",
            small_file.to_str().unwrap(),
            "--json",
            "--node",
            &nodes[0].http,
        ],
    );
    assert!(
        text(&out.stderr).contains("created your owner key"),
        "{}",
        text(&out.stderr)
    );
    let put = json(ok(out).as_bytes());
    let alice_key = alice.join("owner.key");
    assert_eq!(put["owner"], owner_id(&alice_key));
    assert_eq!(put["receipts"].as_array().map(Vec::len), Some(3));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&alice_key).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o077,
            0,
            "the owner key is readable by others: {mode:o}"
        );
    }
    assert_eq!(
        std::fs::read_dir(&alice).unwrap().count(),
        1,
        "only the key"
    );
    assert!(!home.exists(), "nothing was written under HOME");
    let small_id = put["id"].as_str().unwrap().to_string();

    // Back through another node, identical, saying who served it.
    let got = dir.join("small.out");
    let out = cli(
        &home,
        &alice,
        &[
            "get",
            &small_id,
            "-o",
            got.to_str().unwrap(),
            "-v",
            "--node",
            &nodes[3].http,
        ],
    );
    let err = text(&out.stderr);
    ok(out);
    assert_eq!(std::fs::read(&got).unwrap(), small);
    let served = err
        .split_whitespace()
        .skip_while(|w| *w != "by")
        .nth(1)
        .unwrap_or_else(|| panic!("no served-by line: {err}"));
    assert!(
        ids.contains(&served),
        "served by {served}, not a node: {err}"
    );
    let (status, h, body) = http(
        &nodes[4].http,
        "GET",
        &format!("/v1/objects/{small_id}"),
        &[],
        b"",
    );
    assert_eq!(status, 200);
    assert_eq!(body, small);
    let by = header(&h, "x-ringvault-served-by").expect("served-by header");
    assert!(ids.contains(&by), "served by {by}");
    let addr = header(&h, "x-ringvault-served-by-addr").expect("served-by-addr header");
    let server = nodes.iter().find(|d| d.id == by).unwrap();
    assert_eq!(addr, server.quic, "the server's address");
    let hops: u32 = header(&h, "x-ringvault-hops").unwrap().parse().unwrap();
    if by == nodes[4].id {
        assert_eq!(hops, 0, "the node asked served its own copy");
    } else {
        assert!((1..=NODES as u32).contains(&hops), "{hops} hops");
    }

    // A large file is chunked and signed on Alice's side; it comes back whole on stdout.
    let large = content(2, 9 * 1024 * 1024 + 12_345);
    let large_file = dir.join("large.bin");
    std::fs::write(&large_file, &large).unwrap();
    let put = json(
        ok(cli(
            &home,
            &alice,
            &[
                "put",
                large_file.to_str().unwrap(),
                "--name",
                "big",
                "--json",
                "--node",
                &nodes[1].http,
            ],
        ))
        .as_bytes(),
    );
    assert_eq!(put["chunks"], 3);
    assert_eq!(put["size"], large.len());
    assert_eq!(put["owner"], owner_id(&alice_key));
    let large_id = put["id"].as_str().unwrap().to_string();
    // Put again, the same file: it is the one stored (no duplicate), and nothing new is stored.
    // Another file under the name is refused.
    let again_args = |f: &Path| {
        vec![
            "put".to_string(),
            f.display().to_string(),
            "--name".into(),
            "big".into(),
            "--json".into(),
            "--node".into(),
            nodes[2].http.clone(),
        ]
    };
    let args = again_args(&large_file);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let again = json(ok(cli(&home, &alice, &args)).as_bytes());
    assert_eq!(
        (again["id"].as_str(), &again["already_stored"]),
        (Some(large_id.as_str()), &serde_json::json!(true))
    );
    let other_file = dir.join("other.bin");
    std::fs::write(&other_file, content(3, large.len())).unwrap();
    let args = again_args(&other_file);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = cli(&home, &alice, &args);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("another object named"),
        "{}",
        text(&out.stderr)
    );
    // The same for a plain HTTP PUT through one node's operator key: the same large body twice
    // is one file (201, then 200 with the same id); other bytes under the name are 409.
    let body = content(4, 5 * 1024 * 1024);
    let (st1, _, b1) = http(&nodes[0].http, "PUT", "/v1/objects?name=op-big", &[], &body);
    let (st2, _, b2) = http(&nodes[0].http, "PUT", "/v1/objects?name=op-big", &[], &body);
    let (v1, v2) = (json(&b1), json(&b2));
    assert_eq!((st1, st2), (201, 200), "{v1} {v2}");
    assert_eq!(v1["id"], v2["id"]);
    let (st3, _, _) = http(
        &nodes[0].http,
        "PUT",
        "/v1/objects?name=op-big",
        &[],
        &content(5, body.len()),
    );
    assert_eq!(st3, 409);
    let out = cli(
        &home,
        &alice,
        &[
            "get",
            &large_id,
            "-o",
            "-",
            "--json",
            "--node",
            &nodes[2].http,
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout == large, "the large file came back different");
    let report: Value = serde_json::from_slice(&out.stderr)
        .unwrap_or_else(|e| panic!("stderr is not the JSON report ({e}): {}", text(&out.stderr)));
    assert_eq!(report["size"], large.len());
    assert_eq!(report["chunked"], true);
    assert!(ids.contains(&report["served_by"]["id"].as_str().unwrap()));

    // Bob has no key yet: reclaim does not make one up.
    let out = cli(
        &home,
        &bob,
        &[
            "reclaim",
            &small_id,
            "--key",
            bob_key.to_str().unwrap(),
            "--node",
            &nodes[0].http,
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no owner key"),
        "{}",
        text(&out.stderr)
    );
    // Bob's key (made by his first put, in the file he names) is not Alice's: 403.
    let note = dir.join("note.txt");
    std::fs::write(&note, b"bob was here").unwrap();
    ok(cli(
        &home,
        &bob,
        &[
            "put",
            note.to_str().unwrap(),
            "--key",
            bob_key.to_str().unwrap(),
            "--node",
            &nodes[2].http,
        ],
    ));
    assert!(
        bob_key.exists() && !bob.exists(),
        "--key decides where the key lives"
    );
    let out = cli(
        &home,
        &bob,
        &[
            "reclaim",
            &small_id,
            "--key",
            bob_key.to_str().unwrap(),
            "--node",
            &nodes[0].http,
        ],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("403") && err.contains("not_owner"), "{err}");
    // Nor can a node's operator key (a DELETE without a certificate).
    let (status, _, body) = http(
        &nodes[1].http,
        "DELETE",
        &format!("/v1/objects/{small_id}"),
        &[],
        b"",
    );
    assert_eq!(status, 403, "{}", text(&body));
    assert_eq!(json(&body)["code"], "not_owner");
    // A malformed reclaim certificate is a 400.
    let (status, _, body) = http(
        &nodes[1].http,
        "DELETE",
        &format!("/v1/objects/{small_id}"),
        &[("x-ringvault-reclaim", "not-hex")],
        b"",
    );
    assert_eq!(status, 400, "{}", text(&body));
    // Nothing was lost.
    let (status, _, body) = http(
        &nodes[3].http,
        "GET",
        &format!("/v1/objects/{small_id}"),
        &[],
        b"",
    );
    assert_eq!((status, body == small), (200, true));

    // Certificates that do not fit the upload are refused and store nothing.
    let user = Identity::from_secret_bytes([9; 32]);
    let cert = FileCertificate::issue(&user, "mismatch", 0, b"certified bytes", 3, 1);
    let header_value = hex(&encode_certificates(std::slice::from_ref(&cert)));
    let (status, _, body) = http(
        &nodes[0].http,
        "PUT",
        "/v1/objects",
        &[("x-ringvault-certificates", &header_value)],
        b"other bytes!!!!",
    );
    assert_eq!(status, 400, "{}", text(&body));
    assert_eq!(json(&body)["code"], "invalid");
    let (status, _, body) = http(
        &nodes[0].http,
        "PUT",
        "/v1/objects",
        &[("x-ringvault-certificates", "zz")],
        b"x",
    );
    assert_eq!(status, 400, "{}", text(&body));
    assert_eq!(json(&body)["code"], "bad_certificate");
    let (status, _, _) = http(
        &nodes[2].http,
        "GET",
        &format!("/v1/objects/{}", cert.id()),
        &[],
        b"",
    );
    assert_eq!(status, 404);
    // The same certificate with the bytes it certifies is stored, owned by that key.
    let (status, _, body) = http(
        &nodes[0].http,
        "PUT",
        "/v1/objects",
        &[("x-ringvault-certificates", &header_value)],
        b"certified bytes",
    );
    assert_eq!(status, 201, "{}", text(&body));
    assert_eq!(json(&body)["owner"], user.id().to_string());

    // Alice reclaims with her key.
    let out = ok(cli(
        &home,
        &alice,
        &["reclaim", &small_id, "--node", &nodes[4].http],
    ));
    assert!(
        out.contains("reclaimed") && out.contains("(3 nodes released it)"),
        "{out}"
    );

    // Alice reclaims her large file: the chunks go with it.
    let mut chunks = chunk_ids(&nodes[0], &large_id);
    assert_eq!(chunks.len(), 3, "three different chunks");
    for c in &chunks {
        assert_eq!(holders(&nodes, c).len(), 3, "chunk {c} has k replicas");
    }
    let out = ok(cli(
        &home,
        &alice,
        &["reclaim", &large_id, "--node", &nodes[3].http],
    ));
    assert!(out.contains("and its 3 chunks"), "{out}");
    chunks.push(large_id.clone());
    assert_released(&nodes, &chunks);

    // The operator-key path, as `curl -T` uses it: the node's key owns the object.
    let (status, _, body) = http(
        &nodes[2].http,
        "PUT",
        "/v1/objects?name=curl.txt",
        &[],
        b"from curl",
    );
    assert_eq!(status, 201, "{}", text(&body));
    let v = json(&body);
    assert_eq!(v["owner"], nodes[2].id);
    let id = v["id"].as_str().unwrap();
    let (status, _, body) = http(
        &nodes[2].http,
        "DELETE",
        &format!("/v1/objects/{id}"),
        &[],
        b"",
    );
    assert_eq!(status, 200, "{}", text(&body));

    // A large file through the operator key: the node chunks it, and reclaims the chunks.
    let baseline = used(&nodes);
    let big = content(3, 2 * 4 * 1024 * 1024 + 777);
    let (status, _, body) = http(
        &nodes[1].http,
        "PUT",
        "/v1/objects?name=big-by-curl",
        &[],
        &big,
    );
    assert_eq!(status, 201, "{}", text(&body));
    let v = json(&body);
    assert_eq!(v["chunks"], 3);
    let id = v["id"].as_str().unwrap().to_string();
    let mut chunks = chunk_ids(&nodes[4], &id);
    assert_eq!(chunks.len(), 3);
    assert!(used(&nodes) >= baseline + 3 * big.len() as u64);
    let (status, _, body) = http(
        &nodes[1].http,
        "DELETE",
        &format!("/v1/objects/{id}"),
        &[],
        b"",
    );
    assert_eq!(status, 200, "{}", text(&body));
    assert_eq!(json(&body)["chunks_released"], 3);
    chunks.push(id);
    assert_released(&nodes, &chunks);
    assert_eq!(used(&nodes), baseline, "every replica byte was given back");

    // An upload that breaks off after two chunks were stored leaves nothing behind.
    let hostport = nodes[2]
        .http
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let mut s = TcpStream::connect(hostport).unwrap();
    let sent = content(4, 9 * 1024 * 1024);
    write!(
        s,
        "PUT /v1/objects?name=broken HTTP/1.1\r\nHost: {hostport}\r\nContent-Length: {}\r\n\r\n",
        sent.len() + 1024 * 1024
    )
    .unwrap();
    s.write_all(&sent).unwrap();
    wait_for(Duration::from_secs(30), "two chunks stored", || {
        used(&nodes) >= baseline + 3 * 2 * 4 * 1024 * 1024
    });
    drop(s);
    wait_for(Duration::from_secs(30), "the chunks taken back", || {
        used(&nodes) == baseline
    });
    // Nothing was stored under the name either: it is free.
    let (status, _, body) = http(
        &nodes[2].http,
        "PUT",
        "/v1/objects?name=broken",
        &[],
        b"whole this time",
    );
    assert_eq!(status, 201, "{}", text(&body));
}
