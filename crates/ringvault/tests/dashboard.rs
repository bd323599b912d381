//! The dashboard as a person sees it: `ringvault ring --nodes 8` on free ports with subscribers
//! to one topic on four nodes, the page of a node with children in the topic's tree loaded in
//! headless Chromium: all 8 nodes on the drawn ring, the topic in the topics panel by name with
//! its role and every child; and a screenshot taken. Then server mode's dashboard: the epoch,
//! the committee and every member of a ring of 5 servers.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const TOPIC: &str = "dashboard-demo";

/// The node's entry for [`TOPIC`] in `GET /v1/topics`, if it takes part in it.
fn topic_entry(base: &str) -> Option<Value> {
    let (status, body) = common::get(base, "/v1/topics");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["topics"]
        .as_array()?
        .iter()
        .find(|t| t["name"] == TOPIC)
        .cloned()
}

fn child_ids(t: &Value) -> BTreeSet<String> {
    t["children"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["id"].as_str().map(String::from))
        .collect()
}

/// The `data-id`s of the elements with class `class` inside the topic card for [`TOPIC`].
fn ids_in_card(dom: &str, class: &str) -> Option<BTreeSet<String>> {
    let start = dom.find(&format!("data-name=\"{TOPIC}\""))?;
    let card = &dom[start..];
    let end = card[1..]
        .find("class=\"topic\"")
        .map_or(card.len(), |e| e + 1);
    Some(
        card[..end]
            .split(&format!("class=\"{class}\""))
            .skip(1)
            .filter_map(|s| s.split("data-id=\"").nth(1)?.split('"').next())
            .map(String::from)
            .collect(),
    )
}

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
fn dashboard_of_an_eight_node_ring_shows_all_eight_nodes_and_a_topic_tree_in_headless_chromium() {
    let Some(browser) = chromium() else {
        println!("SKIPPED: chromium not installed (apt-get install chromium); .ci/run installs it");
        return;
    };
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("dashboard-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();

    let (mut ring, urls) = common::start_ring(8, &tmp.join("ring"));

    // Subscribers on four nodes (killed when dropped); then a node with children in the tree.
    let subs: Vec<common::Proc> = urls[1..5]
        .iter()
        .map(|u| common::Proc::start(&["subscribe", TOPIC, "--node", u, "--json"]))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (page, before) = loop {
        let found = urls.iter().find_map(|u| {
            let t = topic_entry(u)?;
            (!child_ids(&t).is_empty()).then(|| (u.clone(), t))
        });
        if let Some(f) = found {
            break f;
        }
        assert!(
            Instant::now() < deadline,
            "no node has children in the tree of {TOPIC} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    };

    let dom = run_chromium(
        &browser,
        &tmp.join("profile-dom"),
        &format!("{page}/"),
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

    // The topics panel: the topic by name, with this node's role and every child.
    let after = topic_entry(&page).expect("the node is still in the tree");
    let card = dom
        .find(&format!("data-name=\"{TOPIC}\""))
        .map(|i| &dom[i..])
        .unwrap_or_else(|| panic!("no card for {TOPIC} in the topics panel"));
    let role = before["role"].as_str().unwrap();
    assert!(
        card.starts_with(&format!(
            "data-name=\"{TOPIC}\" data-topic-id=\"{}\" data-role=\"{role}\"",
            before["topic_id"].as_str().unwrap()
        )),
        "card attributes: {}",
        &card[..card.len().min(300)]
    );
    assert!(card.contains(&format!("<span class=\"tname\">{TOPIC}</span>")));
    let drawn = ids_in_card(&dom, "tchild").unwrap();
    assert!(
        drawn == child_ids(&before) || drawn == child_ids(&after),
        "children drawn {drawn:?}, the node lists {:?} / {:?}",
        child_ids(&before),
        child_ids(&after)
    );

    // Kept after the test (outside `tmp`) so it can be looked at and copied to docs/.
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    run_chromium(
        &browser,
        &tmp.join("profile-shot"),
        &format!("{page}/"),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1600,900",
        ],
    );
    let png = std::fs::read(&shot).expect("chromium wrote a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "screenshot looks empty ({} bytes)",
        png.len()
    );
    println!("screenshot: {}", shot.display());

    drop(subs);
    let status = ring.signal_and_wait("INT", Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "ring did not exit cleanly on Ctrl-C: {status:?}"
    );
    let _ = std::fs::remove_dir_all(&tmp);
}

/// The text inside the element with `id` in a dumped DOM.
fn text_of(dom: &str, id: &str) -> Option<String> {
    let start = dom.find(&format!("id=\"{id}\""))?;
    let rest = &dom[start..];
    let open = rest.find('>')? + 1;
    let close = rest[open..].find('<')?;
    Some(rest[open..open + close].to_string())
}

#[test]
fn the_server_mode_dashboard_shows_the_epoch_the_committee_and_every_member_in_headless_chromium() {
    let Some(browser) = chromium() else {
        println!("SKIPPED: chromium not installed (apt-get install chromium); .ci/run installs it");
        return;
    };
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("server-dashboard-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let (mut ring, urls) =
        common::start_ring_with(5, &tmp.join("ring"), &["--mode", "server", "--epoch", "2s"]);
    // Wait for an epoch decided by the committee, so the page shows more than genesis.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = common::get(&urls[0], "/v1/status");
        assert_eq!(status, 200, "{body}");
        let st: Value = serde_json::from_str(&body).unwrap();
        if st["epoch"].as_u64().unwrap_or(0) >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no epoch decided: {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let profile = tmp.join("chromium-profile");
    let dom = run_chromium(
        &browser,
        &profile,
        &format!("{}/", urls[0]),
        &["--dump-dom"],
    );
    let members = dom.matches("<tr class=\"member").count();
    assert_eq!(members, 5, "five member rows: {dom}");
    assert_eq!(dom.matches("<tr class=\"member me\"").count(), 1, "{dom}");
    let seats = dom.matches(">seat ").count();
    assert_eq!(seats, 4, "a committee of 4 among the members: {dom}");
    let epoch: u64 = text_of(&dom, "epoch")
        .and_then(|e| e.parse().ok())
        .unwrap_or(0);
    assert!(epoch >= 1, "the epoch card shows a decided epoch: {dom}");
    assert_eq!(text_of(&dom, "committee").as_deref(), Some("4"));
    assert_eq!(text_of(&dom, "serving").as_deref(), Some("yes"));
    assert_eq!(text_of(&dom, "error").as_deref(), Some(""));
    ring.signal_and_wait("INT", Duration::from_secs(30));
    let _ = std::fs::remove_dir_all(&tmp);
}
