//! socks4d's integration tests, one crate: each file beside this one is a
//! group, a module here, and `tests/common` holds what they share
//! (tests/README.md lists the groups). One crate links the library once
//! and runs every group in one process, its tests in parallel threads:
//! so no test changes what the process holds for the others (the
//! environment, the current directory, the umask, its limits or ids); a
//! child is changed before it runs, or a thread of the test's own.
//!
//! `cargo test` runs them all; `SOCKS4D_QUICK=1 cargo test` leaves the
//! slow ones out, except under `CI=true` (`common::Slow`).

mod common;
mod container;

mod bench_smoke;
mod bind;
mod classic;
mod clients;
mod commands;
mod confine;
mod connect;
mod deploy;
mod destinations;
mod frozen;
mod haproxy;
mod host;
mod hostile;
mod ident;
mod interop;
mod limits;
mod multihome;
mod newcomer;
mod package;
mod privilege;
mod properties;
mod proxy;
mod relay;
mod reload;
mod rules;
mod soak;
mod start;
mod static_build;
mod systemd;
mod trust;
