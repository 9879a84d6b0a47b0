//! Reads the server name (SNI) and ALPN list from a TLS ClientHello without terminating TLS.
//!
//! Pure over a buffer (sans-IO): the TLS front reads from the socket, calls [`peek`] with every
//! byte received so far, and on [`Peek::Hello`] either replays those same bytes to another node
//! or hands them to its own TLS acceptor. Nothing is consumed, so nothing is lost.
//!
//! A post-quantum key share (X25519MLKEM768, about 1.2 KB) makes a ClientHello span several TCP
//! segments, and a client may fragment the handshake message across several TLS records: the
//! records are reassembled here. Every length read from the wire is checked against what
//! remains, and the whole read is capped at [`MAX_CLIENT_HELLO`].

use std::net::Ipv6Addr;

/// The most bytes of TLS records buffered for one ClientHello.
///
/// One full TLS record (2^14 bytes of payload): a ClientHello with a post-quantum key share is
/// about 1.3-1.8 KB, and even a browser's with a long pre-shared-key ticket stays far below
/// this. It bounds the memory a connection that never finishes its hello can hold, and the
/// bytes the front must keep for replay.
pub const MAX_CLIENT_HELLO: usize = 16 * 1024;

/// ALPN protocol names kept from one hello; further names are checked but dropped. Browsers
/// offer two or three.
pub const MAX_ALPN: usize = 16;

const RECORD_HEADER: usize = 5;
const MAX_RECORD: usize = 1 << 14;
const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const NAME_TYPE_HOST_NAME: u8 = 0;

/// What [`peek`] found in the bytes so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peek {
    /// Not all of the ClientHello yet: read more and call again with the whole buffer so far.
    Incomplete,
    /// The whole ClientHello was present.
    Hello(ClientHello),
}

/// What a ClientHello asks for, as far as routing needs it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientHello {
    /// The `host_name` from the server_name extension: lowercase ASCII, no trailing dot. `None`
    /// without the extension, or when the client put an IP literal there (RFC 6066 forbids it,
    /// some old clients did it anyway: treated as no name rather than refused).
    pub server_name: Option<String>,
    /// The ALPN protocol names in the client's order, at most [`MAX_ALPN`].
    pub alpn: Vec<Vec<u8>>,
}

/// Why the bytes are not a ClientHello this front can route.
#[non_exhaustive]
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum SniError {
    /// The first record is not a TLS handshake record (plain HTTP, an alert, SSLv2, noise).
    #[error("not a TLS handshake")]
    NotTls,
    /// A TLS handshake, but its first message is not a ClientHello.
    #[error("the first handshake message is not a ClientHello")]
    NotClientHello,
    /// The ClientHello does not fit in [`MAX_CLIENT_HELLO`] bytes of records.
    #[error("ClientHello larger than {MAX_CLIENT_HELLO} bytes")]
    TooLarge,
    /// A length or field that breaks the TLS grammar; the text names the field.
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
}

/// Looks for a complete ClientHello at the start of `buf`, the bytes read from a connection so
/// far. Bytes after the records holding the hello are not looked at.
pub fn peek(buf: &[u8]) -> Result<Peek, SniError> {
    let mut handshake = Vec::new();
    let mut offset = 0;
    loop {
        let rest = buf.get(offset..).unwrap_or_default();
        let first = offset == 0;
        check_record_start(rest, first)?;
        let Some((header, after)) = rest.split_first_chunk::<RECORD_HEADER>() else {
            return incomplete(offset + RECORD_HEADER + 1);
        };
        let &[_, _, _, hi, lo] = header;
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len > MAX_RECORD {
            return Err(SniError::Malformed("record longer than 2^14"));
        }
        if len == 0 {
            return Err(SniError::Malformed("empty handshake record"));
        }
        let end = offset + RECORD_HEADER + len;
        if end > MAX_CLIENT_HELLO {
            return Err(SniError::TooLarge);
        }
        let Some(fragment) = after.get(..len) else {
            return incomplete(end);
        };
        handshake.extend_from_slice(fragment);
        offset = end;
        if let Some(body) = client_hello_body(&handshake)? {
            return parse_client_hello(body).map(Peek::Hello);
        }
    }
}

/// `Incomplete`, unless the records must run to at least `needed` bytes, past the cap.
fn incomplete(needed: usize) -> Result<Peek, SniError> {
    if needed > MAX_CLIENT_HELLO {
        Err(SniError::TooLarge)
    } else {
        Ok(Peek::Incomplete)
    }
}

