//! Prometheus metrics: one registry for the process. Subsystems register their families at
//! start-up; values owned elsewhere (inventory size, event log) are read at scrape time.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::store::Store;
use crate::store::events::EventLog;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

/// The process's metrics.
#[derive(Debug)]
pub struct Metrics {
    /// Locked only to register (a service bound for the first time, also after a reload) and
    /// to encode a scrape.
    registry: std::sync::Mutex<Registry>,
    pub api_requests: Family<RequestLabels, Counter>,
    /// Requests to `/api` with no valid token.
    pub auth_failures: Counter,
}

impl Metrics {
    pub fn new(store: &Store, events: &EventLog) -> Metrics {
        let mut registry = Registry::with_prefix("slipway");
        let api_requests = Family::<RequestLabels, Counter>::default();
        registry.register("api_requests", "Admin API requests by method, route and status", api_requests.clone());
        let auth_failures = Counter::default();
        registry.register("api_auth_failures", "Admin API requests with no valid token", auth_failures.clone());
        registry.register_collector(Box::new(Live { store: store.clone(), events: events.clone() }));
        Metrics { registry: std::sync::Mutex::new(registry), api_requests, auth_failures }
    }

    /// Runs `register` on the registry, for a subsystem to add its families (once each: a
    /// family registered twice would be written twice).
    pub fn register_with<T>(&self, register: impl FnOnce(&mut Registry) -> T) -> T {
        register(&mut self.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Every metric in the OpenMetrics 1.0 text format (what `prometheus_client` writes).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let registry = self.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }

    /// Every metric in Prometheus's text format 0.0.4, for scrapers and tools that ask for it
    /// (promtool, curl, older Prometheus).
    pub fn encode_text(&self) -> String {
        openmetrics_to_text(&self.encode())
    }
}

/// OpenMetrics text as Prometheus text format 0.0.4: a counter family's `# HELP` and `# TYPE`
/// name its samples (`x_total`, where OpenMetrics names the family `x`), and there is no
/// `# EOF`. Sample lines are the same in both.
pub fn openmetrics_to_text(open: &str) -> String {
    let counters: std::collections::HashSet<&str> = open
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .filter(|name| !name.ends_with("_total"))
        .collect();
    let mut out = String::with_capacity(open.len() + 16 * counters.len());
    for line in open.lines().filter(|l| *l != "# EOF") {
        let meta = ["# HELP ", "# TYPE "].into_iter().find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta.and_then(|(p, rest)| Some((p, rest.split_once(' ')?))) {
            Some((prefix, (name, tail))) if counters.contains(name) => {
                out.push_str(&format!("{prefix}{name}_total {tail}\n"));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// Whether a scraper's `Accept` header asks for OpenMetrics (Prometheus does, first).
pub fn wants_openmetrics(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let mut params = part.split(';').map(str::trim);
        let kind = params.next().unwrap_or_default();
        let q = params.find_map(|p| p.strip_prefix("q=")).and_then(|q| q.parse::<f32>().ok()).unwrap_or(1.0);
        kind.eq_ignore_ascii_case("application/openmetrics-text") && q > 0.0
    })
}

/// Values read from their owners at scrape time.
#[derive(Debug)]
struct Live {
    store: Store,
    events: EventLog,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartLabel {
    part: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let inv = self.store.snapshot();
        let info = ConstGauge::new(1i64);
        let mut m =
            encoder.encode_descriptor("build_info", "The running slipway's version", None, info.metric_type())?;
        info.encode(m.encode_family(&VersionLabel { version: env!("CARGO_PKG_VERSION") })?)?;
        let version = ConstGauge::new(i64::try_from(inv.version).unwrap_or(i64::MAX));
        version.encode(encoder.encode_descriptor(
            "inventory_version",
            "Version of the inventory snapshot in force",
            None,
            version.metric_type(),
        )?)?;
        let counts = [
            ("network", inv.networks.len()),
            ("cluster", inv.clusters.len()),
            ("node", inv.nodes.len()),
            ("profile", inv.profiles.len()),
            ("pool", inv.pools.len()),
            ("frontend", inv.frontends.len()),
        ];
        let mut family = encoder.encode_descriptor(
            "inventory_objects",
            "Objects in the inventory by kind",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (kind, count) in counts {
            ConstGauge::new(i64::try_from(count).unwrap_or(i64::MAX))
                .encode(family.encode_family(&KindLabel { kind })?)?;
        }
        let errors = self.store.error_counts();
        let mut family = encoder.encode_descriptor(
            "store_errors",
            "Failed store operations by part: the database (objects, lifecycle records, events) and the lease journal",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        let mut parts = vec![("database", errors.database), ("lease_journal", errors.lease_journal)];
        if self.store.shared().is_some() {
            parts.push(("etcd", errors.etcd));
        }
        for (part, count) in parts {
            ConstCounter::new(count).encode(family.encode_family(&PartLabel { part })?)?;
        }
        if let Some(shared) = self.store.shared() {
            let gauges = [
                (
                    "store_etcd_available",
                    "1 while etcd takes this instance's watch (0: writes refused, DHCP stopped)",
                    shared.unavailable().is_none(),
                ),
                (
                    "store_leading",
                    "1 while this instance leads (allocates DHCP leases, runs the lifecycle engine)",
                    self.store.term().is_some(),
                ),
            ];
            for (name, help, on) in gauges {
                let gauge = ConstGauge::new(i64::from(on));
                gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
            }
        }
        let dropped = ConstCounter::new(self.events.dropped());
        dropped.encode(encoder.encode_descriptor(
            "events_dropped",
            "Events not persisted because the writer was behind",
            None,
            dropped.metric_type(),
        )?)?;
        Ok(())
    }
}

/// Shared handle used by the API.
pub type SharedMetrics = Arc<Metrics>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_by_their_samples_in_the_text_format() {
        let open = "# HELP slipway_api_requests Admin API requests.\n# TYPE slipway_api_requests counter\nslipway_api_requests_total{method=\"GET\"} 3\n# HELP slipway_inventory_version Version.\n# TYPE slipway_inventory_version gauge\nslipway_inventory_version 7\n# EOF\n";
        let text = openmetrics_to_text(open);
        assert_eq!(
            text,
            "# HELP slipway_api_requests_total Admin API requests.\n# TYPE slipway_api_requests_total counter\nslipway_api_requests_total{method=\"GET\"} 3\n# HELP slipway_inventory_version Version.\n# TYPE slipway_inventory_version gauge\nslipway_inventory_version 7\n"
        );
    }

    #[test]
    fn openmetrics_is_served_only_to_scrapers_that_ask_for_it() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(wants_openmetrics(prometheus));
        assert!(!wants_openmetrics("text/plain;version=0.0.4"));
        assert!(!wants_openmetrics("*/*"));
        assert!(!wants_openmetrics("application/openmetrics-text;q=0"));
        assert!(!wants_openmetrics(""));
    }
}
