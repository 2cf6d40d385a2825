//! What the target operating system is: distribution, init system,
//! initramfs tool, boot loader and installed kernels, read from files
//! under its root (nothing is executed).

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// The tool that builds the target's initramfs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InitramfsTool {
    /// Debian/Ubuntu's `update-initramfs` (`/etc/initramfs-tools`).
    InitramfsTools,
    /// dracut (Fedora, RHEL, SUSE; optional on Debian).
    Dracut,
}

/// The target's boot loader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bootloader {
    /// GRUB 2 with its config in `/boot/grub` (Debian) …
    Grub2,
    /// … or in `/boot/grub2` (Red Hat, SUSE).
    Grub2Redhat,
    /// GRUB legacy (`/boot/grub/menu.lst`).
    GrubLegacy,
    /// None recognised.
    Unknown,
}

/// An installed kernel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Kernel {
    /// Its release (`6.1.0-50-amd64`).
    pub version: String,
    /// The image, inside the target (`/boot/vmlinuz-6.1.0-50-amd64`).
    pub image: String,
    /// Its initramfs, inside the target, where one exists.
    pub initramfs: Option<String>,
    /// Its module tree, inside the target (`/lib/modules/6.1.0-50-amd64`).
    pub modules: String,
}

/// What the target is.
#[derive(Clone, Debug, Serialize)]
pub struct OsInfo {
    /// `ID` of os-release (`debian`).
    pub id: String,
    /// `VERSION_ID` (`12`).
    pub version_id: Option<String>,
    /// `PRETTY_NAME`.
    pub pretty_name: Option<String>,
    /// `systemd`, `sysvinit`, `upstart`, `openrc` or `unknown`.
    pub init: String,
    /// The initramfs tool, if one is installed.
    pub initramfs_tool: Option<InitramfsTool>,
    /// The boot loader.
    pub bootloader: Bootloader,
    /// BLS entries (`/boot/loader/entries/*.conf`) are in use.
    pub bls: bool,
    /// Installed kernels, newest first.
    pub kernels: Vec<Kernel>,
}

/// Compares kernel releases the way `linux-version sort` does: runs of
/// digits numerically, everything else byte-wise.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(p), Some(q)) if p.is_ascii_digit() && q.is_ascii_digit() => {
                let i = x.iter().take_while(|c| c.is_ascii_digit()).count();
                let j = y.iter().take_while(|c| c.is_ascii_digit()).count();
                let (n, m) = (&x[..i], &y[..j]);
                let n = &n[n.iter().take_while(|&&c| c == b'0').count()..];
                let m = &m[m.iter().take_while(|&&c| c == b'0').count()..];
                let o = n.len().cmp(&m.len()).then_with(|| n.cmp(m));
                if o != Ordering::Equal {
                    return o;
                }
                (x, y) = (&x[i..], &y[j..]);
            }
            (Some(p), Some(q)) => {
                if p != q {
                    return p.cmp(q);
                }
                (x, y) = (&x[1..], &y[1..]);
            }
        }
    }
}

fn exists(root: &Path, rel: &str) -> bool {
    std::fs::symlink_metadata(root.join(rel)).is_ok()
}

/// `KEY=value` of an os-release file, unquoted.
fn os_release_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let v = l.trim().strip_prefix(key)?.strip_prefix('=')?;
        Some(v.trim_matches(|c| c == '"' || c == '\'').to_string())
    })
}

/// The module tree of `version`: `/usr/lib/modules` or `/lib/modules`.
/// On a merged-/usr system (`/lib` a symlink to `usr/lib`) the real
/// directory is named, so files are never written through the link.
fn module_dir(root: &Path, version: &str) -> Option<String> {
    ["usr/lib/modules", "lib/modules"]
        .iter()
        .map(|d| format!("{d}/{version}"))
        .find(|d| root.join(d).join("modules.dep").exists() || root.join(d).join("kernel").is_dir())
        .map(|d| format!("/{d}"))
}

/// The installed kernels: `/boot/vmlinuz-*` (and `vmlinux-*`) with a
/// module tree, newest first.
pub fn kernels(root: &Path) -> Vec<Kernel> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(root.join("boot")) else {
        return out;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(version) = name
            .strip_prefix("vmlinuz-")
            .or_else(|| name.strip_prefix("vmlinux-"))
        else {
            continue;
        };
        let Some(modules) = module_dir(root, version) else {
            continue;
        };
        let initramfs = [
            format!("boot/initrd.img-{version}"),
            format!("boot/initramfs-{version}.img"),
        ]
        .into_iter()
        .find(|p| root.join(p).exists())
        .map(|p| format!("/{p}"));
        out.push(Kernel {
            version: version.to_string(),
            image: format!("/boot/{name}"),
            initramfs,
            modules,
        });
    }
    out.sort_by(|a, b| compare_versions(&b.version, &a.version));
    out.dedup_by(|a, b| a.version == b.version);
    out
}

