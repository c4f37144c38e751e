//! The server name (SNI) of a TLS ClientHello, read from the first bytes of a connection without
//! terminating TLS (RFC 8446 §4.1.2, RFC 6066 §3): a small bounded parser over the first record.
//! The ClientHello must fit in that record (16 KiB, what every client sends); one that does not
//! is TLS without a name known here.

/// Most bytes read to find the name: a record header and the largest record.
pub const MAX_HELLO: usize = 5 + (1 << 14);

/// What the first bytes of a connection are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hello {
    /// Not decidable yet: read more (at most [`MAX_HELLO`] bytes in all).
    NeedMore,
    /// Not a TLS ClientHello.
    NotTls,
    /// A TLS ClientHello, with its server name if it has one (lower-cased).
    Tls(Option<String>),
}

/// Parses the start of a connection.
pub fn parse(buf: &[u8]) -> Hello {
    // Record: content type 22 (handshake), legacy version 3.x, length.
    match buf {
        [] => return Hello::NeedMore,
        [b, ..] if *b != 22 => return Hello::NotTls,
        [_, major, ..] if *major != 3 => return Hello::NotTls,
        _ => {}
    }
    if buf.len() < 5 {
        return Hello::NeedMore;
    }
    let record_len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
    if record_len == 0 || record_len > 1 << 14 {
        return Hello::NotTls;
    }
    // Handshake type 1 (ClientHello) is the first byte of the record.
    if buf.len() >= 6 && buf[5] != 1 {
        return Hello::NotTls;
    }
    let Some(record) = buf.get(5..5 + record_len) else {
        return Hello::NeedMore;
    };
    match client_hello_sni(record) {
        Some(name) => Hello::Tls(name),
        // Malformed or spread over several records: TLS, name unknown.
        None => Hello::Tls(None),
    }
}

/// The server name of the handshake message in `record`: `Some(None)` when it has none,
/// `None` when it is cut short or malformed.
fn client_hello_sni(record: &[u8]) -> Option<Option<String>> {
    let mut r = Reader(record);
    if r.u8()? != 1 {
        return None;
    }
    let len = r.u24()?;
    let mut body = Reader(r.take(len)?);
    body.take(2 + 32)?; // legacy version, random
    let session = usize::from(body.u8()?);
    body.take(session)?;
    let suites = usize::from(body.u16()?);
    body.take(suites)?;
    let compression = usize::from(body.u8()?);
    body.take(compression)?;
    if body.0.is_empty() {
        return Some(None); // no extensions
    }
    let ext_len = usize::from(body.u16()?);
    let mut exts = Reader(body.take(ext_len)?);
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let len = usize::from(exts.u16()?);
        let data = exts.take(len)?;
        if kind != 0 {
            continue;
        }
        let mut list = Reader(data);
        let list_len = usize::from(list.u16()?);
        let mut names = Reader(list.take(list_len)?);
        while !names.0.is_empty() {
            let name_type = names.u8()?;
            let len = usize::from(names.u16()?);
            let name = names.take(len)?;
            if name_type == 0 {
                let name = std::str::from_utf8(name).ok()?;
                return Some(Some(name.trim_end_matches('.').to_ascii_lowercase()));
            }
        }
        return Some(None);
    }
    Some(None)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u24(&mut self) -> Option<usize> {
        let b = self.take(3)?;
        Some(usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }
}

/// A ClientHello record for `sni` (none: without the extension), as clients write it; for tests
/// and test clients.
pub fn client_hello(sni: Option<&str>) -> Vec<u8> {
    let mut exts = Vec::new();
    if let Some(name) = sni {
        let name = name.as_bytes();
        let mut entry = vec![0u8];
        entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
        entry.extend_from_slice(name);
        let mut list = (entry.len() as u16).to_be_bytes().to_vec();
        list.extend_from_slice(&entry);
        exts.extend_from_slice(&0u16.to_be_bytes());
        exts.extend_from_slice(&(list.len() as u16).to_be_bytes());
        exts.extend_from_slice(&list);
    }
    // supported_versions: TLS 1.3, so a real server answers rather than ignores the hello.
    exts.extend_from_slice(&[0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04]);
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[7u8; 32]);
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]); // one cipher suite
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let mut handshake = vec![1u8];
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![22u8, 3, 1];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_are_read_from_client_hellos() {
        let hello = client_hello(Some("A.Example.COM."));
        let no_name = client_hello(None);
        let mut long_record = client_hello(Some("x.test"));
        long_record[3..5].copy_from_slice(&[0x40, 0x01]); // 16385: above the TLS limit
        let mut not_hello = client_hello(Some("x.test"));
        not_hello[5] = 2; // ServerHello
        let mut inner_cut = client_hello(Some("x.test"));
        let n = inner_cut.len();
        inner_cut[n - 15] = 0xff; // a name length beyond the extension
        let mut big = client_hello(Some("big.test"));
        big.extend_from_slice(&[0u8; 100]); // application data after the record
        let tls = |name: &str| Hello::Tls(Some(name.into()));
        // (case, bytes, verdict)
        #[rustfmt::skip]
        let cases: Vec<(&str, Vec<u8>, Hello)> = vec![
            ("nothing yet", vec![], Hello::NeedMore),
            ("record header only", hello[..3].to_vec(), Hello::NeedMore),
            ("half the hello", hello[..hello.len() / 2].to_vec(), Hello::NeedMore),
            ("all but one byte", hello[..hello.len() - 1].to_vec(), Hello::NeedMore),
            ("the hello: the name, lower-cased, without its final dot", hello.clone(), tls("a.example.com")),
            ("bytes after the record are not looked at", big, tls("big.test")),
            ("no server name extension", no_name, Hello::Tls(None)),
            ("HTTP", b"GET / HTTP/1.1\r\n".to_vec(), Hello::NotTls),
            ("a byte other than handshake", vec![23, 3, 3, 0, 5], Hello::NotTls),
            ("SSLv2-style or other major version", vec![22, 2, 0], Hello::NotTls),
            ("record above 16 KiB", long_record, Hello::NotTls),
            ("a handshake other than ClientHello", not_hello, Hello::NotTls),
            ("malformed inside: TLS, name unknown", inner_cut, Hello::Tls(None)),
            ("a record of zero length", vec![22, 3, 1, 0, 0], Hello::NotTls),
        ];
        for (case, bytes, want) in cases {
            assert_eq!(parse(&bytes), want, "{case}");
        }
    }

    #[test]
    fn any_prefix_of_garbage_is_decided_without_panic() {
        // Lengths that lie in every field: the parser must neither panic nor read past the end.
        let hello = client_hello(Some("x.test"));
        for i in 5..hello.len() {
            for v in [0u8, 1, 0x7f, 0xff] {
                let mut b = hello.clone();
                b[i] = v;
                for end in 0..=b.len() {
                    let _ = parse(&b[..end]);
                }
            }
        }
    }
}
