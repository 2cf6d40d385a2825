//! What a rewrite returns: the new text, one [`Edit`] per changed line and
//! the warnings an operator should read.

use serde::Serialize;

/// One changed line of a configuration file, for the adaptation report.
///
/// A replaced line has both `before` and `after`; an inserted line has an
/// empty `before`. Rewrites never delete lines: what no longer applies is
/// commented out (`# ferry: …`), so `before` is always recoverable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Edit {
    /// The file, as the caller named it ([`Rewritten::for_file`]) or the
    /// conventional path of the format (`/etc/fstab`).
    pub file: String,
    /// 1-based number of the line in the rewritten text.
    pub line: usize,
    /// The line as it was (empty for an inserted line).
    pub before: String,
    /// The line as it is now.
    pub after: String,
    /// Why it changed, in words an operator understands.
    pub reason: String,
}

/// The result of rewriting one file's text.
///
/// Without edits, `text` is the input byte for byte. Every rewrite is
/// idempotent: rewriting `text` again yields no edits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rewritten {
    /// The new file content.
    pub text: String,
    /// The changed lines, in line order.
    pub edits: Vec<Edit>,
    /// What could not be fixed and may need a look (unresolvable device
    /// names, configurations bound to the old hardware, …).
    pub warnings: Vec<String>,
    /// How an edit was decided where the operator should know (a device
    /// name taken to be on the image's only disk).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Rewritten {
    /// Whether the text changed.
    pub fn changed(&self) -> bool {
        !self.edits.is_empty()
    }

    /// Names the file in every edit: the rewrite functions only see text,
    /// so they use the conventional path of their format.
    pub fn for_file(mut self, file: &str) -> Self {
        for edit in &mut self.edits {
            edit.file = file.to_string();
        }
        self
    }
}