/// Checks whatever part of a record header is present, so that `GET /` fails on its first byte.
fn check_record_start(rest: &[u8], first: bool) -> Result<(), SniError> {
    let reject = |what| {
        if first {
            SniError::NotTls
        } else {
            SniError::Malformed(what)
        }
    };
    if rest.first().is_some_and(|&t| t != CONTENT_HANDSHAKE) {
        return Err(reject("non-handshake record inside the ClientHello"));
    }
    if rest.get(1).is_some_and(|&major| major != 3) {
        return Err(reject("record version"));
    }
    if rest.get(2).is_some_and(|&minor| !(1..=3).contains(&minor)) {
        return Err(reject("record version"));
    }
    Ok(())
}

/// The ClientHello body once the handshake bytes hold all of it.
fn client_hello_body(handshake: &[u8]) -> Result<Option<&[u8]>, SniError> {
    let Some((&[kind, a, b, c], body)) = handshake.split_first_chunk::<4>() else {
        return match handshake.first() {
            Some(&kind) if kind != HANDSHAKE_CLIENT_HELLO => Err(SniError::NotClientHello),
            _ => Ok(None),
        };
    };
    if kind != HANDSHAKE_CLIENT_HELLO {
        return Err(SniError::NotClientHello);
    }
    let len = (usize::from(a) << 16) | (usize::from(b) << 8) | usize::from(c);
    // It needs at least one record header and the 4-byte handshake header besides.
    if len + 4 + RECORD_HEADER > MAX_CLIENT_HELLO {
        return Err(SniError::TooLarge);
    }
    Ok(body.get(..len))
}

fn parse_client_hello(body: &[u8]) -> Result<ClientHello, SniError> {
    let mut r = Reader(body);
    let version = r.u16("legacy_version")?;
    if !(0x0301..=0x0303).contains(&version) {
        return Err(SniError::Malformed("legacy_version"));
    }
    r.take(32, "random")?;
    if r.vec_u8("session id")?.0.len() > 32 {
        return Err(SniError::Malformed("session id longer than 32"));
    }
    let suites = r.vec_u16("cipher suites")?.0;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(SniError::Malformed("cipher suites"));
    }
    if r.vec_u8("compression methods")?.0.is_empty() {
        return Err(SniError::Malformed("no compression methods"));
    }
    let mut hello = ClientHello::default();
    if r.0.is_empty() {
        return Ok(hello); // A TLS 1.0-1.2 hello may end without extensions.
    }
    let mut extensions = r.vec_u16("extensions")?;
    r.end("bytes after extensions")?;
    let mut seen = Vec::new();
    while !extensions.0.is_empty() {
        let kind = extensions.u16("extension type")?;
        let data = extensions.vec_u16("extension length")?;
        seen.push(kind);
        match kind {
            EXT_SERVER_NAME => hello.server_name = parse_server_name(data)?,
            EXT_ALPN => hello.alpn = parse_alpn(data)?,
            _ => {}
        }
    }
    seen.sort_unstable();
    if seen.windows(2).any(|w| w.first() == w.get(1)) {
        return Err(SniError::Malformed("duplicate extension"));
    }
    Ok(hello)
}

fn parse_server_name(mut data: Reader<'_>) -> Result<Option<String>, SniError> {
    let mut list = data.vec_u16("server_name list length")?;
    data.end("bytes after server_name list")?;
    if list.0.is_empty() {
        return Err(SniError::Malformed("empty server_name list"));
    }
    let mut host = None;
    let mut seen_host = false;
    while !list.0.is_empty() {
        let kind = list.u8("server_name type")?;
        // Every name type defined or proposed has a 16-bit length, so unknown ones are skipped.
        let name = list.vec_u16("server_name length")?;
        if kind == NAME_TYPE_HOST_NAME {
            if seen_host {
                return Err(SniError::Malformed("two host_names"));
            }
            seen_host = true;
            host = host_name(name.0)?;
        }
    }
    Ok(host)
}

