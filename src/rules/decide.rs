//! Deciding a request: the first line that matches decides, and a request
//! that no line matches is denied. Pure.

use std::path::PathBuf;

use super::frozen::Frozen;
use super::rule::{self, denied, first_match, Action, Error, Facts, Hook, Partial, Rule};
use super::services::Services;
use crate::addr::Net;
use crate::ident::Mode;

/// The `rule=` label of the built-in policy.
pub const BUILTIN: &str = "builtin";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The rules file's path.
    File(String),
    /// No rules file: permit loopback clients, deny the rest.
    Builtin,
}

/// The rules in order, however they are held; deciding asks them the same
/// way.
#[derive(Debug)]
pub enum RuleSource {
    /// Parsed from the rules file's text, or the built-in policy.
    Text(Vec<Rule>),
    /// A frozen file's checked records, decided from where they are.
    Frozen(Frozen),
}

impl RuleSource {
    /// The number of rules.
    pub fn len(&self) -> usize {
        match self {
            RuleSource::Text(list) => list.len(),
            RuleSource::Frozen(f) => f.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first rule that matches `f`.
    pub fn first_match(&self, f: &Facts) -> Option<&Rule> {
        match self {
            RuleSource::Text(list) => first_match(list, f).map(|i| &list[i]),
            RuleSource::Frozen(frozen) => first_match(frozen.lines(), f).map(|i| frozen.rule(i)),
        }
    }

    /// The rule that decides every request of which `p` is known (`Some(None)`:
    /// none matches them), when what is not known cannot change it.
    pub fn settled(&self, p: &Partial) -> Option<Option<&Rule>> {
        match self {
            RuleSource::Text(list) => rule::settled(list, p).map(|by| by.map(|i| &list[i])),
            RuleSource::Frozen(frozen) => rule::settled(frozen.lines(), p).map(|by| by.map(|i| frozen.rule(i))),
        }
    }

    /// Whether every request of which `p` is known is denied: by the rule
    /// given, or by no rule matching (`Some(None)`).
    pub fn denied(&self, p: &Partial) -> Option<Option<&Rule>> {
        match self {
            RuleSource::Text(list) => denied(list, p).map(|by| by.map(|i| &list[i])),
            RuleSource::Frozen(frozen) => denied(frozen.lines(), p).map(|by| by.map(|i| frozen.rule(i))),
        }
    }
}

/// A rules file, parsed or frozen, or the built-in policy: what a
/// connection is decided by.
#[derive(Debug)]
pub struct Rules {
    pub origin: Origin,
    pub source: RuleSource,
    /// Run when the client host's identd gives no USERID answer.
    pub no_identd: Option<Hook>,
    /// Run when the identd names another user than the one claimed.
    pub bad_id: Option<Hook>,
    pub services: Services,
    /// A frozen file was there and not used: why.
    pub frozen_unused: Option<String>,
    /// The files besides the rules file that these rules were read from:
    /// the user lists (or the frozen file's record of them).
    pub files: Vec<PathBuf>,
}

/// The rules to serve with, or every error that stops the file being used.
pub type Loaded = Result<Rules, Vec<Error>>;

impl Rules {
    /// Loopback clients permitted (with the `--ident` mode), the rest
    /// denied.
    pub fn builtin(services: Services) -> Rules {
        let permit = |text: &str, src: &str, bits: u32| {
            let net = Net::prefix(src.parse().expect("an address"), bits);
            Rule::plain(0, text, Action::Permit, vec![net])
        };
        let loopback = vec![
            permit("permit 127.0.0.0/8", "127.0.0.0", 8),
            permit("permit ::1/128", "::1", 128),
        ];
        Rules::new(Origin::Builtin, RuleSource::Text(loopback), services)
    }

    /// `source`, from `origin`, with no hooks and no files besides.
    pub fn new(origin: Origin, source: RuleSource, services: Services) -> Rules {
        Rules {
            origin,
            source,
            no_identd: None,
            bad_id: None,
            services,
            frozen_unused: None,
            files: Vec::new(),
        }
    }

    /// The number of rules.
    pub fn len(&self) -> usize {
        self.source.len()
    }

    pub fn is_empty(&self) -> bool {
        self.source.is_empty()
    }

    /// The `rule=` label of line `line`, or of no line matching.
    pub fn label(&self, line: Option<usize>) -> String {
        match (&self.origin, line) {
            (Origin::Builtin, _) => BUILTIN.into(),
            (Origin::File(f), Some(n)) => format!("{f}:{n}"),
            (Origin::File(_), None) => "default".into(),
        }
    }

    /// Gives back a frozen file's copy (megabytes for a large file) once
    /// nothing more will be decided: no rule is left. Parsed rules are
    /// left for the exit to free (freeing would write to pages a
    /// `--listen` handler shares with its parent).
    pub fn release(&mut self) {
        if let RuleSource::Frozen(_) = self.source {
            self.source = RuleSource::Text(Vec::new());
        }
    }
}

/// The line that decided, if any; no line means deny.
#[derive(Debug, Clone, Copy)]
pub struct Decision<'a> {
    pub rules: &'a Rules,
    pub rule: Option<&'a Rule>,
}

impl Decision<'_> {
    pub fn permit(&self) -> bool {
        self.rule.is_some_and(|r| r.action == Action::Permit)
    }

