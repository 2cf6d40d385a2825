//! `/etc/hosts` for moved hosts: the addresses the operator gives for the
//! moved machines (`--hosts hosts.json`) replace the ones the file had.
//!
//! # Rules
//!
//! - Every name also stands for its shorter forms: `a.b.corp` is written
//!   as `a.b.corp a.b a`. A short form two entries share goes to the entry
//!   it is the full name of, else to the first, with a warning.
//! - Each address of an entry gets one line, `<address>\t<names>`, placed
//!   after the first line that named the host before, or appended under
//!   `# ferry: moved hosts`. A line that is already exactly that stays.
//! - The moved names are taken off every other line, the loopback lines
//!   included; a line left without names is commented out. Other names and
//!   lines (`localhost`, `ip6-*`, unrelated hosts) stay as they are.
//! - An entry without addresses only takes its names off the file (the
//!   host is then resolved by DNS), except the machine's own names.
//!   Entries of one name merge; repeated addresses count once.
//! - The machine's own `hostname` stays resolvable: unless it is a moved
//!   host with an address, Debian's `127.0.1.1 <fqdn> <short>` line is
//!   kept, set to the hostname when it names another, or added after the
//!   loopback lines when no line names the hostname.

use std::net::IpAddr;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::document::{is_comment_or_blank, Document, MARK};
use super::edit::Rewritten;
use super::fields::fields;

/// One moved host and its addresses after the move.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEntry {
    /// Its name, fully qualified or short.
    pub name: String,
    /// Its IPv4 and IPv6 addresses.
    #[serde(default)]
    pub addresses: Vec<String>,
}

/// The file `ferry adapt --hosts hosts.json` reads.
///
/// ```
/// use agent::adapt::rewrite::hosts::HostsFile;
///
/// let json = r#"{"hosts": [{"name": "web1.prod.corp", "addresses": ["10.1.0.5"]}]}"#;
/// let file: HostsFile = serde_json::from_str(json).expect("valid hosts file");
/// assert_eq!(file.hosts[0].addresses, ["10.1.0.5"]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostsFile {
    /// The moved hosts.
    pub hosts: Vec<HostEntry>,
}

/// Debian's address for the machine's own name.
const HOSTNAME_ADDRESS: &str = "127.0.1.1";
const REASON: &str = "address of a moved host";
const STALE: &str = "the moved hosts' names no longer resolve here";

/// `a.b.corp` → `a.b.corp`, `a.b`, `a` (a trailing dot dropped).
pub fn name_variants(name: &str) -> Vec<String> {
    let name = name.trim().trim_end_matches('.');
    let mut out = Vec::new();
    let mut rest = name;
    while !rest.is_empty() {
        out.push(rest.to_string());
        rest = rest.rsplit_once('.').map_or("", |(head, _)| head);
    }
    out
}

/// The lines one entry wants: one per valid address.
struct Wanted {
    addresses: Vec<IpAddr>,
    names: Vec<String>,
    satisfied: Vec<bool>,
    /// The first line that named the host before.
    anchor: Option<usize>,
}

/// Rewrites `/etc/hosts` as the module documentation describes.
pub fn rewrite_hosts(text: &str, hosts: &[HostEntry], hostname: Option<&str>) -> Rewritten {
    let mut doc = Document::new("/etc/hosts", text);
    let mut wanted = wanted(hosts, &mut doc);
    let lower = |names: &[String]| {
        names
            .iter()
            .map(|n| n.to_ascii_lowercase())
            .collect::<Vec<_>>()
    };
    let addressed: Vec<String> = wanted
        .iter()
        .filter(|w| !w.addresses.is_empty())
        .flat_map(|w| lower(&w.names))
        .collect();
    // The machine's own names, but for those a moved host with an address
    // takes.
    let own: Vec<String> = hostname
        .map(|h| {
            let short = h.split('.').next().unwrap_or(h);
            let variants = if short == h { vec![h] } else { vec![h, short] };
            variants.into_iter().map(str::to_string).collect()
        })
        .unwrap_or_default();
    let own: Vec<String> = own
        .into_iter()
        .filter(|o| !addressed.contains(&o.to_ascii_lowercase()))
        .collect();
    // What moved hosts without addresses give up stays with the machine.
    let moved: Vec<String> = wanted
        .iter()
        .flat_map(|w| lower(&w.names))
        .filter(|n| addressed.contains(n) || !own.iter().any(|o| o.eq_ignore_ascii_case(n)))
        .collect();
    for i in 0..doc.len() {
        take_moved_names(&mut doc, i, &mut wanted, &moved);
    }
    if let Some(hostname) = hostname {
        if !addressed.contains(&hostname.to_ascii_lowercase()) {
            keep_hostname(&mut doc, hostname, &own.join(" "));
        }
    }
    let mut header = false;
    for w in wanted.iter().filter(|w| !w.names.is_empty()) {
        for (address, done) in w.addresses.iter().zip(&w.satisfied) {
            if *done {
                continue;
            }
            let line = format!("{address}\t{}", w.names.join(" "));
            match w.anchor {
                Some(i) => doc.insert(Some(i), line, REASON),
                None => {
                    if !header {
                        doc.append(format!("{MARK}moved hosts"), REASON);
                        header = true;
                    }
                    doc.append(line, REASON);
                }
            }
        }
    }
    doc.finish()
}

