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
mod chain;
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
mod names;
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

/// Every file in tests/ is a group declared above: with autotests off, a
/// file that is not would never be built, and its tests never run.
#[test]
fn every_file_in_tests_is_a_group_of_the_suite() {
    let declared: Vec<&str> = include_str!("suite.rs")
        .lines()
        .filter_map(|l| l.strip_prefix("mod ")?.strip_suffix(';'))
        .collect();
    let dir = common::top().join("tests");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(group) = name.strip_suffix(".rs").filter(|g| *g != "suite") {
            assert!(
                declared.contains(&group),
                "tests/{name} is not a group of tests/suite.rs: add `mod {group};` there"
            );
        }
    }
}
