//! Just enough STUN (RFC 8489) to route a datagram to its session: the local ICE ufrag from a
//! Binding request's USERNAME (`local:remote`). Pure; every length is checked.

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const ATTR_USERNAME: u16 = 0x0006;
const HEADER_LEN: usize = 20;

/// True if `packet` looks like a STUN message (first two bits zero and the magic cookie).
pub(crate) fn is_stun(packet: &[u8]) -> bool {
    packet.len() >= HEADER_LEN && packet[0] < 2 && packet[4..8] == MAGIC_COOKIE
}

/// The local ufrag (before the `:`) of the USERNAME attribute, if `packet` is STUN and has one.
pub(crate) fn local_ufrag(packet: &[u8]) -> Option<&str> {
    if !is_stun(packet) {
        return None;
    }
    let body_len = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    let body = packet.get(HEADER_LEN..HEADER_LEN + body_len)?;
    let mut pos = 0;
    while pos + 4 <= body.len() {
        let kind = u16::from_be_bytes([body[pos], body[pos + 1]]);
        let len = usize::from(u16::from_be_bytes([body[pos + 2], body[pos + 3]]));
        let value = body.get(pos + 4..pos + 4 + len)?;
        if kind == ATTR_USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split_once(':').map(|(local, _)| local);
        }
        pos += 4 + len.next_multiple_of(4);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding_request(username: &[u8]) -> Vec<u8> {
        let padded = username.len().next_multiple_of(4);
        let mut p = vec![0x00, 0x01];
        p.extend_from_slice(&((8 + 4 + padded) as u16).to_be_bytes());
        p.extend_from_slice(&MAGIC_COOKIE);
        p.extend_from_slice(&[7; 12]);
        // An unrelated attribute first (PRIORITY), then USERNAME.
        p.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
        p.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        p.extend_from_slice(&(username.len() as u16).to_be_bytes());
        p.extend_from_slice(username);
        p.resize(p.len() + padded - username.len(), 0);
        p
    }

    #[test]
    fn finds_local_ufrag() {
        assert_eq!(local_ufrag(&binding_request(b"abcd:xyz1")), Some("abcd"));
    }

    #[test]
    fn rejects_non_stun_and_truncated() {
        assert_eq!(local_ufrag(b"\x80\x60 rtp packet here, long enough"), None);
        let full = binding_request(b"abcd:xyz1");
        for len in 0..full.len() {
            assert_eq!(local_ufrag(&full[..len]), None, "len {len}");
        }
        let mut lying = full.clone();
        lying[2] = 0xff;
        assert_eq!(local_ufrag(&lying), None);
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]
        #[test]
        fn never_panics(mut data in proptest::collection::vec(any::<u8>(), 0..256)) {
            // Half the cases look like STUN, so the attribute walk is exercised.
            if data.len() >= 20 && data[0] & 1 == 0 {
                data[0] = 0;
                data[4..8].copy_from_slice(&super::MAGIC_COOKIE);
            }
            let _ = super::local_ufrag(&data);
        }
    }
}
