//! DHCPv4 on the wire: bytes to a plain [`Request`], and a reply message back to bytes.
//! Anything malformed becomes a [`Malformed`] reason; nothing here panics on network input.

use std::net::Ipv4Addr;

#[cfg(test)]
use dhcproto::v4::OptionCode;
use dhcproto::v4::{self, DhcpOption, HType, MessageType, Opcode};
use dhcproto::{Decodable, Decoder, Encodable};

use crate::boot::BootClient;
use crate::inventory::MacAddr;

/// The DHCP messages a server acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Discover,
    Request,
    Decline,
    Release,
    Inform,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Discover => "discover",
            Kind::Request => "request",
            Kind::Decline => "decline",
            Kind::Release => "release",
            Kind::Inform => "inform",
        }
    }
}

/// A client's message, reduced to what the decision needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub kind: Kind,
    pub xid: u32,
    pub mac: MacAddr,
    pub broadcast: bool,
    pub hops: u8,
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    /// Option 50.
    pub requested_ip: Option<Ipv4Addr>,
    /// Option 54.
    pub server_id: Option<Ipv4Addr>,
    /// Option 61.
    pub client_id: Option<Vec<u8>>,
    /// Option 12.
    pub hostname: Option<String>,
    /// Option 82, echoed back to the relay.
    pub relay_info: Option<DhcpOption>,
    /// Option 57, the largest reply the client accepts.
    pub max_size: Option<u16>,
    pub boot: BootClient,
}

#[cfg(test)]
impl Request {
    /// A plain request of `kind` from `mac`: no options, no relay, xid 42.
    pub fn plain(kind: Kind, mac: MacAddr) -> Request {
        Request {
            kind,
            xid: 42,
            mac,
            broadcast: false,
            hops: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            requested_ip: None,
            server_id: None,
            client_id: None,
            hostname: None,
            relay_info: None,
            max_size: None,
            boot: BootClient::default(),
        }
    }
}

/// Why a datagram is not a request we act on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("cannot decode: {0}")]
    Decode(String),
    #[error("not a BOOTREQUEST")]
    NotRequest,
    #[error("hardware type is not Ethernet with a 6-byte address")]
    NotEthernet,
    #[error("no message type (option 53)")]
    NoMessageType,
    #[error("message type {0:?} is not one a server answers")]
    Unsupported(MessageType),
    #[error("option {code} has length {len}, which overruns the datagram or is wrong for the option")]
    BadOption { code: u8, len: usize },
}

/// Where options start: the fixed BOOTP header (236 bytes) and the magic cookie.
const OPTIONS_START: usize = 240;

/// The length an option must have when the decoder reads it as a fixed-size value.
fn fixed_length(code: u8) -> Option<usize> {
    Some(match code {
        80 => 0,
        19 | 20 | 23 | 27 | 29 | 30 | 31 | 34 | 36 | 37 | 39 | 46 | 52 | 53 | 116 | 156 | 157 => 1,
        13 | 22 | 26 | 57 | 93 => 2,
        94 => 3,
        2 | 24 | 35 | 38 | 51 | 58 | 59 | 91 | 106 | 152 | 153 | 154 | 155 => 4,
        _ => return None,
    })
}

