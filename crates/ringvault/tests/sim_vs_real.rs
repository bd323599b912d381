//! The simulator checked against real daemons, small: 16 nodes (b = 2, L = 4) built by the
//! simulator and the same 16 as real nodes over QUIC on loopback with the model's delays
//! emulated at their sockets route the same 400 keys; mean hops and stretch agree within 10%. The control runs
//! the real nodes without the emulated delays, and the comparison must then disagree: it
//! catches real nodes that do not behave as the model.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `ringvault bench sim-vs-real` at 16 nodes with `extra` flags; its JSON.
fn compare(extra: &[&str]) -> serde_json::Value {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringvault"))
        .args([
            "bench",
            "sim-vs-real",
            "--nodes",
            "16",
            "--routes",
            "400",
            "--seed",
            "3",
            // Small digits and leaf sets, so that 16 nodes route in several hops and each
            // table slot has several candidates to choose among by proximity.
            "--b",
            "2",
            "--leaf-set-size",
            "4",
            "--json",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("ringvault runs");
    let deadline = Instant::now() + Duration::from_secs(300);
    while child.try_wait().expect("waits").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sim-vs-real did not finish within 300 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("its output");
    assert!(out.status.success(), "sim-vs-real failed: {:?}", out.status);
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

fn figure(v: &serde_json::Value, path: &[&str]) -> f64 {
    let mut x = v;
    for p in path {
        x = &x[*p];
    }
    x.as_f64()
        .unwrap_or_else(|| panic!("no figure {path:?} in {v}"))
}

#[test]
fn the_simulator_and_real_daemons_with_emulated_delays_agree_on_hops_and_stretch() {
    let c = compare(&[]);
    eprintln!("sim vs real, 16 nodes: {c}");
    for side in ["real", "sim"] {
        assert_eq!(
            figure(&c, &[side, "answered"]),
            400.0,
            "{side}: every route answered"
        );
        assert_eq!(
            figure(&c, &[side, "at_the_right_node"]),
            400.0,
            "{side}: every route at its key's node"
        );
    }
    assert_eq!(figure(&c, &["real_wrong_leaf_sets"]), 0.0);
    assert!(
        figure(&c, &["hops_difference"]) <= 0.10,
        "hops differ by more than 10%: {c}"
    );
    assert!(
        figure(&c, &["stretch_difference"]) <= 0.10,
        "stretch differs by more than 10%: {c}"
    );
    assert_eq!(c["agree"], true);

    // The control: without the emulated delays the real nodes measure loopback noise, not the
    // model, and choose other neighbours; the comparison must say so.
    let control = compare(&["--control"]);
    eprintln!("control, no emulated delays: {control}");
    assert_eq!(
        control["agree"], false,
        "the comparison did not notice real nodes ignoring the model: {control}"
    );
    assert!(figure(&control, &["stretch_difference"]) > 0.10);
}
