//! fnmatch(3)-style glob patterns, as kmod matches device modaliases.
//!
//! kmod compares a modalias with each `modules.alias` pattern through
//! `fnmatch(pattern, modalias, 0)`: no `FNM_PATHNAME` (so `*` and `?` match
//! `/`), no `FNM_PERIOD`, and backslash escapes enabled. This module
//! reproduces those semantics:
//!
//! - `*` matches any sequence of characters, including the empty one;
//! - `?` matches exactly one character;
//! - `[...]` matches one character from a set of characters, ranges (`a-f`)
//!   and POSIX classes (`[:digit:]`); `[!...]` and `[^...]` negate it; a `]`
//!   right after the opening (or after the negation mark) is literal, and so
//!   is a `-` at either end;
//! - `\c` matches `c` literally, inside or outside brackets;
//! - a `[` without its closing `]` is an ordinary character, and a pattern
//!   ending in a lone `\` matches nothing (both as glibc does).
//!
//! Ranges compare Unicode scalar values, which is the C locale's order for
//! the ASCII text modaliases are made of. Patterns are compiled once into a
//! [`Pattern`]; matching is iterative, remembering only the most recent `*`,
//! so it runs in O(pattern × text) time however many `*` a pattern holds.

/// One element of a bracket expression.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ClassItem {
    /// A single character.
    Char(char),
    /// An inclusive range; empty when `lo > hi`.
    Range(char, char),
    /// A POSIX character class such as `[:alpha:]`.
    Posix(PosixClass),
    /// An unknown `[:name:]` class, which matches nothing.
    Nothing,
}

/// The POSIX character classes glibc accepts inside brackets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PosixClass {
    Alnum,
    Alpha,
    Blank,
    Cntrl,
    Digit,
    Graph,
    Lower,
    Print,
    Punct,
    Space,
    Upper,
    Xdigit,
}

impl PosixClass {
    /// Looks a class up by the name between `[:` and `:]`.
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "alnum" => Self::Alnum,
            "alpha" => Self::Alpha,
            "blank" => Self::Blank,
            "cntrl" => Self::Cntrl,
            "digit" => Self::Digit,
            "graph" => Self::Graph,
            "lower" => Self::Lower,
            "print" => Self::Print,
            "punct" => Self::Punct,
            "space" => Self::Space,
            "upper" => Self::Upper,
            "xdigit" => Self::Xdigit,
            _ => return None,
        })
    }

    /// Whether `c` belongs to the class (ASCII, as in the C locale).
    fn contains(self, c: char) -> bool {
        match self {
            Self::Alnum => c.is_ascii_alphanumeric(),
            Self::Alpha => c.is_ascii_alphabetic(),
            Self::Blank => c == ' ' || c == '\t',
            Self::Cntrl => c.is_ascii_control(),
            Self::Digit => c.is_ascii_digit(),
            Self::Graph => c.is_ascii_graphic(),
            Self::Lower => c.is_ascii_lowercase(),
            Self::Print => c.is_ascii_graphic() || c == ' ',
            Self::Punct => c.is_ascii_punctuation(),
            Self::Space => c.is_ascii_whitespace() || c == '\x0b',
            Self::Upper => c.is_ascii_uppercase(),
            Self::Xdigit => c.is_ascii_hexdigit(),
        }
    }
}

/// One compiled pattern element.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A character that must match exactly.
    Literal(char),
    /// `?`: any one character.
    Any,
    /// `*`: any sequence (consecutive stars are folded into one).
    Star,
    /// `[...]`: one character in (or, when negated, not in) the set.
    Class {
        negated: bool,
        items: Vec<ClassItem>,
    },
}

impl Token {
    /// Whether this single-character token matches `c`. Never called on
    /// [`Token::Star`].
    fn matches(&self, c: char) -> bool {
        match self {
            Token::Literal(l) => *l == c,
            Token::Any => true,
            Token::Star => false,
            Token::Class { negated, items } => {
                let hit = items.iter().any(|item| match item {
                    ClassItem::Char(x) => *x == c,
                    ClassItem::Range(lo, hi) => (*lo..=*hi).contains(&c),
                    ClassItem::Posix(class) => class.contains(c),
                    ClassItem::Nothing => false,
                });
                hit != *negated
            }
        }
    }
}

/// A compiled fnmatch pattern (see the [module documentation](self)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    tokens: Vec<Token>,
    /// True when the pattern can match nothing at all (it ends in a lone `\`).
    never: bool,
}