/// Walks the option TLVs before they are read: every option must fit in the datagram,
/// fixed-size options must have their size, and variable ones their minimum. Consecutive
/// options with the same code are one value (RFC 3396), so a run is judged by its total length.
/// A datagram that fails is dropped whole, as it was when the codec read every option (the codec
/// still reads option 82, and would desynchronise, or in a debug build abort, on a wrong length).
fn check_options(bytes: &[u8]) -> Result<(), Malformed> {
    let check = |code: u8, len: usize| match (fixed_length(code), code) {
        (Some(n), _) if n != len => Err(Malformed::BadOption { code, len }),
        (None, 81) if len < 3 => Err(Malformed::BadOption { code, len }),
        (None, 151) if len < 1 => Err(Malformed::BadOption { code, len }),
        _ => Ok(()),
    };
    let mut run: Option<(u8, usize)> = None;
    let mut at = OPTIONS_START;
    while let Some(&code) = bytes.get(at) {
        if code == 0 || code == 255 {
            if let Some((c, total)) = run.take() {
                check(c, total)?;
            }
            if code == 255 {
                return Ok(());
            }
            at += 1;
            continue;
        }
        let len = usize::from(*bytes.get(at + 1).ok_or(Malformed::BadOption { code, len: 0 })?);
        if at + 2 + len > bytes.len() {
            return Err(Malformed::BadOption { code, len });
        }
        run = match run {
            Some((c, total)) if c == code => Some((c, total + len)),
            Some((c, total)) => {
                check(c, total)?;
                Some((code, len))
            }
            None => Some((code, len)),
        };
        at += 2 + len;
    }
    match run {
        Some((c, total)) => check(c, total),
        None => Ok(()),
    }
}

/// Decodes a datagram received on port 67: the header fields and the options a decision reads,
/// straight from the bytes (the codec builds a map of every option first, a twentieth of a busy
/// server's time). A run of consecutive options with one code is one value (RFC 3396); when a
/// code appears again later, the later value counts. The tests hold it to the codec's reading of
/// the same messages.
pub fn parse(bytes: &[u8]) -> Result<Request, Malformed> {
    check_options(bytes)?;
    let header = bytes.get(..OPTIONS_START).ok_or_else(|| {
        Malformed::Decode(format!("{} bytes is shorter than a DHCP header ({OPTIONS_START})", bytes.len()))
    })?;
    let u32_at = |at: usize| u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
    if header[0] != u8::from(Opcode::BootRequest) {
        return Err(Malformed::NotRequest);
    }
    if header[1] != u8::from(HType::Eth) || header[2] != 6 {
        return Err(Malformed::NotEthernet);
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&header[28..34]);
    let mut found = Found::default();
    for (code, run) in runs(bytes) {
        found.take(code, run);
    }
    let kind = kind_of(MessageType::from(*found.value(53).and_then(|v| v.first()).ok_or(Malformed::NoMessageType)?))?;
    let ip = |code| found.value(code).and_then(|v| <[u8; 4]>::try_from(v).ok()).map(Ipv4Addr::from);
    let u16_of = |code| found.value(code).and_then(|v| <[u8; 2]>::try_from(v).ok()).map(u16::from_be_bytes);
    let user_class = found.value(77);
    let is_ipxe = user_class.is_some_and(|u| u.windows(4).any(|w| w == b"iPXE")) || found.value(175).is_some();
    Ok(Request {
        kind,
        xid: u32_at(4),
        mac: MacAddr(mac),
        broadcast: header[10] & 0x80 != 0,
        hops: header[3],
        ciaddr: Ipv4Addr::from(u32_at(12)),
        giaddr: Ipv4Addr::from(u32_at(24)),
        requested_ip: ip(50),
        server_id: ip(54),
        client_id: found.value(61).filter(|id| !id.is_empty()).map(|id| id.to_vec()),
        hostname: found.value(12).and_then(|h| String::from_utf8(h.to_vec()).ok()),
        // Decoded by the codec (it is echoed back as it came), from the run's own bytes.
        relay_info: found.raw(82).and_then(|raw| DhcpOption::decode(&mut Decoder::new(raw)).ok()),
        max_size: u16_of(57),
        boot: BootClient { arch: u16_of(93), vendor_class: found.value(60).map(|v| v.to_vec()), is_ipxe },
    })
}

/// The messages a server acts on; the rest (a client never sends an OFFER) are refused.
fn kind_of(message: MessageType) -> Result<Kind, Malformed> {
    Ok(match message {
        MessageType::Discover => Kind::Discover,
        MessageType::Request => Kind::Request,
        MessageType::Decline => Kind::Decline,
        MessageType::Release => Kind::Release,
        MessageType::Inform => Kind::Inform,
        other => return Err(Malformed::Unsupported(other)),
    })
}

