//! The properties the `http_head` fuzz target checks, callable from the unit tests too: any bytes
//! as a request head through `classify`, and any `Range` header through `span`.

use std::path::{Component, Path};

use super::head::{Classified, Span, Target, classify, span};

/// Panics if a head the direct path takes breaks its promises: it took no more bytes than it
/// was given, and an image path it answers is relative, of plain components, inside the root.
pub fn head(data: &[u8]) {
    if let Classified::Direct(request) = classify(data) {
        assert!(request.len > 0 && request.len <= data.len(), "took {} of {} bytes", request.len, data.len());
        if let Target::Image(Some(path)) = &request.target {
            assert!(path.is_relative(), "{path:?} is absolute");
            assert!(path.components().all(|c| matches!(c, Component::Normal(_))), "{path:?} has a special part");
            let root = Path::new("/var/lib/slipway/images");
            assert!(crate::confine::inside(root, &root.join(path)), "{path:?} leaves the root");
        }
        if let Some(range) = &request.range {
            range_of(range, data.len() as u64);
        }
    }
}

/// Panics if `span` gives a part outside a file of `len` bytes, or an empty one.
pub fn range_of(range: &str, len: u64) {
    if let Span::Part { start, end } = span(Some(range), len) {
        assert!(start <= end && end < len, "{range:?} on {len} bytes gave {start}-{end}");
    }
}

/// One input split into a head and a file length, as the fuzz target feeds it.
pub fn input(data: &[u8]) {
    head(data);
    if let Some((first, rest)) = data.split_first_chunk::<8>()
        && let Ok(range) = std::str::from_utf8(rest)
    {
        range_of(range, u64::from_le_bytes(*first) % (1 << 40));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn mutated_heads_and_ranges_keep_their_promises() {
        let seeds: [&[u8]; 4] = [
            b"GET /images/fcos/kernel HTTP/1.1\r\nHost: s\r\nRange: bytes=10-19\r\n\r\n",
            b"HEAD /images/a/../b%2e%2e HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            b"GET /boot.ipxe?arch=x86_64 HTTP/1.1\r\nIf-Range: x\r\nRange: bytes=-5\r\n\r\n",
            b"\x00\x00\x00\x00\x00\x10\x00\x00bytes=0-",
        ];
        let mut state: u32 = 0x9e37_79b9;
        for seed in seeds {
            for _ in 0..20_000 {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let mut data = seed.to_vec();
                let at = state as usize % data.len();
                data[at] = (state >> 8) as u8;
                data.truncate(data.len() - (state as usize >> 24) % 3);
                super::input(&data);
            }
        }
    }
}
