//! A text as a list of lines that rewrites change in place, insert into
//! or comment out, remembering each change for the report.
//!
//! Line endings (`\n`, `\r\n`, none on the last line) are kept as they
//! were; inserted lines take the ending of the first line. Insertions are
//! anchored to original lines, so indices stay valid while a rewrite walks
//! the text; line numbers of the report are those of the output.

use super::edit::{Edit, Rewritten};

/// The marker every comment ferry writes starts with.
pub(crate) const MARK: &str = "# ferry: ";

struct Line {
    text: String,
    eol: String,
    original: String,
    reasons: Vec<String>,
}

/// A line inserted after an original line (or before the first one).
struct Insert {
    after: Option<usize>,
    text: String,
    reason: String,
}

/// A file's text being rewritten.
pub(crate) struct Document {
    file: String,
    source: String,
    lines: Vec<Line>,
    inserts: Vec<Insert>,
    warnings: Vec<String>,
    notes: Vec<String>,
}

impl Document {
    /// Splits `text` into lines; `file` names it in the edits.
    pub(crate) fn new(file: &str, text: &str) -> Self {
        let lines = text
            .split_inclusive('\n')
            .map(|raw| {
                let body = raw.strip_suffix('\n').unwrap_or(raw);
                let (body, eol) = match body.strip_suffix('\r') {
                    Some(body) => (body, &raw[body.len()..]),
                    None => (body, &raw[body.len()..]),
                };
                Line {
                    text: body.to_string(),
                    eol: eol.to_string(),
                    original: body.to_string(),
                    reasons: Vec::new(),
                }
            })
            .collect();
        Self {
            file: file.to_string(),
            source: text.to_string(),
            lines,
            inserts: Vec::new(),
            warnings: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// How many original lines there are.
    pub(crate) fn len(&self) -> usize {
        self.lines.len()
    }

    /// The current text of original line `i` (0-based).
    pub(crate) fn line(&self, i: usize) -> &str {
        &self.lines[i].text
    }

    /// Replaces line `i`; a replacement by the same text is no change.
    pub(crate) fn replace(&mut self, i: usize, text: String, reason: &str) {
        let line = &mut self.lines[i];
        if line.text == text {
            return;
        }
        line.text = text;
        if !line.reasons.iter().any(|r| r == reason) {
            line.reasons.push(reason.to_string());
        }
    }

    /// Comments line `i` out behind [`MARK`] and `note`, keeping its
    /// indentation: `  # ferry: <note>: <line>`.
    pub(crate) fn comment_out(&mut self, i: usize, note: &str) {
        let text = self.lines[i].text.clone();
        let body = text.trim_start();
        let indent = &text[..text.len() - body.len()];
        self.replace(i, format!("{indent}{MARK}{note}: {body}"), note);
    }

    /// Inserts a line after original line `after` (0-based), or before the
    /// first line when `after` is `None`. Insertions at one place keep the
    /// order they were made in.
    pub(crate) fn insert(&mut self, after: Option<usize>, text: String, reason: &str) {
        self.inserts.push(Insert {
            after,
            text,
            reason: reason.to_string(),
        });
    }

    /// Appends a line at the end of the text.
    pub(crate) fn append(&mut self, text: String, reason: &str) {
        let after = self.lines.len().checked_sub(1);
        self.insert(after, text, reason);
    }

    /// Records a warning for the operator.
    pub(crate) fn warn(&mut self, warning: String) {
        if !self.warnings.contains(&warning) {
            self.warnings.push(warning);
        }
    }

    /// Records a note for the report: how an edit was decided.
    pub(crate) fn note(&mut self, note: String) {
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }

    /// Assembles the new text and the edits.
    pub(crate) fn finish(self) -> Rewritten {
        let changed = !self.inserts.is_empty() || self.lines.iter().any(|l| l.text != l.original);
        if !changed {
            return Rewritten {
                text: self.source,
                edits: Vec::new(),
                warnings: self.warnings,
                notes: self.notes,
            };
        }
        let eol = self
            .lines
            .first()
            .map(|l| l.eol.as_str())
            .filter(|e| !e.is_empty())
            .unwrap_or("\n")
            .to_string();
        let mut text = String::with_capacity(self.source.len() + 256);
        let mut edits = Vec::new();
        let mut number = 0;
        let mut emit = |body: &str, line_eol: &str, before: &str, reason: &str, edited: bool| {
            number += 1;
            text.push_str(body);
            text.push_str(line_eol);
            if edited {
                edits.push(Edit {
                    file: self.file.clone(),
                    line: number,
                    before: before.to_string(),
                    after: body.to_string(),
                    reason: reason.to_string(),
                });
            }
        };
        let inserted_after = |at: Option<usize>| self.inserts.iter().filter(move |s| s.after == at);
        for s in inserted_after(None) {
            emit(&s.text, &eol, "", &s.reason, true);
        }
        for (i, line) in self.lines.iter().enumerate() {
            let mut after = inserted_after(Some(i)).peekable();
            // A last line without a newline gets one when lines follow it.
            let line_eol = if line.eol.is_empty() && after.peek().is_some() {
                &eol
            } else {
                &line.eol
            };
            let edited = line.text != line.original;
            emit(
                &line.text,
                line_eol,
                &line.original,
                &line.reasons.join("; "),
                edited,
            );
            for s in after {
                emit(&s.text, &eol, "", &s.reason, true);
            }
        }
        Rewritten {
            text,
            edits,
            warnings: self.warnings,
            notes: self.notes,
        }
    }
}

/// Whether a line is blank or a `#` comment.
pub(crate) fn is_comment_or_blank(line: &str) -> bool {
    let t = line.trim_start();
    t.is_empty() || t.starts_with('#')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_text_is_returned_byte_for_byte() {
        for text in ["", "a\r\nb", "a\n\n", "x\ny\r\n  z"] {
            let doc = Document::new("/f", text);
            let out = doc.finish();
            assert_eq!(out.text, text);
            assert!(out.edits.is_empty());
        }
    }

    #[test]
    fn replacing_a_line_by_itself_is_no_edit() {
        let mut doc = Document::new("/f", "a\nb\n");
        doc.replace(1, "b".into(), "same");
        assert!(doc.finish().edits.is_empty());
    }

    #[test]
    fn endings_are_kept_and_numbers_are_those_of_the_output() {
        let mut doc = Document::new("/f", "one\r\ntwo\r\nthree");
        doc.insert(None, "zero".into(), "first");
        doc.replace(1, "TWO".into(), "upper");
        doc.append("four".into(), "last");
        let out = doc.finish();
        assert_eq!(out.text, "zero\r\none\r\nTWO\r\nthree\r\nfour\r\n");
        let got: Vec<_> = out
            .edits
            .iter()
            .map(|e| {
                (
                    e.line,
                    e.before.as_str(),
                    e.after.as_str(),
                    e.reason.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (1, "", "zero", "first"),
                (3, "two", "TWO", "upper"),
                (5, "", "four", "last"),
            ]
        );
        assert!(out.edits.iter().all(|e| e.file == "/f"));
    }

    #[test]
    fn commenting_out_keeps_the_indentation() {
        let mut doc = Document::new("/f", "iface x\n    address 1.2.3.4\n");
        doc.comment_out(1, "why");
        let out = doc.finish();
        assert_eq!(out.text, "iface x\n    # ferry: why: address 1.2.3.4\n");
        assert_eq!(out.edits[0].reason, "why");
    }

    #[test]
    fn appending_to_an_empty_text_and_to_a_text_without_final_newline() {
        let mut doc = Document::new("/f", "");
        doc.append("new".into(), "r");
        assert_eq!(doc.finish().text, "new\n");
        let mut doc = Document::new("/f", "old");
        doc.append("new".into(), "r");
        assert_eq!(doc.finish().text, "old\nnew\n");
    }
}
