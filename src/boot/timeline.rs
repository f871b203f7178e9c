//! A node's boot timeline, read from its events: DHCP ack, script, kernel, initrd, rootfs,
//! config, phone-home, and where the latest boot stopped. Pure.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::inventory::{Node, Profile, Timestamp};
use crate::store::events::{Event, EventKind, Source};

/// The steps of a network boot, in the order a boot passes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    Dhcp,
    Tftp,
    Script,
    Kernel,
    Initrd,
    Rootfs,
    File,
    Config,
    PhoneHome,
    /// Not a boot step: the operator asked for a reinstall.
    Reinstall,
    /// Not a boot step: slipway read diagnostics from the node over SSH.
    Diagnostics,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Dhcp => "dhcp",
            Step::Tftp => "tftp",
            Step::Script => "script",
            Step::Kernel => "kernel",
            Step::Initrd => "initrd",
            Step::Rootfs => "rootfs",
            Step::File => "file",
            Step::Config => "config",
            Step::PhoneHome => "phone-home",
            Step::Reinstall => "reinstall",
            Step::Diagnostics => "diagnostics",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Entry {
    pub time: Timestamp,
    pub step: Step,
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Timeline {
    pub node: String,
    pub entries: Vec<Entry>,
    /// Where in `entries` the latest boot starts.
    pub latest: usize,
    /// The furthest step the latest boot reached (it starts at its last DHCP ack before a script).
    pub reached: Option<Step>,
    /// The latest boot ended with a phone-home.
    pub complete: bool,
}

/// The timeline of `node` from its events (oldest first); `profile` names its kernel and initrds.
pub fn timeline(node: &Node, profile: Option<&Profile>, events: &[Event]) -> Timeline {
    let entries: Vec<Entry> = events.iter().filter_map(|e| entry(e, profile)).collect();
    // The latest boot: from the last DHCP ack that comes before the last script, or the last ack.
    let last_script = entries.iter().rposition(|e| e.step == Step::Script);
    let start = entries[..last_script.unwrap_or(entries.len())]
        .iter()
        .rposition(|e| e.step == Step::Dhcp)
        .or(last_script)
        .unwrap_or(0);
    let latest = entries.get(start..).unwrap_or_default();
    let reached = latest.iter().map(|e| e.step).filter(|s| !matches!(s, Step::Reinstall | Step::Diagnostics)).max();
    Timeline {
        node: node.name.to_string(),
        complete: reached == Some(Step::PhoneHome),
        reached,
        latest: start,
        entries,
    }
}

fn entry(e: &Event, profile: Option<&Profile>) -> Option<Entry> {
    let (step, detail) = match &e.details {
        EventKind::LeaseAcked { ip, .. } => (Step::Dhcp, ip.to_string()),
        EventKind::BootScriptServed { profile: Some(p) } => (Step::Script, format!("profile {p}")),
        EventKind::BootScriptServed { profile: None } => (Step::Script, "boot from disk".into()),
        EventKind::FileFetched { path, bytes } if e.source == Source::Tftp => {
            (Step::Tftp, format!("{path} ({bytes} bytes)"))
        }
        EventKind::FileFetched { path, bytes } => (file_step(path, profile), format!("{path} ({bytes} bytes)")),
        EventKind::ConfigFetched { config } => (Step::Config, serde_json::to_value(config).ok()?.as_str()?.to_string()),
        EventKind::PhoneHome { ip } => (Step::PhoneHome, ip.to_string()),
        EventKind::ReinstallRequested => (Step::Reinstall, "requested".into()),
        EventKind::NodeDiagnostics { commands, error: None, .. } => {
            let each: Vec<String> = commands
                .iter()
                .map(|c| {
                    let program = c.command.split_whitespace().next().unwrap_or_default();
                    let status = c.status.map_or("no exit status".to_string(), |s| format!("exit {s}"));
                    format!("{program} ({status}, {} lines)", c.stdout.lines().count())
                })
                .collect();
            (Step::Diagnostics, format!("read over SSH: {}", each.join(", ")))
        }
        EventKind::NodeDiagnostics { error: Some(error), .. } => {
            (Step::Diagnostics, format!("not read over SSH: {error}"))
        }
        _ => return None,
    };
    Some(Entry { time: e.time, step, detail })
}

fn file_step(path: &str, profile: Option<&Profile>) -> Step {
    let is = |p: &str| p == path || p.ends_with(&format!("/{path}"));
    match profile {
        Some(p) if is(&p.kernel) => Step::Kernel,
        Some(p) if p.initrds.iter().any(|i| is(i)) => Step::Initrd,
        _ if path.contains("rootfs") => Step::Rootfs,
        _ => Step::File,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::inventory::{ConfigKind, Origin};

    fn event(seq: u64, source: Source, details: EventKind) -> Event {
        Event { seq, time: Timestamp::from_unix_millis(1_000 * seq), source, node: None, mac: None, details }
    }

    fn profile() -> Profile {
        Profile {
            name: "live".parse().expect("name"),
            kernel: "debian/vmlinuz".into(),
            initrds: vec!["debian/initrd.img".into()],
            args: vec![],
            config: ConfigKind::CloudInit,
            installs: false,
            selector: None,
            origin: Origin::Config,
        }
    }

    fn node() -> Node {
        serde_json::from_value(serde_json::json!({"name": "w0", "mac": "52:54:00:00:00:20", "ipv4": "10.1.107.20"}))
            .expect("node")
    }

    fn boot(from: u64, upto: usize) -> Vec<Event> {
        let ip = Ipv4Addr::new(10, 1, 107, 20);
        let all = vec![
            event(from, Source::Dhcp, EventKind::LeaseAcked { ip, lease_secs: 3600 }),
            event(from + 1, Source::Http, EventKind::BootScriptServed { profile: Some("live".parse().expect("name")) }),
            event(from + 2, Source::Http, EventKind::FileFetched { path: "debian/vmlinuz".into(), bytes: 8 }),
            event(from + 3, Source::Http, EventKind::FileFetched { path: "debian/initrd.img".into(), bytes: 9 }),
            event(from + 4, Source::Http, EventKind::ConfigFetched { config: ConfigKind::CloudInit }),
            event(from + 5, Source::Http, EventKind::PhoneHome { ip }),
        ];
        all.into_iter().take(upto).collect()
    }

    #[test]
    fn a_whole_boot_is_complete_and_names_each_step() {
        let t = timeline(&node(), Some(&profile()), &boot(1, 6));
        let steps: Vec<Step> = t.entries.iter().map(|e| e.step).collect();
        assert_eq!(steps, [Step::Dhcp, Step::Script, Step::Kernel, Step::Initrd, Step::Config, Step::PhoneHome]);
        assert!(t.complete);
        assert_eq!(t.entries[2].detail, "debian/vmlinuz (8 bytes)");
    }

    #[test]
    fn a_later_boot_that_stopped_is_reported_where_it_stopped() {
        let mut events = boot(1, 6);
        events.extend(boot(10, 3));
        let t = timeline(&node(), Some(&profile()), &events);
        assert_eq!(t.reached, Some(Step::Kernel));
        assert!(!t.complete);
        assert_eq!(t.entries.len(), 9);
    }

    #[test]
    fn diagnostics_are_on_the_timeline_but_not_a_boot_step() {
        use crate::store::events::CommandOutput;
        let out = |command: &str, stdout: &str| CommandOutput {
            command: command.into(),
            status: Some(0),
            stdout: stdout.into(),
            stderr: String::new(),
            truncated: false,
        };
        let mut events = boot(1, 6);
        let read = EventKind::NodeDiagnostics {
            cluster: "prod".parse().expect("name"),
            reason: "bootstrapping failed".into(),
            commands: vec![out("journalctl -u bootkube.service", "a\nb\n"), out("systemctl --failed", "")],
            error: None,
        };
        events.push(event(20, Source::Cluster, read));
        let refused = EventKind::NodeDiagnostics {
            cluster: "prod".parse().expect("name"),
            reason: "asked by the operator".into(),
            commands: vec![],
            error: Some("host key refused".into()),
        };
        events.push(event(21, Source::Cluster, refused));
        let t = timeline(&node(), Some(&profile()), &events);
        assert!(t.complete, "the boot still ended with its phone-home");
        assert_eq!(t.reached, Some(Step::PhoneHome));
        let last: Vec<&str> = t.entries[6..].iter().map(|e| e.detail.as_str()).collect();
        assert_eq!(
            last,
            [
                "read over SSH: journalctl (exit 0, 2 lines), systemctl (exit 0, 0 lines)",
                "not read over SSH: host key refused"
            ]
        );
    }
}
