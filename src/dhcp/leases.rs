//! The lease table: every address binding, indexed by address and by client. One task owns it
//! (the DHCP server); `decide` reads it; changes are applied after they are decided. It is
//! rebuilt from the store at start, so a restarted daemon knows every acknowledged binding.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use smallvec::SmallVec;

use crate::inventory::{AddrRange, Lease, LeaseState, MacAddr, Name, Timestamp};

/// Who a lease belongs to: the client identifier (option 61) when the client sends one, else
/// its hardware address (RFC 2131 section 4.2, RFC 4361). Identifiers are kept inline up to 32
/// bytes (type + MAC is 7, RFC 4361's IAID + DUID usually under 24), so a lookup compares in the
/// table itself instead of following a pointer per probe.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ClientKey {
    Id(SmallVec<[u8; 32]>),
    Mac(MacAddr),
}

impl ClientKey {
    pub fn of(client_id: Option<&[u8]>, mac: MacAddr) -> ClientKey {
        match client_id {
            Some(id) => ClientKey::Id(SmallVec::from_slice(id)),
            None => ClientKey::Mac(mac),
        }
    }

    fn of_lease(lease: &Lease) -> ClientKey {
        match lease.client_id.as_deref().and_then(|h| hex_bytes(h).collect::<Option<SmallVec<[u8; 32]>>>()) {
            Some(id) => ClientKey::Id(id),
            None => ClientKey::Mac(lease.mac),
        }
    }

    /// Whether `lease` belongs to this key (ids up to 32 bytes build no heap value).
    fn owns(&self, lease: &Lease) -> bool {
        ClientKey::of_lease(lease) == *self
    }
}

/// Lower-case hex, two digits per byte (how leases store option 61).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(2 * bytes.len());
    for b in bytes {
        text.push(char::from(DIGITS[usize::from(b >> 4)]));
        text.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    text
}

/// The bytes of hex `text`, two digits each; a `None` item where a pair is not hex, and one
/// trailing `None` when the length is odd.
fn hex_bytes(text: &str) -> impl Iterator<Item = Option<u8>> + '_ {
    text.as_bytes().chunks(2).map(|pair| {
        let digit = |c: u8| char::from(c).to_digit(16);
        match pair {
            [hi, lo] => Some(u8::try_from(digit(*hi)? << 4 | digit(*lo)?).ok()?),
            _ => None,
        }
    })
}

/// Every lease slipway knows, by address and by (network, client).
#[derive(Clone, Debug, Default)]
pub struct LeaseTable {
    by_ip: HashMap<Ipv4Addr, Lease>,
    /// Per network (a handful: found by comparing names, not hashing them), client -> address.
    by_client: Vec<(Name, HashMap<ClientKey, Ipv4Addr>)>,
}

impl LeaseTable {
    pub fn new(leases: impl IntoIterator<Item = Lease>) -> LeaseTable {
        let mut table = LeaseTable::default();
        for lease in leases {
            table.put(lease);
        }
        table
    }

    pub fn get(&self, ip: Ipv4Addr) -> Option<&Lease> {
        self.by_ip.get(&ip)
    }

    /// The lease a client holds (or last held) on a network.
    pub fn of_client(&self, network: &Name, key: &ClientKey) -> Option<&Lease> {
        self.clients(network).and_then(|clients| clients.get(key)).and_then(|ip| self.by_ip.get(ip))
    }

    fn clients(&self, network: &Name) -> Option<&HashMap<ClientKey, Ipv4Addr>> {
        self.by_client.iter().find(|(name, _)| name == network).map(|(_, clients)| clients)
    }

    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }

    /// Active leases inside `range` (for the pool-usage gauge).
    pub fn active_in(&self, range: &AddrRange, now: Timestamp) -> usize {
        self.by_ip.values().filter(|l| range.contains(l.ip) && l.is_active(now)).count()
    }

    /// Whether `ip` may be given to `key`: nobody else holds it, or it is `key`'s already.
    pub fn available_to(&self, ip: Ipv4Addr, network: &Name, key: &ClientKey, now: Timestamp) -> bool {
        match self.by_ip.get(&ip) {
            None => true,
            Some(l) if l.state == LeaseState::Declined => !l.is_active(now),
            Some(l) => (key.owns(l) && l.network == *network) || !l.is_active(now),
        }
    }

    /// A free address in `range` for `key`, starting at a place derived from `seed` so that a
    /// client tends to get the same address again. Never-used addresses come before addresses
    /// whose lease expired (so a returning client can still get its old one).
    pub fn free_address(
        &self,
        range: &AddrRange,
        network: &Name,
        key: &ClientKey,
        seed: u64,
        now: Timestamp,
    ) -> Option<Ipv4Addr> {
        let start = u32::from(range.start);
        let size = u32::try_from(range.len()).ok()?;
        let offset = u32::try_from(seed % u64::from(size)).ok()?;
        let candidates = (0..size).map(|i| Ipv4Addr::from(start + (offset + i) % size));
        let mut expired = None;
        for ip in candidates {
            match self.by_ip.get(&ip) {
                None => return Some(ip),
                Some(_) if expired.is_none() && self.available_to(ip, network, key, now) => expired = Some(ip),
                Some(_) => {}
            }
        }
        expired
    }

    /// Records a lease, replacing what was known for its address and its client.
    pub fn put(&mut self, lease: Lease) {
        let key = (lease.state != LeaseState::Declined).then(|| ClientKey::of_lease(&lease));
        if let Some(old) = self.by_ip.get(&lease.ip) {
            // Usually the same client on the same network (an offer taken, a renewal): its
            // entry stays as it is.
            let same = old.network == lease.network && key.as_ref().is_some_and(|k| k.owns(old));
            if !same && let Some(clients) = clients_mut(&mut self.by_client, &old.network) {
                let old_key = ClientKey::of_lease(old);
                if clients.get(&old_key) == Some(&lease.ip) {
                    clients.remove(&old_key);
                }
            }
        }
        if let Some(key) = key {
            if self.clients(&lease.network).is_none() {
                self.by_client.push((lease.network.clone(), HashMap::new()));
            }
            if let Some(clients) = clients_mut(&mut self.by_client, &lease.network)
                && let Some(previous) = clients.insert(key, lease.ip)
                && previous != lease.ip
                && let Some(stale) = self.by_ip.get_mut(&previous)
                && stale.state == LeaseState::Offered
            {
                // The client moved on from an offer it did not take.
                stale.expires = lease.updated;
            }
        }
        self.by_ip.insert(lease.ip, lease);
    }
}

