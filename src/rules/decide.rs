//! Deciding a request: the first line that matches decides, and a request
//! that no line matches is denied. Pure.

use std::net::IpAddr;

use super::{Action, Rule, Rules};
use crate::ident::Mode;

/// What a request is decided on.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The USERID the client claimed.
    pub user: &'a [u8],
    pub src: IpAddr,
    pub dst: IpAddr,
    pub port: u16,
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

/// What is known of a request before all of it is: its source, then its
/// user-id and port once the request is read. Its destination is not
/// known yet (not read, or a SOCKS4a name not looked up).
#[derive(Debug, Clone, Copy)]
pub struct Partial<'a> {
    pub src: IpAddr,
    pub user: Option<&'a [u8]>,
    pub port: Option<u16>,
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

/// How far a line can match a [`Partial`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// It cannot match.
    Never,
    /// It matches some requests of these facts, depending on what is not
    /// known yet.
    Maybe,
    /// It matches every request of these facts.
    Surely,
}

/// [`Outlook`] of the first-match loop for what `p` says. Pure: no name
/// is looked up.
pub fn outlook<'a>(rules: &'a Rules, p: &Partial) -> Outlook<'a> {
    if let Some(f) = &rules.frozen {
        return match f.outlook(p) {
            None => Outlook::Open,
            Some(rule) => Outlook::Denied(Decision { rules, rule }),
        };
    }
    for rule in &rules.rules {
        match rule.reach(p) {
            Reach::Never => continue,
            _ if rule.action == Action::Permit || rule.command.is_some() => return Outlook::Open,
            Reach::Surely => {
                return Outlook::Denied(Decision {
                    rules,
                    rule: Some(rule),
                })
            }
            Reach::Maybe => continue,
        }
    }
    Outlook::Denied(Decision { rules, rule: None })
}

/// The first line that matches decides; if none does, deny.
pub fn decide<'a>(rules: &'a Rules, facts: &Facts) -> Decision<'a> {
    if let Some(f) = &rules.frozen {
        return Decision {
            rules,
            rule: f.decide(facts),
        };
    }
    for rule in &rules.rules {
        if rule.matches(facts) {
            return Decision {
                rules,
                rule: Some(rule),
            };
        }
    }
    Decision { rules, rule: None }
}

impl Rule {
    /// Whether every condition of this line holds for `f`: source,
    /// destination, port test and user list.
    pub fn matches(&self, f: &Facts) -> bool {
        self.src.iter().any(|n| n.contains(f.src))
            && self.dst.as_ref().is_none_or(|d| d.iter().any(|n| n.contains(f.dst)))
            && self.port.is_none_or(|(op, p)| op.holds(f.port, p))
            && self.users.as_ref().is_none_or(|u| u.iter().any(|u| u == f.user))
    }

    /// How far this line can match a request of which `p` is known.
    pub fn reach(&self, p: &Partial) -> Reach {
        let users = match (&self.users, p.user) {
            (None, _) => Reach::Surely,
            (Some(list), Some(user)) if list.iter().any(|u| u == user) => Reach::Surely,
            (Some(_), Some(_)) => Reach::Never,
            (Some(_), None) => Reach::Maybe,
        };
        let port = match (self.port, p.port) {
            (None, _) => Reach::Surely,
            (Some((op, against)), Some(port)) if op.holds(port, against) => Reach::Surely,
            (Some(_), Some(_)) => Reach::Never,
            (Some(_), None) => Reach::Maybe,
        };
        let dst = if self.dst.is_none() {
            Reach::Surely
        } else {
            Reach::Maybe
        };
        let src = if self.src.iter().any(|n| n.contains(p.src)) {
            Reach::Surely
        } else {
            Reach::Never
        };
        // The least of the four.
        [src, users, port, dst]
            .into_iter()
            .min_by_key(|r| *r as u8)
            .unwrap_or(Reach::Never)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Fixed, Net, Origin, PortOp, Services};
    use super::*;

    fn rule(line: usize, action: Action, src: Net) -> Rule {
        Rule {
            line,
            text: String::new(),
            action,
            ident: None,
            users: None,
            src: vec![src],
            dst: None,
            port: None,
            command: None,
        }
    }

    fn rules(list: Vec<Rule>) -> Rules {
        Rules {
            origin: Origin::File("t.conf".into()),
            rules: list,
            no_identd: None,
            bad_id: None,
            services: Services::default(),
            frozen: None,
            frozen_unused: None,
            files: Vec::new(),
        }
    }

    fn facts<'a>(user: &'a str, src: &str, dst: &str, port: u16) -> Facts<'a> {
        Facts {
            user: user.as_bytes(),
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            port,
        }
    }

    const TEN: Net = Net::V4 {
        addr: 0x0a00_0000,
        mask: 0xff00_0000,
    };

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
        let r = super::super::parse(text.as_bytes(), "t.conf", Services::default(), &mut Fixed::default()).unwrap();
        let d = decide(&r, &facts("u", "8.8.8.8", "1.1.1.1", 1));
        assert_eq!(d.rule.unwrap().line, 1);
        assert_eq!(d.ident(Mode::Required), Mode::Off);
        let d = decide(&r, &facts("u", "2001:db8::1", "1.1.1.1", 1));
        assert_eq!(d.rule.unwrap().line, 2);
        assert_eq!(d.ident(Mode::Optional), Mode::Optional);
    }
}
