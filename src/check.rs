//! The administrator's questions, answered without serving:
//! `--check-config` (are the rules file, the route file and the chain
//! file usable; what would a classic sockd have read otherwise) and
//! `--explain` (which line decides this request, and how it leaves). Each answer is a [`Report`] that the
//! caller prints.

use std::net::IpAddr;
use std::path::Path;

use crate::addr;
use crate::audit::{self, Log};
use crate::chain::{self, Action, Chain, Routed};
use crate::config::{Config, Outgoing, Query, EXIT_SETUP, EXIT_USAGE};
use crate::route::{self, Route, Routes};
use crate::rules::{self, Trust};

/// What a check prints and its exit status.
#[derive(Debug, Default)]
pub struct Report {
    /// Lines for standard output: summaries and answers.
    pub out: Vec<String>,
    /// Lines for standard error: errors and warnings, with their lines.
    pub err: Vec<String>,
    pub status: u8,
}

impl Report {
    fn out(&mut self, line: String) {
        self.out.push(line);
    }

    fn err(&mut self, line: String) {
        self.err.push(line);
    }

    fn fail(mut self, status: u8) -> Report {
        self.status = status;
        self
    }
}

/// `--check-config`: every error and every warning with its line, in
/// file order, then a summary per file; status 1 when a file cannot be
/// used. With `--compile`, the frozen file is written too.
pub fn config(cfg: &Config) -> Report {
    let mut r = Report::default();
    if !cfg.log_stderr {
        if let Err(why) = Log::syslog(cfg.log_facility, cfg.log_timeout).reachable() {
            r.out(format!("syslog: {}", audit::logger_hint(&why)));
        }
    }
    let trust = Trust::new(&cfg.user);
    let checked = rules::load_checked(&cfg.rules_file, cfg.rules_file_named, &trust);
    let mut diagnostics: Vec<(Option<usize>, String)> =
        checked.notes.iter().map(|n| (Some(n.line), n.to_string())).collect();
    if let Err(errors) = &checked.loaded {
        diagnostics.extend(errors.iter().map(|e| (e.line, e.to_string())));
    }
    // In file order; the stable sort keeps a line's errors after its notes.
    diagnostics.sort_by_key(|d| d.0);
    r.err.extend(diagnostics.into_iter().map(|(_, d)| d));
    let file = cfg.rules_file.display();
    let rules_ok = match checked.loaded {
        Ok(loaded) if loaded.origin == rules::Origin::Builtin => {
            r.out(format!(
                "{file}: absent; the built-in policy applies (permit loopback clients, deny the rest)"
            ));
            true
        }
        Ok(loaded) => {
            let warnings = count_warnings(checked.notes.len());
            r.out(format!("{file}: {} rules, OK{warnings}", loaded.len()));
            if !cfg.compile {
                r.out.extend(rules::frozen_status(&cfg.rules_file, &trust));
                true
            } else {
                match rules::freeze(&cfg.rules_file, &trust) {
                    Ok((path, n)) => {
                        r.out(format!("{}: written, {n} rules", path.display()));
                        true
                    }
                    Err(e) => {
                        r.err(format!("socks4d: {e:#}"));
                        false
                    }
                }
            }
        }
        Err(errors) => {
            let warnings = count_warnings(checked.notes.len());
            r.out(format!(
                "{file}: {} error(s){warnings}; no service until fixed",
                errors.len()
            ));
            false
        }
    };
    let routes_ok = check_routes(cfg, &trust, &mut r);
    let chain_ok = check_chain(cfg, &trust, &mut r);
    if rules_ok && routes_ok && chain_ok {
        r
    } else {
        r.fail(EXIT_SETUP)
    }
}

fn count_warnings(n: usize) -> String {
    match n {
        0 => String::new(),
        1 => ", 1 warning".to_string(),
        n => format!(", {n} warnings"),
    }
}

/// `--check-config` for `--route FILE`: each error with its line, a
/// warning for each interface address this host does not have (a CONNECT
/// or BIND that line decides would fail), then a summary line. False
/// when the file cannot be used.
fn check_routes(cfg: &Config, trust: &Trust, r: &mut Report) -> bool {
    let Some(path) = &cfg.route_file else {
        return true;
    };
    match route::load(Some(path), trust) {
        Ok(routes) => {
            let mut warnings = 0;
            for line in &routes.routes {
                let Some(ip) = line.source() else { continue };
                if let Err(e) = std::net::UdpSocket::bind((ip, 0)) {
                    r.err(format!(
                        "{}: warning: interface_addr {ip} cannot be used here ({e}); \
                         requests this line decides will fail with 0x5B",
                        routes.label(line)
                    ));
                    warnings += 1;
                }
            }
            let n = routes.routes.len();
            r.out(format!(
                "{}: {n} routes, OK{}",
                path.display(),
                count_warnings(warnings)
            ));
            true
        }
        Err(errors) => unusable(r, path, &errors),
    }
}

