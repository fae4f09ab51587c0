//! Text from viewers: what may not reach an overlay.

/// Whether `c` is an invisible formatting character that can spoof text in an overlay:
/// bidirectional controls (U+202A–U+202E, U+2066–U+2069, U+061C, U+200E/F), zero-width
/// characters (U+200B–U+200D, U+2060–U+2064, U+FEFF), the soft hyphen and the Mongolian
/// vowel separator.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

/// `s` without invisible formatting characters.
pub fn strip_invisible(s: &str) -> String {
    s.chars().filter(|c| !is_invisible(*c)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bidi_and_zero_width_are_stripped() {
        assert_eq!(strip_invisible("abc\u{202E}fed"), "abcfed");
        assert_eq!(
            strip_invisible("a\u{200B}b\u{FEFF}c\u{2066}d\u{2069}"),
            "abcd"
        );
        // Visible text in any script stays.
        assert_eq!(strip_invisible("שלום مرحبا 👋 ok"), "שלום مرحبا 👋 ok");
    }
}
