//! Tells the tests which target they were built for (`SOCKS4D_TARGET`), so
//! that the programs they build for themselves (the confinement probe) are
//! built for the same one.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    println!("cargo:rustc-env=SOCKS4D_TARGET={target}");
}
