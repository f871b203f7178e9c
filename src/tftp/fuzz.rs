//! The properties the `tftp_name` and `tftp_packet` fuzz targets check, callable from the unit
//! tests too.

use std::path::{Component, Path};

use super::{Wanted, check, inside};

/// Panics if `check` lets through a name that could leave the root.
pub fn check_name(name: &str) {
    if let Ok(Wanted::File(path)) = check(name) {
        assert!(path.is_relative(), "{name:?} passed as an absolute path");
        assert!(
            path.components().all(|c| matches!(c, Component::Normal(_))),
            "{name:?} passed with a special component"
        );
        let root = Path::new("/srv/tftp");
        assert!(inside(root, &root.join(&path)), "{name:?} leaves the root");
        assert!(!name.contains(['\\', '%', '\0']), "{name:?} passed with a refused character");
    }
}

/// Parses any datagram as a TFTP packet and, for a read request, negotiates its options:
/// never a panic, and the answered options stay within slipway's limits.
pub fn packet(data: &[u8]) {
    use super::packet::{self, MAX_BLKSIZE, MAX_WINDOWSIZE, Packet};
    if let Ok(Packet::Read(request)) = packet::parse(data) {
        let (n, oack) = packet::negotiate(&request.options, 1 << 20, packet::MAX_BLKSIZE);
        assert!((8..=MAX_BLKSIZE).contains(&n.blksize) || (n.blksize == packet::DEFAULT_BLKSIZE), "{n:?}");
        assert!((1..=MAX_WINDOWSIZE).contains(&n.windowsize), "{n:?}");
        assert!(oack.starts_with(&packet::OACK.to_be_bytes()) && (oack.len() == 2 || oack.ends_with(&[0])));
        if let Ok(name) = std::str::from_utf8(request.filename) {
            check_name(name);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn mutated_requests_parse_without_panicking() {
        let seed = b"\x00\x01ipxe.efi\x00octet\x00blksize\x001468\x00windowsize\x0064\x00tsize\x000\x00";
        let mut state: u32 = 0x1234_5678;
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let mut data = seed.to_vec();
            let at = state as usize % data.len();
            data[at] = (state >> 8) as u8;
            data.truncate(data.len() - (state as usize >> 24) % 4);
            super::packet(&data);
        }
    }

    #[test]
    fn mutations_of_traversal_names_never_escape() {
        let seeds = ["../etc/passwd", "a/../../b", "..\\x", "%2e%2e/x", "/abs", "ok/file.efi", "a//b", "./x", "x/."];
        let extra = ['.', '/', '\\', '%', '\0', 'a'];
        for seed in seeds {
            super::check_name(seed);
            for (i, _) in seed.char_indices() {
                for c in extra {
                    let mut s = seed.to_string();
                    s.insert(i, c);
                    super::check_name(&s);
                    s.remove(i);
                    if i < s.len() && s.is_char_boundary(i) && s.is_char_boundary(i + 1) {
                        s.replace_range(i..i + 1, &c.to_string());
                        super::check_name(&s);
                    }
                }
            }
        }
    }
}
