//! TFTP packets (RFC 1350) and option negotiation (RFC 2347 options, 2348 blksize, 2349
//! timeout and tsize, 7440 windowsize). Pure: bytes in, values out, and back.

use std::time::Duration;

pub const RRQ: u16 = 1;
pub const WRQ: u16 = 2;
pub const DATA: u16 = 3;
pub const ACK: u16 = 4;
pub const ERROR: u16 = 5;
pub const OACK: u16 = 6;

/// TFTP error codes used here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    NotDefined = 0,
    FileNotFound = 1,
    AccessViolation = 2,
    IllegalOperation = 4,
    OptionRefused = 8,
}

/// A packet a server receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    Read(Request<'a>),
    Write {
        filename: &'a [u8],
    },
    Ack(u16),
    Error {
        code: u16,
        message: &'a [u8],
    },
    /// DATA or OACK sent to a server, or an unknown opcode.
    Unexpected(u16),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub filename: &'a [u8],
    pub mode: &'a [u8],
    /// Option names (lower-cased) and values, in the client's order.
    pub options: Vec<(String, &'a [u8])>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("shorter than an opcode")]
    Short,
    #[error("a string is not NUL-terminated")]
    Unterminated,
    #[error("an option has no value")]
    OptionWithoutValue,
    #[error("ACK without a block number")]
    ShortAck,
}

/// Splits `bytes` at NULs into strings; the last must be terminated.
fn strings(bytes: &[u8]) -> Result<Vec<&[u8]>, Malformed> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let Some((last, body)) = bytes.split_last() else { return Ok(Vec::new()) };
    if *last != 0 {
        return Err(Malformed::Unterminated);
    }
    Ok(body.split(|b| *b == 0).collect())
}

pub fn parse(bytes: &[u8]) -> Result<Packet<'_>, Malformed> {
    let (op, rest) = match bytes {
        [a, b, rest @ ..] => (u16::from_be_bytes([*a, *b]), rest),
        _ => return Err(Malformed::Short),
    };
    match op {
        RRQ | WRQ => {
            let parts = strings(rest)?;
            let (filename, mode) = match parts.as_slice() {
                [f, m, ..] => (*f, *m),
                _ => return Err(Malformed::Unterminated),
            };
            if op == WRQ {
                return Ok(Packet::Write { filename });
            }
            let pairs = &parts[2..];
            if pairs.len() % 2 != 0 {
                return Err(Malformed::OptionWithoutValue);
            }
            let options =
                pairs.chunks(2).map(|kv| (String::from_utf8_lossy(kv[0]).to_ascii_lowercase(), kv[1])).collect();
            Ok(Packet::Read(Request { filename, mode, options }))
        }
        ACK => match rest {
            [a, b, ..] => Ok(Packet::Ack(u16::from_be_bytes([*a, *b]))),
            _ => Err(Malformed::ShortAck),
        },
        ERROR => {
            let code = match rest {
                [a, b, ..] => u16::from_be_bytes([*a, *b]),
                _ => 0,
            };
            let message = rest.get(2..).unwrap_or_default();
            let message = message.split(|b| *b == 0).next().unwrap_or_default();
            Ok(Packet::Error { code, message })
        }
        other => Ok(Packet::Unexpected(other)),
    }
}

pub fn error(code: ErrorCode, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + message.len());
    out.extend_from_slice(&ERROR.to_be_bytes());
    out.extend_from_slice(&(code as u16).to_be_bytes());
    out.extend_from_slice(message.as_bytes());
    out.push(0);
    out
}

/// Writes a DATA header for `block` into the first four bytes of `out`.
pub fn data_header(out: &mut [u8], block: u16) {
    out[..2].copy_from_slice(&DATA.to_be_bytes());
    out[2..4].copy_from_slice(&block.to_be_bytes());
}

/// What the transfer uses after negotiation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub blksize: usize,
    pub windowsize: u16,
    pub timeout: Duration,
    /// Whether an OACK is sent (the client asked for at least one option we took).
    pub oack: bool,
}

pub const DEFAULT_BLKSIZE: usize = 512;
/// Largest block slipway sends: fits a 1500-byte MTU (1500 - 20 IP - 8 UDP - 4 TFTP), so no
/// datagram is fragmented; a client asking for more gets this (RFC 2348 lets the server lower it).
pub const MAX_BLKSIZE: usize = 1468;
/// IP, UDP and TFTP headers around a block.
const HEADERS: usize = 20 + 8 + 4;

