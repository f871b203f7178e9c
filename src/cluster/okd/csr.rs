//! Guarded CSR approval: the checks the cluster-machine-approver makes, with slipway's
//! inventory in place of Machine objects (pure). A kubelet's client CSR is approved only when
//! the node-bootstrapper filed it for a node slipway made in this cluster, with the subject,
//! usages and (no) SANs a kubelet uses, before that Node exists and no earlier than the VM's
//! power-on; a serving CSR only when the node itself filed it and every name and address in it
//! is that node's. Anything else is left pending, never denied (it may be someone else's).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use base64::Engine as _;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::inventory::Timestamp;
use crate::kube::objects::Csr;

pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub const SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
pub const BOOTSTRAPPER: &str = "system:serviceaccount:openshift-machine-config-operator:node-bootstrapper";
const BOOTSTRAPPER_GROUPS: [&str; 3] =
    ["system:serviceaccounts:openshift-machine-config-operator", "system:serviceaccounts", "system:authenticated"];
/// A client CSR counts from this long before its machine's power-on (clock skew) ...
const BEFORE_START: Duration = Duration::from_secs(10);
/// ... to this long after it (the machine-approver's window).
const AFTER_START: Duration = Duration::from_secs(2 * 60 * 60);
/// Approving stops while more CSRs than machines + this are pending (someone is flooding).
pub const PENDING_MARGIN: usize = 100;

/// A machine of the cluster as slipway knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    /// The node name (`worker-0`).
    pub name: String,
    /// Names its serving certificate may carry: the node name and its FQDN.
    pub names: Vec<String>,
    /// Addresses its serving certificate may carry.
    pub ips: Vec<IpAddr>,
    /// When its VM was last powered on (a client CSR is no older than that).
    pub started: Option<Timestamp>,
}

/// What to do with a CSR, and why (for the event naming it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Approve it for this machine.
    Approve { node: String, why: String },
    /// Leave it pending.
    Leave(String),
}

/// Which kind of kubelet certificate a CSR asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Client,
    Serving,
}

/// The decision for one pending CSR. `nodes` are the Node objects that exist; `zone` is the
/// cluster's DNS zone (a kubelet may name itself by FQDN).
pub fn decide(csr: &Csr, machines: &[Machine], nodes: &BTreeSet<String>, zone: &str) -> Verdict {
    match check(csr, machines, nodes, zone) {
        Ok((node, kind)) => {
            let why = match kind {
                Kind::Client => format!("client certificate for {node}, a machine of this cluster not yet a Node"),
                Kind::Serving => format!("serving certificate for {node}, its names and addresses only"),
            };
            Verdict::Approve { node, why }
        }
        Err(why) => Verdict::Leave(why),
    }
}

fn check(csr: &Csr, machines: &[Machine], nodes: &BTreeSet<String>, zone: &str) -> Result<(String, Kind), String> {
    let spec = &csr.spec;
    let kind = match spec.signer_name.as_str() {
        CLIENT_SIGNER => Kind::Client,
        SERVING_SIGNER => Kind::Serving,
        other => return Err(format!("signer {other} is not a kubelet's")),
    };
    let request = Request::parse(&spec.request)?;
    if request.orgs != ["system:nodes"] {
        return Err(format!("subject O={} is not exactly system:nodes", request.orgs.join(",")));
    }
    let cn = request.cn.as_deref().unwrap_or("");
    let Some(named) = cn.strip_prefix("system:node:") else {
        return Err(format!("subject CN '{cn}' is not system:node:<name>"));
    };
    // A kubelet may call itself by its FQDN.
    let short = named.strip_suffix(&format!(".{zone}")).unwrap_or(named);
    let Some(machine) = machines.iter().find(|m| m.name == short) else {
        return Err(format!("{named} is not a machine of this cluster"));
    };
    if !request.other_sans.is_empty() {
        return Err(format!("it asks for {} (e-mail or URI)", request.other_sans.join(", ")));
    }
    let usages: BTreeSet<&str> = spec.usages.iter().map(String::as_str).collect();
    match kind {
        Kind::Client => {
            if spec.username != BOOTSTRAPPER {
                return Err(format!("filed by {}, not the node-bootstrapper", spec.username));
            }
            let groups: BTreeSet<&str> = spec.groups.iter().map(String::as_str).collect();
            if groups != BOOTSTRAPPER_GROUPS.into_iter().collect() {
                return Err(format!("groups {} are not the node-bootstrapper's", spec.groups.join(",")));
            }
            if !request.dns.is_empty() || !request.ips.is_empty() {
                return Err("a client certificate with names or addresses".into());
            }
            if !exact(&usages, &["digital signature", "client auth"]) {
                return Err(format!("usages {} are not a kubelet client's", spec.usages.join(",")));
            }
            if nodes.contains(named) || nodes.contains(short) {
                return Err(format!("Node {named} already exists (a renewal is the cluster's to approve)"));
            }
            let created = created(csr)?;
            let Some(started) = machine.started else {
                return Err(format!("{short} has not been powered on by slipway"));
            };
            if created.0 + BEFORE_START < started.0 || created.0 > started.0 + AFTER_START {
                return Err(format!(
                    "filed at {}, outside 10 s before to 2 h after {short}'s power-on",
                    shown(created)
                ));
            }
        }
        Kind::Serving => {
            if spec.username != cn {
                return Err(format!("filed by {}, not by {cn} itself", spec.username));
            }
            let groups: BTreeSet<&str> = spec.groups.iter().map(String::as_str).collect();
            if !groups.contains("system:nodes") || !groups.contains("system:authenticated") {
                return Err(format!("groups {} lack system:nodes or system:authenticated", spec.groups.join(",")));
            }
            if !exact(&usages, &["digital signature", "server auth"]) {
                return Err(format!("usages {} are not a kubelet server's", spec.usages.join(",")));
            }
            if let Some(dns) = request.dns.iter().find(|d| !machine.names.iter().any(|n| n == *d)) {
                return Err(format!("DNS name {dns} is not one of {short}'s"));
            }
            if let Some(ip) = request.ips.iter().find(|ip| !machine.ips.contains(ip)) {
                return Err(format!("IP address {ip} is not one of {short}'s"));
            }
        }
    }
    Ok((short.to_owned(), kind))
}

