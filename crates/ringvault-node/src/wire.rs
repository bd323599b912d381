//! Encoding of overlay messages: one version byte, then postcard, capped in size. In secure
//! mode a message also carries the ring certificates of the nodes it names ([`Vouched`]), so
//! the receiver can check every contact it is handed before it takes it into its tables.

use ringvault_overlay::OverlayMessage;
use ringvault_types::{
    DecodeError, EncodeError, NodeCertificate, MAX_MESSAGE_SIZE, PROTOCOL_VERSION,
};
use serde::{de::DeserializeOwned, Serialize};

/// A secure-mode message: the message and the certificates of (some of) the nodes it names.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Vouched {
    /// The message.
    pub msg: OverlayMessage,
    /// Certificates of nodes the message names.
    pub certs: Vec<NodeCertificate>,
}

/// Encodes `msg` for the wire (open mode).
pub fn encode(msg: &OverlayMessage) -> Result<Vec<u8>, EncodeError> {
    encode_frame(msg)
}

/// Decodes bytes from the wire (open mode). Total: any input gives a message or an error.
pub fn decode(bytes: &[u8]) -> Result<OverlayMessage, DecodeError> {
    decode_frame(bytes)
}

/// Encodes a secure-mode message with the certificates it carries (the bytes of a
/// [`Vouched`], without copying the message).
pub fn encode_vouched(
    msg: &OverlayMessage,
    certs: &[NodeCertificate],
) -> Result<Vec<u8>, EncodeError> {
    #[derive(serde::Serialize)]
    struct VouchedRef<'a> {
        msg: &'a OverlayMessage,
        certs: &'a [NodeCertificate],
    }
    encode_frame(&VouchedRef { msg, certs })
}

/// Decodes a secure-mode message. Total, like [`decode`]; the certificates are only parsed
/// here, their checks are the receiver's.
pub fn decode_vouched(bytes: &[u8]) -> Result<Vouched, DecodeError> {
    decode_frame(bytes)
}

fn encode_frame<T: Serialize>(value: &T) -> Result<Vec<u8>, EncodeError> {
    let mut out = vec![PROTOCOL_VERSION];
    let body = postcard::to_allocvec(value).map_err(|e| EncodeError::Serialize(e.to_string()))?;
    out.extend_from_slice(&body);
    if out.len() > MAX_MESSAGE_SIZE {
        return Err(EncodeError::TooLarge(out.len()));
    }
    Ok(out)
}

