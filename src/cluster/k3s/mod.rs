//! k3s's lifecycle on top of the engine: the cluster's token (`token`), and its stages with the
//! decision of what comes next and which node may join now (`stage`, pure).

pub mod stage;
pub mod token;
