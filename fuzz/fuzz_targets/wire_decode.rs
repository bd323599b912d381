//! The wire decoders are total: any bytes give a message or an error, and a decoded message
//! re-encodes to bytes that decode to the same message (open mode's framing, and secure mode's,
//! which carries certificates).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = ringvault_node::decode(data) {
        let bytes = ringvault_node::encode(&msg).expect("a decoded message re-encodes");
        assert_eq!(
            ringvault_node::decode(&bytes).expect("re-encoded decodes"),
            msg
        );
    }
    if let Ok(v) = ringvault_node::decode_vouched(data) {
        let bytes =
            ringvault_node::encode_vouched(&v.msg, &v.certs).expect("a decoded message re-encodes");
        assert_eq!(
            ringvault_node::decode_vouched(&bytes).expect("re-encoded decodes"),
            v
        );
    }
});
