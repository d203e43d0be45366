//! Links the unwinder that std refers to (`_Unwind_*`) from GCC's static
//! `libgcc_eh.a` instead of the shared `libgcc_s.so.1`. Every connection
//! starts a process, and one shared library less is one file fewer to
//! open and map, about 60 symbol lookups fewer for the dynamic loader and
//! its private pages fewer in each process (figures in README,
//! Performance). Nothing unwinds (`panic = "abort"` in release); the
//! symbols serve backtraces.
//!
//! rustc asks for `-lgcc_s`; a file of that name in a search directory
//! of our own, a linker script naming `libgcc_eh.a`, answers it. Where the
//! compiler driver knows no `libgcc_eh.a` (or the target is not glibc),
//! nothing is done and `libgcc_s.so.1` is linked as before. The static
//! musl build (`--target x86_64-unknown-linux-musl`) links everything
//! statically already and needs none of this.
//!
//! It also tells the tests which target they were built for
//! (`SOCKS4D_TARGET`), so that the programs they build for themselves (the
//! confinement probe) are built for the same one.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    // The tests build their probe program for the target they were built for.
    println!("cargo:rustc-env=SOCKS4D_TARGET={target}");
    let static_crt = std::env::var("CARGO_CFG_TARGET_FEATURE").is_ok_and(|f| f.split(',').any(|x| x == "crt-static"));
    if !target.ends_with("-linux-gnu") || static_crt {
        return;
    }
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let Ok(out) = Command::new(&cc).arg("-print-file-name=libgcc_eh.a").output() else {
        return;
    };
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !out.status.success() || !path.is_absolute() || !path.exists() {
        return;
    }
    let dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let script = format!(
        "/* socks4d's build.rs: the unwinder, linked statically */\nINPUT({})\n",
        path.display()
    );
    std::fs::write(dir.join("libgcc_s.so"), script).expect("write the linker script");
    println!("cargo:rustc-link-search=native={}", dir.display());
}
