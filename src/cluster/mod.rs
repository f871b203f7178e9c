//! Clusters made from definitions: the definition operators write (`definition`), the plan that
//! turns it into nodes, addresses, MACs and VMs against the inventory (`plan`, pure), the node
//! phases, conditions and their decisions (`phase`, pure), what the API asks (`control`: plan,
//! apply, scale, status, retry, delete), the reconciler service that drives every node through
//! its phases (`engine`), the clusters' health checks (`health`: targets and the probe;
//! `monitor`: runs them once a cluster is installed), the record each kind's lifecycle keeps
//! (`record`), OKD's own steps (`okd`) and k3s's (`k3s`).

pub mod addons;
pub mod control;
pub mod definition;
pub mod engine;
pub mod health;
pub mod k3s;
pub mod metrics;
pub mod monitor;
pub mod okd;
pub mod phase;
pub mod plan;
pub mod record;
pub mod stages;

pub use control::Clusters;
pub use definition::Definition;
pub use plan::{Plan, plan};
