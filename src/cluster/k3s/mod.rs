//! k3s's lifecycle on top of the engine: the cluster's token (`token`), its stages with the
//! decision of what comes next and which node may join now (`stage`, pure), and the answer to a
//! node asking for its k3s config (`admission`), and the adapter that follows the cluster
//! through its API and over SSH (`drive`).

pub mod admission;
pub mod drive;
pub mod stage;
pub mod token;
