//! The first bytes on the TLS port: the ClientHello's server name and ALPN, read without
//! terminating TLS, as sent and re-split into records of another size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signaling::sni::{peek, Peek, SniError};

fuzz_target!(|data: &[u8]| {
    let whole = peek(data);
    if let Ok(Peek::Incomplete) = whole {
        assert!(data.len() <= signaling::sni::MAX_CLIENT_HELLO);
    }
    // Fewer bytes of a hello that parsed are still the same hello, or not all of it yet.
    if let Ok(Peek::Hello(hello)) = &whole {
        for cut in [data.len() / 2, data.len().saturating_sub(1)] {
            match peek(&data[..cut]) {
                Ok(Peek::Incomplete) => {}
                Ok(Peek::Hello(h)) => assert_eq!(&h, hello),
                other => panic!("prefix of {cut} bytes: {other:?}"),
            }
        }
    }
    // The same handshake bytes in records of another size (the last byte picks it, 1 to
    // 12,288): the same answer, unless the extra record headers cross the cap.
    let size = match data.last().copied().unwrap_or(0) {
        b @ 0..=63 => usize::from(b) + 1,
        b => (usize::from(b) - 63) * 64,
    };
    let rewrapped = rewrap(data, size);
    let again = peek(&rewrapped);
    if let Ok(Peek::Hello(hello)) = &whole {
        assert!(
            again == Ok(Peek::Hello(hello.clone())) || again == Err(SniError::TooLarge),
            "{size}-byte records: {again:?}"
        );
    }
});

/// The payloads of `data`'s records (read leniently: any header, a short last record), in
/// handshake records of `size` bytes.
fn rewrap(mut data: &[u8], size: usize) -> Vec<u8> {
    let mut handshake = Vec::new();
    while let Some((&[_, _, _, hi, lo], rest)) = data.split_first_chunk::<5>() {
        let len = usize::from(u16::from_be_bytes([hi, lo])).min(rest.len());
        let (payload, rest) = rest.split_at(len);
        handshake.extend_from_slice(payload);
        data = rest;
    }
    let mut out = Vec::with_capacity(handshake.len() + handshake.len() / size * 5 + 5);
    for fragment in handshake.chunks(size) {
        out.extend_from_slice(&[22, 3, 3]);
        out.extend_from_slice(&(fragment.len() as u16).to_be_bytes());
        out.extend_from_slice(fragment);
    }
    out
}
