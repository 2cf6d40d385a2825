//! Whitespace-separated fields of a line (fstab, crypttab, hosts,
//! ifupdown), replaced in place so the rest of the line keeps its layout.

use std::ops::Range;

/// The byte ranges of the whitespace-separated fields of `line`.
pub(crate) fn fields(line: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in line.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                out.push(s..i);
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(s..line.len());
    }
    out
}

/// `line` with field `index` (of `ranges`, from [`fields`]) replaced by
/// `new`. When spaces (not tabs) follow the field, their number changes so
/// that the next field stays in its column where it can (one space at
/// least): aligned tables stay aligned.
pub(crate) fn replace_field(
    line: &str,
    ranges: &[Range<usize>],
    index: usize,
    new: &str,
) -> String {
    let field = ranges[index].clone();
    let mut out = String::with_capacity(line.len() + new.len());
    out.push_str(&line[..field.start]);
    out.push_str(new);
    match ranges.get(index + 1) {
        Some(next) if line[field.end..next.start].bytes().all(|b| b == b' ') => {
            let column = next.start;
            let width = column.saturating_sub(field.start + new.len()).max(1);
            out.extend(std::iter::repeat_n(' ', width));
            out.push_str(&line[next.start..]);
        }
        _ => out.push_str(&line[field.end..]),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_found_between_spaces_and_tabs() {
        let line = "  a\tbb  c ";
        let got: Vec<&str> = fields(line).into_iter().map(|r| &line[r]).collect();
        assert_eq!(got, ["a", "bb", "c"]);
        assert!(fields("   ").is_empty());
    }

    #[test]
    fn replacing_keeps_the_next_column_where_it_can() {
        let cases = [
            (
                "/dev/sda1       /     ext4",
                0,
                "/dev/sdb1",
                "/dev/sdb1       /     ext4",
            ),
            ("/dev/sda1  /", 0, "UUID=0123456789", "UUID=0123456789 /"),
            ("/dev/sda1\t/\text4", 0, "UUID=x", "UUID=x\t/\text4"),
            (
                "a /  ext4 defaults 0 1",
                3,
                "defaults,nofail",
                "a /  ext4 defaults,nofail 0 1",
            ),
            ("a b", 1, "c", "a c"),
        ];
        for (line, index, new, want) in cases {
            let ranges = fields(line);
            assert_eq!(replace_field(line, &ranges, index, new), want, "{line}");
        }
    }
}