/// A file that cannot be used: each error, then the summary line.
fn unusable(r: &mut Report, path: &Path, errors: &[impl ToString]) -> bool {
    r.err.extend(errors.iter().map(ToString::to_string));
    r.out(format!(
        "{}: {} error(s); no service until fixed",
        path.display(),
        errors.len()
    ));
    false
}

/// `--check-config` for `--chain FILE`: each error with its line, the
/// warnings of [`chain::notes`], then a summary line. False when the file
/// cannot be used.
fn check_chain(cfg: &Config, trust: &Trust, r: &mut Report) -> bool {
    let Some(path) = &cfg.chain_file else {
        return true;
    };
    match chain::load(path, trust) {
        Ok(chain) => {
            let notes = chain::notes(&chain);
            for (line, note) in &notes {
                r.err(match line {
                    Some(n) => format!("{}:{n}: warning: {note}", chain.file),
                    None => format!("{}: warning: {note}", chain.file),
                });
            }
            let parents = chain
                .lines
                .iter()
                .filter(|l| matches!(l.action, Action::Parent(_)))
                .count();
            r.out(format!(
                "{}: {} lines ({parents} through parents), OK{}",
                chain.file,
                chain.lines.len(),
                count_warnings(notes.len())
            ));
            true
        }
        Err(errors) => unusable(r, path, &errors),
    }
}

/// `--explain USER SRC DST PORT`: which line decides that request, and how,
/// with the warnings `--check-config` gives for that line. Addresses are
/// read as a connection reads them: a mapped client address is IPv4, a
/// destination is in its canonical form. DST may be a host name, as a
/// SOCKS4a client sends it: lines by name judge the name, and when lines
/// by address could decide, the name is looked up and each of its
/// addresses explained.
pub fn explain(cfg: &Config, query: &Query) -> Report {
    let Query { user, src, dst, port } = query;
    let mut r = Report::default();
    let trust = Trust::new(&cfg.user);
    let checked = rules::load_checked(&cfg.rules_file, cfg.rules_file_named, &trust);
    let chain = cfg
        .chain_file
        .as_deref()
        .map(|path| chain::load(path, &trust))
        .transpose();
    let (loaded, routes, chain) = match (checked.loaded, route::load(cfg.route_file.as_deref(), &trust), chain) {
        (Ok(loaded), Ok(routes), Ok(chain)) => (loaded, routes, chain),
        (rules, routes, chain) => {
            let errors = rules.err().into_iter().chain(routes.err()).chain(chain.err()).flatten();
            r.err.extend(errors.map(|e| e.to_string()));
            return r.fail(EXIT_SETUP);
        }
    };
    let dst_ip = dst.parse::<IpAddr>().ok();
    let name = addr::name_of(dst.as_bytes());
    let (Ok(src_ip), true) = (src.parse::<IpAddr>(), dst_ip.is_some() || name.is_some()) else {
        r.err("socks4d: --explain: SRC must be an IP address, DST an IP address or a host name".into());
        return r.fail(EXIT_USAGE);
    };
    let port = match rules::port_number(port.as_bytes(), &loaded.services) {
        Ok(p) => p,
        Err(e) => {
            r.err(format!("socks4d: --explain: {e}"));
            return r.fail(EXIT_USAGE);
        }
    };
    let why = Why {
        cfg,
        notes: &checked.notes,
        routes: &routes,
        chain: chain.as_ref(),
        user,
        port,
    };
    let src = src_ip.to_canonical();
    let Some(name) = name else {
        why.address(&mut r, &loaded, user, src, dst_ip.unwrap_or(src), port, None);
        return r;
    };
    let known = rules::Partial {
        src,
        user: Some(user.as_bytes()),
        port: Some(port),
        name: Some(Some(&name)),
    };
    if let Some(d) = rules::settled(&loaded, &known) {
        r.out(format!(
            "destination: {name}, decided by its name, whatever its addresses"
        ));
        why.decision(&mut r, &d, None, Some(&name));
        return r;
    }
    match crate::net::resolve(&name, port, crate::net::Deadline::after(rules::RESOLVE_TIMEOUT)) {
        Ok(found) => {
            let list: Vec<String> = found.iter().map(|a| a.ip().to_string()).collect();
            r.out(format!("destination: {name} resolves to {}", list.join(", ")));
            for a in found {
                r.out(format!("address {}:", a.ip()));
                why.address(&mut r, &loaded, user, src, a.ip(), port, Some(&name));
            }
        }
        Err(e) => {
            r.err(format!(
                "socks4d: --explain: {name}: {e}: the lines by address need its addresses"
            ));
            return r.fail(EXIT_SETUP);
        }
    }
    r
}

/// What `--explain` says of a decision, with the file's notes, the
/// routes and the chain, for a request of `user` on `port`.
struct Why<'a> {
    cfg: &'a Config,
    notes: &'a [rules::Note],
    routes: &'a Routes,
    chain: Option<&'a Chain>,
    user: &'a str,
    port: u16,
}

