//! Pure decisions for the boot service's direct path: which request heads it answers itself
//! (`classify`) and which bytes of a file a `Range` header asks for (`span`). Everything else,
//! including every malformed or unusual request, is left to hyper, which answers it in full.

use std::path::PathBuf;

use percent_encoding::percent_decode_str;

/// Longest request head the direct path reads; a longer one goes to hyper (which refuses it).
pub const MAX_HEAD: usize = 16 * 1024;
/// Most header lines in a head the direct path parses.
const MAX_HEADERS: usize = 32;

/// What the direct path serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `GET /boot.ipxe[?arch=...]`.
    Script { arch: Option<String> },
    /// `GET /images/<path>`: a decoded relative path that passed the name filter, or `None` when
    /// it did not (answered 404: nothing outside the images directory is ever looked up).
    Image(Option<PathBuf>),
}

/// A request the direct path answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub target: Target,
    /// `HEAD`: headers only.
    pub head_only: bool,
    /// The connection stays open after the answer.
    pub keep_alive: bool,
    /// The raw `Range` header, when it applies (an `If-Range` that does not match drops it).
    pub range: Option<String>,
    /// The raw `If-Range` header.
    pub if_range: Option<String>,
    /// Bytes of the buffer the head took.
    pub len: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Classified {
    /// The head is not complete yet: read more.
    Partial,
    /// The direct path answers this request.
    Direct(Request),
    /// hyper answers this request (and the rest of the connection).
    Hyper,
}

/// Decides whether the head at the start of `buf` is a request the direct path answers: `GET` or
/// `HEAD` of the boot script or an image, HTTP/1.0 or 1.1, no body, no upgrade, no `Expect`.
pub fn classify(buf: &[u8]) -> Classified {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Classified::Partial,
        _ => return Classified::Hyper,
    };
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Classified::Hyper;
    };
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Classified::Hyper,
    };
    let mut connection = None;
    let mut range = None;
    let mut if_range = None;
    for h in req.headers.iter() {
        let value = || std::str::from_utf8(h.value).ok().map(str::trim);
        let name = h.name;
        if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("expect")
            || name.eq_ignore_ascii_case("upgrade")
            || (name.eq_ignore_ascii_case("content-length") && value() != Some("0"))
        {
            return Classified::Hyper;
        }
        if name.eq_ignore_ascii_case("connection") {
            connection = value().map(str::to_ascii_lowercase);
        } else if name.eq_ignore_ascii_case("range") {
            if range.is_some() {
                return Classified::Hyper;
            }
            range = value().map(str::to_string);
        } else if name.eq_ignore_ascii_case("if-range") {
            if_range = value().map(str::to_string);
        }
    }
    let tokens = |word: &str| connection.as_deref().is_some_and(|c| c.split(',').any(|t| t.trim() == word));
    let keep_alive = match version {
        1 => !tokens("close"),
        _ => tokens("keep-alive"),
    };
    let (path, query) = path.split_once('?').map_or((path, None), |(p, q)| (p, Some(q)));
    let target = if path == "/boot.ipxe" {
        match script_arch(query) {
            Some(arch) => Target::Script { arch },
            None => return Classified::Hyper,
        }
    } else if let Some(rest) = path.strip_prefix("/images/") {
        Target::Image(image_path(rest))
    } else {
        return Classified::Hyper;
    };
    Classified::Direct(Request { target, head_only, keep_alive, range, if_range, len })
}

/// The `arch` parameter of a boot script query, decoded as axum's `Query` decodes it; `None`
/// when that fails (a repeated `arch`: hyper's routed handler then answers 400).
fn script_arch(query: Option<&str>) -> Option<Option<String>> {
    #[derive(serde::Deserialize)]
    struct Q {
        arch: Option<String>,
    }
    let q: Q = serde_urlencoded::from_str(query.unwrap_or("")).ok()?;
    Some(q.arch)
}

/// The relative path an image URL names, if it passes the same filter as TFTP names after
/// percent-decoding (so an encoded `..` is decoded and then refused, and a doubly encoded one is
/// refused for its `%`).
fn image_path(raw: &str) -> Option<PathBuf> {
    let decoded = percent_decode_str(raw).decode_utf8().ok()?;
    crate::confine::relative(&decoded).ok()
}

/// The bytes of a file of `len` bytes to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Span {
    /// 200, the whole file.
    Whole,
    /// 206, bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// 416: the range starts past the end.
    Unsatisfiable,
}

