//! The host names the node answers to (`[http] allowed_hosts`): a defence
//! against DNS rebinding, where a web page makes its own name resolve to
//! 127.0.0.1 and then talks to a node listening there. The browser still
//! sends the page's name in `Host`, so a node that answers only to its own
//! names is out of the page's reach.

use std::net::{IpAddr, SocketAddr};

/// One allowed host.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry {
    /// A name or address on any port.
    Name(String),
    /// A name or address on one port.
    NamePort(String, u16),
    /// Every name ending with this suffix (`.example.com` from `*.example.com`).
    Suffix(String),
}

/// The hosts a node answers to.
#[derive(Clone, Debug)]
pub(crate) struct AllowedHosts {
    any: bool,
    entries: Vec<Entry>,
}

/// Splits an authority (`host`, `host:port`, `[v6]`, `[v6]:port`) into a
/// host (IPv6 in brackets, no trailing dot, ASCII only, case as given) and
/// a port. It runs for every request, so it borrows instead of copying.
fn split(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, rest) = authority.split_at(end + 1);
        match rest {
            "" => (host, None),
            _ => (host, Some(rest.strip_prefix(':')?.parse().ok()?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p.parse().ok()?)),
            Some(_) => return None,
            None => (authority, None),
        }
    };
    let host = host.trim_end_matches('.');
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b));
    ok.then_some((host, port))
}

/// Checks one `allowed_hosts` entry: `*`, `*.suffix`, `name`, `name:port`,
/// an IP address (IPv6 in brackets), with or without a port.
pub fn check_allowed_host(entry: &str) -> Result<(), String> {
    parse_entry(entry).map(|_| ()).ok_or_else(|| {
        format!(
            "{entry:?} is not a host such as \"example.com\", \"example.com:7070\", \"*.example.com\", \"[::1]\" or \"*\" (no scheme, no path)"
        )
    })
}

/// `None` for `*`.
fn parse_entry(entry: &str) -> Option<Option<Entry>> {
    if entry == "*" {
        return Some(None);
    }
    if let Some(suffix) = entry.strip_prefix("*.") {
        let (host, port) = split(suffix)?;
        return (port.is_none() && !host.starts_with('['))
            .then(|| Some(Entry::Suffix(format!(".{}", host.to_ascii_lowercase()))));
    }
    match split(entry)? {
        (host, Some(port)) => Some(Some(Entry::NamePort(host.to_ascii_lowercase(), port))),
        (host, None) => Some(Some(Entry::Name(host.to_ascii_lowercase()))),
    }
}

impl AllowedHosts {
    /// The configured list, or the default for a listener bound to `listen`:
    /// on a loopback address, `localhost`, `127.0.0.1`, `[::1]` and the
    /// address itself, on any port; on any other address (a wildcard
    /// included), every host, since the names clients use are not known.
    pub fn new(configured: Option<&[String]>, listen: SocketAddr) -> AllowedHosts {
        match configured {
            Some(list) => {
                let mut hosts = AllowedHosts {
                    any: false,
                    entries: Vec::new(),
                };
                for e in list {
                    match parse_entry(e) {
                        Some(Some(entry)) => hosts.entries.push(entry),
                        Some(None) => hosts.any = true,
                        // Checked with the configuration; ignored here.
                        None => tracing::warn!(entry = %e, "ignoring a malformed allowed host"),
                    }
                }
                hosts
            }
            None if listen.ip().is_loopback() => {
                let own = match listen.ip() {
                    IpAddr::V4(ip) => ip.to_string(),
                    IpAddr::V6(ip) => format!("[{ip}]"),
                };
                let mut entries: Vec<Entry> = ["localhost", "127.0.0.1", "[::1]"]
                    .iter()
                    .map(|h| Entry::Name((*h).to_owned()))
                    .collect();
                if !entries.contains(&Entry::Name(own.clone())) {
                    entries.push(Entry::Name(own));
                }
                AllowedHosts {
                    any: false,
                    entries,
                }
            }
            None => AllowedHosts {
                any: true,
                entries: Vec::new(),
            },
        }
    }

