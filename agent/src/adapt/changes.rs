//! Every change `ferry adapt` makes to a target root, backed up and
//! undoable.
//!
//! Before a file is first changed, its original goes to
//! `<root>/var/lib/ferry/adapt/<run>/files/<path>` (mode, owner and times
//! kept). Files ferry writes are written atomically (a temporary file in
//! the same directory, fsynced, renamed over the original). Files that a
//! tool run in the chroot rewrites (`update-initramfs`, `update-grub`) are
//! backed up before the tool runs and recorded after.
//!
//! When a step fails, [`Changes::rollback`] restores every original and
//! removes every created file, newest first, so nothing is left
//! half-changed; the backups and a report saying what failed stay in the
//! run directory. The report (`report.json` and `report.txt`) lists each
//! change with its reason and, for edited text files, each edited line.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use super::rewrite::Edit;
use super::AdaptError;

/// Where, under the target root, each run's backups and report go.
pub const ADAPT_DIR: &str = "var/lib/ferry/adapt";

/// What happened to a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Its content changed.
    Modified,
    /// It did not exist before.
    Created,
    /// It was deleted.
    Removed,
}

/// One changed file.
#[derive(Clone, Debug, Serialize)]
pub struct Change {
    /// The path inside the target (`/etc/fstab`).
    pub path: String,
    /// What happened to it.
    pub action: Action,
    /// Why.
    pub reason: String,
    /// The edited lines, for text rewrites.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub edits: Vec<Edit>,
    /// Where its original is kept (inside the target), if it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
}

/// The changes of one `ferry adapt` run on one target root.
#[derive(Debug)]
pub struct Changes {
    root: PathBuf,
    run: String,
    applied: Vec<Change>,
    backed_up: Vec<String>,
    /// Files backed up before a tool runs, to be recorded after it.
    pending: Vec<(String, String, bool)>,
}

/// `rel` is a relative path without `..`: the change stays inside the root.
fn check_rel(rel: &str) -> Result<&Path, AdaptError> {
    let p = Path::new(rel.trim_start_matches('/'));
    if p.as_os_str().is_empty() || p.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(AdaptError::Internal(format!(
            "refusing to change {rel:?}: not a plain path inside the target"
        )));
    }
    Ok(p)
}

fn io_err(action: &'static str, path: &Path, e: std::io::Error) -> AdaptError {
    AdaptError::Io {
        action,
        path: path.display().to_string(),
        source: e,
    }
}

/// Refuses to follow a symlink planted anywhere along `rel` under `root`:
/// every existing ancestor must be a real directory.
fn check_no_symlink_parents(root: &Path, rel: &Path) -> Result<(), AdaptError> {
    let mut p = root.to_path_buf();
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            p.push(c);
            match fs::symlink_metadata(&p) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(AdaptError::Internal(format!(
                        "{} is a symbolic link; ferry does not write through it",
                        p.display()
                    )))
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Writes `data` to `path` atomically: temporary file, fsync, rename,
/// fsync of the directory. `like` gives mode and owner.
pub(crate) fn write_atomic(
    path: &Path,
    data: &[u8],
    like: Option<&fs::Metadata>,
) -> Result<(), AdaptError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.ferry-tmp"));
    let mut f = fs::File::create(&tmp).map_err(|e| io_err("creating", &tmp, e))?;
    f.write_all(data).map_err(|e| io_err("writing", &tmp, e))?;
    if let Some(m) = like {
        fs::set_permissions(&tmp, fs::Permissions::from_mode(m.mode() & 0o7777))
            .map_err(|e| io_err("setting the mode of", &tmp, e))?;
        std::os::unix::fs::chown(&tmp, Some(m.uid()), Some(m.gid()))
            .map_err(|e| io_err("setting the owner of", &tmp, e))?;
    }
    f.sync_all().map_err(|e| io_err("syncing", &tmp, e))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| io_err("renaming into place", path, e))?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

