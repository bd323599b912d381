//! Storage quotas on a local ring of daemons (`ringvault ring --broker`), through the CLI and
//! the HTTP API: a user with a 10 MiB grant stores 10 MiB (size × replicas) and no more (the
//! next put is refused with 403 quota_exceeded and the balance, and nothing of it is stored);
//! a reclaim gives the balance back; a put without a grant, with a forged grant, or through the
//! operator key of a node without one is refused. The daemons' audit counters are on /metrics.

mod common;
mod daemons;

use std::path::Path;

use common::{run, start_ring_with, tmp};
use daemons::{json, request};
use ringvault_types::{Id, Identity};

/// Writes a user's owner key (mode 0600, as the CLI makes it) and answers its public key in hex.
fn owner_key(path: &Path, seed: u8) -> String {
    let id = Identity::from_secret_bytes([seed; 32]);
    std::fs::write(path, id.secret_bytes()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    Id::from_bytes(id.public_key().0).to_string()
}

#[test]
fn a_ten_mib_grant_stores_ten_mib_and_no_more_and_a_reclaim_gives_it_back() {
    let dir = tmp("quota");
    std::fs::create_dir_all(&dir).unwrap();
    let s = |p: &Path| p.display().to_string();
    let broker = s(&dir.join("broker"));
    assert!(run(&["broker", "init", "--dir", &broker]).0.success());
    let key = dir.join("user.key");
    let user = owner_key(&key, 21);
    let grant = s(&dir.join("user.grant"));
    let (st, out, err) = run(&[
        "broker", "grant", "--dir", &broker, "--user", &user, "--bytes", "10MiB", "--out", &grant,
    ]);
    assert!(st.success(), "{out}{err}");
    let public = format!("{broker}/broker.pub");
    let (ring, urls) = start_ring_with(
        8,
        &dir.join("ring"),
        &["--broker", &public, "--managers", "3"],
    );
    let node = &urls[2];
    let key_s = s(&key);
    // A put of FILE, two copies, with the user's key and grant, through `node`.
    let put = |file: &str| {
        run(&[
            "put",
            file,
            "--replicas",
            "2",
            "--key",
            &key_s,
            "--grant",
            &grant,
            "--node",
            node,
        ])
    };

    // Five files of 1,000,000 bytes, two copies each: 10,000,000 of the 10,485,760 granted.
    let mut ids = Vec::new();
    for n in 0..6 {
        let file = dir.join(format!("file-{n}"));
        std::fs::write(&file, vec![n as u8; 1_000_000]).unwrap();
        let (st, out, err) = put(&s(&file));
        if n < 5 {
            assert!(st.success(), "put {n}: {out}{err}");
            ids.push(out.trim().to_string());
        } else {
            // The sixth would pass the grant: refused with the balance, nothing stored.
            assert!(!st.success(), "the sixth put was stored: {out}");
            assert!(err.contains("quota_exceeded"), "{err}");
            assert!(err.contains("10000000 of 10485760 bytes used"), "{err}");
            let owner = Identity::from_secret_bytes([21; 32]).public_key();
            let id = ringvault_past::object_id("file-5", &owner, 0);
            let (st, _) = request(&urls[5], "GET", &format!("/v1/objects/{id}/replicas"), b"");
            assert_eq!(st, 404, "the refused object is stored");
        }
    }
    // The proposer counted the refusal on /metrics.
    let refused: u64 = urls
        .iter()
        .map(|u| {
            let (_, body) = request(u, "GET", "/metrics", b"");
            let text = String::from_utf8_lossy(&body).into_owned();
            // Every daemon audits its leaf set: the counters are there (zero or more).
            assert!(text.contains("ringvault_audits_suspects "), "{text}");
            text.lines()
                .find_map(|l| l.strip_prefix("ringvault_accounts_over_quota_total "))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .expect("the accounts counters on /metrics")
        })
        .sum();
    assert_eq!(refused, 1);
    let (st, out, err) = run(&["quota", "--key", &key_s, "--node", &urls[6], "--json"]);
    assert!(st.success(), "{out}{err}");
    let v = json(out.as_bytes());
    assert_eq!(v["used"], 10_000_000, "{v}");

    // Refused: no grant, a grant changed after signing, the operator key of a node without a
    // grant of its own.
    let extra = dir.join("extra");
    std::fs::write(&extra, b"twelve bytes").unwrap();
    let (st, _, err) = run(&["put", &s(&extra), "--key", &key_s, "--node", node]);
    assert!(!st.success() && err.contains("no_grant"), "{err}");
    let text = std::fs::read_to_string(&grant).unwrap();
    let raw = ringvault_types::unarmor("STORAGE GRANT", &text).unwrap();
    let mut g = ringvault_types::Grant::decode(&raw).unwrap();
    g.body.bytes *= 100;
    let forged = dir.join("forged.grant");
    std::fs::write(
        &forged,
        ringvault_types::armor("STORAGE GRANT", &g.encode()),
    )
    .unwrap();
    let (st, _, err) = run(&[
        "put",
        &s(&extra),
        "--key",
        &key_s,
        "--grant",
        &s(&forged),
        "--node",
        node,
    ]);
    assert!(!st.success() && err.contains("grant_refused"), "{err}");
    let (st, body) = request(node, "PUT", "/v1/objects?name=op", b"operator bytes");
    assert_eq!(st, 403, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["code"], "no_grant");

    // A reclaim gives its 2,000,000 bytes back; the sixth then fits.
    let (st, out, err) = run(&["reclaim", &ids[1], "--key", &key_s, "--node", &urls[4]]);
    assert!(st.success(), "{out}{err}");
    let (st, out, err) = run(&["quota", "--key", &key_s, "--node", node, "--json"]);
    assert!(st.success(), "{out}{err}");
    assert_eq!(json(out.as_bytes())["used"], 8_000_000);
    let file = s(&dir.join("file-5"));
    let (st, out, err) = put(&file);
    assert!(st.success(), "after the reclaim: {out}{err}");

    drop(ring);
    let _ = std::fs::remove_dir_all(&dir);
}