/// A validated, lowercased host name; `None` for an IP literal.
fn host_name(raw: &[u8]) -> Result<Option<String>, SniError> {
    let name = raw.strip_suffix(b".").unwrap_or(raw);
    if name.is_empty() || name.len() > 253 {
        return Err(SniError::Malformed("host_name length"));
    }
    if is_ipv6_literal(name) {
        return Ok(None);
    }
    let mut last_label_numeric = false;
    for label in name.split(|&b| b == b'.') {
        if label.is_empty() || label.len() > 63 {
            return Err(SniError::Malformed("host_name label length"));
        }
        if !label
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(SniError::Malformed("host_name character"));
        }
        last_label_numeric = label.iter().all(u8::is_ascii_digit);
    }
    // No top-level domain is all digits: this is an IPv4 address (or an inet_aton form of one).
    if last_label_numeric {
        return Ok(None);
    }
    // Only ASCII passed the check above, so this cannot fail.
    Ok(std::str::from_utf8(name).ok().map(str::to_ascii_lowercase))
}

fn is_ipv6_literal(name: &[u8]) -> bool {
    let name = name.strip_prefix(b"[").unwrap_or(name);
    let name = name.strip_suffix(b"]").unwrap_or(name);
    name.contains(&b':') && std::str::from_utf8(name).is_ok_and(|s| s.parse::<Ipv6Addr>().is_ok())
}

fn parse_alpn(mut data: Reader<'_>) -> Result<Vec<Vec<u8>>, SniError> {
    let mut list = data.vec_u16("ALPN list length")?;
    data.end("bytes after ALPN list")?;
    if list.0.is_empty() {
        return Err(SniError::Malformed("empty ALPN list"));
    }
    let mut protocols = Vec::new();
    while !list.0.is_empty() {
        let name = list.vec_u8("ALPN protocol length")?.0;
        if name.is_empty() {
            return Err(SniError::Malformed("empty ALPN protocol"));
        }
        if protocols.len() < MAX_ALPN {
            protocols.push(name.to_vec());
        }
    }
    Ok(protocols)
}