    /// `file:line`, `default` (no line matched) or `builtin`.
    pub fn label(&self) -> String {
        self.rules.label(self.rule.map(|r| r.line))
    }

    /// The ident mode for this request: the line's `?=`, else `default`.
    pub fn ident(&self, default: Mode) -> Mode {
        self.rule.and_then(|r| r.ident).unwrap_or(default)
    }

    pub fn command(&self) -> Option<&[u8]> {
        self.rule.and_then(|r| r.command.as_deref())
    }
}

/// Whether the rules could permit a request of which only a [`Partial`]
/// is known.
#[derive(Debug, Clone, Copy)]
pub enum Outlook<'a> {
    /// A line may permit it, or a line that may decide it runs a command
    /// (which needs the whole request): read on.
    Open,
    /// Every such request is denied, by this decision (no rule: none
    /// matches), and no line that could decide it runs a command.
    Denied(Decision<'a>),
}

/// [`Outlook`] of the first-match loop for what `p` says. Pure: no name
/// is looked up.
pub fn outlook<'a>(rules: &'a Rules, p: &Partial) -> Outlook<'a> {
    match rules.source.denied(p) {
        None => Outlook::Open,
        Some(rule) => Outlook::Denied(Decision { rules, rule }),
    }
}

/// The decision of every request of which `p` is known, when what is not
/// known (its destination address) cannot change it: a SOCKS4a request
/// that lines by name, or lines for every destination, decide.
pub fn settled<'a>(rules: &'a Rules, p: &Partial) -> Option<Decision<'a>> {
    rules.source.settled(p).map(|rule| Decision { rules, rule })
}

/// The first line that matches decides; if none does, deny.
pub fn decide<'a>(rules: &'a Rules, facts: &Facts) -> Decision<'a> {
    Decision {
        rules,
        rule: rules.source.first_match(facts),
    }
}

#[cfg(test)]
mod tests {
    use super::super::lookups::Fixed;
    use super::super::rule::PortOp;
    use super::*;

    fn rule(line: usize, action: Action, src: Net) -> Rule {
        Rule::plain(line, "", action, vec![src])
    }

    fn rules(list: Vec<Rule>) -> Rules {
        Rules::new(
            Origin::File("t.conf".into()),
            RuleSource::Text(list),
            Services::default(),
        )
    }

