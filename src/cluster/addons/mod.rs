//! Cluster add-ons: ordered manifest sets applied to a cluster once it is Ready, through its
//! Kubernetes API with server-side apply, or, for a k3s set marked `at_install`, by k3s itself
//! from its auto-deploy directory. `check` vets a definition's sets, `manifest` reads a set
//! from disk, `sets` reads a definition's sets with their content hashes, `rest` places
//! objects in the API by discovery, `apply` makes one pass of a set against a cluster
//! (`rollout` says whether a workload it waits for rolled out),
//! `autodeploy` is the k3s directory's side of it, `progress` keeps where the sets stand,
//! `drive` is the ApplyingAddons stage.

pub mod apply;
pub mod autodeploy;
pub mod check;
pub mod drive;
pub mod manifest;
pub mod progress;
pub mod rest;
pub mod rollout;
pub mod sets;
