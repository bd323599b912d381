//! Human-readable tables (and `--json`) for the client commands.

use anyhow::Result;
use serde_json::Value;

fn short(v: &Value) -> String {
    v.as_str()
        .map(|s| s.chars().take(16).collect())
        .unwrap_or_default()
}

fn rtt(v: &Value) -> String {
    v.as_f64()
        .map(|ms| format!("{ms:.3} ms"))
        .unwrap_or_else(|| "-".into())
}

fn sum(v: &Value) -> u64 {
    v.as_object()
        .map(|o| o.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0)
}

/// `ringvault server status`.
pub fn server_status(v: &Value, json: bool) -> Result<()> {
    if json {
        out!("{}", serde_json::to_string_pretty(v)?);
        return Ok(());
    }
    if v["mode"].as_str() != Some("server") {
        anyhow::bail!("this node does not run in server mode; `ringvault status` shows it");
    }
    let short = |x: &Value| x.as_str().map(|s| s[..16.min(s.len())].to_string());
    let id = v["id"].as_str().unwrap_or("?");
    out!("server     {id}");
    out!("quic       {}", v["addr"].as_str().unwrap_or("?"));
    out!("http       {}", v["http"].as_str().unwrap_or("?"));
    out!(
        "epoch      {}   configuration {}   lease until {}{}",
        v["epoch"],
        v["config_hash"].as_str().unwrap_or("?"),
        crate::ca::utc(v["valid_until_ms"].as_u64().unwrap_or(0) / 1_000),
        if v["serving"].as_bool() == Some(true) {
            ""
        } else {
            "   NOT SERVING (lease over: this server missed the newer configurations)"
        }
    );
    let p = &v["params"];
    out!(
        "params     f = {}, groups of {}, committee of {}, epochs of {} ms, lease {} epochs",
        p["f_r"],
        3 * p["f_r"].as_u64().unwrap_or(0) + 1,
        v["committee"].as_array().map_or(0, Vec::len),
        p["epoch_ms"],
        p["lease_epochs"]
    );
    let state = match (v["member"].as_bool(), v["leaving"].as_bool()) {
        (Some(true), Some(true)) => "member, leaving at the next epoch change",
        (Some(true), _) => "member",
        (_, Some(true)) => "left the ring (serving the hand-over of its ranges, then exiting)",
        _ => "not a member (asking the committee to join)",
    };
    out!(
        "state      {state}{}",
        if v["syncing"].as_bool() == Some(true) {
            ", taking a key range over"
        } else {
            ""
        }
    );
    match &v["range"] {
        Value::Array(r) if r.len() == 2 => out!(
            "range      ({} .. {}]   {} items held",
            short(&r[0]).unwrap_or_default(),
            short(&r[1]).unwrap_or_default(),
            v["items"]
        ),
        _ => out!("range      none"),
    }
    if !v["round"].is_null() {
        out!(
            "committee  this server decides epoch {} (round {}), {} requests pending",
            v["epoch"].as_u64().unwrap_or(0) + 1,
            v["round"],
            v["pending"]
        );
    }
    let m = &v["membership"];
    out!(
        "counters   {} decisions, {} view changes, {} evictions, {} messages refused, {} forged replies refused",
        m["decisions"],
        m["view_changes"],
        m["evictions"],
        m["refused"],
        v["replica"]["forged"].as_u64().unwrap_or(0) + v["client"]["forged"].as_u64().unwrap_or(0)
    );
    out!();
    out!("{:<18} {:<22} SEAT", "MEMBER", "ADDRESS");
    for member in v["members"].as_array().into_iter().flatten() {
        let mid = member["id"].as_str().unwrap_or("?");
        out!(
            "{:<18} {:<22} {}{}",
            &mid[..16.min(mid.len())],
            member["addr"].as_str().unwrap_or(""),
            member["seat"]
                .as_u64()
                .map(|s| format!("committee seat {s}"))
                .unwrap_or_default(),
            if mid == id { "  (this server)" } else { "" }
        );
    }
    Ok(())
}

/// `ringvault server leave`.
pub fn server_left(v: &Value, json: bool) -> Result<()> {
    if json {
        out!("{}", serde_json::to_string_pretty(v)?);
    } else {
        out!(
            "leaving: {} (epoch now {})",
            v["message"].as_str().unwrap_or(""),
            v["epoch"]
        );
    }
    Ok(())
}

