//! `ringvault broker`: a broker issues quota and supply grants that check against its public
//! key; a grant changed after signing, or checked against another broker, is refused.

mod common;

use common::{run, tmp};

#[test]
fn a_broker_issues_grants_that_check_and_forged_ones_do_not() {
    let dir = tmp("broker");
    let b = dir.join("broker").display().to_string();
    let (st, out, err) = run(&["broker", "init", "--dir", &b]);
    assert!(st.success(), "{out}{err}");
    let (st, _, err) = run(&["broker", "init", "--dir", &b]);
    assert!(
        !st.success() && err.contains("already holds a broker"),
        "{err}"
    );

    let user = "3f".repeat(32);
    let grant = dir.join("user.grant").display().to_string();
    let (st, out, err) = run(&[
        "broker", "grant", "--dir", &b, "--user", &user, "--bytes", "10MiB", "--valid", "90d",
        "--out", &grant,
    ]);
    assert!(st.success(), "{out}{err}");
    assert!(
        out.contains("quota for the user") && out.contains("10 MiB"),
        "{out}"
    );
    let public = format!("{b}/broker.pub");
    let (st, out, err) = run(&["broker", "show", &grant, "--broker", &public]);
    assert!(st.success(), "{out}{err}");
    assert!(out.contains("valid: signed by that broker"), "{out}");

    let node = "7a".repeat(32); // a node id
    let (st, out, err) = run(&[
        "broker", "supply", "--dir", &b, "--node", &node, "--bytes", "1GiB",
    ]);
    assert!(st.success(), "{out}{err}");
    assert!(
        out.contains("supply for node") && out.contains("1 GiB"),
        "{out}"
    );

    // Another broker's key: refused.
    let other = dir.join("other").display().to_string();
    assert!(run(&["broker", "init", "--dir", &other]).0.success());
    let (st, _, err) = run(&[
        "broker",
        "show",
        &grant,
        "--broker",
        &format!("{other}/broker.pub"),
    ]);
    assert!(!st.success() && err.contains("does not trust"), "{err}");

    // The grant's bytes changed (more quota): the signature no longer verifies.
    let text = std::fs::read_to_string(&grant).unwrap();
    let raw = ringvault_types::unarmor("STORAGE GRANT", &text).unwrap();
    let mut g = ringvault_types::Grant::decode(&raw).unwrap();
    g.body.bytes *= 100;
    let raw = g.encode();
    let forged = dir.join("forged.grant");
    std::fs::write(&forged, ringvault_types::armor("STORAGE GRANT", &raw)).unwrap();
    let (st, _, err) = run(&[
        "broker",
        "show",
        &forged.display().to_string(),
        "--broker",
        &public,
    ]);
    assert!(!st.success() && err.contains("does not verify"), "{err}");

    // Bad input is a clear error.
    let (st, _, err) = run(&[
        "broker", "grant", "--dir", &b, "--user", "nothex", "--bytes", "1MiB",
    ]);
    assert!(!st.success() && err.contains("--user"), "{err}");
    let (st, _, err) = run(&[
        "broker", "grant", "--dir", &b, "--user", &user, "--bytes", "lots",
    ]);
    assert!(!st.success() && err.contains("--bytes"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
