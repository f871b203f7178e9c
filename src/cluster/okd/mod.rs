//! OKD's lifecycle on top of the engine: what `openshift-install wait-for` and the
//! machine-approver decide, made with slipway's inventory. `stage` holds the cluster's stages
//! and the decision of the next one, `csr` the guarded approval decision (both pure), `drive`
//! the adapter the engine runs for each OKD cluster, `manual` what operators decide by hand
//! (CSRs, an early bootstrap removal), `gather` the bootstrap node's diagnostics over SSH.

pub mod csr;
pub mod drive;
pub mod gather;
pub mod manual;
pub mod stage;
