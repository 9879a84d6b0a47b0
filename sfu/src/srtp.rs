//! SRTP for the media a viewer's task sends itself ([`crate::media_out`]): session keys derived
//! from the DTLS keying material (RFC 3711 §4.3), RTP sealed with AEAD-AES-GCM (RFC 7714 §8)
//! straight into the send batch, and the viewer's SRTCP opened (RFC 7714 §9) to read its NACKs.
//!
//! The ciphers are str0m's (its crypto provider, aws-lc-rs); str0m keeps its own contexts from
//! the same keys for everything else. The two never use one packet index twice: RTP indices are
//! the extended sequence numbers the viewer task assigns to each packet, whoever seals it, and
//! SRTCP is only read here. Only the AEAD profiles are sealed here; a session that agreed
//! AES-CM with HMAC-SHA1 leaves all its media to str0m.

use std::cell::RefCell;

use str0m::crypto::dtls::SrtpProfile;
use str0m::crypto::{
    AeadAes128Gcm, AeadAes128GcmCipher, AeadAes256Gcm, AeadAes256GcmCipher, SrtpProvider,
};

use crate::dtls::PeerFinished;

/// The GCM authentication tag after the encrypted payload.
pub(crate) const TAG_LEN: usize = AeadAes128Gcm::TAG_LEN;
const SALT_LEN: usize = AeadAes128Gcm::SALT_LEN;
/// RFC 3711 §4.3.1 labels.
const LABEL_RTP_KEY: u8 = 0x00;
const LABEL_RTP_SALT: u8 = 0x02;
const LABEL_RTCP_KEY: u8 = 0x03;
const LABEL_RTCP_SALT: u8 = 0x05;
/// SRTCP: the RTCP header in clear, and the E flag with the 31-bit index at the end.
const RTCP_HEADER_LEN: usize = 8;
const RTCP_INDEX_LEN: usize = 4;

/// One side's master key and salt.
struct Master {
    key: Vec<u8>,
    salt: [u8; SALT_LEN],
}

/// The master keys of one DTLS-SRTP session (AEAD profiles): ours and the peer's.
pub(crate) struct Keys {
    local: Master,
    remote: Master,
    /// The DTLS session's, told when the peer's SRTCP opens.
    pub(crate) peer_finished: PeerFinished,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key material itself.
        f.debug_struct("Keys")
            .field("bits", &(self.local.key.len() * 8))
            .finish()
    }
}

impl Keys {
    /// From the exported keying material (RFC 5764 §4.2: client key, server key, client salt,
    /// server salt). `client`: we are the DTLS client. `None` for a profile not sealed here.
    fn new(
        material: &[u8],
        profile: SrtpProfile,
        client: bool,
        peer_finished: PeerFinished,
    ) -> Option<Keys> {
        let key_len = match profile {
            SrtpProfile::AEAD_AES_128_GCM => AeadAes128Gcm::KEY_LEN,
            SrtpProfile::AEAD_AES_256_GCM => AeadAes256Gcm::KEY_LEN,
            _ => return None,
        };
        if material.len() != 2 * (key_len + SALT_LEN) {
            return None;
        }
        let (client_key, rest) = material.split_at(key_len);
        let (server_key, salts) = rest.split_at(key_len);
        let (client_salt, server_salt) = salts.split_at(SALT_LEN);
        let master = |key: &[u8], salt: &[u8]| -> Option<Master> {
            Some(Master {
                key: key.to_vec(),
                salt: salt.try_into().ok()?,
            })
        };
        let (client_side, server_side) = (
            master(client_key, client_salt)?,
            master(server_key, server_salt)?,
        );
        let (local, remote) = if client {
            (client_side, server_side)
        } else {
            (server_side, client_side)
        };
        Some(Keys {
            local,
            remote,
            peer_finished,
        })
    }

