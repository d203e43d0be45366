//! socks4d: a SOCKS4/4a server that inetd or a systemd socket unit starts
//! once per client connection.

pub mod addr;
pub mod audit;
pub mod bind;
pub mod chain;
pub mod check;
pub mod config;
pub mod confine;
pub mod ident;
pub mod intake;
pub mod listen;
pub mod net;
pub mod outcome;
pub mod parent;
pub mod policy;
pub mod privilege;
pub mod proxy;
pub mod relay;
pub mod request;
pub mod route;
pub mod rules;
pub mod session;
pub mod start;
pub mod syscalls;
pub mod text;
