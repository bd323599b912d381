//! Peers that lie or send junk: refused or dropped, and the node carries on.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::*;
use ringvault_net::{client_config, server_name_for, MAX_CONNECTIONS};
use ringvault_types::{Identity, MAX_MESSAGE_SIZE};

/// A bare QUIC client with its own valid identity.
fn client(seed: u8) -> quinn::Endpoint {
    let mut ep = quinn::Endpoint::client(loopback()).unwrap();
    ep.set_default_client_config(
        client_config(
            &Identity::from_secret_bytes([seed; 32]),
            &Default::default(),
        )
        .unwrap(),
    );
    ep
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_key_does_not_hash_to_the_claimed_id_is_refused() {
    let dirs = TempDir::new("liar");
    let nodes = start_ring(&dirs, 2, fast_config()).await;
    let (a, b) = (nodes[0].contact(), nodes[1].contact());
    let ep = client(9);

    // Dialing b's address while expecting a's id: b's certificate key hashes to b's id, so the
    // handshake is refused.
    let lie = ep
        .connect(b.addr, &server_name_for(Some(a.id)))
        .unwrap()
        .await;
    assert!(
        lie.is_err(),
        "connected to a peer that is not who we asked for"
    );
    // The same dial expecting b's real id succeeds, so the refusal was about the key.
    let honest = ep
        .connect(b.addr, &server_name_for(Some(b.id)))
        .unwrap()
        .await;
    assert!(honest.is_ok(), "honest dial failed: {:?}", honest.err());
    // A node's own dial is checked the same way: a contact claiming a's id at b's address.
    let err = nodes[0].dial(b.addr, Some(a.id)).await;
    assert!(err.is_err(), "node accepted a peer with the wrong key");
    assert_eq!(nodes[0].dial(b.addr, Some(b.id)).await.unwrap(), b.id);
    assert_eq!(nodes[0].dial(b.addr, None).await.unwrap(), b.id);

    ep.close(0u32.into(), b"");
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_junk_frames_and_oversized_frames_are_dropped_and_the_node_carries_on() {
    let dirs = TempDir::new("junk");
    let nodes = start_ring(&dirs, 3, fast_config()).await;
    let target = nodes[1].contact();
    let handles: Vec<_> = nodes.iter().map(|n| n.handle()).collect();
    let ids: Vec<_> = nodes.iter().map(|n| n.contact().id).collect();

    // Raw UDP junk at the QUIC port: short, long, and QUIC-looking headers.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..200u32 {
        let len = [1usize, 20, 1200, 1500][i as usize % 4];
        let mut junk: Vec<u8> = (0..len).map(|j| (i as usize * 31 + j * 7) as u8).collect();
        if i % 2 == 0 {
            junk[0] = 0xc0 | (i as u8 & 0x3f); // long-header bit set
        }
        udp.send_to(&junk, target.addr).unwrap();
    }

    // An authenticated peer sending a frame of junk, then a frame claiming to be oversized.
    let ep = client(11);
    let conn = ep
        .connect(target.addr, &server_name_for(Some(target.id)))
        .unwrap()
        .await
        .unwrap();
    let mut s = conn.open_uni().await.unwrap();
    let junk = b"definitely not a ringvault message";
    s.write_all(&(junk.len() as u32).to_be_bytes())
        .await
        .unwrap();
    s.write_all(junk).await.unwrap();
    // The node may stop the stream as soon as it reads the oversized length, so writing the
    // body can fail with `Stopped`: that is the node doing its job, not a test failure.
    let _ = s
        .write_all(&((MAX_MESSAGE_SIZE + 1) as u32).to_be_bytes())
        .await;
    let _ = s.write_all(&[0u8; 1024]).await;
    let _ = s.finish();

    let h = handles[1].clone();
    eventually(Duration::from_secs(10), || async {
        let m = h.status().await.map_err(|e| e.to_string())?.metrics;
        if m.decode_errors >= 1 && m.bad_frames >= 1 {
            Ok(())
        } else {
            Err(format!(
                "decode errors {}, bad frames {}",
                m.decode_errors, m.bad_frames
            ))
        }
    })
    .await;

    // The node still routes and its leaf set is intact.
    let wrong = wrong_routes(&handles, &ids, &keys(60, "junk")).await;
    assert!(wrong.is_empty(), "routes failed after junk: {wrong:?}");
    let st = statuses(&handles).await.unwrap();
    assert!(wrong_leaf_sets(&st, &ids, 4).is_empty());
    assert!(st[1].metrics.connections_open as usize <= MAX_CONNECTIONS);

    conn.close(0u32.into(), b"");
    ep.close(0u32.into(), b"");
    for n in nodes {
        n.shutdown().await;
    }
}
