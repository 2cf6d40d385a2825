//! Parsers for the text indexes `depmod` writes into `/lib/modules/VERSION`.
//!
//! | file | line format |
//! |------|-------------|
//! | `modules.alias` | `alias <pattern> <module>` |
//! | `modules.dep` | `kernel/…/x.ko[.xz\|.zst\|.gz]: dep1.ko dep2.ko` |
//! | `modules.builtin` | `kernel/…/x.ko` (a module compiled into the kernel) |
//! | `modules.softdep` | `softdep <module> pre: a b post: c` |
//! | `modules.builtin.modinfo` | NUL-separated `module.key=value` records |
//!
//! Blank lines and `#` comments are skipped. Module names are normalised the
//! way kmod does it: `-` becomes `_`, so `nvme-core` and `nvme_core` are the
//! same module. Alias patterns are normalised the same way outside bracket
//! expressions (kmod's `alias_normalize`), and so must be the modaliases
//! matched against them. In `modules.softdep`, words before the first `pre:`
//! or `post:` are ignored, as kmod ignores them. Every parser takes the file's
//! path only to name it in errors; none of them does I/O.

use std::path::Path;

use crate::error::ModulesError;

/// Suffixes a module file may carry, longest first.
const MODULE_SUFFIXES: [&str; 4] = [".ko.xz", ".ko.zst", ".ko.gz", ".ko"];

/// One `alias <pattern> <module>` line of `modules.alias`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasLine {
    /// The glob pattern, normalised with [`normalize_alias`].
    pub pattern: String,
    /// The module that claims the pattern, normalised.
    pub module: String,
}

/// One line of `modules.dep`: a loadable module and what it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepLine {
    /// The module's normalised name.
    pub module: String,
    /// The module file, relative to the tree (`kernel/drivers/…/x.ko.xz`).
    pub path: String,
    /// Normalised names of the modules it depends on, as `depmod` ordered
    /// them (the list is already transitive).
    pub deps: Vec<String>,
}

/// One `softdep` line of `modules.softdep`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SoftDep {
    /// The normalised module the soft dependencies belong to.
    pub module: String,
    /// Modules (or aliases, such as `crypto-crc32c`) to load before it.
    pub pre: Vec<String>,
    /// Modules (or aliases) to load after it.
    pub post: Vec<String>,
}

/// An `alias=` record of `modules.builtin.modinfo`: an alias claimed by a
/// module that is compiled into the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltinAlias {
    /// The built-in module's normalised name.
    pub module: String,
    /// The alias pattern, normalised with [`normalize_alias`].
    pub pattern: String,
}

/// Normalises a module name: `-` becomes `_`.
pub fn normalize_module_name(name: &str) -> String {
    name.replace('-', "_")
}

