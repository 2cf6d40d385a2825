//! Shell variable assignments (`NAME="value"`) as `/etc/default/grub`,
//! `/etc/default/grub.d/*.cfg` and initramfs-tools' `conf.d` files write
//! them: one per line, the value double-quoted, single-quoted or bare.

use std::ops::Range;

/// A `NAME=value` assignment found on a line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Assignment<'a> {
    /// The variable's name.
    pub(crate) name: &'a str,
    /// Where the value lies on the line, without its quotes.
    pub(crate) value: Range<usize>,
}

/// The assignment on `line`, if it holds one (`export` allowed, comments
/// and other commands not).
pub(crate) fn assignment(line: &str) -> Option<Assignment<'_>> {
    let body = line.trim_start();
    let body = body.strip_prefix("export ").map_or(body, str::trim_start);
    let start = line.len() - body.len();
    let name_len = body
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
        .count();
    let name = &body[..name_len];
    if name.is_empty() || name.as_bytes()[0].is_ascii_digit() {
        return None;
    }
    let value_start = start + name_len + body[name_len..].strip_prefix('=').map(|_| 1)?;
    let rest = &line[value_start..];
    let value = match rest.chars().next() {
        Some(q @ ('"' | '\'')) => {
            let inner = value_start + 1;
            let end = closing_quote(&line[inner..], q)?;
            inner..inner + end
        }
        _ => {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            value_start..value_start + end
        }
    };
    Some(Assignment { name, value })
}

/// The position of the quote that closes a value opened by `q` (double
/// quotes may hold `\"`).
fn closing_quote(s: &str, q: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            '\\' if q == '"' && !escaped => escaped = true,
            c if c == q && !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_are_found_with_their_value() {
        let cases = [
            (
                r#"GRUB_CMDLINE_LINUX="root=/dev/sda1 ro""#,
                Some(("GRUB_CMDLINE_LINUX", "root=/dev/sda1 ro")),
            ),
            (
                "GRUB_CMDLINE_LINUX_DEFAULT='quiet splash'",
                Some(("GRUB_CMDLINE_LINUX_DEFAULT", "quiet splash")),
            ),
            (
                "  export RESUME=/dev/sda5 # swap",
                Some(("RESUME", "/dev/sda5")),
            ),
            (r#"X="a \"b\" c" # note"#, Some(("X", r#"a \"b\" c"#))),
            ("EMPTY=", Some(("EMPTY", ""))),
            ("# GRUB_CMDLINE_LINUX=\"x\"", None),
            ("echo hi", None),
            ("1X=2", None),
            ("UNCLOSED=\"abc", None),
        ];
        for (line, want) in cases {
            let got = assignment(line).map(|a| (a.name, &line[a.value]));
            assert_eq!(got, want, "{line}");
        }
    }
}
