//! The command line (usage in `main.rs`).

use std::net::SocketAddr;

pub struct Opts {
    pub bin: String,
    /// The static build, measured beside `bin`.
    pub bin_static: Option<String>,
    pub extra: Vec<String>,
    pub bytes: u64,
    pub rounds: usize,
    pub latency: usize,
    pub conns: usize,
    pub idle: usize,
    /// Where the report is written too; the side-by-side bench's default
    /// is bench/results.txt.
    pub out: Option<String>,
    pub dante: bool,
    /// Proxies started by someone else: name, address, and whether it is a
    /// floor (a handler that echoes the request back).
    pub external: Vec<(String, SocketAddr, bool)>,
    pub only_external: bool,
    /// The process tree whose CPU the external variants are charged with.
    pub account_tree: Option<u32>,
    /// Rules files of these many lines, read as text and frozen.
    pub rules: Vec<usize>,
    /// bench/c-relay.c built: the least a per-connection relay does.
    pub c_relay: Option<String>,
    /// Handlers per build and round for `--handlers` (handlers.rs); 0: the
    /// side-by-side bench instead.
    pub handlers: usize,
    /// More builds for `--handlers`.
    pub compare: Vec<String>,
    /// `--handlers` runs each handler under this program and arguments.
    pub wrap: Vec<String>,
}

/// The options from `args` (the arguments after the program's name), or
/// a sentence naming the one that is wrong.
pub fn parse(mut args: impl Iterator<Item = String>) -> Result<Opts, String> {
    let mut o = Opts {
        bin: String::new(),
        bin_static: None,
        extra: Vec::new(),
        bytes: 1 << 30,
        rounds: 5,
        latency: 500,
        conns: 2000,
        idle: 200,
        out: None,
        dante: true,
        external: Vec::new(),
        only_external: false,
        account_tree: None,
        rules: vec![1, 100, 1000, 20_000],
        c_relay: None,
        handlers: 0,
        compare: Vec::new(),
        wrap: Vec::new(),
    };
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        let num = |v: String| v.parse::<u64>().map_err(|e| format!("{v}: {e}"));
        match a.as_str() {
            "--bin" => o.bin = val()?,
            "--bin-static" => o.bin_static = Some(val()?),
            "--extra" => o.extra = val()?.split_whitespace().map(String::from).collect(),
            "--bytes" => o.bytes = num(val()?)?,
            "--rounds" => o.rounds = num(val()?)? as usize,
            "--latency" => o.latency = num(val()?)? as usize,
            "--conns" => o.conns = num(val()?)? as usize,
            "--idle" => o.idle = num(val()?)? as usize,
            "--out" => o.out = Some(val()?),
            "--no-dante" => o.dante = false,
            "--external" | "--external-floor" => {
                let v = val()?;
                let (name, addr) = v.split_once('=').ok_or(format!("{a} {v}: expected NAME=ADDR"))?;
                let addr = addr.parse().map_err(|e| format!("{a} {v}: {e}"))?;
                o.external.push((name.to_string(), addr, a == "--external-floor"));
            }
            "--only-external" => o.only_external = true,
            "--account-tree" => o.account_tree = Some(num(val()?)? as u32),
            "--c-relay" => o.c_relay = Some(val()?),
            "--handlers" => o.handlers = num(val()?)? as usize,
            "--compare" => o.compare.push(val()?),
            "--wrap" => o.wrap = val()?.split_whitespace().map(String::from).collect(),
            "--rules" => {
                let v = val()?;
                o.rules = if v.is_empty() || v == "none" {
                    Vec::new()
                } else {
                    v.split(',')
                        .map(|n| n.parse().map_err(|e| format!("--rules {v}: {e}")))
                        .collect::<Result<_, _>>()?
                };
            }
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    if o.bin.is_empty() && !o.only_external {
        return Err("--bin PATH is required".into());
    }
    Ok(o)
}
