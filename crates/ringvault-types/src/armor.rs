//! The text form of certificates, requests, revocation lists and keys in files: base64 between
//! `-----BEGIN RINGVAULT <LABEL>-----` and `-----END RINGVAULT <LABEL>-----` lines, so they
//! survive copy and paste, mail and terminals, and say what they are.

use base64::Engine;

use crate::CertError;

const LINE: usize = 64;

/// `bytes` as armored text labelled `label` (for example `NODE CERTIFICATE`).
pub fn armor(label: &str, bytes: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = format!("-----BEGIN RINGVAULT {label}-----\n");
    for chunk in b64.as_bytes().chunks(LINE) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END RINGVAULT {label}-----\n"));
    out
}

/// The bytes armored in `text` under `label`. Text around the block (comments an operator
/// added) is ignored; a block with another label is refused, so a request cannot be loaded
/// where a certificate is expected.
pub fn unarmor(label: &str, text: &str) -> Result<Vec<u8>, CertError> {
    let begin = format!("-----BEGIN RINGVAULT {label}-----");
    let end = format!("-----END RINGVAULT {label}-----");
    let mut lines = text.lines().map(str::trim);
    if !lines.by_ref().any(|l| l == begin) {
        let found = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("-----BEGIN RINGVAULT "))
            .map(|l| l.trim_end_matches('-').to_string());
        return Err(CertError::Malformed(match found {
            Some(other) => format!("expected a {label}, found a {other}"),
            None => format!("no '{begin}' line"),
        }));
    }
    let mut b64 = String::new();
    for line in lines {
        if line == end {
            return base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|e| CertError::Malformed(format!("bad base64: {e}")));
        }
        b64.push_str(line);
    }
    Err(CertError::Malformed(format!("no '{end}' line")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_wrong_kind_of_block_is_named() {
        let text = armor("CERT REQUEST", b"abc");
        assert_eq!(
            unarmor("NODE CERTIFICATE", &text),
            Err(CertError::Malformed(
                "expected a NODE CERTIFICATE, found a CERT REQUEST".into()
            ))
        );
        let cut: String = text.lines().take(2).collect::<Vec<_>>().join("\n");
        assert!(unarmor("CERT REQUEST", &cut).is_err());
    }

    proptest! {
        #[test]
        fn armor_round_trips_with_surrounding_text(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let text = format!("# issued for node 7\n{}trailing\n", armor("NODE CERTIFICATE", &bytes));
            prop_assert_eq!(unarmor("NODE CERTIFICATE", &text), Ok(bytes));
        }

        #[test]
        fn unarmor_is_total(text in ".{0,300}") {
            let _ = unarmor("NODE CERTIFICATE", &text);
        }
    }
}
