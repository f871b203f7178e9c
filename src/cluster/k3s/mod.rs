//! k3s's lifecycle on top of the engine: the cluster's token (`token`).

pub mod token;