    /// Whether a request naming `authority` (its `Host` header or
    /// `:authority`) is served; a request naming none is.
    pub fn allows(&self, authority: Option<&str>) -> bool {
        if self.any {
            return true;
        }
        let Some(authority) = authority else {
            return true;
        };
        let Some((host, port)) = split(authority) else {
            return false;
        };
        // Entries are lowercase; `split` let only ASCII through, so the
        // suffix's cut falls on a character boundary.
        self.entries.iter().any(|e| match e {
            Entry::Name(n) => n.eq_ignore_ascii_case(host),
            Entry::NamePort(n, p) => n.eq_ignore_ascii_case(host) && port.unwrap_or(80) == *p,
            Entry::Suffix(s) => host
                .len()
                .checked_sub(s.len())
                .and_then(|at| host.get(at..))
                .is_some_and(|tail| tail.eq_ignore_ascii_case(s)),
        })
    }

    /// For the log: `*`, or the entries.
    pub fn describe(&self) -> String {
        if self.any {
            return "*".into();
        }
        self.entries
            .iter()
            .map(|e| match e {
                Entry::Name(n) => n.clone(),
                Entry::NamePort(n, p) => format!("{n}:{p}"),
                Entry::Suffix(s) => format!("*{s}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(list: &[&str]) -> AllowedHosts {
        let list: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
        AllowedHosts::new(Some(&list), "0.0.0.0:7070".parse().unwrap())
    }

    #[test]
    fn loopback_default_allows_loopback_names_on_any_port() {
        let h = AllowedHosts::new(None, "127.0.0.1:7070".parse().unwrap());
        for ok in [
            "localhost:7070",
            "LOCALHOST",
            "localhost.:7070",
            "127.0.0.1:7070",
            "127.0.0.1:8080",
            "[::1]:7070",
            "[::1]",
        ] {
            assert!(h.allows(Some(ok)), "{ok}");
        }
        for bad in [
            "evil.example:7075",
            "evil.example",
            "127.0.0.1.evil.example",
            "localhost:x",
            "",
            "a b",
        ] {
            assert!(!h.allows(Some(bad)), "{bad}");
        }
        assert!(h.allows(None));
        let h = AllowedHosts::new(None, "127.0.0.9:7070".parse().unwrap());
        assert!(h.allows(Some("127.0.0.9:7070")));
    }

    #[test]
    fn wildcard_listen_allows_any_host() {
        let h = AllowedHosts::new(None, "0.0.0.0:7070".parse().unwrap());
        assert!(h.allows(Some("evil.example")));
        let h = AllowedHosts::new(None, "10.0.0.5:7070".parse().unwrap());
        assert!(h.allows(Some("anything:1")));
    }

    #[test]
    fn configured_entries() {
        let h = hosts(&[
            "node.example.com",
            "10.0.0.5:7070",
            "*.svc.example",
            "[fe80::1]",
        ]);
        assert!(h.allows(Some("node.example.com:7070")));
        assert!(h.allows(Some("NODE.example.com")));
        assert!(h.allows(Some("10.0.0.5:7070")));
        assert!(!h.allows(Some("10.0.0.5:7071")));
        assert!(!h.allows(Some("10.0.0.5")));
        assert!(h.allows(Some("a.svc.example:1")));
        assert!(h.allows(Some("A.SVC.Example.:1")));
        assert!(hosts(&["Node.Example.COM", "*.Svc.Example"]).allows(Some("node.example.com")));
        assert!(hosts(&["*.Svc.Example"]).allows(Some("b.svc.EXAMPLE")));
        assert!(!h.allows(Some("svc.example")));
        assert!(!h.allows(Some("evilsvc.example")));
        assert!(h.allows(Some("[FE80::1]:7070")));
        assert!(!h.allows(Some("localhost")));
        assert!(hosts(&["*"]).allows(Some("whatever")));
        assert!(!hosts(&[]).allows(Some("localhost")));
    }

    #[test]
    fn malformed_entries_are_refused() {
        for bad in ["http://x", "x/y", "", "x:port", "*.", "a b", "*x", "::1"] {
            assert!(check_allowed_host(bad).is_err(), "{bad}");
        }
        for ok in ["x", "x:1", "*.x.y", "[::1]:7070", "*", "127.0.0.1"] {
            assert!(check_allowed_host(ok).is_ok(), "{ok}");
        }
    }
}
