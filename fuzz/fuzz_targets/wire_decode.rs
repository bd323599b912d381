//! The wire decoder is total: any bytes give a message or an error, and a decoded message
//! re-encodes to bytes that decode to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = ringvault_node::decode(data) {
        let bytes = ringvault_node::encode(&msg).expect("a decoded message re-encodes");
        assert_eq!(ringvault_node::decode(&bytes).expect("re-encoded decodes"), msg);
    }
});