/// The option codes `parse` reads.
const READ: [u8; 11] = [12, 50, 53, 54, 57, 60, 61, 77, 82, 93, 175];

/// A run of consecutive options with one code: the TLV bytes as they stand, and the joined value.
struct Run<'a> {
    raw: &'a [u8],
    value: std::borrow::Cow<'a, [u8]>,
}

/// The last run of each code in `READ`.
#[derive(Default)]
struct Found<'a> {
    runs: [Option<Run<'a>>; READ.len()],
}

impl<'a> Found<'a> {
    fn take(&mut self, code: u8, run: Run<'a>) {
        if let Some(slot) = READ.iter().position(|c| *c == code) {
            self.runs[slot] = Some(run);
        }
    }

    fn run(&self, code: u8) -> Option<&Run<'a>> {
        READ.iter().position(|c| *c == code).and_then(|slot| self.runs[slot].as_ref())
    }

    fn value(&self, code: u8) -> Option<&[u8]> {
        self.run(code).map(|r| &*r.value)
    }

    fn raw(&self, code: u8) -> Option<&'a [u8]> {
        self.run(code).map(|r| r.raw)
    }
}

/// The option runs after the header, up to the end option or the end of the datagram (lengths
/// were checked by `check_options`; one that overruns ends the walk).
fn runs(bytes: &[u8]) -> impl Iterator<Item = (u8, Run<'_>)> {
    let mut at = OPTIONS_START;
    std::iter::from_fn(move || {
        loop {
            let code = *bytes.get(at)?;
            match code {
                255 => return None,
                0 => at += 1,
                _ => break,
            }
        }
        let (code, start) = (bytes[at], at);
        let mut value = std::borrow::Cow::Borrowed(&bytes[at..at]);
        while bytes.get(at) == Some(&code) {
            let len = usize::from(*bytes.get(at + 1)?);
            let piece = bytes.get(at + 2..at + 2 + len)?;
            if at == start {
                value = std::borrow::Cow::Borrowed(piece);
            } else {
                value.to_mut().extend_from_slice(piece);
            }
            at += 2 + len;
        }
        Some((code, Run { raw: &bytes[start..at], value }))
    })
}

#[cfg(test)]
fn reference(bytes: &[u8]) -> Result<Request, Malformed> {
    check_options(bytes)?;
    let msg = v4::Message::decode(&mut Decoder::new(bytes)).map_err(|e| Malformed::Decode(e.to_string()))?;
    request(&msg)
}

