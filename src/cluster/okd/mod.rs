//! OKD's lifecycle on top of the engine: what `openshift-install wait-for` and the
//! machine-approver decide, made with slipway's inventory. `csr` is the guarded approval
//! decision (pure).

pub mod csr;