    fn facts<'a>(user: &'a str, src: &str, dst: &str, port: u16) -> Facts<'a> {
        Facts {
            user: user.as_bytes(),
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            port,
            name: None,
        }
    }

    const TEN: Net = Net::V4 {
        addr: 0x0a00_0000,
        mask: 0xff00_0000,
    };

    #[test]
    fn a_name_is_settled_by_lines_that_every_address_matches() {
        let settle = |text: &str| {
            let r = super::super::parse(text.as_bytes(), "t.conf", Services::default(), &mut Fixed::default()).unwrap();
            let p = Partial {
                src: "127.0.0.1".parse().unwrap(),
                user: Some(b"u"),
                port: Some(80),
                name: Some(Some("www.example.org")),
            };
            settled(&r, &p).map(|d| d.rule.map_or(0, |r| r.line))
        };
        // `0/0`: whatever the name resolves to.
        assert_eq!(settle("permit 127.0.0.0/8 0/0\n"), Some(1));
        assert_eq!(settle("deny 0/0 0/0 eq 80\npermit 0/0\n"), Some(1));
        // One family's: the name may have addresses of the other.
        assert_eq!(settle("permit 127.0.0.0/8 0.0.0.0 0.0.0.0\n"), None);
        assert_eq!(settle("permit 127.0.0.0/8 10.0.0.0/8\n"), None);
        // A line for another source never stands in the way.
        assert_eq!(settle("deny 10.0.0.0/8 10.0.0.0/8\npermit 127.0.0.0/8 0/0\n"), Some(2));
    }

    #[test]
    fn builtin_policy() {
        let r = Rules::builtin(Services::parse(b""));
        let check = |src: &str| {
            let d = decide(
                &r,
                &Facts {
                    user: b"u",
                    src: src.parse().unwrap(),
                    dst: "1.1.1.1".parse().unwrap(),
                    port: 1,
                    name: None,
                },
            );
            (d.rule.map_or(0, |r| r.line), d.permit(), d.label())
        };
        assert_eq!(check("127.0.0.1"), (0, true, "builtin".into()));
        assert_eq!(check("127.9.9.9"), (0, true, "builtin".into()));
        assert_eq!(check("::1"), (0, true, "builtin".into()));
        assert_eq!(check("10.0.0.1"), (0, false, "builtin".into()));
    }

    #[test]
    fn release_gives_back_a_frozen_copy_only() {
        let mut text = rules(vec![rule(1, Action::Permit, TEN)]);
        text.release();
        assert_eq!(text.len(), 1);
        let parsed = super::super::grammar::Parsed {
            rules: vec![rule(1, Action::Permit, TEN)],
            ..Default::default()
        };
        let bytes = super::super::frozen::encode(&parsed, Default::default(), 0, &[]).unwrap();
        let opened = super::super::frozen::from_bytes(bytes).unwrap();
        let mut frozen = Rules::new(Origin::Builtin, RuleSource::Frozen(opened.frozen), Services::default());
        assert_eq!(frozen.len(), 1);
        frozen.release();
        assert!(frozen.is_empty());
    }

    #[test]
    fn first_match_wins_and_no_match_denies() {
        let host = Net::V4 {
            addr: 0x0a00_0001,
            mask: u32::MAX,
        };
        let r = rules(vec![rule(3, Action::Deny, host), rule(7, Action::Permit, TEN)]);
        let d = decide(&r, &facts("u", "10.0.0.1", "1.1.1.1", 80));
        assert_eq!(
            (d.rule.unwrap().line, d.permit(), d.label()),
            (3, false, "t.conf:3".into())
        );
        let d = decide(&r, &facts("u", "10.9.9.9", "1.1.1.1", 80));
        assert_eq!((d.rule.unwrap().line, d.permit()), (7, true));
        let d = decide(&r, &facts("u", "11.0.0.1", "1.1.1.1", 80));
        assert!(d.rule.is_none() && !d.permit());
        assert_eq!(d.label(), "default");
    }

    #[test]
    fn every_condition_must_hold() {
        let mut r = rule(1, Action::Permit, TEN);
        r.dst = Some(vec![Net::V4 {
            addr: 0xc000_0200,
            mask: 0xffff_ff00,
        }]);
        r.port = Some((PortOp::Lt, 1024));
        r.users = Some(vec![b"alice".to_vec()]);
        let rs = rules(vec![r]);
        assert!(decide(&rs, &facts("alice", "10.1.1.1", "192.0.2.9", 80)).permit());
        assert!(!decide(&rs, &facts("bob", "10.1.1.1", "192.0.2.9", 80)).permit());
        assert!(!decide(&rs, &facts("alice", "11.1.1.1", "192.0.2.9", 80)).permit());
        assert!(!decide(&rs, &facts("alice", "10.1.1.1", "192.0.3.9", 80)).permit());
        assert!(!decide(&rs, &facts("alice", "10.1.1.1", "192.0.2.9", 1024)).permit());
    }

    #[test]
    fn any_address_of_a_name_matches() {
        let one = |a: u32| Net::V4 {
            addr: a,
            mask: u32::MAX,
        };
        let mut r = rule(1, Action::Permit, one(0x0a00_0001));
        r.src.push(one(0x0a00_0002));
        let rs = rules(vec![r]);
        assert!(decide(&rs, &facts("u", "10.0.0.1", "1.1.1.1", 1)).permit());
        assert!(decide(&rs, &facts("u", "10.0.0.2", "1.1.1.1", 1)).permit());
        assert!(!decide(&rs, &facts("u", "10.0.0.3", "1.1.1.1", 1)).permit());
    }

    #[test]
    fn families_do_not_mix_and_ident_comes_from_the_line() {
        let text = "permit ?=n 0.0.0.0 0.0.0.0\npermit ::/0\n";
        let (parsed, _) = super::super::grammar::read(
            text.as_bytes(),
            "t.conf",
            &Services::default(),
            &mut Fixed::default(),
            false,
        );
        let r = rules(parsed.unwrap().rules);
        let d = decide(&r, &facts("u", "8.8.8.8", "1.1.1.1", 1));
        assert_eq!(d.rule.unwrap().line, 1);
        assert_eq!(d.ident(Mode::Required), Mode::Off);
        let d = decide(&r, &facts("u", "2001:db8::1", "1.1.1.1", 1));
        assert_eq!(d.rule.unwrap().line, 2);
        assert_eq!(d.ident(Mode::Optional), Mode::Optional);
    }
}
