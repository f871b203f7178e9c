//! The zones slipway serves, built from an inventory snapshot: a pure function.
//!
//! For each cluster `<name>.<base_domain>`: `api`, `api-int`, `*.apps` and one A per node; for each
//! network with a domain, the nodes that belong to no cluster; reverse zones for the networks
//! (octet-aligned) with a PTR per node and for `api`/`api-int`, and a single-name zone for a PTR
//! outside every network (the public `api` address) so slipway never claims a whole foreign /24.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};

use hickory_proto::rr::rdata::{A, NS, PTR, SOA};
use hickory_proto::rr::{LowerName, Name, RData, Record};
use ipnet::Ipv4Net;

use super::Settings;
use crate::inventory::Inventory;

/// Negative-answer TTL (SOA minimum): short, so a node added through the API resolves at once.
const NEGATIVE_TTL: u32 = 30;

/// Every zone slipway serves, with one serial. Immutable once built.
#[derive(Clone, Debug, Default)]
pub struct ZoneSet {
    pub serial: u32,
    /// Most labels first, so the first zone that holds a name is the closest one.
    zones: Vec<Zone>,
    /// The positive answers, pre-encoded for the UDP fast path.
    pub prepared: super::fast::Prepared,
}

/// One zone: its apex, SOA and the record sets at each name (empty non-terminals included).
#[derive(Clone, Debug)]
pub struct Zone {
    pub apex: LowerName,
    soa: Record,
    names: HashMap<LowerName, Vec<Record>>,
}

impl ZoneSet {
    /// The closest zone that holds `name`.
    pub fn zone_for(&self, name: &LowerName) -> Option<&Zone> {
        self.zones.iter().find(|z| z.apex.zone_of(name))
    }

    pub fn zones(&self) -> &[Zone] {
        &self.zones
    }
}

impl Zone {
    pub fn soa(&self) -> &Record {
        &self.soa
    }

    /// The records at `name`; `None` when the name does not exist, `Some(&[])` for an empty
    /// non-terminal.
    pub fn at(&self, name: &LowerName) -> Option<&[Record]> {
        self.names.get(name).map(Vec::as_slice)
    }

    /// Every record of the zone, sorted by name and type (for listings).
    pub fn records(&self) -> Vec<&Record> {
        let mut all: Vec<&Record> = self.names.values().flatten().collect();
        all.sort_by(|a, b| {
            (LowerName::new(&a.name), u16::from(a.record_type()))
                .cmp(&(LowerName::new(&b.name), u16::from(b.record_type())))
        });
        all
    }
}

/// The serial for a rebuilt zone set: the time in seconds, and always past the previous one.
pub fn next_serial(previous: u32, now_unix: u64) -> u32 {
    let now = u32::try_from(now_unix).unwrap_or(u32::MAX);
    now.max(previous.wrapping_add(1))
}

/// Builds every zone from the inventory and the `[dns]` settings.
pub fn build(inv: &Inventory, settings: &Settings, serial: u32) -> ZoneSet {
    let mut zones: BTreeMap<LowerName, Builder> = BTreeMap::new();
    let ttl = settings.ttl;
    let mut ptrs: Vec<(Ipv4Addr, Name)> = Vec::new();

    for cluster in inv.clusters.values() {
        let Some(zone) = name(&cluster.zone()) else { continue };
        let b = builder(&mut zones, &zone);
        for (label, ip) in [("api", cluster.api_address), ("api-int", cluster.api_int_address)] {
            if let Some(owner) = child(label, &zone) {
                b.add(a(&owner, ip, ttl));
                ptrs.push((ip, owner));
            }
        }
        if let Some(owner) = child("*.apps", &zone) {
            b.add(a(&owner, cluster.ingress_address, ttl));
        }
    }
    for network in inv.networks.values() {
        if let Some(domain) = network.domain.as_ref().and_then(|d| name(d.as_str())) {
            builder(&mut zones, &domain);
        }
    }
    for node in inv.nodes.values() {
        let Some(fqdn) = inv.fqdn(node).and_then(|f| name(&f)) else { continue };
        if let Some(b) = closest(&mut zones, &fqdn) {
            b.add(a(&fqdn, node.ipv4, ttl));
            ptrs.push((node.ipv4, fqdn));
        }
    }

    for zone in &settings.zones {
        builder(&mut zones, zone);
    }
    for network in inv.networks.values() {
        for apex in reverse_zones(network.cidr) {
            builder(&mut zones, &apex);
        }
    }
    for (ip, target) in ptrs {
        let owner = reverse_name(ip);
        if closest(&mut zones, &owner).is_none() {
            builder(&mut zones, &owner);
        }
        if let Some(b) = closest(&mut zones, &owner) {
            b.add(Record::from_rdata(owner.clone(), ttl, RData::PTR(PTR(target))));
        }
    }
    for record in &settings.records {
        if let Some(b) = closest(&mut zones, &record.name) {
            b.add(record.clone());
        }
    }

    let mut zones: Vec<Zone> = zones.into_values().map(|b| b.finish(settings, serial)).collect();
    zones.sort_by_key(|z| std::cmp::Reverse(z.apex.num_labels()));
    let mut prepared = super::fast::Prepared::default();
    for zone in &zones {
        for (name, set) in &zone.names {
            // A name that also lies in a closer zone is answered from that zone.
            if zones.iter().find(|z| z.apex.zone_of(name)).is_some_and(|z| z.apex == zone.apex) {
                prepared.add(name, set);
            }
        }
    }
    ZoneSet { serial, zones, prepared }
}