impl Changes {
    /// Starts a run on `root`, named `run` (a UTC time stamp).
    pub fn begin(root: &Path, run: &str) -> Changes {
        Changes {
            root: root.to_path_buf(),
            run: run.to_string(),
            applied: Vec::new(),
            backed_up: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// The run directory, inside the target (`var/lib/ferry/adapt/<run>`).
    pub fn run_dir_rel(&self) -> String {
        format!("{ADAPT_DIR}/{}", self.run)
    }

    /// The run directory on the host.
    pub fn run_dir(&self) -> PathBuf {
        self.root.join(self.run_dir_rel())
    }

    /// The changes applied so far.
    pub fn applied(&self) -> &[Change] {
        &self.applied
    }

    /// The host path of `rel` inside the target.
    pub fn path(&self, rel: &str) -> Result<PathBuf, AdaptError> {
        let r = check_rel(rel)?;
        check_no_symlink_parents(&self.root, r)?;
        Ok(self.root.join(r))
    }

    /// Copies the original of `rel` into the run's backups (once per run);
    /// returns the backup's path inside the target, or `None` when `rel`
    /// does not exist.
    fn backup(&mut self, rel: &str) -> Result<Option<String>, AdaptError> {
        let r = check_rel(rel)?;
        let src = self.path(rel)?;
        let backup_rel = format!("{}/files/{}", self.run_dir_rel(), r.display());
        if self.backed_up.iter().any(|b| b == rel) {
            return Ok(Some(format!("/{backup_rel}")));
        }
        let meta = match fs::symlink_metadata(&src) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("inspecting", &src, e)),
        };
        let dst = self.root.join(&backup_rel);
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent).map_err(|e| io_err("creating", parent, e))?;
        }
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&src).map_err(|e| io_err("reading", &src, e))?;
            let _ = fs::remove_file(&dst);
            std::os::unix::fs::symlink(&target, &dst).map_err(|e| io_err("creating", &dst, e))?;
        } else {
            let data = fs::read(&src).map_err(|e| io_err("reading", &src, e))?;
            write_atomic(&dst, &data, Some(&meta))?;
            let times = fs::FileTimes::new()
                .set_modified(meta.modified().map_err(|e| io_err("inspecting", &src, e))?);
            if let Ok(f) = fs::File::options().write(true).open(&dst) {
                let _ = f.set_times(times);
            }
        }
        self.backed_up.push(rel.to_string());
        Ok(Some(format!("/{backup_rel}")))
    }

    /// Writes `data` to `rel` unless it already holds exactly that; a new
    /// file gets `mode`. Returns whether anything changed.
    pub fn write(
        &mut self,
        rel: &str,
        data: &[u8],
        mode: u32,
        reason: &str,
        edits: Vec<Edit>,
    ) -> Result<bool, AdaptError> {
        let path = self.path(rel)?;
        let meta = fs::symlink_metadata(&path).ok();
        if let Some(m) = &meta {
            if m.file_type().is_file() && fs::read(&path).map(|d| d == data).unwrap_or(false) {
                return Ok(false);
            }
        }
        let backup = self.backup(rel)?;
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| io_err("creating", parent, e))?;
        }
        let like = meta.as_ref().filter(|m| m.file_type().is_file());
        write_atomic(&path, data, like)?;
        if like.is_none() {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .map_err(|e| io_err("setting the mode of", &path, e))?;
        }
        self.record_written(rel, reason, edits, backup);
        Ok(true)
    }

    /// Records that `rel` was written: modified if a backup of its old
    /// content was kept, else created.
    fn record_written(
        &mut self,
        rel: &str,
        reason: &str,
        edits: Vec<Edit>,
        backup: Option<String>,
    ) {
        self.applied.push(Change {
            path: format!("/{}", rel.trim_start_matches('/')),
            action: if backup.is_some() {
                Action::Modified
            } else {
                Action::Created
            },
            reason: reason.to_string(),
            edits,
            backup,
        });
    }

    /// Makes `rel` a symbolic link to `target` unless it already is one;
    /// whatever was there before is backed up. Returns whether anything
    /// changed.
    pub fn symlink(&mut self, rel: &str, target: &str, reason: &str) -> Result<bool, AdaptError> {
        let path = self.path(rel)?;
        let meta = fs::symlink_metadata(&path).ok();
        if meta.as_ref().is_some_and(|m| m.file_type().is_symlink())
            && fs::read_link(&path).is_ok_and(|t| t == Path::new(target))
        {
            return Ok(false);
        }
        if meta.as_ref().is_some_and(|m| m.is_dir()) {
            return Err(AdaptError::Internal(format!(
                "{} is a directory; ferry does not replace it with a link",
                path.display()
            )));
        }
        let backup = self.backup(rel)?;
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| io_err("creating", parent, e))?;
        }
        if meta.is_some() {
            fs::remove_file(&path).map_err(|e| io_err("replacing", &path, e))?;
        }
        std::os::unix::fs::symlink(target, &path).map_err(|e| io_err("creating", &path, e))?;
        self.record_written(rel, reason, Vec::new(), backup);
        Ok(true)
    }

    /// Deletes `rel` (a file or symlink) if it exists, keeping a backup.
    pub fn remove(&mut self, rel: &str, reason: &str) -> Result<bool, AdaptError> {
        let path = self.path(rel)?;
        if fs::symlink_metadata(&path).is_err() {
            return Ok(false);
        }
        let backup = self.backup(rel)?;
        fs::remove_file(&path).map_err(|e| io_err("removing", &path, e))?;
        self.applied.push(Change {
            path: format!("/{}", rel.trim_start_matches('/')),
            action: Action::Removed,
            reason: reason.to_string(),
            edits: Vec::new(),
            backup,
        });
        Ok(true)
    }

    /// Backs up `rel` before a tool rewrites it; [`Changes::settle`]
    /// records what the tool did.
    pub fn expect_change(&mut self, rel: &str, reason: &str) -> Result<(), AdaptError> {
        let existed = self.backup(rel)?.is_some();
        self.pending
            .push((rel.to_string(), reason.to_string(), existed));
        Ok(())
    }

    /// Records the files announced by [`Changes::expect_change`] that a
    /// tool changed, created or removed.
    pub fn settle(&mut self) -> Result<(), AdaptError> {
        for (rel, reason, existed) in std::mem::take(&mut self.pending) {
            let path = self.path(&rel)?;
            let backup_path = self.root.join(format!(
                "{}/files/{}",
                self.run_dir_rel(),
                rel.trim_start_matches('/')
            ));
            let now = fs::read(&path).ok();
            let action = match (existed, &now) {
                (true, Some(d)) => {
                    if fs::read(&backup_path).map(|b| &b == d).unwrap_or(false) {
                        continue;
                    }
                    Action::Modified
                }
                (true, None) => Action::Removed,
                (false, Some(_)) => Action::Created,
                (false, None) => continue,
            };
            self.applied.push(Change {
                path: format!("/{}", rel.trim_start_matches('/')),
                action,
                reason,
                edits: Vec::new(),
                backup: existed.then(|| {
                    format!(
                        "/{}/files/{}",
                        self.run_dir_rel(),
                        rel.trim_start_matches('/')
                    )
                }),
            });
        }
        Ok(())
    }

    /// Undoes every change, newest first (files announced to a tool that
    /// failed included). Errors are collected, not fatal: as much as
    /// possible is restored.
    pub fn rollback(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        // A failed tool may have touched its announced files.
        for (rel, _, existed) in std::mem::take(&mut self.pending) {
            self.applied.push(Change {
                path: format!("/{}", rel.trim_start_matches('/')),
                action: if existed {
                    Action::Modified
                } else {
                    Action::Created
                },
                reason: String::new(),
                edits: Vec::new(),
                backup: None,
            });
        }
        for c in self.applied.iter().rev() {
            let rel = c.path.trim_start_matches('/');
            let path = self.root.join(rel);
            let backup = self
                .root
                .join(format!("{}/files/{rel}", self.run_dir_rel()));
            let result = match c.action {
                Action::Created if !self.backed_up.iter().any(|b| b == rel) => {
                    match fs::remove_file(&path) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                        _ => Ok(()),
                    }
                }
                _ => restore(&backup, &path),
            };
            if let Err(e) = result {
                problems.push(format!("restoring {}: {e}", path.display()));
            }
        }
        self.applied.clear();
        problems
    }

    /// Writes `report.json` and `report.txt` into the run directory (not
    /// themselves recorded as changes).
    pub fn write_report<R: Serialize>(&self, report: &R, text: &str) -> Result<(), AdaptError> {
        let dir = self.run_dir();
        fs::create_dir_all(&dir).map_err(|e| io_err("creating", &dir, e))?;
        let json = serde_json::to_vec_pretty(report)
            .map_err(|e| AdaptError::Internal(format!("serializing the report: {e}")))?;
        write_atomic(&dir.join("report.json"), &json, None)?;
        write_atomic(&dir.join("report.txt"), text.as_bytes(), None)
    }
}

