//! Clusters made from definitions: the definition operators write (`definition`), the plan that
//! turns it into nodes, addresses, MACs and VMs against the inventory (`plan`, pure), and — in
//! later steps — the reconciler service that drives every node through its phases.

pub mod definition;
pub mod plan;

pub use definition::Definition;
pub use plan::{Plan, plan};
