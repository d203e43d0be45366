//! CPU and memory of process trees, from /proc.

use std::collections::BTreeMap;

/// (PSS, RSS) in KiB.
pub type Mem = (f64, f64);

/// The fields of /proc/PID/stat after the command's name: state, ppid, ...
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(String::from).collect())
}

/// `root` and all its descendants.
pub fn tree(root: u32) -> Vec<u32> {
    let mut parent = BTreeMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() {
            if let Some(f) = stat_fields(pid) {
                parent.insert(pid, f[1].parse::<u32>().unwrap_or(0));
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parent.iter().filter(|(_, &pp)| pp == p).map(|(&c, _)| c));
        i += 1;
    }
    out
}

/// user+sys seconds of the tree, reaped children included.
pub fn cpu(root: u32) -> f64 {
    let hz = 100.0; // USER_HZ on Linux
    tree(root)
        .into_iter()
        .filter_map(stat_fields)
        .map(|f| f[11..15].iter().map(|x| x.parse::<f64>().unwrap_or(0.0)).sum::<f64>() / hz)
        .sum()
}

/// (PSS, RSS) in KiB from smaps_rollup.
pub fn mem(pid: u32) -> Option<Mem> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let get = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|x| x.parse::<f64>().ok())
    };
    Some((get("Pss:")?, get("Rss:")?))
}

/// (PSS, RSS) of the whole tree in KiB.
pub fn tree_mem(root: u32) -> Mem {
    tree(root)
        .into_iter()
        .filter_map(mem)
        .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
}