/// Reads big-endian fields off the front of a slice; every read checks what remains.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], SniError> {
        let (head, tail) = self
            .0
            .split_at_checked(n)
            .ok_or(SniError::Malformed(what))?;
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, SniError> {
        let (&b, tail) = self.0.split_first().ok_or(SniError::Malformed(what))?;
        self.0 = tail;
        Ok(b)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, SniError> {
        let (&bytes, tail) = self
            .0
            .split_first_chunk::<2>()
            .ok_or(SniError::Malformed(what))?;
        self.0 = tail;
        Ok(u16::from_be_bytes(bytes))
    }

    /// A field with an 8-bit length prefix.
    fn vec_u8(&mut self, what: &'static str) -> Result<Reader<'a>, SniError> {
        let len = self.u8(what)?;
        self.take(usize::from(len), what).map(Reader)
    }

    /// A field with a 16-bit length prefix.
    fn vec_u16(&mut self, what: &'static str) -> Result<Reader<'a>, SniError> {
        let len = self.u16(what)?;
        self.take(usize::from(len), what).map(Reader)
    }

    fn end(&self, what: &'static str) -> Result<(), SniError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(SniError::Malformed(what))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rustls::crypto::aws_lc_rs::{self, kx_group};
    use rustls::pki_types::ServerName;
    use std::sync::{Arc, LazyLock};

    /// The records a real client (rustls, post-quantum key share preferred) sends first.
    fn rustls_hello(name: &str) -> Vec<u8> {
        let mut provider = aws_lc_rs::default_provider();
        provider.kx_groups = vec![kx_group::X25519MLKEM768, kx_group::X25519];
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let name = ServerName::try_from(name.to_owned()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).unwrap();
        }
        out
    }

    static REAL_HELLO: LazyLock<Vec<u8>> = LazyLock::new(|| rustls_hello("node-b.example.test"));

    fn expected() -> ClientHello {
        ClientHello {
            server_name: Some("node-b.example.test".into()),
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        }
    }

    /// The handshake bytes of records (all assumed to be handshake records).
    fn unwrap_records(mut records: &[u8]) -> Vec<u8> {
        let mut handshake = Vec::new();
        while let Some((&[_, _, _, hi, lo], rest)) = records.split_first_chunk::<5>() {
            let (fragment, rest) = rest.split_at(usize::from(u16::from_be_bytes([hi, lo])));
            handshake.extend_from_slice(fragment);
            records = rest;
        }
        handshake
    }

    /// Handshake bytes in records of at most `size` bytes each.
    fn wrap_records(handshake: &[u8], size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for fragment in handshake.chunks(size) {
            out.extend_from_slice(&[22, 3, 1]);
            out.extend_from_slice(&(fragment.len() as u16).to_be_bytes());
            out.extend_from_slice(fragment);
        }
        out
    }

    fn u16_prefixed(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    /// A minimal ClientHello record with these extensions (type, data).
    fn hello_with(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut exts = Vec::new();
        for (kind, data) in extensions {
            exts.extend_from_slice(&kind.to_be_bytes());
            exts.extend_from_slice(&u16_prefixed(data));
        }
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]); // random
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // cipher suites
        body.extend_from_slice(&[1, 0]); // compression methods
        body.extend_from_slice(&u16_prefixed(&exts));
        let mut handshake = vec![1];
        handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        handshake.extend_from_slice(&body);
        wrap_records(&handshake, MAX_RECORD)
    }

    fn sni(name: &[u8]) -> (u16, Vec<u8>) {
        let mut entry = vec![0];
        entry.extend_from_slice(&u16_prefixed(name));
        (0, u16_prefixed(&entry))
    }

    fn alpn(names: &[&[u8]]) -> (u16, Vec<u8>) {
        let mut list = Vec::new();
        for name in names {
            list.push(name.len() as u8);
            list.extend_from_slice(name);
        }
        (16, u16_prefixed(&list))
    }

    fn server_name(buf: &[u8]) -> Result<Option<String>, SniError> {
        match peek(buf)? {
            Peek::Hello(hello) => Ok(hello.server_name),
            Peek::Incomplete => panic!("incomplete"),
        }
    }

    #[test]
    fn real_post_quantum_hello_names_the_server() {
        let hello = &*REAL_HELLO;
        assert!(hello.len() > 1200, "{} bytes", hello.len());
        assert_eq!(peek(hello), Ok(Peek::Hello(expected())));
    }

    #[test]
    fn real_hello_is_incomplete_at_every_split() {
        let hello = &*REAL_HELLO;
        for end in 0..hello.len() {
            assert_eq!(peek(&hello[..end]), Ok(Peek::Incomplete), "{end} bytes");
        }
        // What follows the hello (early data, a pipelined record) is not looked at.
        let mut more = hello.clone();
        more.extend_from_slice(b"\x17\x03\x03\x00\x05hello");
        assert_eq!(peek(&more), Ok(Peek::Hello(expected())));
    }

    #[test]
    fn real_hello_fragmented_across_records() {
        let handshake = unwrap_records(&REAL_HELLO);
        assert_eq!(handshake.first(), Some(&1));
        for size in [1, 2, 3, 4, 5, 7, 100, 511, 1000, handshake.len()] {
            let records = wrap_records(&handshake, size);
            assert_eq!(peek(&records), Ok(Peek::Hello(expected())), "{size}");
        }
        let records = wrap_records(&handshake, 300);
        for end in 0..records.len() {
            assert_eq!(peek(&records[..end]), Ok(Peek::Incomplete), "{end} bytes");
        }
        // Anything else between the fragments breaks the rule that they are contiguous.
        let mut interleaved = wrap_records(&handshake[..300], 300);
        interleaved.extend_from_slice(&[20, 3, 3, 0, 1, 1]); // change_cipher_spec
        interleaved.extend_from_slice(&wrap_records(&handshake[300..], 300));
        assert!(matches!(peek(&interleaved), Err(SniError::Malformed(_))));
    }

    #[test]
    fn no_server_name() {
        // rustls sends no server_name for an IP address.
        assert_eq!(server_name(&rustls_hello("192.0.2.1")), Ok(None));
        assert_eq!(server_name(&hello_with(&[])), Ok(None));
        assert_eq!(server_name(&hello_with(&[alpn(&[b"h2"])])), Ok(None));
    }

    #[test]
    fn ip_literal_is_no_name() {
        for ip in [&b"192.0.2.1"[..], b"10.0.0.1.", b"2001:db8::1", b"[::1]"] {
            assert_eq!(server_name(&hello_with(&[sni(ip)])), Ok(None), "{ip:?}");
        }
    }

    #[test]
    fn host_name_is_lowercased_without_trailing_dot() {
        let hello = hello_with(&[sni(b"Node-B.Example.TEST.")]);
        assert_eq!(server_name(&hello), Ok(Some("node-b.example.test".into())));
        let hello = hello_with(&[sni(b"_acme.x1")]);
        assert_eq!(server_name(&hello), Ok(Some("_acme.x1".into())));
        let longest = [&[b'a'; 63][..], &[b'b'; 63], &[b'c'; 63], &[b'd'; 61]].join(&b'.');
        assert_eq!(longest.len(), 253);
        assert!(server_name(&hello_with(&[sni(&longest)]))
            .unwrap()
            .is_some());
    }

    #[test]
    fn invalid_host_names_are_malformed() {
        let too_long = [&[b'a'; 63][..], &[b'b'; 63], &[b'c'; 63], &[b'd'; 62]].join(&b'.');
        for name in [
            &b""[..],
            b".",
            b"a..b",
            b".a",
            b"a b",
            b"a\0b",
            b"caf\xc3\xa9.test",
            b"a/b",
            b"a:80",
            &[b'a'; 64],
            &too_long,
        ] {
            let result = server_name(&hello_with(&[sni(name)]));
            assert!(
                matches!(result, Err(SniError::Malformed(_))),
                "{name:?}: {result:?}"
            );
        }
    }

    #[test]
    fn declared_length_over_the_cap_is_too_large() {
        let mut records = wrap_records(&[1, 0xff, 0xff, 0xff], 4);
        assert_eq!(peek(&records), Err(SniError::TooLarge));
        records = wrap_records(&[1, 0, 0x40, 0x00], 4); // 16 KiB
        assert_eq!(peek(&records), Err(SniError::TooLarge));
        // Declares a length that fits, then sends it in records whose headers overflow the cap.
        let mut handshake = vec![1, 0, 0x3f, 0x00];
        handshake.resize(4 + 0x3f00, 0);
        let records = wrap_records(&handshake, 16);
        let mut saw_too_large = false;
        for end in (0..records.len()).step_by(97) {
            match peek(&records[..end]) {
                Ok(Peek::Incomplete) => assert!(end <= MAX_CLIENT_HELLO, "{end}"),
                Err(SniError::TooLarge) => saw_too_large = true,
                other => panic!("{end}: {other:?}"),
            }
        }
        assert!(saw_too_large);
        // 64 records of 256 bytes end exactly at the cap, 68 bytes short of the hello: no
        // further record can fit, so the last of them completing says so.
        let records = wrap_records(&handshake, 251);
        assert_eq!(peek(&records[..MAX_CLIENT_HELLO - 1]), Ok(Peek::Incomplete));
        assert_eq!(peek(&records[..MAX_CLIENT_HELLO]), Err(SniError::TooLarge));
        // A record header claiming more than the cap allows.
        let mut big = wrap_records(&handshake, 4);
        big.extend_from_slice(&[22, 3, 3, 0x40, 0x00]);
        assert_eq!(peek(&big), Err(SniError::TooLarge));
    }

    #[test]
    fn garbage_and_http_are_not_tls() {
        for buf in [
            &b"GET / HTTP/1.1\r\nHost: node-b.example.test\r\n\r\n"[..],
            b"G",
            b"PRI * HTTP/2.0\r\n",
            &[21, 3, 3, 0, 2, 2, 40], // alert
            &[0x80, 0x2e, 1, 3, 1],   // SSLv2-compatible hello
            &[22, 2, 0],              // SSL 2
            &[22, 3, 4],              // not a record version
            &[22, 3, 0, 0, 10],       // SSL 3
            &[0xff; 64],
        ] {
            assert_eq!(peek(buf), Err(SniError::NotTls), "{buf:?}");
        }
        assert_eq!(peek(&[22]), Ok(Peek::Incomplete));
        assert_eq!(
            peek(&[22, 3, 1, 0, 4, 2, 0, 0, 0]),
            Err(SniError::NotClientHello)
        ); // ServerHello
    }

    #[test]
    fn record_lengths_are_checked() {
        assert!(matches!(
            peek(&[22, 3, 1, 0, 0]),
            Err(SniError::Malformed(_))
        ));
        assert!(matches!(
            peek(&[22, 3, 1, 0x40, 1]),
            Err(SniError::Malformed(_))
        ));
    }

    #[test]
    fn truncated_lengths_are_malformed() {
        let good = hello_with(&[sni(b"node-b.example.test"), alpn(&[b"h2"])]);
        assert!(matches!(peek(&good), Ok(Peek::Hello(_))));
        // Offsets in `good`: record 5 + handshake 4, version 2, random 32, session id 1,
        // suites 4, compression 2, then the extensions' length at 50.
        let ext_start = 50;
        let mut cases = Vec::new();
        for (at, value) in [
            (ext_start, 0xff),     // extensions longer than the hello
            (ext_start + 4, 0xff), // server_name extension longer than the extensions
            (ext_start + 6, 0xff), // server_name list longer than the extension
            (ext_start + 9, 0xff), // host_name longer than the list
            (ext_start + 7, 0x00), // server_name list shorter than the extension
            (ext_start + 1, 0x01), // extensions' length cuts an extension's header
            (44, 33),              // session id
        ] {
            let mut bad = good.clone();
            bad[at] = value;
            cases.push(bad);
        }
        let alpn_start = good.len() - 9;
        for (at, value) in [
            (alpn_start + 6, 3),
            (alpn_start + 6, 0),
            (alpn_start + 3, 0),
        ] {
            let mut bad = good.clone();
            bad[at] = value;
            cases.push(bad);
        }
        for bad in cases {
            let result = peek(&bad);
            assert!(
                matches!(result, Err(SniError::Malformed(_))),
                "{bad:?}: {result:?}"
            );
        }
        // A body that ends inside a field, with the handshake length telling the truth (at 41
        // it ends after the compression methods: a valid hello without extensions).
        for cut in (1..good.len() - 9).filter(|&cut| cut != 41) {
            let handshake = unwrap_records(&good);
            let mut body = handshake[4..4 + cut].to_vec();
            let mut short = vec![1];
            short.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
            short.append(&mut body);
            let result = peek(&wrap_records(&short, MAX_RECORD));
            assert!(
                matches!(result, Err(SniError::Malformed(_))),
                "{cut}: {result:?}"
            );
        }
    }

    #[test]
    fn duplicate_extensions_are_malformed() {
        let hello = hello_with(&[sni(b"a.test"), alpn(&[b"h2"]), sni(b"b.test")]);
        assert_eq!(
            peek(&hello),
            Err(SniError::Malformed("duplicate extension"))
        );
        let hello = hello_with(&[(5, vec![]), alpn(&[b"h2"]), (5, vec![])]);
        assert_eq!(
            peek(&hello),
            Err(SniError::Malformed("duplicate extension"))
        );
        let mut two_names = vec![0, 0, 1, b'a', 0, 0, 1, b'b'];
        two_names = u16_prefixed(&two_names);
        let hello = hello_with(&[(0, two_names)]);
        assert_eq!(peek(&hello), Err(SniError::Malformed("two host_names")));
    }

    #[test]
    fn alpn_is_capped() {
        let names: Vec<Vec<u8>> = (0..40).map(|i| format!("proto-{i}").into_bytes()).collect();
        let refs: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
        let Ok(Peek::Hello(hello)) = peek(&hello_with(&[alpn(&refs)])) else {
            panic!("not a hello");
        };
        assert_eq!(hello.alpn, names[..MAX_ALPN]);
    }

    fn check_invariants(buf: &[u8]) {
        if let Ok(Peek::Incomplete) = peek(buf) {
            assert!(buf.len() <= MAX_CLIENT_HELLO);
        }
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(buf in proptest::collection::vec(any::<u8>(), 0..3000)) {
            check_invariants(&buf);
            let mut records = vec![22, 3, 3];
            records.extend_from_slice(&(buf.len() as u16).to_be_bytes());
            records.extend_from_slice(&buf);
            check_invariants(&records);
        }

        #[test]
        fn never_panics_on_a_mutated_real_hello(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
            fragment in 1usize..2000,
        ) {
            let mut hello = REAL_HELLO.clone();
            for (at, value) in edits {
                let at = at.index(hello.len());
                hello[at] = value;
            }
            check_invariants(&hello);
            check_invariants(&hello[..cut.index(hello.len())]);
            let records = wrap_records(&unwrap_records(&REAL_HELLO), fragment);
            prop_assert_eq!(peek(&records), Ok(Peek::Hello(expected())));
            let mut handshake = unwrap_records(&REAL_HELLO);
            let at = cut.index(handshake.len());
            handshake[at] ^= 0x5a;
            check_invariants(&wrap_records(&handshake, fragment));
        }
    }
}
