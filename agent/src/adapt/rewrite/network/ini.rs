//! The INI shape that NetworkManager keyfiles and systemd-networkd files
//! share: `[Section]` headers, `Key=Value` lines, `#` (and for systemd `;`)
//! comments.

use crate::adapt::rewrite::document::Document;

/// One `Key=Value` line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// 0-based line number.
    pub(crate) line: usize,
    /// The section it is in (`""` before the first header).
    pub(crate) section: String,
    pub(crate) key: String,
    pub(crate) value: String,
}

/// A `[Section]` header with the lines up to the next header.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Section {
    pub(crate) name: String,
    /// 0-based line of the header.
    pub(crate) header: usize,
    /// 0-based line after the section's last line.
    pub(crate) end: usize,
}

/// Whether a line is blank or an INI comment.
pub(crate) fn is_comment(line: &str) -> bool {
    let t = line.trim_start();
    t.is_empty() || t.starts_with('#') || t.starts_with(';')
}

fn header(line: &str) -> Option<&str> {
    line.trim()
        .strip_prefix('[')?
        .strip_suffix(']')
        .map(str::trim)
}

/// The sections of `doc`, in order.
pub(crate) fn sections(doc: &Document) -> Vec<Section> {
    let mut out: Vec<Section> = Vec::new();
    for i in 0..doc.len() {
        if let Some(name) = header(doc.line(i)) {
            if let Some(last) = out.last_mut() {
                last.end = i;
            }
            out.push(Section {
                name: name.to_string(),
                header: i,
                end: doc.len(),
            });
        }
    }
    out
}

/// The `Key=Value` lines of `doc`, in order.
pub(crate) fn entries(doc: &Document) -> Vec<Entry> {
    let mut section = String::new();
    let mut out = Vec::new();
    for i in 0..doc.len() {
        let line = doc.line(i);
        if let Some(name) = header(line) {
            section = name.to_string();
            continue;
        }
        if is_comment(line) {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            out.push(Entry {
                line: i,
                section: section.clone(),
                key: key.trim().to_string(),
                value: value.trim().to_string(),
            });
        }
    }
    out
}

/// `Key=<value>` keeping the spacing of `line` around `=`.
pub(crate) fn with_value(line: &str, value: &str) -> String {
    match line.split_once('=') {
        Some((key, old)) => {
            let lead = &old[..old.len() - old.trim_start().len()];
            format!("{key}={lead}{value}")
        }
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_and_entries_are_found() {
        let doc = Document::new(
            "/f",
            "# c\n[Match]\nName=eth0\n\n[Network]\n; c\nDNS = 1.1.1.1\n",
        );
        let got: Vec<_> = sections(&doc)
            .into_iter()
            .map(|s| (s.name, s.header, s.end))
            .collect();
        assert_eq!(
            got,
            [("Match".to_string(), 1, 4), ("Network".to_string(), 4, 7)]
        );
        let got: Vec<_> = entries(&doc)
            .into_iter()
            .map(|e| (e.line, e.section, e.key, e.value))
            .collect();
        assert_eq!(
            got,
            [
                (2, "Match".into(), "Name".into(), "eth0".into()),
                (6, "Network".into(), "DNS".into(), "1.1.1.1".into()),
            ]
        );
        assert_eq!(with_value("DNS = 1.1.1.1", "x"), "DNS = x");
    }
}
