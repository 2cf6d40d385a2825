//! Sorted, merged lists of byte ranges `[start, end)`.

/// Sorts `ranges`, drops empty ones and merges those that overlap or
/// touch.
pub(crate) fn normalize(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.retain(|r| r.0 < r.1);
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// Appends `[s, e)` to a list that is built in ascending order, merging it
/// with the last range when they touch.
pub(crate) fn push(out: &mut Vec<(u64, u64)>, s: u64, e: u64) {
    if s >= e {
        return;
    }
    match out.last_mut() {
        Some(last) if s <= last.1 => last.1 = last.1.max(e),
        _ => out.push((s, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges() {
        assert_eq!(
            normalize(vec![(10, 20), (0, 5), (5, 7), (15, 30), (40, 40), (35, 36)]),
            vec![(0, 7), (10, 30), (35, 36)]
        );
        let mut v = vec![];
        push(&mut v, 0, 4);
        push(&mut v, 4, 8);
        push(&mut v, 9, 9);
        push(&mut v, 10, 12);
        assert_eq!(v, vec![(0, 8), (10, 12)]);
    }
}
