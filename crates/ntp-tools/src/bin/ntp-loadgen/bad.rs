//! The bad half of a mixed load: datagrams a server must drop without a
//! reply (truncated, wrong mode, wrong version, a control query, a zero
//! transmit timestamp, a malformed extension field), cycled through in turn.

/// Kinds of bad datagram, cycled through.
pub const KINDS: u64 = 6;

/// The `n`th bad datagram.
pub fn datagram(n: u64) -> Vec<u8> {
    let mut d = vec![0u8; 48];
    d[0] = (4 << 3) | 3;
    d[40..48].copy_from_slice(&(n | 1).to_be_bytes());
    match n % KINDS {
        0 => d.truncate(20),
        1 => d[0] = (4 << 3) | 4,
        2 => d[0] = (2 << 3) | 3,
        3 => d = vec![0x16, 0x02, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0],
        4 => d[40..48].fill(0),
        _ => d.extend_from_slice(&[0x01, 0x04, 0x00, 0x64, 0, 0, 0, 0]),
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use ntp_proto::packet::{ReferenceId, Stratum};
    use ntp_proto::responder::{respond, Admission, Response, ServerState};
    use ntp_proto::NtpTimestamp;

    #[test]
    fn every_kind_is_ignored_by_the_responder() {
        let state = ServerState::primary(Stratum(1), -20, ReferenceId(*b"LOCL"), NtpTimestamp::from_bits(1 << 63));
        for n in 0..KINDS * 2 {
            let response = respond(&datagram(n), NtpTimestamp::from_bits(1 << 63), &state, Admission::Serve);
            assert!(matches!(response, Response::Ignore(_)), "kind {}: {response:?}", n % KINDS);
        }
    }
}
