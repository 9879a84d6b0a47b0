//! `application/trickle-ice-sdpfrag` (RFC 8840) as WHIP/WHEP `PATCH` bodies carry it: ICE
//! credentials (an ICE restart when they are new) and candidates. Pure; bounded by the HTTP
//! body limit.

use str0m::{Candidate, IceCreds};

/// A parsed fragment.
#[derive(Debug, Default)]
pub(crate) struct SdpFrag {
    pub(crate) ufrag: Option<String>,
    pub(crate) pwd: Option<String>,
    pub(crate) candidates: Vec<Candidate>,
}

/// Why a fragment was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum SdpFragError {
    #[error("bad candidate line {0:?}")]
    Candidate(String),
    #[error("more than {MAX_CANDIDATES} candidates")]
    TooMany,
}

const MAX_CANDIDATES: usize = 64;

impl SdpFrag {
    pub(crate) fn parse(body: &str) -> Result<Self, SdpFragError> {
        let mut frag = SdpFrag::default();
        for line in body.lines().map(str::trim) {
            if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
                frag.ufrag = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("a=ice-pwd:") {
                frag.pwd = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("a=") {
                if v.starts_with("candidate:") {
                    if frag.candidates.len() == MAX_CANDIDATES {
                        return Err(SdpFragError::TooMany);
                    }
                    let c = Candidate::from_sdp_string(v)
                        .map_err(|_| SdpFragError::Candidate(shorten(v)))?;
                    frag.candidates.push(c);
                }
            }
        }
        Ok(frag)
    }

    /// New remote credentials if this fragment restarts ICE (credentials that differ from the
    /// current remote ufrag).
    pub(crate) fn restart(&self, current_ufrag: &str) -> Option<IceCreds> {
        match (&self.ufrag, &self.pwd) {
            (Some(ufrag), Some(pass)) if ufrag != current_ufrag => Some(IceCreds {
                ufrag: ufrag.clone(),
                pass: pass.clone(),
            }),
            _ => None,
        }
    }
}

/// Our answer to an ICE restart: new credentials and our candidates.
pub(crate) fn answer(local: &IceCreds, candidates: &[Candidate]) -> String {
    let mut out = format!(
        "a=ice-lite\r\na=ice-ufrag:{}\r\na=ice-pwd:{}\r\n",
        local.ufrag, local.pass
    );
    for c in candidates {
        out.push_str(&format!("a={}\r\n", c.to_sdp_string()));
    }
    out.push_str("a=end-of-candidates\r\n");
    out
}

fn shorten(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trickle_and_restart() {
        let body = "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef012345\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=candidate:1 1 udp 2113929471 127.0.0.1 50000 typ host\r\na=end-of-candidates\r\n";
        let f = SdpFrag::parse(body).unwrap();
        assert_eq!(f.candidates.len(), 1);
        assert!(f.restart("abcd").is_none(), "same ufrag: trickle");
        assert_eq!(f.restart("old").unwrap().ufrag, "abcd");
        let only_ufrag = SdpFrag::parse("a=ice-ufrag:new\r\n").unwrap();
        assert!(
            only_ufrag.restart("old").is_none(),
            "no password: not a restart"
        );
    }

    #[test]
    fn bad_candidates_are_errors() {
        assert!(matches!(
            SdpFrag::parse("a=candidate:garbage"),
            Err(SdpFragError::Candidate(_))
        ));
        let many = "a=candidate:1 1 udp 1 127.0.0.1 1 typ host\n".repeat(65);
        assert_eq!(SdpFrag::parse(&many).unwrap_err(), SdpFragError::TooMany);
    }

    #[test]
    fn answer_has_credentials_and_end() {
        let creds = IceCreds {
            ufrag: "u".into(),
            pass: "p".into(),
        };
        let c = Candidate::host("127.0.0.1:9".parse().unwrap(), "udp").unwrap();
        let a = answer(&creds, &[c]);
        assert!(a.contains("a=ice-ufrag:u\r\n") && a.contains("a=candidate:"));
        assert!(a.ends_with("a=end-of-candidates\r\n"));
    }
}
