//! Short-lived publish tokens. The front checks a WHIP publisher's key, then answers `307` to
//! the node that will take the channel, with a token in the `Location`'s query: Firefox and
//! Safari drop `Authorization` on a cross-origin redirect, a query survives it. The token is
//! `{expires}.{tag}`: the expiry in Unix seconds and the hex HMAC-SHA256, under the channel's
//! own key, of the channel and the expiry. Every node has the channels' keys, so no other
//! secret is shared; a token is good for one channel until it expires, and reveals nothing of
//! the key.

use media::ChannelName;

use crate::auth::StreamKey;

/// Longest lifetime a node accepts, whatever the token says (seconds).
pub const MAX_LIFETIME_SECS: u64 = 600;

fn message(channel: &ChannelName, expires: u64) -> String {
    format!("starling-whip-token\n{channel}\n{expires}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A token for `channel`, good until `expires` (Unix seconds).
pub fn sign(key: &StreamKey, channel: &ChannelName, expires: u64) -> String {
    let tag = key.hmac_sha256(message(channel, expires).as_bytes());
    format!("{expires}.{}", hex(&tag))
}

/// Whether `token` was made by [`sign`] under `key` for `channel` and is still good at `now`
/// (Unix seconds). Malformed tokens are simply not good.
pub fn verify(key: &StreamKey, channel: &ChannelName, token: &str, now: u64) -> bool {
    let Some((expires, tag)) = token.split_once('.') else {
        return false;
    };
    let Ok(expires) = expires.parse::<u64>() else {
        return false;
    };
    if expires < now || expires > now.saturating_add(MAX_LIFETIME_SECS) || tag.len() != 64 {
        return false;
    }
    let expected = hex(&key.hmac_sha256(message(channel, expires).as_bytes()));
    // Constant time: the tag is a secret until it is accepted.
    expected
        .bytes()
        .zip(tag.bytes())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_good_for_its_channel_until_it_expires() {
        let key = StreamKey::new("s3cret");
        let alice = ChannelName::new("alice").unwrap();
        let bob = ChannelName::new("bob").unwrap();
        let token = sign(&key, &alice, 1_000);
        assert!(!token.contains("s3cret"));
        assert!(verify(&key, &alice, &token, 990));
        assert!(verify(&key, &alice, &token, 1_000));
        assert!(!verify(&key, &alice, &token, 1_001), "expired");
        assert!(!verify(&key, &bob, &token, 990), "another channel");
        assert!(
            !verify(&StreamKey::new("other"), &alice, &token, 990),
            "another key"
        );
        // Too far in the future: not one a front makes.
        let long = sign(&key, &alice, 1_000 + MAX_LIFETIME_SECS + 1);
        assert!(!verify(&key, &alice, &long, 1_000));
        for bad in ["", ".", "1000", "x.y", "1000.zz", &token[..token.len() - 1]] {
            assert!(!verify(&key, &alice, bad, 990), "{bad:?}");
        }
        let mut flipped = token.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        assert!(!verify(
            &key,
            &alice,
            std::str::from_utf8(&flipped).unwrap(),
            990
        ));
    }
}