/// Puts a backup back in place (a symlink as a symlink).
fn restore(backup: &Path, path: &Path) -> std::io::Result<()> {
    let meta = fs::symlink_metadata(backup)?;
    let _ = fs::remove_file(path);
    if meta.file_type().is_symlink() {
        return std::os::unix::fs::symlink(fs::read_link(backup)?, path);
    }
    let data = fs::read(backup)?;
    write_atomic(path, &data, Some(&meta)).map_err(|e| std::io::Error::other(e.to_string()))?;
    let times = fs::FileTimes::new().set_modified(meta.modified()?);
    fs::File::options().write(true).open(path)?.set_times(times)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(d.path().join("etc")).expect("mkdir");
        fs::write(
            d.path().join("etc/fstab"),
            "/dev/sda1 / ext4 defaults 0 1\n",
        )
        .expect("write");
        fs::write(d.path().join("etc/blkid.tab"), "stale\n").expect("write");
        d
    }

    #[test]
    fn rollback_restores_modified_removed_and_deletes_created() {
        let d = tree();
        let mut c = Changes::begin(d.path(), "20261124T000000Z");
        assert!(c
            .write(
                "etc/fstab",
                b"UUID=x / ext4 defaults 0 1\n",
                0o644,
                "uuid",
                Vec::new()
            )
            .expect("write"));
        assert!(c
            .write(
                "etc/fstab",
                b"UUID=y / ext4 defaults 0 1\n",
                0o644,
                "again",
                Vec::new()
            )
            .expect("write"));
        assert!(c
            .write("etc/new.conf", b"x\n", 0o600, "new", Vec::new())
            .expect("write"));
        assert!(c.remove("etc/blkid.tab", "stale").expect("remove"));
        assert_eq!(c.applied().len(), 4);
        // The backup holds the original, not the first rewrite.
        let b = fs::read_to_string(
            d.path()
                .join("var/lib/ferry/adapt/20261124T000000Z/files/etc/fstab"),
        )
        .expect("backup");
        assert_eq!(b, "/dev/sda1 / ext4 defaults 0 1\n");
        assert!(c.rollback().is_empty());
        assert_eq!(
            fs::read_to_string(d.path().join("etc/fstab")).expect("read"),
            "/dev/sda1 / ext4 defaults 0 1\n"
        );
        assert_eq!(
            fs::read_to_string(d.path().join("etc/blkid.tab")).expect("read"),
            "stale\n"
        );
        assert!(!d.path().join("etc/new.conf").exists());
    }

    #[test]
    fn unchanged_content_is_not_a_change() {
        let d = tree();
        let mut c = Changes::begin(d.path(), "r");
        assert!(!c
            .write(
                "etc/fstab",
                b"/dev/sda1 / ext4 defaults 0 1\n",
                0o644,
                "same",
                Vec::new()
            )
            .expect("write"));
        assert!(!c.remove("etc/nothing", "absent").expect("remove"));
        assert!(c.applied().is_empty());
        assert!(!d.path().join(ADAPT_DIR).exists());
    }

    #[test]
    fn refuses_paths_leaving_the_root_and_symlinked_parents() {
        let d = tree();
        let mut c = Changes::begin(d.path(), "r");
        assert!(c
            .write("../escape", b"x", 0o644, "bad", Vec::new())
            .is_err());
        assert!(c
            .write("etc/../../escape", b"x", 0o644, "bad", Vec::new())
            .is_err());
        std::os::unix::fs::symlink("/tmp", d.path().join("etc/link")).expect("symlink");
        assert!(c
            .write("etc/link/x", b"x", 0o644, "bad", Vec::new())
            .is_err());
    }

    #[test]
    fn settle_records_what_a_tool_did() {
        let d = tree();
        let mut c = Changes::begin(d.path(), "r");
        c.expect_change("etc/fstab", "tool").expect("expect");
        c.expect_change("etc/made", "tool").expect("expect");
        c.expect_change("etc/blkid.tab", "tool").expect("expect");
        fs::write(d.path().join("etc/fstab"), "changed\n").expect("write");
        fs::write(d.path().join("etc/made"), "new\n").expect("write");
        c.settle().expect("settle");
        let actions: Vec<_> = c
            .applied()
            .iter()
            .map(|c| (c.path.as_str(), c.action))
            .collect();
        assert_eq!(
            actions,
            [
                ("/etc/fstab", Action::Modified),
                ("/etc/made", Action::Created)
            ]
        );
    }
}
