//! The ramdisk's network: static from the kernel's `ip=` argument, or DHCP
//! with busybox udhcpc on every NIC that has a link.
//!
//! `ip=` follows the kernel's syntax (Documentation/admin-guide/nfs/
//! nfsroot.rst): `ip=dhcp`, `ip=off`, or
//! `client-ip:server-ip:gw-ip:netmask:hostname:device:autoconf[:dns0:dns1]`;
//! an empty client address, or autoconf `dhcp`/`on`/`any`, means DHCP (on
//! `device` when given). Addresses are applied with busybox `ip`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// What `ip=` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IpConfig {
    /// DHCP, on this device or on every NIC with a link.
    Dhcp {
        /// The device, if named.
        device: Option<String>,
    },
    /// No network configuration.
    Off,
    /// A static address.
    Static {
        /// The address.
        client: String,
        /// The prefix length.
        prefix: u8,
        /// The default gateway.
        gateway: Option<String>,
        /// The device, if named (else the first NIC with a link).
        device: Option<String>,
        /// Name servers.
        dns: Vec<String>,
    },
}

/// Netmask → prefix length (`255.255.255.0` → 24); a bare number is taken
/// as the prefix.
fn prefix_of(mask: &str) -> Option<u8> {
    if let Ok(p) = mask.parse::<u8>() {
        return (p <= 32).then_some(p);
    }
    let addr: std::net::Ipv4Addr = mask.parse().ok()?;
    let bits = u32::from(addr);
    (bits.leading_ones() + bits.trailing_zeros() == 32).then_some(bits.leading_ones() as u8)
}

/// Parses the value of `ip=` (absent: DHCP everywhere).
pub fn parse_ip(value: Option<&str>) -> Result<IpConfig, String> {
    let Some(v) = value else {
        return Ok(IpConfig::Dhcp { device: None });
    };
    match v {
        "dhcp" | "on" | "any" | "both" | "" => return Ok(IpConfig::Dhcp { device: None }),
        "off" | "none" => return Ok(IpConfig::Off),
        _ => {}
    }
    let f: Vec<&str> = v.split(':').collect();
    let field = |i: usize| f.get(i).copied().filter(|s| !s.is_empty());
    let device = field(5).map(String::from);
    let autoconf = field(6).unwrap_or("");
    let Some(client) = field(0) else {
        return Ok(IpConfig::Dhcp { device });
    };
    if matches!(autoconf, "dhcp" | "on" | "any" | "both" | "bootp") {
        return Ok(IpConfig::Dhcp { device });
    }
    client
        .parse::<std::net::Ipv4Addr>()
        .map_err(|_| format!("ip={v}: client address {client:?} is not an IPv4 address"))?;
    let prefix = match field(3) {
        Some(m) => prefix_of(m).ok_or_else(|| format!("ip={v}: netmask {m:?} is not a netmask"))?,
        None => 24,
    };
    Ok(IpConfig::Static {
        client: client.to_string(),
        prefix,
        gateway: field(2).map(String::from),
        device,
        dns: [field(7), field(8)]
            .into_iter()
            .flatten()
            .map(String::from)
            .collect(),
    })
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Sets every NIC up without waiting, so their links negotiate while the
/// agent waits for disks.
pub fn links_up(nics: &[String]) {
    for n in nics {
        let _ = ip(&["link", "set", n, "up"]);
    }
}

/// Brings `nic` up and waits (bounded) for its carrier.
pub fn link_up(root: &Path, nic: &str, wait: Duration) -> bool {
    let _ = ip(&["link", "set", nic, "up"]);
    let carrier = root.join("sys/class/net").join(nic).join("carrier");
    let start = Instant::now();
    loop {
        if std::fs::read_to_string(&carrier).is_ok_and(|c| c.trim() == "1") {
            return true;
        }
        if start.elapsed() > wait {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Configures the network; returns one line per configured interface, or
/// why nothing was configured.
pub fn configure(root: &Path, cfg: &IpConfig, nics: &[String]) -> Result<Vec<String>, String> {
    let _ = ip(&["link", "set", "lo", "up"]);
    match cfg {
        IpConfig::Off => Ok(Vec::new()),
        IpConfig::Static {
            client,
            prefix,
            gateway,
            device,
            dns,
        } => {
            let dev = match device {
                Some(d) => d.clone(),
                None => nics
                    .iter()
                    .find(|n| link_up(root, n, Duration::from_secs(3)))
                    .cloned()
                    .ok_or("ip=: no NIC has a link")?,
            };
            link_up(root, &dev, Duration::from_secs(3));
            ip(&["addr", "add", &format!("{client}/{prefix}"), "dev", &dev])?;
            if let Some(gw) = gateway {
                ip(&["route", "replace", "default", "via", gw, "dev", &dev])?;
            }
            if !dns.is_empty() {
                let text: String = dns.iter().map(|d| format!("nameserver {d}\n")).collect();
                let _ = std::fs::write(root.join("etc/resolv.conf"), text);
            }
            Ok(vec![format!("{dev} {client}/{prefix} (static)")])
        }
        IpConfig::Dhcp { device } => {
            let candidates: Vec<String> = match device {
                Some(d) => vec![d.clone()],
                None => nics.to_vec(),
            };
            let mut done = Vec::new();
            let mut why = Vec::new();
            for nic in &candidates {
                if !link_up(root, nic, Duration::from_secs(5)) {
                    why.push(format!("{nic}: no link"));
                    continue;
                }
                let out = Command::new("udhcpc")
                    .args(["-i", nic, "-n", "-q", "-f", "-t", "5", "-T", "2"])
                    .args(["-s", "/usr/share/udhcpc/default.script"])
                    .output();
                match out {
                    Ok(o) if o.status.success() => {
                        let text = String::from_utf8_lossy(&o.stdout);
                        let line = text
                            .lines()
                            .find(|l| l.contains("bound to"))
                            .map(|l| l.trim_start_matches("udhcpc: ").to_string())
                            .unwrap_or_else(|| format!("{nic} (dhcp)"));
                        done.push(line);
                    }
                    Ok(o) => why.push(format!(
                        "{nic}: udhcpc got no lease ({})",
                        String::from_utf8_lossy(&o.stderr)
                            .lines()
                            .last()
                            .unwrap_or("")
                            .trim()
                    )),
                    Err(e) => why.push(format!("{nic}: running udhcpc: {e}")),
                }
            }
            if done.is_empty() {
                Err(if why.is_empty() {
                    "no NICs".to_string()
                } else {
                    why.join("; ")
                })
            } else {
                Ok(done)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_ip_syntax() {
        assert_eq!(parse_ip(None), Ok(IpConfig::Dhcp { device: None }));
        assert_eq!(parse_ip(Some("off")), Ok(IpConfig::Off));
        assert_eq!(
            parse_ip(Some("::::h:eth1:dhcp")),
            Ok(IpConfig::Dhcp {
                device: Some("eth1".into())
            })
        );
        assert_eq!(
            parse_ip(Some(
                "10.0.2.15::10.0.2.2:255.255.255.0:agent:eth0:none:10.0.2.3"
            )),
            Ok(IpConfig::Static {
                client: "10.0.2.15".into(),
                prefix: 24,
                gateway: Some("10.0.2.2".into()),
                device: Some("eth0".into()),
                dns: vec!["10.0.2.3".into()],
            })
        );
        assert!(parse_ip(Some("10.0.0.300:::255.0.0.0::eth0:off")).is_err());
        assert!(parse_ip(Some("10.0.0.3:::255.0.255.0::eth0:off")).is_err());
    }
}
