//! Running the real binary in tests: children stopped on drop, output read with deadlines.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A child `ringvault` process; killed on drop if still running.
pub struct Proc {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
}

impl Proc {
    /// Starts `ringvault ARGS`, reading its stdout line by line.
    pub fn start(args: &[&str]) -> Proc {
        Proc::start_logged(args, None)
    }

    /// Like [`Proc::start`], with stderr (the logs) appended to `log` when given.
    pub fn start_logged(args: &[&str], log: Option<&std::path::Path>) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringvault"));
        cmd.args(args);
        Proc::spawn(cmd, log)
    }

    /// Runs `cmd` (which runs ringvault, e.g. inside `ip netns exec`), reading its stdout line
    /// by line, with stderr appended to `log` when given.
    pub fn spawn(mut cmd: Command, log: Option<&std::path::Path>) -> Proc {
        let stderr = match log {
            Some(p) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .expect("open the log file"),
            ),
            None => Stdio::inherit(),
        };
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start ringvault");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc { child, lines }
    }

    /// Lines up to and including the first one containing `marker`, within `within`.
    pub fn read_until(&self, marker: &str, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!("no line containing {marker:?} within {within:?}; got {out:?}")
            });
            let done = line.contains(marker);
            out.push(line);
            if done {
                return out;
            }
        }
    }

    /// Sends `signal` (e.g. "INT", "TERM") and waits for the exit, within `within`.
    pub fn signal_and_wait(&mut self, signal: &str, within: Duration) -> Option<ExitStatus> {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `ringvault ring --nodes N` on free ports and returns it with the nodes' HTTP URLs.
pub fn start_ring(n: usize, dir: &std::path::Path) -> (Proc, Vec<String>) {
    start_ring_with(n, dir, &[])
}

/// [`start_ring`] with more arguments (`--mode secure`, ...).
pub fn start_ring_with(n: usize, dir: &std::path::Path, extra: &[&str]) -> (Proc, Vec<String>) {
    let n_s = n.to_string();
    let dir_s = dir.display().to_string();
    let mut args = vec![
        "ring",
        "--nodes",
        &n_s,
        "--base-port",
        "0",
        "--http-base-port",
        "0",
        "--data-dir",
        &dir_s,
    ];
    args.extend(extra);
    let ring = Proc::start(&args);
    let lines = ring.read_until("ring ready", Duration::from_secs(90));
    let urls: Vec<String> = lines
        .iter()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("http://")))
        .map(|u| u.trim_end_matches('/').to_string())
        .collect();
    assert_eq!(urls.len(), n, "the ring's table lists {n} nodes: {lines:?}");
    (ring, urls)
}

/// A fresh directory under the target's temp dir (removed by the caller).
pub fn tmp(name: &str) -> PathBuf {
    let p =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// A plain HTTP/1.1 GET: (status, body).
pub fn get(base: &str, path: &str) -> (u16, String) {
    let hostport = base.trim_start_matches("http://").trim_end_matches('/');
    let mut s = TcpStream::connect(hostport).expect("connect to the HTTP API");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Runs `ringvault ARGS` to completion: (exit status, stdout, stderr).
pub fn run(args: &[&str]) -> (ExitStatus, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ringvault"))
        .args(args)
        .env_remove("RINGVAULT_NODE")
        .output()
        .expect("run ringvault");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts `ringvault node` in `dir` (a new ring) with more arguments and stdout going to
/// `stdout`, and answers the process and its HTTP URL, read from the log line on stderr
/// (stdout may be unwritable).
pub fn node_with_stdout(
    dir: &std::path::Path,
    extra: &[&str],
    stdout: std::process::Stdio,
) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ringvault"))
        .args(["node", "--data-dir"])
        .arg(dir)
        .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(stdout)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(url) = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("http="))
            {
                let _ = tx.send(url.to_string());
            }
        }
    });
    let url = rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the node logs its HTTP address");
    (child, url)
}