/// The span a `Range` header asks for (RFC 9110 14.2). A header that is not one valid byte range
/// (another unit, several ranges, a syntax error) is ignored and the whole file sent, which the
/// RFC allows.
pub fn span(range: Option<&str>, len: u64) -> Span {
    let Some(spec) = range.and_then(|r| r.trim().strip_prefix("bytes=")) else {
        return Span::Whole;
    };
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Span::Whole;
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) { None } else { s.parse().ok() }
    };
    match (first.trim().is_empty(), last.trim().is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match number(last) {
            Some(0) => Span::Unsatisfiable,
            Some(_) if len == 0 => Span::Unsatisfiable,
            Some(n) => Span::Part { start: len.saturating_sub(n), end: len - 1 },
            None => Span::Whole,
        },
        // bytes=A-: from A to the end.
        (false, true) => match number(first) {
            Some(a) if a >= len => Span::Unsatisfiable,
            Some(a) => Span::Part { start: a, end: len - 1 },
            None => Span::Whole,
        },
        // bytes=A-B.
        (false, false) => match (number(first), number(last)) {
            (Some(a), Some(b)) if a > b => Span::Whole,
            (Some(a), Some(_)) if a >= len => Span::Unsatisfiable,
            (Some(a), Some(b)) => Span::Part { start: a, end: b.min(len - 1) },
            _ => Span::Whole,
        },
        (true, true) => Span::Whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn direct(raw: &str) -> Request {
        match classify(raw.as_bytes()) {
            Classified::Direct(r) => r,
            other => panic!("{raw:?}: {other:?}"),
        }
    }

    #[test]
    fn boot_scripts_and_images_are_answered_directly() {
        let r = direct("GET /boot.ipxe?arch=x86_64&platform=efi HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(r.target, Target::Script { arch: Some("x86_64".into()) });
        assert!(r.keep_alive && !r.head_only);
        let r = direct("GET /boot.ipxe HTTP/1.1\r\n\r\n");
        assert_eq!(r.target, Target::Script { arch: None });
        let raw = "HEAD /images/fcos/kernel%2Dx86_64 HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\nGET /next";
        let r = direct(raw);
        assert_eq!(r.target, Target::Image(Some("fcos/kernel-x86_64".into())));
        assert!(r.head_only && r.keep_alive);
        assert_eq!(&raw[r.len..], "GET /next", "the head's length leaves a pipelined request in the buffer");
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_header() {
        assert!(!direct("GET /boot.ipxe HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!direct("GET /boot.ipxe HTTP/1.1\r\nConnection: TE, Close\r\n\r\n").keep_alive);
        assert!(!direct("GET /boot.ipxe HTTP/1.0\r\n\r\n").keep_alive);
    }

    #[test]
    fn everything_else_goes_to_hyper() {
        for raw in [
            "POST /phone-home HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "GET /ignition HTTP/1.1\r\n\r\n",
            "GET /nocloud/w0/user-data HTTP/1.1\r\n\r\n",
            "GET /ipxe/ipxe.efi HTTP/1.1\r\n\r\n",
            "GET /images/vmlinuz HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /images/vmlinuz HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            "GET /images/vmlinuz HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET /images/vmlinuz HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            "GET /images/vmlinuz HTTP/1.1\r\nRange: bytes=0-1\r\nRange: bytes=2-3\r\n\r\n",
            "GET /boot.ipxe?arch=a&arch=b HTTP/1.1\r\n\r\n",
            "GET /boot.ipxe HTTP/2.0\r\n\r\n",
            "BREW /pot HTCPCP/1.0\r\n\r\n",
            "\0\0\0\0",
        ] {
            assert_eq!(classify(raw.as_bytes()), Classified::Hyper, "{raw:?}");
        }
        assert_eq!(classify(b"GET /boot.ipxe HTTP/1.1\r\nHost"), Classified::Partial);
        let huge = format!("GET /boot.ipxe HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD));
        assert_eq!(classify(huge.as_bytes()), Classified::Hyper, "an endless head is hyper's to refuse");
    }

    #[test]
    fn image_paths_outside_the_directory_are_not_looked_up() {
        for path in [
            "../slipway.toml",
            "%2e%2e/slipway.toml",
            "a/%2E%2E/%2e%2e/x",
            "%252e%252e/x",
            "",
            "dir/",
            "a//b",
            "%00x",
            "%C0%AE",
        ] {
            let r = direct(&format!("GET /images/{path} HTTP/1.1\r\n\r\n"));
            assert_eq!(r.target, Target::Image(None), "{path:?}");
        }
        assert_eq!(direct("GET /images/a%20b HTTP/1.1\r\n\r\n").target, Target::Image(Some("a b".into())));
    }

    #[test]
    fn ranges_follow_rfc_9110() {
        let cases: &[(Option<&str>, u64, Span)] = &[
            (None, 10, Span::Whole),
            (Some("bytes=0-4"), 10, Span::Part { start: 0, end: 4 }),
            (Some("bytes=5-"), 10, Span::Part { start: 5, end: 9 }),
            (Some("bytes=-3"), 10, Span::Part { start: 7, end: 9 }),
            (Some("bytes=-30"), 10, Span::Part { start: 0, end: 9 }),
            (Some("bytes=8-100"), 10, Span::Part { start: 8, end: 9 }),
            (Some("bytes=10-"), 10, Span::Unsatisfiable),
            (Some("bytes=10-20"), 10, Span::Unsatisfiable),
            (Some("bytes=-0"), 10, Span::Unsatisfiable),
            (Some("bytes=-1"), 0, Span::Unsatisfiable),
            (Some("bytes=5-4"), 10, Span::Whole),
            (Some("bytes=0-1,4-5"), 10, Span::Whole),
            (Some("items=0-1"), 10, Span::Whole),
            (Some("bytes=x-1"), 10, Span::Whole),
            (Some("bytes=+1-2"), 10, Span::Whole),
            (Some("bytes=-"), 10, Span::Whole),
            (Some("bytes=99999999999999999999999-"), 10, Span::Whole),
        ];
        for (range, len, want) in cases {
            assert_eq!(span(*range, *len), *want, "{range:?} of {len}");
        }
    }
}