    /// Seals the RTP we send.
    pub(crate) fn rtp_sealer(&self) -> Sealer {
        let (key, salt) = session(&self.local, LABEL_RTP_KEY, LABEL_RTP_SALT);
        Sealer {
            gcm: Gcm::new(&key, true),
            salt,
        }
    }

    /// Opens the SRTCP the peer sends.
    pub(crate) fn rtcp_opener(&self) -> Opener {
        let (key, salt) = session(&self.remote, LABEL_RTCP_KEY, LABEL_RTCP_SALT);
        Opener {
            gcm: Gcm::new(&key, false),
            salt,
            highest: Vec::new(),
        }
    }

    /// Seals SRTCP as `remote` would: only the tests play the peer.
    #[cfg(test)]
    fn peer_rtcp_sealer(&self) -> Sealer {
        let (key, salt) = session(&self.remote, LABEL_RTCP_KEY, LABEL_RTCP_SALT);
        Sealer {
            gcm: Gcm::new(&key, true),
            salt,
        }
    }
}

fn provider() -> &'static dyn SrtpProvider {
    str0m::crypto::from_feature_flags().srtp_provider
}

/// A session key and salt from a master key (RFC 3711 §4.3.1, key derivation rate 0).
fn session(master: &Master, key_label: u8, salt_label: u8) -> (Vec<u8>, [u8; 12]) {
    let mut key = vec![0; master.key.len()];
    derive(&master.key, &master.salt, key_label, &mut key);
    let mut salt = [0; SALT_LEN];
    derive(&master.key, &master.salt, salt_label, &mut salt);
    (key, salt)
}