/// `wanted` exactly, with or without `key encipherment` (kubelets with RSA keys ask for it,
/// with EC keys not; the machine-approver takes both).
fn exact(usages: &BTreeSet<&str>, wanted: &[&str]) -> bool {
    let plain: BTreeSet<&str> = wanted.iter().copied().collect();
    let mut legacy = plain.clone();
    legacy.insert("key encipherment");
    *usages == plain || *usages == legacy
}

fn created(csr: &Csr) -> Result<Timestamp, String> {
    let text = csr.metadata.creation_timestamp.as_deref().ok_or("no creationTimestamp")?;
    humantime::parse_rfc3339_weak(text).map(Timestamp).map_err(|_| format!("creationTimestamp '{text}' does not parse"))
}

fn shown(t: Timestamp) -> String {
    humantime::format_rfc3339_seconds(t.0).to_string()
}

/// What the PKCS#10 request in a CSR asks for.
#[derive(Debug, Default)]
struct Request {
    cn: Option<String>,
    orgs: Vec<String>,
    dns: Vec<String>,
    ips: Vec<IpAddr>,
    /// e-mail, URI and other names: never in a kubelet's request.
    other_sans: Vec<String>,
}

impl Request {
    /// `spec.request`: base64 of a PEM `CERTIFICATE REQUEST`.
    fn parse(spec_request: &str) -> Result<Request, String> {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(spec_request.trim())
            .map_err(|_| "spec.request is not base64".to_owned())?;
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).map_err(|_| "spec.request is not PEM".to_owned())?;
        if pem.label != "CERTIFICATE REQUEST" && pem.label != "NEW CERTIFICATE REQUEST" {
            return Err(format!("spec.request holds a {}, not a CERTIFICATE REQUEST", pem.label));
        }
        let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&pem.contents)
            .map_err(|_| "spec.request is not a PKCS#10 request".to_owned())?;
        let subject = &csr.certification_request_info.subject;
        let text = |a: &x509_parser::x509::AttributeTypeAndValue<'_>| a.as_str().map(str::to_owned).ok();
        let mut out = Request {
            cn: subject.iter_common_name().next().and_then(text),
            orgs: subject.iter_organization().filter_map(text).collect(),
            ..Request::default()
        };
        for ext in csr.requested_extensions().into_iter().flatten() {
            let ParsedExtension::SubjectAlternativeName(san) = ext else { continue };
            for name in &san.general_names {
                match name {
                    GeneralName::DNSName(d) => out.dns.push((*d).to_owned()),
                    GeneralName::IPAddress(bytes) => match <[u8; 4]>::try_from(*bytes) {
                        Ok(v4) => out.ips.push(IpAddr::from(v4)),
                        Err(_) => match <[u8; 16]>::try_from(*bytes) {
                            Ok(v6) => out.ips.push(IpAddr::from(v6)),
                            Err(_) => out.other_sans.push("a malformed IP address".into()),
                        },
                    },
                    GeneralName::RFC822Name(e) => out.other_sans.push(format!("e-mail {e}")),
                    GeneralName::URI(u) => out.other_sans.push(format!("URI {u}")),
                    other => out.other_sans.push(format!("{other:?}")),
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
#[path = "csr_tests.rs"]
mod tests;