/// The largest block that fits a path MTU of `mtu` bytes unfragmented (at most `MAX_BLKSIZE`,
/// at least the default 512, below which RFC 1350 clients cannot go).
pub fn blksize_for_mtu(mtu: usize) -> usize {
    mtu.saturating_sub(HEADERS).clamp(DEFAULT_BLKSIZE, MAX_BLKSIZE)
}
pub const MAX_WINDOWSIZE: u16 = 64;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// Takes the options slipway supports and answers them; unknown and malformed ones are left out
/// of the OACK (RFC 2347). `size` is the file's length, for `tsize`; `max_blksize` the largest
/// block the path carries unfragmented (`blksize_for_mtu`).
pub fn negotiate(options: &[(String, &[u8])], size: u64, max_blksize: usize) -> (Negotiated, Vec<u8>) {
    let mut n = Negotiated { blksize: DEFAULT_BLKSIZE, windowsize: 1, timeout: DEFAULT_TIMEOUT, oack: false };
    let mut oack = OACK.to_be_bytes().to_vec();
    let mut answer = |name: &str, value: String| {
        oack.extend_from_slice(name.as_bytes());
        oack.push(0);
        oack.extend_from_slice(value.as_bytes());
        oack.push(0);
    };
    for (name, value) in options {
        let number = std::str::from_utf8(value).ok().and_then(|v| v.trim().parse::<u64>().ok());
        match (name.as_str(), number) {
            ("blksize", Some(v)) if v >= 8 => {
                n.blksize = usize::try_from(v).unwrap_or(MAX_BLKSIZE).min(max_blksize.min(MAX_BLKSIZE));
                answer("blksize", n.blksize.to_string());
            }
            ("windowsize", Some(v)) if v >= 1 => {
                n.windowsize = u16::try_from(v).unwrap_or(MAX_WINDOWSIZE).min(MAX_WINDOWSIZE);
                answer("windowsize", n.windowsize.to_string());
            }
            ("timeout", Some(v)) if (1..=255).contains(&v) => {
                n.timeout = Duration::from_secs(v);
                answer("timeout", v.to_string());
            }
            ("tsize", Some(_)) => answer("tsize", size.to_string()),
            _ => continue,
        }
        n.oack = true;
    }
    (n, oack)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_request_with_options_parses() {
        let bytes = b"\x00\x01ipxe.efi\x00octet\x00BLKSIZE\x001468\x00tsize\x000\x00";
        let Ok(Packet::Read(r)) = parse(bytes) else { panic!("not a read request") };
        assert_eq!(r.filename, b"ipxe.efi");
        assert_eq!(r.mode, b"octet");
        assert_eq!(r.options, vec![("blksize".to_owned(), &b"1468"[..]), ("tsize".to_owned(), &b"0"[..])]);
    }

    #[test]
    fn malformed_requests_are_named() {
        assert_eq!(parse(b"\x00"), Err(Malformed::Short));
        assert_eq!(parse(b"\x00\x01name"), Err(Malformed::Unterminated));
        assert_eq!(parse(b"\x00\x01name\x00"), Err(Malformed::Unterminated));
        assert_eq!(parse(b"\x00\x01n\x00octet\x00blksize\x00"), Err(Malformed::OptionWithoutValue));
        assert_eq!(parse(b"\x00\x04\x01"), Err(Malformed::ShortAck));
        assert_eq!(parse(b"\x00\x04\x01\x02"), Ok(Packet::Ack(0x0102)));
        assert_eq!(parse(b"\x00\x03\x00\x01data"), Ok(Packet::Unexpected(DATA)));
    }

    #[test]
    fn options_are_answered_within_limits_and_unknown_ones_dropped() {
        let opts = vec![
            ("blksize".to_owned(), &b"65464"[..]),
            ("windowsize".to_owned(), &b"8"[..]),
            ("tsize".to_owned(), &b"0"[..]),
            ("multicast".to_owned(), &b""[..]),
            ("timeout".to_owned(), &b"0"[..]),
        ];
        let (n, oack) = negotiate(&opts, 1234, MAX_BLKSIZE);
        assert_eq!((n.blksize, n.windowsize, n.timeout, n.oack), (1468, 8, DEFAULT_TIMEOUT, true));
        assert_eq!(oack, b"\x00\x06blksize\x001468\x00windowsize\x008\x00tsize\x001234\x00");
        let (n, _) = negotiate(&[], 1, MAX_BLKSIZE);
        assert!(!n.oack);
        assert_eq!(n.blksize, 512);
        let small = [("blksize".to_owned(), &b"1000"[..])];
        assert_eq!(negotiate(&small, 1, MAX_BLKSIZE).0.blksize, 1000, "a smaller block is taken as asked");
    }

    #[test]
    fn blocks_fit_the_path_mtu() {
        assert_eq!(blksize_for_mtu(1500), 1468);
        assert_eq!(blksize_for_mtu(9000), 1468, "jumbo frames: still the 1500-byte block");
        assert_eq!(blksize_for_mtu(1400), 1368);
        assert_eq!(blksize_for_mtu(576), 544);
        assert_eq!(blksize_for_mtu(100), 512, "never below RFC 1350's block");
        let opts = [("blksize".to_owned(), &b"1468"[..])];
        let (n, oack) = negotiate(&opts, 1, blksize_for_mtu(1400));
        assert_eq!(n.blksize, 1368);
        assert_eq!(oack, b"\x00\x06blksize\x001368\x00");
    }
}
