//! The names that identify resources — User `userName` and Group `displayName` — and text
//! compared with stored values.
//!
//! A name is stored trimmed of leading and trailing white space (Unicode `White_Space`)
//! and in Unicode Normalization Form C, so that "frank" and "Frank " cannot be two
//! accounts, nor "Fránk" typed precomposed and with a combining accent (U+0301): what a
//! client reads back is the stored form. Names are compared case-insensitively (the
//! unique index holds [`name_key`]): with NFC, the comparison of RFC 8265's
//! UsernameCaseMapped profile without its width mapping and its repertoire restrictions
//! (real IdPs send group names with spaces and punctuation).
//!
//! No stored text contains NUL (writes refuse it), so a comparison value holding one can
//! match nothing and is refused before it reaches a database ([`check_comparison_text`]).

use unicode_normalization::UnicodeNormalization;

/// The stored form of a name: trimmed, NFC.
pub fn normalize_name(name: &str) -> String {
    let trimmed = name.trim();
    if unicode_normalization::is_nfc(trimmed) {
        trimmed.to_string()
    } else {
        trimmed.nfc().collect()
    }
}

/// The comparison key of a name (the unique index, lookups by name): its stored form,
/// case-folded.
pub fn name_key(name: &str) -> String {
    normalize_name(name).to_lowercase()
}

/// How a filter compares text with stored values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextComparison {
    /// caseExact attributes.
    Exact,
    /// Attributes compared case-insensitively.
    Folded,
    /// The name of the resource type (userName, Group displayName): normalised as names
    /// are stored. Whole-value comparisons (eq, ne, gt, …) normalise the value as a name;
    /// substrings (co, sw, ew) keep their white space, which may be inside a name.
    Name { substring: bool },
}

/// A filter's text value in the form stored values are compared in.
pub fn comparison_text(value: &str, how: TextComparison) -> String {
    match how {
        TextComparison::Exact => value.to_string(),
        TextComparison::Folded => value.to_lowercase(),
        TextComparison::Name { substring: false } => name_key(value),
        TextComparison::Name { substring: true } => {
            let nfc: String = value.nfc().collect();
            nfc.to_lowercase()
        }
    }
}

/// Refuses a comparison value that contains NUL: no stored value does, and PostgreSQL
/// cannot take it as text.
pub fn check_comparison_text(value: &str) -> Result<(), String> {
    if value.contains('\0') {
        return Err(format!(
            "the value {:?} contains a NUL character, which no stored value contains",
            value.replace('\0', "\\0")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_composed() {
        assert_eq!(normalize_name("  Frank \t\n"), "Frank");
        assert_eq!(normalize_name("Fra\u{0301}nk"), "Fránk");
        assert_eq!(normalize_name("\u{3000}ideo\u{00a0}"), "ideo");
        // Inner white space is part of the name.
        assert_eq!(normalize_name(" Hospital  A "), "Hospital  A");
        assert_eq!(name_key("Frank "), name_key("frank"));
        assert_eq!(name_key("FRA\u{0301}NK"), name_key("frÁnk"));
        assert_ne!(name_key("frank"), name_key("frankie"));
    }

    #[test]
    fn comparison_values_follow_the_stored_forms() {
        assert_eq!(comparison_text("AbC", TextComparison::Exact), "AbC");
        assert_eq!(comparison_text("AbC", TextComparison::Folded), "abc");
        assert_eq!(
            comparison_text(" Frank ", TextComparison::Name { substring: false }),
            "frank"
        );
        assert_eq!(
            comparison_text("Frank ", TextComparison::Name { substring: true }),
            "frank "
        );
        assert_eq!(
            comparison_text("E\u{0301}", TextComparison::Name { substring: true }),
            "é"
        );
        assert!(check_comparison_text("a\0b").unwrap_err().contains("NUL"));
        assert!(check_comparison_text("ab").is_ok());
    }
}
