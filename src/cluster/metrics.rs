//! The lifecycle's metrics, read from the store when Prometheus scrapes: each node's phase and
//! when it began (a node stuck in a phase, or failed, is an alert), and when each uploaded
//! `openshift-install` config was made (its certificates expire 24 h later). Timestamps, not
//! ages, as Prometheus advises: the rules compute `time() - ...`.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

use super::phase::NodeRecord;
use crate::inventory::{ClusterKind, Role};
use crate::store::Store;
use crate::store::records::Records;

/// Registered once by the wiring; reads the store at each scrape.
#[derive(Debug)]
pub struct Lifecycle {
    store: Store,
}

impl Lifecycle {
    pub fn new(store: &Store) -> Lifecycle {
        Lifecycle { store: store.clone() }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    cluster: String,
    node: String,
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UploadLabels {
    cluster: String,
    role: &'static str,
}

fn seconds(time: std::time::SystemTime) -> f64 {
    time.duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

impl Collector for Lifecycle {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // A store that cannot be read shows no series (and counts in slipway_store_errors_total).
        let records = self.store.records::<NodeRecord>(Records::Phases).unwrap_or_default();
        let mut family = encoder.encode_descriptor(
            "node_phase_since_timestamp_seconds",
            "When each cluster node entered the phase it is in (Unix time); the phase is a label",
            None,
            MetricType::Gauge,
        )?;
        for (_, record) in &records {
            let labels = NodeLabels {
                cluster: record.cluster.to_string(),
                node: record.node.to_string(),
                phase: record.phase.as_str(),
            };
            ConstGauge::new(seconds(record.since.0)).encode(family.encode_family(&labels)?)?;
        }
        let inv = self.store.snapshot();
        let mut family = encoder.encode_descriptor(
            "ignition_made_timestamp_seconds",
            "When each uploaded openshift-install config was made (Unix time); its certificates expire 24 h later",
            None,
            MetricType::Gauge,
        )?;
        for cluster in inv.clusters.values().filter(|c| c.kind == ClusterKind::Okd) {
            for role in [Role::Bootstrap, Role::ControlPlane, Role::Worker] {
                let made = crate::store::uploads::made(&self.store.files(), cluster.name.as_str(), role);
                if let Ok(Some(made)) = made {
                    let labels =
                        UploadLabels { cluster: cluster.name.to_string(), role: crate::store::uploads::okd_name(role) };
                    ConstGauge::new(seconds(made)).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;
    use crate::cluster::definition::PhaseTimeouts;
    use crate::cluster::phase::{Limits, Phase};
    use crate::inventory::Timestamp;
    use crate::store::records::RecordWrite;

    #[test]
    fn each_node_phase_and_each_upload_is_a_timestamp_series() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), crate::inventory::lab::lab()).expect("store");
        let since = Timestamp::from_unix_millis(1_800_000_000_500);
        let record = NodeRecord::planned(
            "prod".parse().expect("name"),
            "master-0".parse().expect("name"),
            None,
            None,
            Limits::from(&PhaseTimeouts::default()),
            since,
        )
        .enter(Phase::PoweringOn, since);
        store.write_records(&[RecordWrite::put(Records::Phases, "master-0", &record)]).expect("record");
        let made = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_799_990_000);
        crate::store::uploads::put(&store.files(), "prod", Role::Worker, b"{}", Some(made)).expect("upload");

        let mut registry = Registry::with_prefix("slipway");
        registry.register_collector(Box::new(Lifecycle::new(&store)));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(
            text.contains(
                "slipway_node_phase_since_timestamp_seconds{cluster=\"prod\",node=\"master-0\",phase=\"powering-on\"} 1800000000.5"
            ),
            "{text}"
        );
        assert!(
            text.contains("slipway_ignition_made_timestamp_seconds{cluster=\"prod\",role=\"worker\"} 1799990000"),
            "{text}"
        );
    }
}
