//! Integration tests: the real `slipway` binary, its CLI, and the packaging files.

mod boot;
mod check;
mod cli;
mod clusters;
mod configs;
mod daemon;
mod dhcp;
mod diagnostics;
mod dns;
mod http;
mod hypervisor;
mod images;
mod kube;
mod kubesim;
mod lab;
mod layering;
mod lb;
mod netns;
mod okd;
mod packaging;
mod pki;
mod proxmox;
mod pve;
mod ra;
mod support;
mod tftp;
