//! The typed outcome of an exchange that does not reach the relay. Each
//! variant maps to exactly one reply code (or none) and one audit `reason=`;
//! the detail (errno text, which line) goes to the log only.

use crate::addr::Unusable;
use crate::parent::Failed;
use crate::proxy;
use crate::request::{Foreign, Invalid, REPLY_BAD_USERID, REPLY_NO_IDENTD, REPLY_REJECTED};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// VN was not 4; the protocol the client speaks instead, when it is
    /// one that gets an answer in its own terms.
    BadVersion(u8, Option<Foreign>),
    /// CD was neither CONNECT nor BIND.
    BadCommand(u8),
    UseridTooLong,
    HostnameTooLong,
    EmptyHostname,
    /// The whole request did not arrive within the request timeout.
    RequestTimeout,
    /// The client closed before its request was complete.
    ClientClosed,
    /// Reading the request failed (a reset, say).
    ClientError(String),
    /// A SOCKS4a request while SOCKS4a is turned off.
    Socks4aDisabled,
    /// The access rules said no. The detail names the rule.
    Denied(String),
    /// The rules file could not be used; no service until it is fixed.
    ConfigError(String),
    /// The rules permit the request, but the chain file sends it nowhere:
    /// a `deny` line, or no line. The detail names the line.
    ChainDenied(String),
    /// The chain file's parents did not take the request; [`Failed`]
    /// says how, and names each parent tried.
    Parent(Failed),
    /// The SOCKS4a hostname did not resolve.
    ResolveFailed(String),
    ConnectRefused(String),
    ConnectTimeout,
    /// Another connect failure: unreachable, no route...
    ConnectFailed(String),
    /// Ident was required and gave no USERID answer.
    IdentUnavailable(String),
    /// Ident answered with a user-id other than the one claimed.
    IdentMismatch,
    /// BIND could not set up its listening socket.
    BindFailed(String),
    /// BIND's DSTIP was 0.0.0.0: no peer to check the inbound call against.
    BindNoPeer,
    /// The destination is an address refused whatever the rules say
    /// ([`crate::dest`]); the detail names it.
    Unusable(Unusable, String),
    /// The decision line could not be written within the log timeout: no
    /// relay without its audit line.
    LogFailed(String),
    /// The process is at its descriptor limit (RLIMIT_NOFILE) or the
    /// system at its own: no socket for the destination, BIND or ident.
    FdLimit(String),
    /// The memory for the relay could not be had (RLIMIT_AS, say).
    NoMemory(String),
    /// The source address a route or `--outgoing-address` chose could not
    /// be taken (not an address of this host, say).
    SourceFailed(String),
    /// A trusted balancer's connection did not begin with an acceptable
    /// PROXY header (none, too long, malformed).
    ProxyInvalid(proxy::Invalid),
    /// The PROXY header did not arrive whole within the request timeout.
    ProxyTimeout,
    /// The balancer closed before its PROXY header was complete.
    ProxyClosed,
}

impl Refusal {
    /// The reply code the client gets, or `None` for no reply.
    pub fn reply(&self) -> Option<u8> {
        match self {
            Refusal::BadVersion(..)
            | Refusal::RequestTimeout
            | Refusal::ClientClosed
            | Refusal::ClientError(_)
            | Refusal::ProxyInvalid(_)
            | Refusal::ProxyTimeout
            | Refusal::ProxyClosed => None,
            Refusal::IdentUnavailable(_) => Some(REPLY_NO_IDENTD),
            Refusal::IdentMismatch => Some(REPLY_BAD_USERID),
            _ => Some(REPLY_REJECTED),
        }
    }