impl Why<'_> {
    /// The decision for destination address `written` (and SOCKS4a
    /// `name`, if any), as a connection to it would be decided.
    #[allow(clippy::too_many_arguments)]
    fn address(
        &self,
        r: &mut Report,
        loaded: &rules::Rules,
        user: &str,
        src: IpAddr,
        written: IpAddr,
        port: u16,
        name: Option<&str>,
    ) {
        let dst_ip = match addr::canonical(written) {
            Ok(ip) => ip,
            Err(why) => {
                r.out(format!(
                    "destination {written}: refused whatever the rules say: {}",
                    why.why()
                ));
                r.out("decision: deny".into());
                return;
            }
        };
        if written != dst_ip {
            r.out(format!(
                "destination: {dst_ip} (as {written} is matched and connected to)"
            ));
        }
        let judged = addr::judged(dst_ip);
        if judged != dst_ip {
            r.out(format!("destination: judged as {judged} (NAT64)"));
        }
        let facts = rules::Facts {
            user: user.as_bytes(),
            src,
            dst: judged,
            port,
            name,
        };
        self.decision(r, &rules::decide(loaded, &facts), Some(dst_ip), name);
    }

    /// The deciding line, its ident mode, command and warnings, and for a
    /// permit the way out of a request to `dst` (when it is known) by
    /// `name` (when it has one): the chain's line and the source.
    fn decision(&self, r: &mut Report, d: &rules::Decision, dst: Option<IpAddr>, name: Option<&str>) {
        let Some(rule) = d.rule else {
            r.out(format!("{}: no rule matches", d.label()));
            r.out("decision: deny".into());
            return;
        };
        r.out(format!("{}: {}", d.label(), rule.text));
        r.out(format!("decision: {}", rule.action.name()));
        if d.permit() {
            r.out(format!("ident: {}", d.ident(self.cfg.ident).name()));
        }
        if let Some(cmd) = d.command() {
            r.out(format!("command: {}", String::from_utf8_lossy(cmd)));
        }
        for n in self.notes.iter().filter(|n| n.line == rule.line) {
            r.out(format!("warning: {}", n.message));
        }
        if !d.permit() {
            return;
        }
        let direct = self.explain_chain(r, dst, name);
        if let (true, Some(dst)) = (direct, dst) {
            explain_source(self.cfg, self.routes, dst, r);
        }
    }

    /// `--explain`'s lines on the chain file's line for a permitted
    /// request, if there is a chain file. True when the request leaves
    /// directly.
    fn explain_chain(&self, r: &mut Report, dst: Option<IpAddr>, name: Option<&str>) -> bool {
        let Some(chain) = self.chain else {
            return true;
        };
        let judged = dst.map(addr::judged);
        match chain::decide(chain, self.user.as_bytes(), judged, name, self.port) {
            Routed::By(line) => {
                r.out(format!("chain: {}: {}", chain.label(line), line.text));
                match &line.action {
                    Action::Direct => {
                        r.out("hop: direct".into());
                        true
                    }
                    Action::Deny => {
                        r.out("hop: none: refused (91, reason=chain-denied)".into());
                        false
                    }
                    Action::Parent(via) => {
                        let list: Vec<String> = via.parents.iter().map(ToString::to_string).collect();
                        let asked = match (dst, name) {
                            (None, Some(n)) if via.protocol.takes_names() => format!("{n}, not looked up here"),
                            (Some(ip), _) => ip.to_string(),
                            _ => "its addresses, looked up here".into(),
                        };
                        r.out(format!(
                            "hop: {} parent {}, tried in order, asked for {asked}",
                            via.protocol.name(),
                            list.join(", ")
                        ));
                        false
                    }
                }
            }
            Routed::Unmatched => {
                r.out(format!("chain: {}: no line matches", chain.file));
                r.out("hop: none: refused (91, reason=chain-denied)".into());
                false
            }
            Routed::NeedsAddress => {
                r.out(format!(
                    "chain: {}: a line by address may match first: the name is looked up and each address \
                     routed as it is",
                    chain.file
                ));
                false
            }
        }
    }
}

/// `--explain`'s lines on the source address of the CONNECT: the route
/// line that decides it, if any, and the source.
fn explain_source(cfg: &Config, routes: &Routes, dst: IpAddr, r: &mut Report) {
    let found = routes.find(dst, None);
    match found {
        Some(line) => r.out(format!("route: {}: {}", routes.label(line), line.text)),
        None if cfg.route_file.is_some() => r.out("route: no line matches".into()),
        None => {}
    }
    let source = match (found.and_then(Route::source), cfg.outgoing) {
        (Some(ip), _) => format!("{ip}"),
        (None, Outgoing::Same) => "the address the client connected to (--outgoing-address same)".into(),
        (None, out) => match out.source(dst, dst) {
            Some(ip) => format!("{ip} (--outgoing-address)"),
            None => "chosen by the kernel".into(),
        },
    };
    r.out(format!("source: {source}"));
}