impl Pattern {
    /// Compiles `pattern`. Every string is a valid pattern: malformed
    /// brackets are read as literal characters, as glibc does.
    pub fn new(pattern: &str) -> Self {
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::with_capacity(chars.len());
        let mut never = false;
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' => {
                    if tokens.last() != Some(&Token::Star) {
                        tokens.push(Token::Star);
                    }
                    i += 1;
                }
                '?' => {
                    tokens.push(Token::Any);
                    i += 1;
                }
                '\\' => match chars.get(i + 1) {
                    Some(&c) => {
                        tokens.push(Token::Literal(c));
                        i += 2;
                    }
                    None => {
                        never = true;
                        i += 1;
                    }
                },
                '[' => match parse_bracket(&chars, i + 1) {
                    Some((token, next)) => {
                        tokens.push(token);
                        i = next;
                    }
                    None => {
                        tokens.push(Token::Literal('['));
                        i += 1;
                    }
                },
                c => {
                    tokens.push(Token::Literal(c));
                    i += 1;
                }
            }
        }
        Pattern { tokens, never }
    }

    /// Whether `text` matches the whole pattern.
    pub fn matches(&self, text: &str) -> bool {
        if self.never {
            return false;
        }
        let text: Vec<char> = text.chars().collect();
        let tokens = &self.tokens;
        let (mut p, mut t) = (0, 0);
        // Where to resume after the most recent `*`: the token after it and
        // the text position it will next try to swallow up to.
        let mut backtrack: Option<(usize, usize)> = None;
        while t < text.len() {
            match tokens.get(p) {
                Some(Token::Star) => {
                    backtrack = Some((p + 1, t));
                    p += 1;
                    continue;
                }
                Some(token) if token.matches(text[t]) => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
            // Mismatch: let the last `*` swallow one more character. Tokens
            // other than `*` consume exactly one character each, so an
            // earlier `*` never needs to be revisited.
            match backtrack {
                Some((after_star, swallowed)) => {
                    p = after_star;
                    t = swallowed + 1;
                    backtrack = Some((after_star, t));
                }
                None => return false,
            }
        }
        tokens[p..].iter().all(|token| *token == Token::Star)
    }
}

/// Whether `text` matches `pattern` (compiles the pattern every call; use
/// [`Pattern`] to match one pattern many times).
pub fn fnmatch(pattern: &str, text: &str) -> bool {
    Pattern::new(pattern).matches(text)
}

/// Parses a bracket expression whose body starts at `start` (just past the
/// `[`). Returns the token and the index past the closing `]`, or `None` when
/// the bracket is unterminated.
fn parse_bracket(chars: &[char], start: usize) -> Option<(Token, usize)> {
    let mut i = start;
    let negated = matches!(chars.get(i), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let mut items = Vec::new();
    let mut first = true;
    loop {
        let c = *chars.get(i)?;
        if c == ']' && !first {
            return Some((Token::Class { negated, items }, i + 1));
        }
        first = false;
        if c == '[' && chars.get(i + 1) == Some(&':') {
            if let Some(len) = chars[i + 2..].windows(2).position(|w| w == [':', ']']) {
                let name: String = chars[i + 2..i + 2 + len].iter().collect();
                items.push(match PosixClass::from_name(&name) {
                    Some(class) => ClassItem::Posix(class),
                    None => ClassItem::Nothing,
                });
                i += 2 + len + 2;
                continue;
            }
        }
        let (lo, after_lo) = bracket_char(chars, i)?;
        i = after_lo;
        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|&c| c != ']') {
            let (hi, after_hi) = bracket_char(chars, i + 1)?;
            items.push(ClassItem::Range(lo, hi));
            i = after_hi;
        } else {
            items.push(ClassItem::Char(lo));
        }
    }
}