/// The AES-CM pseudo-random function keyed by the master key, over `salt` (at most 14 bytes)
/// with `label` at byte 7 and a block counter in the last two bytes.
fn derive(master_key: &[u8], salt: &[u8], label: u8, out: &mut [u8]) {
    let mut input = [0u8; 16];
    input[..salt.len()].copy_from_slice(salt);
    input[7] ^= label;
    for (round, chunk) in out.chunks_mut(16).enumerate() {
        input[14..].copy_from_slice(&(round as u16).to_be_bytes());
        // The provider pads the block (ECB with PKCS#7): room for two.
        let mut block = [0u8; 32];
        if master_key.len() == 32 {
            provider().srtp_aes_256_ecb_round(master_key, &input, &mut block);
        } else {
            provider().srtp_aes_128_ecb_round(master_key, &input, &mut block);
        }
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
}

enum Gcm {
    Narrow(Box<dyn AeadAes128GcmCipher>),
    Wide(Box<dyn AeadAes256GcmCipher>),
}

impl Gcm {
    /// A cipher for a 32-byte (AES-256) or 16-byte (AES-128) key; [`Keys::new`] makes no other.
    fn new(key: &[u8], encrypt: bool) -> Gcm {
        match <[u8; 32]>::try_from(key) {
            Ok(k) => Gcm::Wide(provider().aead_aes_256_gcm().create_cipher(k, encrypt)),
            Err(_) => {
                let mut k = [0u8; 16];
                k.copy_from_slice(&key[..16]);
                Gcm::Narrow(provider().aead_aes_128_gcm().create_cipher(k, encrypt))
            }
        }
    }

    fn seal(&mut self, iv: &[u8; 12], aad: &[u8], input: &[u8], output: &mut [u8]) -> bool {
        match self {
            Gcm::Narrow(c) => c.encrypt(iv, aad, input, output).is_ok(),
            Gcm::Wide(c) => c.encrypt(iv, aad, input, output).is_ok(),
        }
    }

    fn open(
        &mut self,
        iv: &[u8; 12],
        aad: &[u8],
        input: &[u8],
        output: &mut [u8],
    ) -> Option<usize> {
        match self {
            Gcm::Narrow(c) => c.decrypt(iv, &[aad], input, output).ok(),
            Gcm::Wide(c) => c.decrypt(iv, &[aad], input, output).ok(),
        }
    }
}

/// Seals outgoing RTP.
pub(crate) struct Sealer {
    gcm: Gcm,
    salt: [u8; SALT_LEN],
}

impl Sealer {
    /// Seals one RTP packet into `out` (`header.len() + payload.len() + TAG_LEN` bytes): the
    /// header in clear, then the payload encrypted and the tag. `index`: the extended sequence
    /// number (rollover counter and sequence number).
    pub(crate) fn seal(
        &mut self,
        header: &[u8],
        ssrc: u32,
        index: u64,
        payload: &[u8],
        out: &mut [u8],
    ) -> bool {
        if out.len() != header.len() + payload.len() + TAG_LEN || header.len() < 12 {
            return false;
        }
        let (clear, sealed) = out.split_at_mut(header.len());
        clear.copy_from_slice(header);
        let iv = AeadAes128Gcm::rtp_iv(self.salt, ssrc, (index >> 16) as u32, index as u16);
        self.gcm.seal(&iv, header, payload, sealed)
    }

    /// Seals a compound RTCP packet as SRTCP with `index` (tests play the peer with it).
    #[cfg(test)]
    fn seal_rtcp(&mut self, rtcp: &[u8], index: u32) -> Vec<u8> {
        let ssrc = u32::from_be_bytes([rtcp[4], rtcp[5], rtcp[6], rtcp[7]]);
        let trailer = (index | 0x8000_0000).to_be_bytes();
        let mut aad = [0u8; RTCP_HEADER_LEN + RTCP_INDEX_LEN];
        aad[..RTCP_HEADER_LEN].copy_from_slice(&rtcp[..RTCP_HEADER_LEN]);
        aad[RTCP_HEADER_LEN..].copy_from_slice(&trailer);
        let mut out = vec![0; rtcp.len() + TAG_LEN + RTCP_INDEX_LEN];
        out[..RTCP_HEADER_LEN].copy_from_slice(&rtcp[..RTCP_HEADER_LEN]);
        let iv = AeadAes128Gcm::rtcp_iv(self.salt, ssrc, index);
        let body_end = rtcp.len() + TAG_LEN;
        assert!(self.gcm.seal(
            &iv,
            &aad,
            &rtcp[RTCP_HEADER_LEN..],
            &mut out[RTCP_HEADER_LEN..body_end]
        ));
        out[body_end..].copy_from_slice(&trailer);
        out
    }
}

/// SSRCs whose SRTCP index is tracked, at most (a browser sends RTCP from one or a few).
const MAX_RTCP_SOURCES: usize = 8;

/// Opens incoming SRTCP.
pub(crate) struct Opener {
    gcm: Gcm,
    salt: [u8; SALT_LEN],
    /// Per sending SSRC, the highest index opened: an index not above it is a replay (or
    /// reordered; either way not read again). RFC 3711 §3.3.2 keeps it per SSRC too.
    highest: Vec<(u32, u32)>,
}

impl Opener {
    /// The compound RTCP inside `packet`, or `None` if it is too short, unencrypted, replayed
    /// or does not authenticate.
    pub(crate) fn open(&mut self, packet: &[u8]) -> Option<Vec<u8>> {
        if packet.len() < RTCP_HEADER_LEN + TAG_LEN + RTCP_INDEX_LEN {
            return None;
        }
        let (body, trailer) = packet.split_at(packet.len() - RTCP_INDEX_LEN);
        let e_and_index = u32::from_be_bytes(trailer.try_into().ok()?);
        // Browsers encrypt all SRTCP; an unencrypted one is not read here (str0m still is).
        if e_and_index & 0x8000_0000 == 0 {
            return None;
        }
        let index = e_and_index & 0x7fff_ffff;
        let ssrc = u32::from_be_bytes([body[4], body[5], body[6], body[7]]);
        let seen = self.highest.iter().position(|&(s, _)| s == ssrc);
        if seen.is_some_and(|i| index <= self.highest[i].1) {
            return None;
        }
        let mut aad = [0u8; RTCP_HEADER_LEN + RTCP_INDEX_LEN];
        aad[..RTCP_HEADER_LEN].copy_from_slice(&body[..RTCP_HEADER_LEN]);
        aad[RTCP_HEADER_LEN..].copy_from_slice(trailer);
        let iv = AeadAes128Gcm::rtcp_iv(self.salt, ssrc, index);
        let mut out = vec![0; body.len() - TAG_LEN];
        out[..RTCP_HEADER_LEN].copy_from_slice(&body[..RTCP_HEADER_LEN]);
        let n = self.gcm.open(
            &iv,
            &aad,
            &body[RTCP_HEADER_LEN..],
            &mut out[RTCP_HEADER_LEN..],
        )?;
        out.truncate(RTCP_HEADER_LEN + n);
        match seen {
            Some(i) => self.highest[i].1 = index,
            None => {
                if self.highest.len() >= MAX_RTCP_SOURCES {
                    self.highest.remove(0);
                }
                self.highest.push((ssrc, index));
            }
        }
        Some(out)
    }
}

thread_local! {
    /// Keys of a DTLS handshake that completed on this thread inside [`collect`].
    static COLLECTED: RefCell<Option<Option<Keys>>> = const { RefCell::new(None) };
}

/// Runs `f` (a call into a str0m `Rtc`) and returns, with its result, the keys of a DTLS
/// handshake that completed inside it. The DTLS session ([`crate::dtls`]) hands them over
/// through [`offer`]: str0m gives its crypto no handle back to the `Rtc`'s owner, and the
/// handshake completes synchronously inside the call, on this thread.
pub(crate) fn collect<T>(f: impl FnOnce() -> T) -> (T, Option<Keys>) {
    COLLECTED.with(|c| *c.borrow_mut() = Some(None));
    let out = f();
    let keys = COLLECTED.with(|c| c.borrow_mut().take()).flatten();
    (out, keys)
}

/// Called by the DTLS session when a handshake yields its keys; kept only inside [`collect`].
/// `peer_finished` is the session's, for whoever opens the peer's SRTCP with these keys.
pub(crate) fn offer(
    material: &[u8],
    profile: SrtpProfile,
    client: bool,
    peer_finished: &PeerFinished,
) {
    COLLECTED.with(|c| {
        if let Some(slot) = c.borrow_mut().as_mut() {
            *slot = Keys::new(material, profile, client, peer_finished.clone());
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_derivation_matches_rfc_3711_appendix_b3() {
        let master = [
            0xE1, 0xF9, 0x7A, 0x0D, 0x3E, 0x01, 0x8B, 0xE0, 0xD6, 0x4F, 0xA3, 0x2C, 0x06, 0xDE,
            0x41, 0x39,
        ];
        let salt = [
            0x0E, 0xC6, 0x75, 0xAD, 0x49, 0x8A, 0xFE, 0xEB, 0xB6, 0x96, 0x0B, 0x3A, 0xAB, 0xE6,
        ];
        let mut key = [0u8; 16];
        derive(&master, &salt, LABEL_RTP_KEY, &mut key);
        assert_eq!(
            key,
            [
                0xC6, 0x1E, 0x7A, 0x93, 0x74, 0x4F, 0x39, 0xEE, 0x10, 0x73, 0x4A, 0xFE, 0x3F, 0xF7,
                0xA0, 0x87
            ]
        );
        let mut session_salt = [0u8; 14];
        derive(&master, &salt, LABEL_RTP_SALT, &mut session_salt);
        assert_eq!(
            session_salt,
            [0x30, 0xCB, 0xBC, 0x08, 0x86, 0x3D, 0x8C, 0x85, 0xD4, 0x9D, 0xB3, 0x4A, 0x9A, 0xE1]
        );
    }

    fn material(key_len: usize) -> Vec<u8> {
        (0..2 * (key_len + SALT_LEN)).map(|i| i as u8).collect()
    }

    #[test]
    fn each_side_seals_with_its_own_key_and_opens_with_the_peers() {
        for (profile, key_len) in [
            (SrtpProfile::AEAD_AES_128_GCM, 16),
            (SrtpProfile::AEAD_AES_256_GCM, 32),
        ] {
            let server = Keys::new(&material(key_len), profile, false, PeerFinished::default())
                .expect("keys");
            let client = Keys::new(&material(key_len), profile, true, PeerFinished::default())
                .expect("keys");
            // A receiver report with a NACK, as the client would send it.
            let rtcp = [
                0x81, 0xCD, 0x00, 0x03, 0, 0, 0, 1, 0, 0, 0, 2, 0x12, 0x34, 0x00, 0x05,
            ];
            let sealed = server.peer_rtcp_sealer().seal_rtcp(&rtcp, 7);
            let mut opener = server.rtcp_opener();
            assert_eq!(opener.open(&sealed).as_deref(), Some(&rtcp[..]));
            assert_eq!(opener.open(&sealed), None, "a replay is not read again");
            // Another source's index counts on its own.
            let mut other = rtcp;
            other[7] = 2;
            let from_other = server.peer_rtcp_sealer().seal_rtcp(&other, 3);
            assert_eq!(opener.open(&from_other).as_deref(), Some(&other[..]));

            // What the server itself would send (sealed with its own key, as the client's
            // peer) does not open as the client's.
            let own = client.peer_rtcp_sealer().seal_rtcp(&rtcp, 9);
            assert_eq!(client.rtcp_opener().open(&own).as_deref(), Some(&rtcp[..]));
            assert_eq!(server.rtcp_opener().open(&own), None);

            let mut tampered = server.peer_rtcp_sealer().seal_rtcp(&rtcp, 8);
            tampered[10] ^= 1;
            assert_eq!(server.rtcp_opener().open(&tampered), None);
        }
    }

    #[test]
    fn rtp_is_sealed_after_a_clear_header() {
        let keys = Keys::new(
            &material(16),
            SrtpProfile::AEAD_AES_128_GCM,
            false,
            PeerFinished::default(),
        )
        .expect("keys");
        let header = [0x80, 0x60, 0x12, 0x34, 0, 0, 0, 9, 0xAA, 0xBB, 0xCC, 0xDD];
        let payload = [5u8; 100];
        let mut out = vec![0; header.len() + payload.len() + TAG_LEN];
        assert!(keys
            .rtp_sealer()
            .seal(&header, 0xAABBCCDD, 0x1234, &payload, &mut out));
        assert_eq!(&out[..12], &header);
        assert_ne!(&out[12..112], &payload[..]);
        // Another index is another nonce: another ciphertext.
        let mut again = out.clone();
        assert!(keys
            .rtp_sealer()
            .seal(&header, 0xAABBCCDD, 0x1_1234, &payload, &mut again));
        assert_ne!(out, again);
        let mut short = vec![0; 20];
        assert!(!keys.rtp_sealer().seal(&header, 1, 1, &payload, &mut short));
    }

    #[test]
    fn keys_are_only_collected_inside_collect() {
        let material = material(16);
        let session = PeerFinished::default();
        offer(&material, SrtpProfile::AEAD_AES_128_GCM, false, &session);
        let ((), keys) = collect(|| ());
        assert!(keys.is_none(), "an offer outside collect is dropped");
        let ((), keys) =
            collect(|| offer(&material, SrtpProfile::AEAD_AES_128_GCM, false, &session));
        let keys = keys.expect("collected");
        assert!(!session.is_confirmed());
        keys.peer_finished.confirm();
        assert!(
            session.is_confirmed(),
            "the keys tell the session they came from"
        );
        let ((), keys) =
            collect(|| offer(&material, SrtpProfile::AES128_CM_SHA1_80, false, &session));
        assert!(keys.is_none(), "AES-CM is left to str0m");
    }
}