/// Reads what the target at `root` is.
pub fn detect(root: &Path) -> OsInfo {
    let release = ["etc/os-release", "usr/lib/os-release"]
        .iter()
        .find_map(|p| std::fs::read_to_string(root.join(p)).ok())
        .unwrap_or_default();
    let init_link = std::fs::read_link(root.join("sbin/init"))
        .or_else(|_| std::fs::read_link(root.join("usr/sbin/init")))
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let init = if init_link.contains("systemd")
        || exists(root, "lib/systemd/systemd") && !exists(root, "sbin/init")
    {
        "systemd"
    } else if init_link.contains("openrc") || exists(root, "sbin/openrc") {
        "openrc"
    } else if exists(root, "sbin/upstart") {
        "upstart"
    } else if exists(root, "sbin/init") || exists(root, "usr/sbin/init") {
        // A real /sbin/init binary: sysvinit (systemd's is a link).
        if exists(root, "etc/inittab") {
            "sysvinit"
        } else {
            "systemd"
        }
    } else {
        "unknown"
    };
    let initramfs_tool = if ["usr/sbin/update-initramfs", "sbin/update-initramfs"]
        .iter()
        .any(|p| exists(root, p))
    {
        Some(InitramfsTool::InitramfsTools)
    } else if ["usr/bin/dracut", "usr/sbin/dracut", "sbin/dracut"]
        .iter()
        .any(|p| exists(root, p))
    {
        Some(InitramfsTool::Dracut)
    } else {
        None
    };
    let bootloader = if exists(root, "boot/grub2/grub.cfg") || exists(root, "etc/grub2.cfg") {
        Bootloader::Grub2Redhat
    } else if exists(root, "boot/grub/grub.cfg") || exists(root, "etc/default/grub") {
        Bootloader::Grub2
    } else if exists(root, "boot/grub/menu.lst") {
        Bootloader::GrubLegacy
    } else {
        Bootloader::Unknown
    };
    let bls = std::fs::read_dir(root.join("boot/loader/entries"))
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(".conf"))
        })
        .unwrap_or(false);
    OsInfo {
        id: os_release_value(&release, "ID").unwrap_or_else(|| "unknown".into()),
        version_id: os_release_value(&release, "VERSION_ID"),
        pretty_name: os_release_value(&release, "PRETTY_NAME"),
        init: init.to_string(),
        initramfs_tool,
        bootloader,
        bls,
        kernels: kernels(root),
    }
}

impl Kernel {
    /// The host path of its module tree.
    pub fn modules_on_host(&self, root: &Path) -> PathBuf {
        root.join(self.modules.trim_start_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_sort_like_linux_version() {
        let mut v = vec![
            "6.1.0-9-amd64",
            "6.1.0-10-amd64",
            "5.10.0-28-amd64",
            "6.1.0-50-amd64",
        ];
        v.sort_by(|a, b| compare_versions(b, a));
        assert_eq!(
            v,
            [
                "6.1.0-50-amd64",
                "6.1.0-10-amd64",
                "6.1.0-9-amd64",
                "5.10.0-28-amd64"
            ]
        );
    }

    #[test]
    fn detects_a_debian_layout() {
        let d = tempfile::tempdir().expect("tempdir");
        let r = d.path();
        for dir in [
            "etc/default",
            "boot/grub",
            "usr/sbin",
            "lib/systemd",
            "lib/modules/6.1.0-50-amd64/kernel",
            "lib/modules/6.1.0-9-amd64/kernel",
            "sbin",
        ] {
            std::fs::create_dir_all(r.join(dir)).expect("mkdir");
        }
        std::fs::write(
            r.join("etc/os-release"),
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
        )
        .expect("write");
        for f in [
            "boot/grub/grub.cfg",
            "usr/sbin/update-initramfs",
            "lib/systemd/systemd",
            "boot/vmlinuz-6.1.0-50-amd64",
            "boot/vmlinuz-6.1.0-9-amd64",
            "boot/initrd.img-6.1.0-50-amd64",
            "boot/vmlinuz-5.0-gone",
        ] {
            std::fs::write(r.join(f), "").expect("write");
        }
        std::os::unix::fs::symlink("/lib/systemd/systemd", r.join("sbin/init")).expect("symlink");
        let os = detect(r);
        assert_eq!(
            (os.id.as_str(), os.version_id.as_deref()),
            ("debian", Some("12"))
        );
        assert_eq!(os.init, "systemd");
        assert_eq!(os.initramfs_tool, Some(InitramfsTool::InitramfsTools));
        assert_eq!(os.bootloader, Bootloader::Grub2);
        assert_eq!(os.kernels[0].modules, "/lib/modules/6.1.0-50-amd64");
        let k: Vec<_> = os
            .kernels
            .iter()
            .map(|k| (k.version.as_str(), k.initramfs.is_some()))
            .collect();
        assert_eq!(k, [("6.1.0-50-amd64", true), ("6.1.0-9-amd64", false)]);
    }
}