/// Reads one (possibly backslash-escaped) character inside a bracket.
fn bracket_char(chars: &[char], i: usize) -> Option<(char, usize)> {
    match *chars.get(i)? {
        '\\' => Some((*chars.get(i + 1)?, i + 2)),
        c => Some((c, i + 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Exponential reference matcher over the same tokens, to check the
    /// iterative one.
    fn reference(tokens: &[Token], text: &[char]) -> bool {
        match tokens.first() {
            None => text.is_empty(),
            Some(Token::Star) => (0..=text.len()).any(|k| reference(&tokens[1..], &text[k..])),
            Some(token) => {
                !text.is_empty() && token.matches(text[0]) && reference(&tokens[1..], &text[1..])
            }
        }
    }

    /// Asserts `fnmatch(pattern, text) == expected` for each row.
    fn check(rows: &[(&str, &str, bool)]) {
        for &(pattern, text, expected) in rows {
            assert_eq!(
                fnmatch(pattern, text),
                expected,
                "fnmatch({pattern:?}, {text:?})"
            );
        }
    }

    #[test]
    fn literals_and_wildcards() {
        check(&[
            ("abc", "abc", true),
            ("abc", "abcd", false),
            ("abcd", "abc", false),
            ("", "", true),
            ("", "a", false),
            ("*", "", true),
            ("***", "anything", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*c", "abcabc", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("*ab", "aab", true),
            ("*aab", "aaab", true),
        ]);
    }

    #[test]
    fn no_path_or_period_semantics() {
        check(&[
            ("*", "a/b", true),
            ("a?b", "a/b", true),
            ("*", ".hidden", true),
            ("?hidden", ".hidden", true),
            ("a[/]b", "a/b", true),
        ]);
    }

    #[test]
    fn brackets() {
        check(&[
            ("d0[0-2]*", "d01x", true),
            ("d0[0-2]*", "d03x", false),
            ("[!a]", "b", true),
            ("[!a]", "a", false),
            ("[^a]", "b", true),
            ("[^a-c]", "b", false),
            ("[]]", "]", true),
            ("[!]]", "x", true),
            ("[!]]", "]", false),
            ("[a-]", "-", true),
            ("[-a]", "-", true),
            // range from ] to a
            ("[]-a]", "^", true),
            // reversed range is empty
            ("[z-a]", "m", false),
            ("[[:digit:]]x", "7x", true),
            ("[[:digit:]]x", "ax", false),
            ("[[:xdigit:][:upper:]]", "Z", true),
            ("[[:nonsense:]]", "n", false),
            ("[\\]]", "]", true),
            ("[a\\-z]", "-", true),
            ("[a\\-z]", "m", false),
        ]);
    }

    #[test]
    fn unterminated_bracket_is_literal() {
        check(&[
            ("[ab", "[ab", true),
            ("[ab", "a", false),
            ("x[", "x[", true),
            ("[!", "[!", true),
            ("[[:digit:", "[[:digit:", true),
        ]);
    }

    #[test]
    fn escapes() {
        check(&[
            ("\\*", "*", true),
            ("\\*", "a", false),
            ("a\\?", "a?", true),
            ("\\[a]", "[a]", true),
            // a trailing lone backslash matches nothing
            ("a\\", "a\\", false),
            ("a\\", "a", false),
        ]);
    }

    #[test]
    fn modalias_shapes() {
        let alias = "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00";
        assert!(fnmatch("pci:v00001AF4d*sv*sd*bc*sc*i*", alias));
        assert!(!fnmatch("pci:v*d*sv*sd*bc01sc08i02*", alias));
        assert!(fnmatch("acpi*:QEMU0002:*", "acpi:QEMU0002:"));
        assert!(fnmatch("scsi:t-0x00*", "scsi:t-0x00"));
        assert!(fnmatch(
            "usb:v13FDp3940d0[0-2]*dc*dsc*dp*ic*isc*ip*in*",
            "usb:v13FDp3940d0100dc00dsc00dp00ic08isc06ip50in00"
        ));
    }

    #[test]
    fn many_stars_stay_fast() {
        let pattern = format!("{}b", "a*".repeat(200));
        let text = "a".repeat(5_000);
        let started = std::time::Instant::now();
        assert!(!fnmatch(&pattern, &text));
        assert!(fnmatch(&pattern, &format!("{text}b")));
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    proptest! {
        #[test]
        fn iterative_agrees_with_reference(
            pattern in "[ab*?\\[\\]!^\\-\\\\]{0,10}",
            text in "[ab\\-\\]\\[!]{0,10}",
        ) {
            let compiled = Pattern::new(&pattern);
            let chars: Vec<char> = text.chars().collect();
            let expected = !compiled.never && reference(&compiled.tokens, &chars);
            prop_assert_eq!(compiled.matches(&text), expected);
        }

        #[test]
        fn escaped_text_matches_itself(text in "\\PC{0,20}") {
            let escaped: String = text.chars().flat_map(|c| ['\\', c]).collect();
            prop_assert!(fnmatch(&escaped, &text));
            let longer = format!("{text}x");
            prop_assert!(!fnmatch(&escaped, &longer));
        }

        #[test]
        fn star_infix_star_means_contains(
            needle in "[a-c]{0,4}",
            text in "[a-c]{0,12}",
        ) {
            prop_assert_eq!(fnmatch(&format!("*{needle}*"), &text), text.contains(&needle));
        }
    }
}
