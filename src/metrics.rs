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
    registry: Registry,
    pub api_requests: Family<RequestLabels, Counter>,
}

impl Metrics {
    pub fn new(store: &Store, events: &EventLog) -> Metrics {
        let mut registry = Registry::with_prefix("slipway");
        let api_requests = Family::<RequestLabels, Counter>::default();
        registry.register("api_requests", "Admin API requests by method, route and status", api_requests.clone());
        registry.register_collector(Box::new(Live { store: store.clone(), events: events.clone() }));
        Metrics { registry, api_requests }
    }

    /// The registry, for subsystems to add their own families before the daemon starts.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
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