/// Normalises an alias pattern or a modalias as kmod does: `-` becomes `_`
/// except inside bracket expressions, whose ranges need their `-`.
pub fn normalize_alias(alias: &str) -> String {
    let mut out = String::with_capacity(alias.len());
    let mut in_bracket = false;
    for c in alias.chars() {
        match c {
            '[' => in_bracket = true,
            ']' => in_bracket = false,
            '-' if !in_bracket => {
                out.push('_');
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

/// The normalised module name of a module file path
/// (`kernel/drivers/nvme/host/nvme-core.ko.xz` → `nvme_core`), or `None`
/// when the path does not end in a module suffix.
pub fn module_name_from_path(path: &str) -> Option<String> {
    let file = path.rsplit('/').next().unwrap_or(path);
    MODULE_SUFFIXES
        .iter()
        .find_map(|suffix| file.strip_suffix(suffix))
        .filter(|stem| !stem.is_empty())
        .map(normalize_module_name)
}

/// Yields `(1-based line number, trimmed line)` for lines that are neither
/// blank nor comments.
fn content_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
}

/// Builds a parse error for `path` at `line`.
fn parse_error(path: &Path, line: usize, problem: String) -> ModulesError {
    ModulesError::Parse {
        path: path.to_path_buf(),
        line,
        problem,
    }
}

/// Parses `modules.alias`.
pub fn parse_alias(path: &Path, text: &str) -> Result<Vec<AliasLine>, ModulesError> {
    content_lines(text)
        .map(|(number, line)| {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["alias", pattern, module] => Ok(AliasLine {
                    pattern: normalize_alias(pattern),
                    module: normalize_module_name(module),
                }),
                _ => Err(parse_error(
                    path,
                    number,
                    format!("expected `alias <pattern> <module>`, found `{line}`"),
                )),
            }
        })
        .collect()
}

/// Parses `modules.dep`.
pub fn parse_dep(path: &Path, text: &str) -> Result<Vec<DepLine>, ModulesError> {
    content_lines(text)
        .map(|(number, line)| {
            let Some((module_path, deps)) = line.split_once(':') else {
                return Err(parse_error(
                    path,
                    number,
                    format!("expected `<module path>: <dependencies>`, found `{line}`"),
                ));
            };
            let module_path = module_path.trim();
            let name_of = |file: &str| {
                module_name_from_path(file).ok_or_else(|| {
                    parse_error(
                        path,
                        number,
                        format!("`{file}` is not a module file (.ko, .ko.xz, .ko.zst, .ko.gz)"),
                    )
                })
            };
            Ok(DepLine {
                module: name_of(module_path)?,
                path: module_path.to_owned(),
                deps: deps
                    .split_whitespace()
                    .map(name_of)
                    .collect::<Result<_, _>>()?,
            })
        })
        .collect()
}

/// Parses `modules.builtin` into normalised module names.
pub fn parse_builtin(path: &Path, text: &str) -> Result<Vec<String>, ModulesError> {
    content_lines(text)
        .map(|(number, line)| {
            module_name_from_path(line).ok_or_else(|| {
                parse_error(
                    path,
                    number,
                    format!("expected a module path ending in .ko, found `{line}`"),
                )
            })
        })
        .collect()
}

/// Parses `modules.softdep` (also the `softdep` lines of a modprobe.d file,
/// once its other commands are filtered out).
pub fn parse_softdep(path: &Path, text: &str) -> Result<Vec<SoftDep>, ModulesError> {
    content_lines(text)
        .map(|(number, line)| {
            let mut words = line.split_whitespace();
            let (Some("softdep"), Some(module)) = (words.next(), words.next()) else {
                return Err(parse_error(
                    path,
                    number,
                    format!("expected `softdep <module> pre: … post: …`, found `{line}`"),
                ));
            };
            let mut softdep = SoftDep {
                module: normalize_module_name(module),
                ..SoftDep::default()
            };
            // Which list the next words go to; `None` before any `pre:` or
            // `post:`, where kmod ignores them.
            let mut list: Option<&mut Vec<String>> = None;
            for word in words {
                match word {
                    "pre:" => list = Some(&mut softdep.pre),
                    "post:" => list = Some(&mut softdep.post),
                    name => {
                        if let Some(list) = list.as_deref_mut() {
                            list.push(name.to_owned());
                        }
                    }
                }
            }
            Ok(softdep)
        })
        .collect()
}

/// Parses the `alias=` records of `modules.builtin.modinfo` (other keys are
/// skipped). Records are NUL-separated; errors count records from 1.
pub fn parse_builtin_modinfo(path: &Path, bytes: &[u8]) -> Result<Vec<BuiltinAlias>, ModulesError> {
    let mut aliases = Vec::new();
    for (index, record) in bytes.split(|&b| b == 0).enumerate() {
        if record.is_empty() {
            continue;
        }
        let number = index + 1;
        let record = std::str::from_utf8(record)
            .map_err(|_| parse_error(path, number, "record is not UTF-8".to_owned()))?;
        let parsed = record
            .split_once('=')
            .and_then(|(key, value)| Some((key.split_once('.')?, value)));
        let Some(((module, key), value)) = parsed else {
            return Err(parse_error(
                path,
                number,
                format!("expected `<module>.<key>=<value>`, found `{record}`"),
            ));
        };
        if key == "alias" {
            aliases.push(BuiltinAlias {
                module: normalize_module_name(module),
                pattern: normalize_alias(value),
            });
        }
    }
    Ok(aliases)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str) -> &Path {
        Path::new(name)
    }

    #[test]
    fn alias_lines() {
        let text = "# Aliases extracted from modules themselves.\n\
                    alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n\n\
                    alias xen-backend:vbd xen-blkback\n\
                    alias usb:v13FDp3940d0[0-2]* usb-storage\n";
        let lines = parse_alias(p("modules.alias"), text).expect("valid alias file");
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].module, "virtio_pci");
        assert_eq!(lines[1].pattern, "xen_backend:vbd");
        assert_eq!(lines[1].module, "xen_blkback");
        assert_eq!(lines[2].pattern, "usb:v13FDp3940d0[0-2]*");
    }

    #[test]
    fn alias_error_names_file_and_line() {
        let err = parse_alias(p("/x/modules.alias"), "# c\nalias a b\nalias broken\n")
            .expect_err("third line is malformed");
        assert_eq!(
            err.to_string(),
            "/x/modules.alias:3: expected `alias <pattern> <module>`, found `alias broken`"
        );
    }

    #[test]
    fn dep_lines() {
        let text = "kernel/drivers/nvme/host/nvme.ko.xz: kernel/drivers/nvme/host/nvme-core.ko.xz kernel/block/t10-pi.ko.xz\n\
                    kernel/drivers/net/ethernet/intel/e1000/e1000.ko.zst:\n";
        let lines = parse_dep(p("modules.dep"), text).expect("valid dep file");
        assert_eq!(lines[0].module, "nvme");
        assert_eq!(lines[0].path, "kernel/drivers/nvme/host/nvme.ko.xz");
        assert_eq!(lines[0].deps, ["nvme_core", "t10_pi"]);
        assert_eq!(lines[1].module, "e1000");
        assert!(lines[1].deps.is_empty());
    }

    #[test]
    fn dep_errors() {
        let err = parse_dep(p("modules.dep"), "kernel/a.ko:\nkernel/b.ko kernel/c.ko\n")
            .expect_err("missing colon");
        assert!(
            err.to_string().starts_with("modules.dep:2: expected"),
            "{err}"
        );
        let err = parse_dep(p("modules.dep"), "kernel/a.ko: kernel/readme.txt\n")
            .expect_err("not a module");
        assert!(
            err.to_string()
                .contains("`kernel/readme.txt` is not a module file"),
            "{err}"
        );
    }

    #[test]
    fn builtin_lines() {
        let names = parse_builtin(
            p("modules.builtin"),
            "kernel/drivers/nvmem/nvmem_core.ko\nkernel/fs/ext4/ext4.ko\n",
        )
        .expect("valid builtin file");
        assert_eq!(names, ["nvmem_core", "ext4"]);
        let err = parse_builtin(p("modules.builtin"), "kernel/fs/ext4/\n").expect_err("no suffix");
        assert!(err.to_string().starts_with("modules.builtin:1:"), "{err}");
    }

    #[test]
    fn softdep_lines() {
        let text = "# Soft dependencies extracted from modules themselves.\n\
                    softdep ext4 pre: crypto-crc32c\n\
                    softdep cifs gcm\n\
                    softdep nf-tables pre: a b post: c-d\n";
        let deps = parse_softdep(p("modules.softdep"), text).expect("valid softdep file");
        assert_eq!(deps[0].module, "ext4");
        assert_eq!(deps[0].pre, ["crypto-crc32c"]);
        assert_eq!(
            deps[1],
            SoftDep {
                module: "cifs".into(),
                ..SoftDep::default()
            }
        );
        assert_eq!(deps[2].module, "nf_tables");
        assert_eq!(deps[2].pre, ["a", "b"]);
        assert_eq!(deps[2].post, ["c-d"]);
        let err = parse_softdep(p("modules.softdep"), "softdep\n").expect_err("no module");
        assert!(err.to_string().starts_with("modules.softdep:1:"), "{err}");
    }

    #[test]
    fn builtin_modinfo_records() {
        let bytes = b"rtc_cmos.alias=platform:rtc_cmos\0rtc_cmos.license=GPL\0\0xen_kbdfront.alias=xen:vkbd\0";
        let aliases = parse_builtin_modinfo(p("modules.builtin.modinfo"), bytes).expect("valid");
        assert_eq!(aliases.len(), 2);
        assert_eq!(aliases[1].module, "xen_kbdfront");
        assert_eq!(aliases[1].pattern, "xen:vkbd");
        let err = parse_builtin_modinfo(p("m"), b"a.b=c\0junk\0").expect_err("no key");
        assert_eq!(
            err.to_string(),
            "m:2: expected `<module>.<key>=<value>`, found `junk`"
        );
    }

    #[test]
    fn normalisation() {
        assert_eq!(
            normalize_alias("platform:dw-apb-uart"),
            "platform:dw_apb_uart"
        );
        assert_eq!(normalize_alias("d0[0-2]-x"), "d0[0-2]_x");
        assert_eq!(
            module_name_from_path("kernel/lib/crc64-rocksoft.ko"),
            Some("crc64_rocksoft".into())
        );
        assert_eq!(module_name_from_path("x.ko.zst"), Some("x".into()));
        assert_eq!(module_name_from_path(".ko"), None);
    }
}