/// The reverse zones a network's addresses live in: octet-aligned, at most 256 of them. A network
/// narrower than a /24 gets none (its addresses get single-name zones).
pub fn reverse_zones(cidr: Ipv4Net) -> Vec<Name> {
    let prefix = cidr.prefix_len();
    if prefix > 24 {
        return Vec::new();
    }
    let aligned = prefix.div_ceil(8) * 8;
    let Ok(subnets) = cidr.subnets(aligned.max(8)) else { return Vec::new() };
    subnets
        .take(256)
        .filter_map(|net| {
            let octets = net.network().octets();
            let used = usize::from(aligned.max(8) / 8);
            let labels: Vec<String> = octets[..used].iter().rev().map(u8::to_string).collect();
            name(&format!("{}.in-addr.arpa", labels.join(".")))
        })
        .collect()
}

/// `d.c.b.a.in-addr.arpa.` for `a.b.c.d`.
pub fn reverse_name(ip: Ipv4Addr) -> Name {
    Name::from(IpAddr::V4(ip))
}

struct Builder {
    origin: Name,
    names: HashMap<LowerName, Vec<Record>>,
}

impl Builder {
    fn add(&mut self, record: Record) {
        let owner = LowerName::new(&record.name);
        // Every name between the owner and the apex exists (empty non-terminals), so a wildcard
        // under `apps` does not swallow `apps` itself.
        let mut parent = owner.base_name();
        while parent.num_labels() > self.origin.num_labels() {
            self.names.entry(parent.clone()).or_default();
            parent = parent.base_name();
        }
        let set = self.names.entry(owner).or_default();
        if !set.contains(&record) {
            set.push(record);
        }
    }

    fn finish(mut self, settings: &Settings, serial: u32) -> Zone {
        let ttl = settings.ttl;
        let ns = child("ns", &self.origin).unwrap_or_else(|| self.origin.clone());
        let rname = child("hostmaster", &self.origin).unwrap_or_else(|| self.origin.clone());
        let soa = Record::from_rdata(
            self.origin.clone(),
            ttl,
            RData::SOA(SOA::new(ns.clone(), rname, serial, 3600, 600, 86_400, NEGATIVE_TTL)),
        );
        self.add(soa.clone());
        self.add(Record::from_rdata(self.origin.clone(), ttl, RData::NS(NS(ns.clone()))));
        if let Some(ip) = settings.nameserver {
            self.add(a(&ns, ip, ttl));
        }
        for set in self.names.values_mut() {
            set.sort_by_key(|r| u16::from(r.record_type()));
        }
        Zone { apex: LowerName::new(&self.origin), soa, names: self.names }
    }
}

fn builder<'a>(zones: &'a mut BTreeMap<LowerName, Builder>, apex: &Name) -> &'a mut Builder {
    zones.entry(LowerName::new(apex)).or_insert_with(|| Builder { origin: apex.to_lowercase(), names: HashMap::new() })
}

fn closest<'a>(zones: &'a mut BTreeMap<LowerName, Builder>, name: &Name) -> Option<&'a mut Builder> {
    let lower = LowerName::new(name);
    zones.values_mut().filter(|b| LowerName::new(&b.origin).zone_of(&lower)).max_by_key(|b| b.origin.num_labels())
}

fn name(text: &str) -> Option<Name> {
    let mut n = Name::from_ascii(text).ok()?;
    n.set_fqdn(true);
    Some(n)
}

fn child(label: &str, zone: &Name) -> Option<Name> {
    Name::from_ascii(label).ok()?.append_domain(zone).ok()
}

fn a(owner: &Name, ip: Ipv4Addr, ttl: u32) -> Record {
    Record::from_rdata(owner.clone(), ttl, RData::A(A(ip)))
}