/// The wanted lines: entries of one name merged, addresses parsed and
/// deduplicated, the shared short names settled.
fn wanted(hosts: &[HostEntry], doc: &mut Document) -> Vec<Wanted> {
    let mut merged: Vec<(&str, Vec<IpAddr>)> = Vec::new();
    for host in hosts {
        let name = host.name.trim().trim_end_matches('.');
        let at = match merged
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(at) => at,
            None => {
                merged.push((name, Vec::new()));
                merged.len() - 1
            }
        };
        for a in &host.addresses {
            match a.trim().parse::<IpAddr>() {
                Ok(ip) if !merged[at].1.contains(&ip) => merged[at].1.push(ip),
                Ok(_) => {}
                Err(_) => doc.warn(format!("hosts: {a} (for {name}) is no IP address")),
            }
        }
    }
    let full: Vec<String> = merged.iter().map(|(n, _)| n.to_ascii_lowercase()).collect();
    let mut taken: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for (n, (name, addresses)) in merged.into_iter().enumerate() {
        let mut names = Vec::new();
        for variant in name_variants(name) {
            let lower = variant.to_ascii_lowercase();
            if lower == "localhost" || lower.starts_with("localhost.") {
                doc.warn(format!("hosts: {name} is not moved: it is localhost"));
                continue;
            }
            // The entry whose full name this is owns it, else the first.
            let claimed = match full.iter().position(|f| *f == lower) {
                Some(owner) => owner != n,
                None => taken.contains(&lower),
            };
            if claimed {
                doc.warn(format!(
                    "hosts: {variant} is shared by several moved hosts; it stays with one"
                ));
                continue;
            }
            taken.push(lower);
            names.push(variant);
        }
        out.push(Wanted {
            satisfied: vec![false; addresses.len()],
            addresses,
            names,
            anchor: None,
        });
    }
    out
}

/// The byte ranges of the address and the names of an active hosts line
/// (a `#` starts a trailing comment).
fn parse(line: &str) -> Option<(Range<usize>, Vec<Range<usize>>)> {
    if is_comment_or_blank(line) {
        return None;
    }
    let end = line.find('#').unwrap_or(line.len());
    let ranges = fields(&line[..end]);
    let (first, names) = ranges.split_first()?;
    Some((first.clone(), names.to_vec()))
}

fn take_moved_names(doc: &mut Document, i: usize, wanted: &mut [Wanted], moved: &[String]) {
    let line = doc.line(i).to_string();
    let Some((address, names)) = parse(&line) else {
        return;
    };
    let ip = line[address.clone()].parse::<IpAddr>().ok();
    let on_line: Vec<&str> = names.iter().map(|r| &line[r.clone()]).collect();
    for w in wanted.iter_mut() {
        let same_names = on_line.len() == w.names.len()
            && on_line
                .iter()
                .zip(&w.names)
                .all(|(a, b)| a.eq_ignore_ascii_case(b));
        let slot = w.addresses.iter().position(|a| Some(*a) == ip);
        if let (true, Some(slot)) = (same_names, slot) {
            if !w.satisfied[slot] {
                w.satisfied[slot] = true;
                return;
            }
        }
    }
    let is_moved = |name: &str| moved.iter().any(|m| m.eq_ignore_ascii_case(name));
    if !on_line.iter().any(|n| is_moved(n)) {
        return;
    }
    // New lines go after the host's old line, not after a loopback line.
    let loopback = ip.is_some_and(|ip| ip.is_loopback());
    for w in wanted.iter_mut().filter(|_| !loopback) {
        let named = on_line
            .iter()
            .any(|n| w.names.iter().any(|m| m.eq_ignore_ascii_case(n)));
        if named && w.anchor.is_none() {
            w.anchor = Some(i);
        }
    }
    if on_line.iter().all(|n| is_moved(n)) {
        doc.comment_out(i, STALE);
        return;
    }
    // Take each moved name off with the whitespace before it.
    let mut new = line.clone();
    for (n, range) in names.iter().enumerate().rev() {
        if is_moved(on_line[n]) {
            let previous = if n == 0 { &address } else { &names[n - 1] };
            new.replace_range(previous.end..range.end, "");
        }
    }
    doc.replace(i, new, STALE);
}

