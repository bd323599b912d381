//! The dashboard as a person sees it: `ringvault ring --nodes 8` on free ports, the page loaded
//! in headless Chromium, all 8 nodes on the drawn ring, and a screenshot taken.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|b| {
            let out = Command::new("sh")
                .args(["-c", &format!("command -v {b}")])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        })
}

/// Runs Chromium headless on `url` with `extra` flags; returns stdout. Bounded by a deadline.
fn run_chromium(bin: &Path, profile: &Path, url: &str, extra: &[&str]) -> String {
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=6000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    reader.join().unwrap()
}

#[test]
fn dashboard_of_an_eight_node_ring_shows_all_eight_nodes_in_headless_chromium() {
    let Some(browser) = chromium() else {
        println!("SKIPPED: chromium not installed (apt-get install chromium); .ci/run installs it");
        return;
    };
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("dashboard-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();

    let (mut ring, urls) = common::start_ring(8, &tmp.join("ring"));

    let dom = run_chromium(
        &browser,
        &tmp.join("profile-dom"),
        &format!("{}/", urls[0]),
        &["--dump-dom"],
    );
    let mut ids: Vec<&str> = dom
        .split("class=\"node")
        .skip(1)
        .filter_map(|s| s.split("data-id=\"").nth(1)?.split('"').next())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        8,
        "dashboard shows {} distinct nodes: {ids:?}",
        ids.len()
    );
    assert!(dom.contains("class=\"node self"), "this node is marked");
    assert!(
        dom.contains("8 nodes shown"),
        "the node count is written out"
    );

    // Kept after the test (outside `tmp`) so it can be looked at and copied to docs/.
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    run_chromium(
        &browser,
        &tmp.join("profile-shot"),
        &format!("{}/", urls[0]),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1400,900",
        ],
    );
    let png = std::fs::read(&shot).expect("chromium wrote a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "screenshot looks empty ({} bytes)",
        png.len()
    );
    println!("screenshot: {}", shot.display());

    let status = ring.signal_and_wait("INT", Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "ring did not exit cleanly on Ctrl-C: {status:?}"
    );
    let _ = std::fs::remove_dir_all(&tmp);
}