fn clients_mut<'a>(
    by_client: &'a mut [(Name, HashMap<ClientKey, Ipv4Addr>)],
    network: &Name,
) -> Option<&'a mut HashMap<ClientKey, Ipv4Addr>> {
    by_client.iter_mut().find(|(name, _)| name == network).map(|(_, clients)| clients)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> Timestamp {
        Timestamp::from_unix_millis(1_800_000_000_000 + s * 1000)
    }

    fn lease(ip: &str, mac: u8, state: LeaseState, expires: u64) -> Lease {
        Lease {
            ip: ip.parse().expect("ip"),
            mac: MacAddr([0x52, 0x54, 0, 0, 0, mac]),
            network: "lab".parse().expect("name"),
            state,
            expires: t(expires),
            updated: t(0),
            hostname: None,
            client_id: None,
        }
    }

    fn range() -> AddrRange {
        AddrRange { start: "10.0.0.100".parse().expect("ip"), end: "10.0.0.102".parse().expect("ip") }
    }

    fn key(mac: u8) -> ClientKey {
        ClientKey::Mac(MacAddr([0x52, 0x54, 0, 0, 0, mac]))
    }

    #[test]
    fn free_addresses_skip_active_leases_and_wrap_around() {
        let net: Name = "lab".parse().expect("name");
        let table = LeaseTable::new([
            lease("10.0.0.100", 1, LeaseState::Bound, 100),
            lease("10.0.0.101", 2, LeaseState::Bound, 100),
        ]);
        assert_eq!(table.free_address(&range(), &net, &key(3), 0, t(1)), Some("10.0.0.102".parse().expect("ip")));
        assert_eq!(table.free_address(&range(), &net, &key(3), 1, t(1)), Some("10.0.0.102".parse().expect("ip")));
        let full = LeaseTable::new([
            lease("10.0.0.100", 1, LeaseState::Bound, 100),
            lease("10.0.0.101", 2, LeaseState::Bound, 100),
            lease("10.0.0.102", 4, LeaseState::Bound, 100),
        ]);
        assert_eq!(full.free_address(&range(), &net, &key(3), 0, t(1)), None);
        assert_eq!(
            full.free_address(&range(), &net, &key(3), 0, t(101)).map(|ip| range().contains(ip)),
            Some(true),
            "expired leases are reusable"
        );
    }

    #[test]
    fn declined_addresses_are_quarantined_until_they_expire() {
        let net: Name = "lab".parse().expect("name");
        let table = LeaseTable::new([lease("10.0.0.100", 1, LeaseState::Declined, 50)]);
        assert!(!table.available_to("10.0.0.100".parse().expect("ip"), &net, &key(1), t(10)));
        assert!(table.available_to("10.0.0.100".parse().expect("ip"), &net, &key(1), t(51)));
        assert!(table.of_client(&net, &key(1)).is_none(), "a declined address is not the client's");
    }

    #[test]
    fn a_client_is_found_by_its_key_and_moving_frees_its_old_offer() {
        let net: Name = "lab".parse().expect("name");
        let mut table = LeaseTable::new([lease("10.0.0.100", 1, LeaseState::Offered, 60)]);
        table.put(lease("10.0.0.101", 1, LeaseState::Bound, 3600));
        assert_eq!(table.of_client(&net, &key(1)).map(|l| l.ip.to_string()), Some("10.0.0.101".into()));
        assert!(!table.get("10.0.0.100".parse().expect("ip")).expect("old offer").is_active(t(1)));
    }

    #[test]
    fn client_ids_round_trip_through_hex() {
        let mut l = lease("10.0.0.100", 1, LeaseState::Bound, 100);
        l.client_id = Some(hex(&[1, 0x52, 0x54, 0, 0, 0, 1]));
        assert_eq!(l.client_id.as_deref(), Some("01525400000001"));
        let id = ClientKey::of(Some(&[1, 0x52, 0x54, 0, 0, 0, 1]), MacAddr([0; 6]));
        assert_eq!(ClientKey::of_lease(&l), id);
        assert!(id.owns(&l) && !key(1).owns(&l), "a lease with a client id belongs to the id, not the MAC");
        assert!(!ClientKey::of(Some(&[1, 0x52]), MacAddr([0; 6])).owns(&l), "a prefix of the id is another client");
        for bad in ["0g", "015", "+1", "zz"] {
            l.client_id = Some(bad.into());
            assert_eq!(ClientKey::of_lease(&l), key(1), "{bad:?} is not hex: the lease is the MAC's");
            assert!(key(1).owns(&l) && !ClientKey::of(Some(&[1]), MacAddr([0; 6])).owns(&l), "{bad:?}");
        }
    }
}