/// Keeps `hostname` resolvable through the `127.0.1.1` line, which gets
/// `names` when it needs them.
fn keep_hostname(doc: &mut Document, hostname: &str, names: &str) {
    let mut own = None;
    let mut last_loopback = None;
    for i in 0..doc.len() {
        let line = doc.line(i);
        let Some((address, names)) = parse(line) else {
            continue;
        };
        if names
            .iter()
            .any(|r| line[r.clone()].eq_ignore_ascii_case(hostname))
        {
            return;
        }
        let ip = line[address.clone()].parse::<IpAddr>();
        if &line[address.clone()] == HOSTNAME_ADDRESS {
            own = own.or(Some((i, address, names)));
        } else if ip.is_ok_and(|ip| ip.is_ipv4() && ip.is_loopback()) {
            last_loopback = Some(i);
        }
    }
    let reason = "the machine's own name stays resolvable";
    match own {
        Some((i, address, old)) => {
            let line = doc.line(i);
            let new = match (old.first(), old.last()) {
                (Some(first), Some(last)) => {
                    format!("{}{names}{}", &line[..first.start], &line[last.end..])
                }
                _ => format!("{}\t{names}{}", &line[..address.end], &line[address.end..]),
            };
            doc.replace(i, new, reason);
        }
        None => doc.insert(
            last_loopback,
            format!("{HOSTNAME_ADDRESS}\t{names}"),
            reason,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapt::rewrite::testmap::{assert_warnings, check};

    const DEBIAN: &str = "127.0.0.1\tlocalhost
127.0.1.1\tweb1.prod.corp\tweb1

# The following lines are desirable for IPv6 capable hosts
::1     localhost ip6-localhost ip6-loopback
ff02::1 ip6-allnodes
ff02::2 ip6-allrouters
10.0.0.5\tweb1.prod.corp web1.prod web1
10.0.0.6\tdb1.prod.corp db1 # database
10.0.0.7\tcache1.prod.corp cache1 www
192.168.1.10\tnas.home
";

    fn entry(name: &str, addresses: &[&str]) -> HostEntry {
        HostEntry {
            name: name.into(),
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn moved() -> Vec<HostEntry> {
        vec![
            entry("web1.prod.corp", &["10.1.0.5"]),
            entry("db1.prod.corp.", &["10.1.0.6", "fd00::6"]),
            entry("cache1", &["10.1.0.7"]),
        ]
    }

    #[test]
    fn moved_hosts_get_their_new_addresses() {
        let hosts = moved();
        let stale = "# ferry: the moved hosts' names no longer resolve here: ";
        let web1 = format!("{stale}10.0.0.5\tweb1.prod.corp web1.prod web1\n10.1.0.5\tweb1.prod.corp web1.prod web1");
        let db1 = format!(
            "{stale}10.0.0.6\tdb1.prod.corp db1 # database\n\
             10.1.0.6\tdb1.prod.corp db1.prod db1\nfd00::6\tdb1.prod.corp db1.prod db1"
        );
        let cache1 = "10.0.0.7\tcache1.prod.corp www\n10.1.0.7\tcache1";
        let own = format!("{stale}127.0.1.1\tweb1.prod.corp\tweb1");
        let out = check(
            |t| rewrite_hosts(t, &hosts, Some("web1.prod.corp")),
            DEBIAN,
            &[
                ("127.0.1.1\tweb1.prod.corp\tweb1", &own),
                ("10.0.0.5\tweb1.prod.corp web1.prod web1", &web1),
                ("10.0.0.6\tdb1.prod.corp db1 # database", &db1),
                ("10.0.0.7\tcache1.prod.corp cache1 www", cache1),
            ],
            &[2, 8, 9, 10, 11, 12, 13, 14],
        );
        assert_eq!(
            out.edits[1].before,
            "10.0.0.5\tweb1.prod.corp web1.prod web1"
        );
        assert_eq!(out.edits[2].before, "", "inserted");
        assert_eq!(out.edits[2].reason, REASON);
    }

    #[test]
    fn the_hostname_line_follows_the_hostname() {
        let hosts = [entry("db1.prod.corp", &["10.1.0.6"])];
        let own = "127.0.1.1\tapp2.prod.corp app2";
        check(
            |t| rewrite_hosts(t, &hosts, Some("app2.prod.corp")),
            "127.0.0.1 localhost\n127.0.1.1\tapp1.prod.corp app1 # set by the installer\n",
            &[
                ("127.0.1.1\tapp1.prod.corp app1", own),
                (
                    "installer\n",
                    "installer\n# ferry: moved hosts\n10.1.0.6\tdb1.prod.corp db1.prod db1\n",
                ),
            ],
            &[2, 3, 4],
        );
    }

    #[test]
    fn a_missing_hostname_line_is_added_after_the_ipv4_loopback() {
        let rhel = "127.0.0.1   localhost localhost.localdomain localhost4 localhost4.localdomain4\n\
                    ::1         localhost localhost.localdomain localhost6 localhost6.localdomain6\n";
        check(
            |t| rewrite_hosts(t, &[], Some("app2")),
            rhel,
            &[("localdomain4\n", "localdomain4\n127.0.1.1\tapp2\n")],
            &[2],
        );
        // A hostname some line already names needs nothing.
        let named = "127.0.0.1 localhost\n10.2.0.9 app2.corp app2\n";
        assert!(rewrite_hosts(named, &[], Some("app2")).edits.is_empty());
    }

    #[test]
    fn a_hostless_entry_only_takes_its_names_off() {
        let hosts = [entry("old.corp", &[])];
        let text = "10.0.0.9 old.corp old other\n";
        check(
            |t| rewrite_hosts(t, &hosts, None),
            text,
            &[(" old.corp old", "")],
            &[1],
        );
    }

    #[test]
    fn shared_short_names_and_bad_addresses_are_warnings() {
        let hosts = [
            entry("web1.prod.corp", &["10.1.0.5"]),
            entry("web1.test.corp", &["10.2.0.5", "not-an-ip"]),
            entry("localhost", &["10.0.0.1"]),
        ];
        let out = rewrite_hosts("", &hosts, None);
        assert_eq!(
            out.text,
            "# ferry: moved hosts\n10.1.0.5\tweb1.prod.corp web1.prod web1\n10.2.0.5\tweb1.test.corp web1.test\n"
        );
        assert_warnings(&out.warnings, &["not-an-ip", "web1 is shared", "localhost"]);
    }

    /// Two cycles the property tests found.
    #[test]
    fn repeated_entries_and_the_own_short_name_settle_in_one_run() {
        let hosts = [
            entry("web1.test.corp", &[]),
            entry("db1.corp", &["fd00::5", "fd00::5"]),
            entry("DB1.corp.", &["fd00::5"]),
        ];
        check(
            |t| rewrite_hosts(t, &hosts, Some("web1.prod.corp")),
            "127.0.0.1 localhost\n",
            &[(
                "localhost\n",
                "localhost\n127.0.1.1\tweb1.prod.corp web1\n# ferry: moved hosts\nfd00::5\tdb1.corp db1\n",
            )],
            &[2, 3, 4],
        );
    }

    #[test]
    fn variants_run_from_the_full_name_to_the_first_label() {
        assert_eq!(name_variants("a.b.corp"), ["a.b.corp", "a.b", "a"]);
        assert_eq!(name_variants("a."), ["a"]);
        assert!(name_variants("").is_empty());
    }

    #[test]
    fn the_hosts_file_shape_parses() {
        let json = r#"{"hosts": [{"name": "web1.prod.corp", "addresses": ["10.1.0.5", "fd00::5"]},
                                 {"name": "gone.corp"}]}"#;
        let file: HostsFile = serde_json::from_str(json).expect("valid");
        assert_eq!(
            file.hosts[0],
            entry("web1.prod.corp", &["10.1.0.5", "fd00::5"])
        );
        assert!(file.hosts[1].addresses.is_empty());
    }
}
