//! The helpers every group shares, by job: when a test cannot run here
//! and which groups are slow (`skip.rs`), starting socks4d (`spawn.rs`),
//! sockets, peers and the SOCKS client (`net.rs`), log lines and their
//! collectors (`log.rs`), processes, users and namespaces (`host.rs`),
//! files (`files.rs`) and the outside programs the interop groups drive
//! (`programs.rs`). A group says `use crate::common::*;`.
#![allow(dead_code)]

mod files;
mod host;
mod log;
mod net;
mod programs;
mod skip;
mod spawn;

pub use files::*;
pub use host::*;
pub use log::*;
pub use net::*;
pub use programs::*;
pub use skip::*;
pub use spawn::*;

pub use socks4d::request::{encode, Command as Cd, Request};

use std::time::Duration;

/// Every test I/O wait is bounded by this, so a broken server fails a test
/// instead of hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);