    /// The audit `reason=` keyword.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::BadVersion(..) => "bad-version",
            Refusal::BadCommand(_) => "bad-command",
            Refusal::UseridTooLong => "userid-too-long",
            Refusal::HostnameTooLong => "hostname-too-long",
            Refusal::EmptyHostname => "empty-hostname",
            Refusal::RequestTimeout => "request-timeout",
            Refusal::ClientClosed => "client-closed",
            Refusal::ClientError(_) => "client-error",
            Refusal::Socks4aDisabled => "socks4a-disabled",
            Refusal::Denied(_) => "denied",
            Refusal::ConfigError(_) => "config-error",
            Refusal::ChainDenied(_) => "chain-denied",
            Refusal::Parent(f) => f.reason(),
            Refusal::ResolveFailed(_) => "resolve-failed",
            Refusal::ConnectRefused(_) => "connect-refused",
            Refusal::ConnectTimeout => "connect-timeout",
            Refusal::ConnectFailed(_) => "connect-failed",
            Refusal::IdentUnavailable(_) => "ident-unavailable",
            Refusal::IdentMismatch => "ident-mismatch",
            Refusal::BindFailed(_) => "bind-failed",
            Refusal::BindNoPeer => "bind-no-peer",
            Refusal::Unusable(Unusable::Unspecified, _) => "dst-unspecified",
            Refusal::Unusable(Unusable::Compatible, _) => "dst-ipv4-compatible",
            Refusal::LogFailed(_) => "log-failed",
            Refusal::FdLimit(_) => "fd-limit",
            Refusal::NoMemory(_) => "no-memory",
            Refusal::SourceFailed(_) => "source-failed",
            Refusal::ProxyInvalid(proxy::Invalid::Missing(_)) => "proxy-missing",
            Refusal::ProxyInvalid(proxy::Invalid::TooLong) => "proxy-too-long",
            Refusal::ProxyInvalid(proxy::Invalid::Malformed(_)) => "proxy-malformed",
            Refusal::ProxyTimeout => "proxy-timeout",
            Refusal::ProxyClosed => "proxy-closed",
        }
    }

    /// Detail for the log only.
    pub fn detail(&self) -> Option<String> {
        match self {
            Refusal::BadVersion(v, foreign) => Some(match foreign {
                Some(f) => format!("version byte 0x{v:02x}: {}", f.name()),
                None => format!("version byte 0x{v:02x}"),
            }),
            Refusal::BadCommand(c) => Some(format!("command byte 0x{c:02x}")),
            Refusal::ClientError(s)
            | Refusal::Denied(s)
            | Refusal::ConfigError(s)
            | Refusal::ChainDenied(s)
            | Refusal::ResolveFailed(s)
            | Refusal::ConnectRefused(s)
            | Refusal::ConnectFailed(s)
            | Refusal::IdentUnavailable(s)
            | Refusal::BindFailed(s)
            | Refusal::LogFailed(s)
            | Refusal::FdLimit(s)
            | Refusal::NoMemory(s)
            | Refusal::SourceFailed(s)
            | Refusal::Unusable(_, s) => Some(s.clone()),
            Refusal::Parent(f) => Some(f.detail().to_string()),
            Refusal::ProxyInvalid(e) => Some(e.to_string()),
            Refusal::ProxyClosed => Some("closed within the PROXY header".into()),
            _ => None,
        }
    }
}

impl From<Invalid> for Refusal {
    fn from(e: Invalid) -> Refusal {
        match e {
            Invalid::Version(v) => Refusal::BadVersion(v, None),
            Invalid::Command(c) => Refusal::BadCommand(c),
            Invalid::UseridTooLong => Refusal::UseridTooLong,
            Invalid::HostnameTooLong => Refusal::HostnameTooLong,
            Invalid::EmptyHostname => Refusal::EmptyHostname,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(Refusal::BadVersion(5, Some(Foreign::Socks5)).reply(), None);
        assert_eq!(Refusal::RequestTimeout.reply(), None);
        assert_eq!(Refusal::BadCommand(9).reply(), Some(0x5B));
        assert_eq!(Refusal::IdentUnavailable("refused".into()).reply(), Some(0x5C));
        assert_eq!(Refusal::IdentMismatch.reply(), Some(0x5D));
        assert_eq!(Refusal::ConnectTimeout.reply(), Some(0x5B));
        // Faults of the host refuse with 0x5B, each with its own reason.
        for (r, reason) in [
            (Refusal::LogFailed("stuck".into()), "log-failed"),
            (Refusal::FdLimit("EMFILE".into()), "fd-limit"),
            (Refusal::NoMemory("ENOMEM".into()), "no-memory"),
        ] {
            assert_eq!((r.reply(), r.reason()), (Some(0x5B), reason));
        }
        assert_eq!(Refusal::SourceFailed("x".into()).reply(), Some(0x5B));
        // The chain's refusals: 91, each with its reason.
        for (r, reason) in [
            (Refusal::ChainDenied("chain:1".into()), "chain-denied"),
            (Refusal::Parent(Failed::Refused("x".into())), "parent-refused"),
            (Refusal::Parent(Failed::Unusable("x".into())), "parent-unusable"),
            (Refusal::Parent(Failed::Unreached("x".into())), "parent-failed"),
        ] {
            assert_eq!((r.reply(), r.reason()), (Some(0x5B), reason));
            assert_eq!(
                r.detail().as_deref(),
                Some(if reason == "chain-denied" { "chain:1" } else { "x" })
            );
        }
        let r = Refusal::Unusable(Unusable::Unspecified, "0.0.0.0:80".into());
        assert_eq!((r.reply(), r.reason()), (Some(0x5B), "dst-unspecified"));
        let r = Refusal::Unusable(Unusable::Compatible, "[::7f00:1]:80".into());
        assert_eq!((r.reply(), r.reason()), (Some(0x5B), "dst-ipv4-compatible"));
        // A balancer's bad header gets no SOCKS reply: nobody behind it
        // would read one.
        for r in [
            Refusal::ProxyInvalid(proxy::Invalid::Missing(4)),
            Refusal::ProxyInvalid(proxy::Invalid::TooLong),
            Refusal::ProxyTimeout,
            Refusal::ProxyClosed,
        ] {
            assert_eq!(r.reply(), None, "{r:?}");
            assert!(r.reason().starts_with("proxy-"), "{r:?}");
        }
    }
}