#[cfg(test)]
fn request(msg: &v4::Message) -> Result<Request, Malformed> {
    if msg.opcode() != Opcode::BootRequest {
        return Err(Malformed::NotRequest);
    }
    if msg.htype() != HType::Eth || msg.hlen() != 6 {
        return Err(Malformed::NotEthernet);
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(msg.chaddr().get(..6).ok_or(Malformed::NotEthernet)?);
    let opts = msg.opts();
    let kind = kind_of(opts.msg_type().ok_or(Malformed::NoMessageType)?)?;
    let ip = |code| match opts.get(code) {
        Some(DhcpOption::RequestedIpAddress(ip) | DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    };
    let bytes = |code| match opts.get(code) {
        Some(DhcpOption::ClientIdentifier(b) | DhcpOption::ClassIdentifier(b) | DhcpOption::UserClass(b)) => {
            Some(b.clone())
        }
        _ => None,
    };
    let user_class = bytes(OptionCode::UserClass);
    let is_ipxe = user_class.as_deref().is_some_and(|u| u.windows(4).any(|w| w == b"iPXE"))
        || opts.get(OptionCode::Unknown(175)).is_some();
    let arch = match opts.get(OptionCode::ClientSystemArchitecture) {
        Some(DhcpOption::ClientSystemArchitecture(a)) => Some(u16::from(*a)),
        _ => None,
    };
    Ok(Request {
        kind,
        xid: msg.xid(),
        mac: MacAddr(mac),
        broadcast: msg.flags().broadcast(),
        hops: msg.hops(),
        ciaddr: msg.ciaddr(),
        giaddr: msg.giaddr(),
        requested_ip: ip(OptionCode::RequestedIpAddress),
        server_id: ip(OptionCode::ServerIdentifier),
        client_id: bytes(OptionCode::ClientIdentifier).filter(|id| !id.is_empty()),
        hostname: match opts.get(OptionCode::Hostname) {
            Some(DhcpOption::Hostname(h)) => Some(h.clone()),
            _ => None,
        },
        relay_info: opts.get(OptionCode::RelayAgentInformation).cloned(),
        max_size: match opts.get(OptionCode::MaxMessageSize) {
            Some(DhcpOption::MaxMessageSize(n)) => Some(*n),
            _ => None,
        },
        boot: BootClient { arch, vendor_class: bytes(OptionCode::ClassIdentifier), is_ipxe },
    })
}

/// The magic cookie between the BOOTP header and the options (RFC 2131 section 3).
const MAGIC: [u8; 4] = [99, 130, 83, 99];

/// Encodes a reply: the fixed header here (the codec writes its 192 bytes of `sname` and
/// `file` padding one byte at a time, a tenth of a busy server's time), the options by the
/// codec. `None` only if a field did not fit its width (the codec's setters refuse such
/// values) or an option did not encode; the caller drops such a reply.
pub fn encode(msg: &v4::Message) -> Option<Vec<u8>> {
    let mut header = [0u8; OPTIONS_START];
    let mut at = 0;
    let mut put = |bytes: &[u8], width: usize| -> Option<()> {
        let field = header.get_mut(at..at + width)?;
        field.get_mut(..bytes.len())?.copy_from_slice(bytes);
        at += width;
        Some(())
    };
    put(&[u8::from(msg.opcode()), u8::from(msg.htype()), msg.hlen(), msg.hops()], 4)?;
    put(&msg.xid().to_be_bytes(), 4)?;
    put(&msg.secs().to_be_bytes(), 2)?;
    put(&u16::from(msg.flags()).to_be_bytes(), 2)?;
    for addr in [msg.ciaddr(), msg.yiaddr(), msg.siaddr(), msg.giaddr()] {
        put(&addr.octets(), 4)?;
    }
    put(msg.chaddr(), 16)?;
    put(msg.sname().unwrap_or_default(), 64)?;
    put(msg.fname().unwrap_or_default(), 128)?;
    put(&MAGIC, 4)?;
    // The codec writes from the start of its buffer: the options first, then the header goes
    // in front of them (one allocation for the whole reply).
    let mut out = Vec::with_capacity(576);
    msg.opts().encode(&mut dhcproto::Encoder::new(&mut out)).ok()?;
    let options = out.len();
    out.resize(OPTIONS_START + options, 0);
    out.copy_within(..options, OPTIONS_START);
    out[..OPTIONS_START].copy_from_slice(&header);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discover() -> v4::Message {
        let mut msg = v4::Message::new(
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &[0x52, 0x54, 0, 1, 2, 3],
        );
        msg.set_xid(0x1234_5678);
        msg.opts_mut().insert(DhcpOption::MessageType(MessageType::Discover));
        msg
    }

    #[test]
    fn a_discover_parses_into_a_request() {
        let mut msg = discover();
        msg.opts_mut().insert(DhcpOption::UserClass(b"iPXE".to_vec()));
        msg.opts_mut().insert(DhcpOption::ClientSystemArchitecture(7.into()));
        let req = parse(&msg.to_vec().expect("encode")).expect("parse");
        assert_eq!((req.kind, req.xid, req.mac.to_string()), (Kind::Discover, 0x1234_5678, "52:54:00:01:02:03".into()));
        assert!(req.boot.is_ipxe);
        assert_eq!(req.boot.arch, Some(7));
    }

    #[test]
    fn truncated_and_garbage_datagrams_are_malformed_not_panics() {
        let bytes = discover().to_vec().expect("encode");
        for len in 0..bytes.len() {
            let _ = parse(&bytes[..len]);
        }
        assert!(parse(&[0u8; 300]).is_err());
        assert!(matches!(parse(b"hello"), Err(Malformed::Decode(_))));
    }

    #[test]
    fn options_with_impossible_lengths_are_refused_before_decoding() {
        let good = discover().to_vec().expect("encode");
        assert!(check_options(&good).is_ok());
        let with = |option: &[u8]| {
            let mut bytes = good[..OPTIONS_START].to_vec();
            bytes.extend_from_slice(option);
            bytes.extend_from_slice(&[53, 1, 1, 255]);
            bytes
        };
        assert_eq!(
            parse(&with(&[80, 2, 0, 0])).map(|_| ()),
            Err(Malformed::BadOption { code: 80, len: 2 }),
            "rapid commit carries no data"
        );
        assert_eq!(parse(&with(&[51, 3, 0, 0, 0])).map(|_| ()), Err(Malformed::BadOption { code: 51, len: 3 }));
        assert_eq!(parse(&with(&[151, 0])).map(|_| ()), Err(Malformed::BadOption { code: 151, len: 0 }));
        assert_eq!(
            parse(&with(&[12, 200, b'x'])).map(|_| ()),
            Err(Malformed::BadOption { code: 12, len: 200 }),
            "overruns the datagram"
        );
        assert!(parse(&with(&[12, 1, b'x'])).is_ok());
        assert_eq!(
            parse(&with(&[51, 4, 0, 0, 0, 1, 51, 4, 0, 0, 0, 1])).map(|_| ()),
            Err(Malformed::BadOption { code: 51, len: 8 }),
            "a split option is judged whole"
        );
        assert!(parse(&with(&[12, 1, b'a', 12, 1, b'b'])).is_ok(), "a long option split in two is fine");
    }

    /// A small deterministic generator (xorshift64*), so a failure replays.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn bytes(&mut self, max: u64) -> Vec<u8> {
            let len = self.below(max + 1);
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    /// A random request as a client or relay would send it, with the options `parse` reads and
    /// some it does not, each present or not; long ones are split by the codec (RFC 3396).
    fn random_request(rng: &mut Rng) -> v4::Message {
        let ip = |rng: &mut Rng| Ipv4Addr::from(rng.next() as u32);
        let mut chaddr = [0u8; 6];
        chaddr.iter_mut().for_each(|b| *b = rng.next() as u8);
        let mut msg = v4::Message::new_with_id(
            rng.next() as u32,
            ip(rng),
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            ip(rng),
            &chaddr,
        );
        msg.set_hops(rng.below(20) as u8).set_secs(rng.next() as u16);
        if rng.below(2) == 0 {
            msg.set_flags(v4::Flags::default().set_broadcast());
        }
        let opts = msg.opts_mut();
        opts.insert(DhcpOption::MessageType(MessageType::from(1 + rng.below(9) as u8)));
        let host: String = (0..1 + rng.below(300)).map(|_| char::from(b'a' + rng.below(26) as u8)).collect();
        let vendor = if rng.below(2) == 0 { b"PXEClient:Arch:00007".to_vec() } else { rng.bytes(300) };
        let mut user_class = rng.bytes(8);
        if rng.below(2) == 0 {
            user_class.extend_from_slice(b"iPXE");
        }
        let mut relay = v4::relay::RelayAgentInformation::default();
        relay.insert(v4::relay::RelayInfo::AgentCircuitId(rng.bytes(10)));
        let candidates = [
            DhcpOption::RequestedIpAddress(ip(rng)),
            DhcpOption::ServerIdentifier(ip(rng)),
            DhcpOption::ClientIdentifier(rng.bytes(40)),
            DhcpOption::Hostname(host),
            DhcpOption::MaxMessageSize(rng.next() as u16),
            DhcpOption::ClientSystemArchitecture((rng.below(12) as u16).into()),
            DhcpOption::ClassIdentifier(vendor),
            DhcpOption::UserClass(user_class),
            DhcpOption::Unknown(v4::UnknownOption::new(OptionCode::Unknown(175), rng.bytes(6))),
            DhcpOption::ParameterRequestList(vec![OptionCode::SubnetMask, OptionCode::Router]),
            DhcpOption::RelayAgentInformation(relay),
        ];
        for option in candidates {
            if rng.below(2) == 0 {
                opts.insert(option);
            }
        }
        msg
    }

    #[test]
    fn parse_reads_requests_as_the_codec_does() {
        let mut rng = Rng(0x5eed_1e55_c0de_cafe);
        for round in 0..5000 {
            let msg = random_request(&mut rng);
            let bytes = msg.to_vec().expect("codec");
            assert_eq!(parse(&bytes), reference(&bytes), "round {round}: {msg:?}");
        }
    }

    #[test]
    fn a_later_option_of_the_same_code_wins_and_a_split_one_is_joined() {
        let mut bytes = discover().to_vec().expect("encode");
        bytes.truncate(OPTIONS_START);
        bytes.extend_from_slice(&[53, 1, 1, 12, 2, b'a', b'b', 12, 1, b'c', 50, 4, 10, 0, 0, 1, 12, 1, b'z', 255]);
        let req = parse(&bytes).expect("parse");
        assert_eq!((req.hostname.as_deref(), req.requested_ip), (Some("z"), Some(Ipv4Addr::new(10, 0, 0, 1))));
        bytes.truncate(bytes.len() - 4);
        bytes.push(255);
        assert_eq!(parse(&bytes).expect("parse").hostname.as_deref(), Some("abc"), "12 'ab' then 12 'c' is 'abc'");
        assert_eq!(parse(&bytes), reference(&bytes));
    }

    #[test]
    fn replies_encode_byte_for_byte_as_the_codec_does() {
        let mut plain = discover();
        plain.set_opcode(Opcode::BootReply);
        let mut full = plain.clone();
        full.set_flags(v4::Flags::default().set_broadcast())
            .set_hops(1)
            .set_secs(7)
            .set_yiaddr(Ipv4Addr::new(10, 1, 0, 50))
            .set_siaddr(Ipv4Addr::new(10, 1, 0, 1))
            .set_giaddr(Ipv4Addr::new(10, 1, 0, 2))
            .set_sname(b"slipway")
            .set_fname(&[b'x'; 128]);
        full.opts_mut().insert(DhcpOption::Hostname("h".repeat(300)));
        full.opts_mut().insert(DhcpOption::RelayAgentInformation(Default::default()));
        full.opts_mut().insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 1, 0, 1)));
        let mut bare = plain.clone();
        bare.set_opts(v4::DhcpOptions::new());
        for msg in [plain, full, bare] {
            assert_eq!(encode(&msg), Some(msg.to_vec().expect("codec")), "{msg:?}");
        }
    }

    #[test]
    fn replies_and_odd_hardware_are_refused() {
        let mut msg = discover();
        msg.set_opcode(Opcode::BootReply);
        assert_eq!(parse(&msg.to_vec().expect("encode")).map(|_| ()), Err(Malformed::NotRequest));
        let mut msg = discover();
        msg.set_chaddr(&[1, 2, 3, 4]);
        assert_eq!(parse(&msg.to_vec().expect("encode")).map(|_| ()), Err(Malformed::NotEthernet));
        let mut msg = discover();
        msg.opts_mut().insert(DhcpOption::MessageType(MessageType::Offer));
        assert!(matches!(parse(&msg.to_vec().expect("encode")), Err(Malformed::Unsupported(_))));
        let mut msg = discover();
        msg.opts_mut().remove(OptionCode::MessageType);
        assert_eq!(parse(&msg.to_vec().expect("encode")).map(|_| ()), Err(Malformed::NoMessageType));
    }
}
