//! slipway: one daemon that turns empty VMs into Kubernetes clusters.
//!
//! See DESIGN.md for the map. Subsystems read the [`inventory`] as snapshots published by the
//! [`store`]; the [`api`] is the admin surface; [`app`] wires everything under one shutdown.

pub mod api;
pub mod app;
pub mod boot;
pub mod causes;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod confine;
pub mod dhcp;
pub mod dns;
pub mod http;
pub mod hypervisor;
pub mod images;
pub mod inventory;
pub mod kube;
pub mod lb;
pub mod listen;
pub mod metrics;
pub mod readiness;
pub mod runtime;
pub mod service;
pub mod sockets;
pub mod ssh;
pub mod store;
pub mod template;
pub mod tftp;
pub mod throttle;
pub mod tls;
pub mod udp;