pub fn status(v: &Value, json: bool) -> Result<()> {
    if json {
        out!("{}", serde_json::to_string_pretty(v)?);
        return Ok(());
    }
    let m = &v["metrics"];
    let o = &v["overlay"];
    out!("node      {}", v["id"].as_str().unwrap_or("?"));
    out!("quic      {}", v["addr"].as_str().unwrap_or("?"));
    out!("http      {}", v["http"].as_str().unwrap_or("?"));
    out!(
        "state     {}   uptime {:.0} s",
        if v["ready"].as_bool() == Some(true) {
            "ready"
        } else {
            "joining"
        },
        v["uptime_secs"].as_f64().unwrap_or(0.0)
    );
    let sec = &v["security"];
    match sec["mode"].as_str() {
        Some("secure") => {
            out!(
                "mode      secure   certificate serial {}, {} days left   revocations v{}{}",
                sec["serial"],
                sec["cert_days_left"],
                sec["revocations_version"],
                if sec["revocations_stale"].as_bool() == Some(true) {
                    " (STALE: past its next update; get a new list from the CA)"
                } else {
                    ""
                }
            );
        }
        Some(mode) => out!("mode      {mode}"),
        None => {}
    }
    let st = &v["storage"];
    if st.is_object() {
        let mib = |k: &str| st[k].as_u64().unwrap_or(0) as f64 / (1u64 << 20) as f64;
        out!(
            "storage   {:.1} MiB used, {:.1} MiB cached, {:.1} MiB free of {:.1} MiB",
            mib("used"),
            mib("cached"),
            mib("free"),
            mib("capacity")
        );
    }
    out!();
    out!("LEAF SET  {:<18} {:<22} RTT", "ID", "ADDRESS");
    let side = |k: &str| v[k].as_array().cloned().unwrap_or_default();
    let mut smaller = side("leaf_set_smaller");
    smaller.reverse();
    for p in &smaller {
        out!(
            "  -       {:<18} {:<22} {}",
            short(&p["id"]),
            p["addr"].as_str().unwrap_or(""),
            rtt(&p["rtt_ms"])
        );
    }
    out!("  *       {:<18} (this node)", short(&v["id"]));
    for p in &side("leaf_set_larger") {
        out!(
            "  +       {:<18} {:<22} {}",
            short(&p["id"]),
            p["addr"].as_str().unwrap_or(""),
            rtt(&p["rtt_ms"])
        );
    }
    out!();
    let fill: Vec<String> = v["routing_fill"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_u64)
                .take_while(|n| *n > 0)
                .map(|n| n.to_string())
                .collect()
        })
        .unwrap_or_default();
    out!(
        "routing table  {} entries; fill per row: {}",
        v["routing_table"].as_array().map_or(0, Vec::len),
        if fill.is_empty() {
            "empty".to_string()
        } else {
            fill.join(" ")
        }
    );
    out!(
        "neighbourhood  {} nodes",
        v["neighbourhood"].as_array().map_or(0, Vec::len)
    );
    out!();
    let n = |x: &Value| x.as_u64().unwrap_or(0);
    out!("COUNTERS");
    out!(
        "  messages in / out      {} / {}",
        sum(&m["messages_in"]),
        sum(&m["messages_out"])
    );
    out!(
        "  routes ok / failed     {} / {}",
        n(&m["routes_ok"]),
        n(&m["routes_failed"])
    );
    out!(
        "  delivered / forwarded  {} / {}",
        n(&o["delivered"]),
        n(&o["forwarded"])
    );
    out!("  leaf set changes       {}", n(&o["leaf_changes"]));
    out!("  failures detected      {}", n(&o["peers_failed"]));
    out!("  connections open       {}", n(&m["connections_open"]));
    out!("  decode errors          {}", n(&m["decode_errors"]));
    Ok(())
}

pub fn route(v: &Value, json: bool) -> Result<()> {
    if json {
        out!("{}", serde_json::to_string_pretty(v)?);
        return Ok(());
    }
    out!("key   {}", v["key"].as_str().unwrap_or("?"));
    out!(
        "root  {} at {} ({} hops)",
        v["root"]["id"].as_str().unwrap_or("?"),
        v["root"]["addr"].as_str().unwrap_or("?"),
        v["hop_count"].as_u64().unwrap_or(0)
    );
    out!();
    out!("{:<4} {:<18} {:<22} RTT TO NEXT", "HOP", "ID", "ADDRESS");
    for (i, h) in v["hops"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        out!(
            "{i:<4} {:<18} {:<22} {}",
            short(&h["id"]),
            h["addr"].as_str().unwrap_or(""),
            rtt(&h["rtt_ms_to_next"])
        );
    }
    Ok(())
}

pub fn quota(v: &Value, json: bool) -> Result<()> {
    if json {
        out!("{}", serde_json::to_string_pretty(v)?);
        return Ok(());
    }
    let used = v["used"].as_u64().unwrap_or(0);
    out!("owner    {}", v["owner"].as_str().unwrap_or("?"));
    out!(
        "used     {} ({used} bytes, size × replicas)",
        human_size(used)
    );
    out!("entries  {}", v["entries"].as_u64().unwrap_or(0));
    Ok(())
}

pub fn revocations(v: &Value, json: bool) -> Result<()> {
    if json {
        out!("{}", serde_json::to_string_pretty(v)?);
    } else if v["adopted"].as_bool() == Some(true) {
        out!(
            "adopted revocation list version {}; it spreads along the leaf sets from here",
            v["held"]
        );
    } else {
        out!(
            "not adopted: the node already holds version {} (the newest wins)",
            v["held"]
        );
    }
    Ok(())
}

/// A size for people: 10 GiB, 1 KiB, 1 MiB, 1500 B (whole units only).
pub fn human_size(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{} GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} B"),
    }
}

#[cfg(test)]
mod size_tests {
    use super::human_size;

    #[test]
    fn sizes_print_in_the_largest_whole_unit() {
        assert_eq!(human_size(1024), "1 KiB");
        assert_eq!(human_size(1 << 20), "1 MiB");
        assert_eq!(human_size(10 << 30), "10 GiB");
        assert_eq!(human_size(1500), "1500 B");
    }
}