fn decode_frame<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if bytes.len() > MAX_MESSAGE_SIZE {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::Version(version));
    }
    let (value, rest) =
        postcard::take_from_bytes::<T>(body).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::Trailing(rest.len()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ringvault_overlay::{AppMessage, Envelope, JoinReply, RoutedBody, StateSnapshot, TraceHop};
    use ringvault_types::{Contact, Id};
    use std::net::SocketAddr;

    fn arb_id() -> impl Strategy<Value = Id> {
        any::<[u8; 32]>().prop_map(Id::from_bytes)
    }

    /// Addresses as they travel: serde carries IP and port, not an IPv6 scope id or flow
    /// label (both only mean something on the sender's own link).
    fn arb_contact() -> impl Strategy<Value = Contact> {
        (arb_id(), any::<SocketAddr>()).prop_map(|(id, addr)| {
            let addr = match addr {
                SocketAddr::V6(a) => {
                    SocketAddr::V6(std::net::SocketAddrV6::new(*a.ip(), a.port(), 0, 0))
                }
                v4 => v4,
            };
            Contact::new(id, addr)
        })
    }

    fn arb_contacts() -> impl Strategy<Value = Vec<Contact>> {
        proptest::collection::vec(arb_contact(), 0..20)
    }

    fn arb_measured() -> impl Strategy<Value = Vec<ringvault_overlay::Measured>> {
        proptest::collection::vec(
            (
                arb_contact(),
                proptest::option::of(any::<u64>().prop_map(ringvault_types::Duration::from_micros)),
            ),
            0..20,
        )
    }

    fn arb_app() -> impl Strategy<Value = AppMessage> {
        (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..200))
            .prop_map(|(app, body)| AppMessage { app, body })
    }

    fn arb_message() -> impl Strategy<Value = OverlayMessage> {
        let envelope = (
            arb_id(),
            arb_contact(),
            any::<u8>(),
            proptest::option::of(proptest::collection::vec(
                (arb_contact(), proptest::option::of(any::<u64>())).prop_map(|(node, rtt)| {
                    TraceHop {
                        node,
                        rtt_to_next: rtt.map(ringvault_types::Duration::from_micros),
                    }
                }),
                0..10,
            )),
            prop_oneof![
                arb_contact().prop_map(|joiner| RoutedBody::Join { joiner }),
                arb_app().prop_map(RoutedBody::App),
            ],
        )
            .prop_map(|(key, origin, hops, trace, body)| Envelope {
                key,
                origin,
                hops,
                trace,
                body,
            });
        prop_oneof![
            (any::<u64>(), envelope)
                .prop_map(|(seq, envelope)| OverlayMessage::Routed { seq, envelope }),
            arb_app().prop_map(OverlayMessage::Direct),
            any::<u64>().prop_map(|seq| OverlayMessage::HopAck { seq }),
            (
                any::<u8>(),
                any::<bool>(),
                arb_contacts(),
                arb_contacts(),
                arb_contacts(),
                any::<u64>()
            )
                .prop_map(|(hop, root, rows, leaves, neighbours, version)| {
                    OverlayMessage::JoinReply(JoinReply {
                        hop,
                        root,
                        rows,
                        leaves,
                        neighbours,
                        version,
                    })
                }),
            Just(OverlayMessage::StateRequest),
            (arb_measured(), arb_measured(), arb_measured(), any::<u64>()).prop_map(
                |(leaves, table, neighbours, version)| {
                    OverlayMessage::StateReply(StateSnapshot {
                        leaves,
                        table,
                        neighbours,
                        version,
                    })
                }
            ),
            proptest::option::of(any::<u64>())
                .prop_map(|seen_version| OverlayMessage::Announce { seen_version }),
            any::<u64>().prop_map(|nonce| OverlayMessage::Ping { nonce }),
            any::<u64>().prop_map(|nonce| OverlayMessage::Pong { nonce }),
            Just(OverlayMessage::LeafSetRequest),
            (arb_contacts(), any::<u64>())
                .prop_map(|(leaves, version)| OverlayMessage::LeafSetReply { leaves, version }),
            (any::<u8>(), any::<u8>())
                .prop_map(|(row, col)| OverlayMessage::SlotRequest { row, col }),
            (
                any::<u8>(),
                any::<u8>(),
                proptest::option::of(arb_contact())
            )
                .prop_map(|(row, col, entry)| OverlayMessage::SlotReply {
                    row,
                    col,
                    entry
                }),
            Just(OverlayMessage::NeighbourhoodRequest),
            arb_contacts().prop_map(|peers| OverlayMessage::NeighbourhoodReply { peers }),
            Just(OverlayMessage::Leaving),
            any::<u8>().prop_map(|row| OverlayMessage::RowRequest { row }),
            (any::<u8>(), arb_measured())
                .prop_map(|(row, entries)| OverlayMessage::RowReply { row, entries }),
        ]
    }

    proptest! {
        #[test]
        fn every_message_round_trips(msg in arb_message()) {
            let bytes = encode(&msg).unwrap();
            prop_assert_eq!(decode(&bytes).unwrap(), msg);
        }

        #[test]
        fn random_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
            let mut versioned = bytes.clone();
            versioned.insert(0, PROTOCOL_VERSION);
            // Whatever it returns, a successful decode must re-encode to a message that decodes
            // to the same value.
            if let Ok(m) = decode(&versioned) {
                prop_assert_eq!(decode(&encode(&m).unwrap()).unwrap(), m);
            }
        }

        #[test]
        fn truncated_messages_are_errors(msg in arb_message(), cut in 1usize..64) {
            let bytes = encode(&msg).unwrap();
            prop_assume!(cut < bytes.len());
            prop_assert!(decode(&bytes[..bytes.len() - cut]).is_err());
        }
    }

    #[test]
    fn bad_frames_get_the_right_error() {
        assert_eq!(decode(&[]), Err(DecodeError::Empty));
        assert_eq!(
            decode(&[PROTOCOL_VERSION + 1, 0]),
            Err(DecodeError::Version(PROTOCOL_VERSION + 1))
        );
        let mut ok = encode(&OverlayMessage::LeafSetRequest).unwrap();
        ok.push(0);
        assert_eq!(decode(&ok), Err(DecodeError::Trailing(1)));
        let huge = vec![PROTOCOL_VERSION; MAX_MESSAGE_SIZE + 1];
        assert_eq!(
            decode(&huge),
            Err(DecodeError::TooLarge(MAX_MESSAGE_SIZE + 1))
        );
        assert!(matches!(
            decode(&[PROTOCOL_VERSION, 0xff]),
            Err(DecodeError::Malformed(_))
        ));
        let big = OverlayMessage::Direct(AppMessage {
            app: 1,
            body: vec![0; MAX_MESSAGE_SIZE],
        });
        assert!(matches!(encode(&big), Err(EncodeError::TooLarge(_))));
    }

    #[test]
    fn vouched_messages_round_trip_and_reject_damage() {
        use ringvault_types::{CertBody, Identity, CERT_VERSION};
        let ca = Identity::from_secret_bytes([1; 32]);
        let node = Identity::from_secret_bytes([2; 32]);
        let cert = NodeCertificate::issue(
            &ca,
            CertBody {
                version: CERT_VERSION,
                serial: 9,
                node_id: node.id(),
                public_key: node.public_key(),
                addrs: vec!["127.0.0.1:7000".parse().unwrap()],
                not_before: 1,
                not_after: 2,
            },
        );
        let v = Vouched {
            msg: OverlayMessage::LeafSetReply {
                leaves: vec![Contact::new(node.id(), "127.0.0.1:7000".parse().unwrap())],
                version: 3,
            },
            certs: vec![cert],
        };
        let bytes = encode_vouched(&v.msg, &v.certs).unwrap();
        assert_eq!(decode_vouched(&bytes).unwrap(), v);
        for cut in 1..bytes.len() {
            assert!(decode_vouched(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        // The two framings do not pass for each other.
        assert!(decode(&bytes).is_err());
    }
}
