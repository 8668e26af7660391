//! Texts copied from outside (alert annotations and labels, EC2 event fields, parser errors
//! that quote their input) are bounded before they reach a stored item or a log line: a
//! templated annotation can be hundreds of kilobytes, more than a DynamoDB item may hold
//! (400 KB), and the full text stays with its sender anyway.

/// Bound of a human reason (an alert's summary or description).
pub const REASON_MAX: usize = 1024;
/// Bound of a name or label value (alert name, pool, detail-type, event id).
pub const NAME_MAX: usize = 256;

/// `text` if it fits in `max` bytes; else its start, cut at a character boundary, followed
/// by a marker saying how long it was, the whole at most `max` bytes.
pub fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let marker = format!("… [cut, {} bytes]", text.len());
    let mut end = max.saturating_sub(marker.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{marker}", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_texts_pass_unchanged() {
        assert_eq!(bounded("CPU at 85%", REASON_MAX), "CPU at 85%");
        assert_eq!(bounded(&"x".repeat(REASON_MAX), REASON_MAX).len(), REASON_MAX);
    }

    #[test]
    fn long_texts_are_cut_with_a_marker_within_the_bound() {
        let cut = bounded(&"pod ".repeat(125_000), REASON_MAX);
        assert!(cut.len() <= REASON_MAX, "{}", cut.len());
        assert!(cut.starts_with("pod pod "));
        assert!(cut.ends_with("… [cut, 500000 bytes]"), "{cut}");
    }

    #[test]
    fn cuts_fall_on_character_boundaries() {
        for max in 30..40 {
            let cut = bounded(&"é".repeat(100), max);
            assert!(cut.len() <= max && cut.contains("[cut, 200 bytes]"), "{max}: {cut}");
        }
    }
}
