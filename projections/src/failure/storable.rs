//! Makes the text of a failure storable by every backend, so that recording a failure (a dead
//! letter, a stop, a pause) cannot itself fail because of what the failure says.
//!
//! PostgreSQL refuses the NUL character in `text` and the `\u0000` escape in `jsonb`, and
//! nothing stops an error message from being megabytes long. Every backend stores what these
//! functions return, so they all read back the same thing.

use std::error::Error;
use std::fmt::Write as _;
use std::iter;

/// What a NUL character becomes: U+FFFD REPLACEMENT CHARACTER.
pub(crate) const NUL_REPLACEMENT: char = '\u{FFFD}';

/// The most bytes a stored message takes, the note on what was cut included.
pub(crate) const MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// The most entries a stored source chain has, the note on what was cut included.
pub(crate) const MAX_CHAIN_ENTRIES: usize = 32;

/// Room kept for the note at the end of a cut message: `… [cut: N more bytes]` with the
/// longest `N` (20 digits) takes 42 bytes.
const CUT_NOTE_BYTES: usize = 64;

/// How many sources beyond [`MAX_CHAIN_ENTRIES`] are counted for the note; a source chain may
/// loop back on itself.
const MAX_SOURCES_COUNTED: usize = 10_000;

/// `text` with every NUL character replaced by U+FFFD.
pub(crate) fn without_nul(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text
    }
}

/// `message` without NUL characters (each becomes U+FFFD) and at most [`MAX_MESSAGE_BYTES`]
/// long: a longer message is cut at a character boundary and ends with
/// `… [cut: N more bytes]`, `N` being the bytes of `message` left out. Applying it twice gives
/// the same as once.
pub(crate) fn storable_message(message: String) -> String {
    let nuls = message.bytes().filter(|byte| *byte == 0).count();
    let stored_len = message.len() + nuls * (NUL_REPLACEMENT.len_utf8() - 1);
    if stored_len <= MAX_MESSAGE_BYTES {
        return without_nul(message);
    }
    let budget = MAX_MESSAGE_BYTES - CUT_NOTE_BYTES;
    let mut kept = 0;
    let mut width = 0;
    for (at, c) in message.char_indices() {
        let stored = if c == '\0' {
            NUL_REPLACEMENT.len_utf8()
        } else {
            c.len_utf8()
        };
        if width + stored > budget {
            break;
        }
        width += stored;
        kept = at + c.len_utf8();
    }
    let cut = message.len() - kept;
    let mut stored = message[..kept].replace('\0', "\u{FFFD}");
    // Writing to a String cannot fail.
    let _ = write!(stored, "… [cut: {cut} more bytes]");
    stored
}

/// The messages of `error`'s sources, outermost first, each made storable with
/// [`storable_message`]. At most [`MAX_CHAIN_ENTRIES`] entries: when there are more sources,
/// the last entry is a note `… [cut: N more sources]` in place of the sources left out.
pub(crate) fn storable_source_chain(error: &(dyn Error + 'static)) -> Vec<String> {
    let mut sources = iter::successors(error.source(), |&source| source.source());
    let mut chain: Vec<String> = sources
        .by_ref()
        .take(MAX_CHAIN_ENTRIES)
        .map(|source| storable_message(source.to_string()))
        .collect();
    let rest = sources.take(MAX_SOURCES_COUNTED).count();
    if rest > 0 {
        // The last kept source gives way to the note.
        chain.pop();
        let cut = rest + 1;
        chain.push(if rest == MAX_SOURCES_COUNTED {
            format!("… [cut: at least {cut} more sources]")
        } else {
            format!("… [cut: {cut} more sources]")
        });
    }
    chain
}

/// Replaces NUL characters in every string of `value`, object keys included. Should two keys
/// of one object become equal, the one that sorts last is kept.
pub(crate) fn storable_json(value: &mut serde_json::Value) {
    use serde_json::Value;

    // A loop rather than recursion: a value built in code may be nested arbitrarily deep.
    let mut pending = vec![value];
    while let Some(value) = pending.pop() {
        match value {
            Value::String(text) => {
                if text.contains('\0') {
                    *text = text.replace('\0', "\u{FFFD}");
                }
            }
            Value::Array(items) => pending.extend(items.iter_mut()),
            Value::Object(object) => {
                if object.keys().any(|key| key.contains('\0')) {
                    let entries = std::mem::take(object);
                    for (key, item) in entries {
                        object.insert(without_nul(key), item);
                    }
                }
                pending.extend(object.values_mut());
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn short_clean_text_is_unchanged() {
        assert_eq!(storable_message("boom".to_owned()), "boom");
        assert_eq!(without_nul("ä✓".to_owned()), "ä✓");
        let exact = "x".repeat(MAX_MESSAGE_BYTES);
        assert_eq!(storable_message(exact.clone()), exact);
    }

    #[test]
    fn nul_becomes_the_replacement_character() {
        assert_eq!(storable_message("a\0b\0".to_owned()), "a\u{FFFD}b\u{FFFD}");
        assert_eq!(without_nul("\0".to_owned()), "\u{FFFD}");
    }

    #[test]
    fn a_long_message_is_cut_at_a_char_boundary_with_a_note() {
        // Two-byte characters, so a cut at an odd byte count would split one.
        let message = "é".repeat(100_000);
        let stored = storable_message(message.clone());
        assert!(stored.len() <= MAX_MESSAGE_BYTES, "{} bytes", stored.len());
        let (kept, note) = stored.split_once('…').unwrap();
        assert!(message.starts_with(kept));
        assert_eq!(kept.len(), MAX_MESSAGE_BYTES - CUT_NOTE_BYTES);
        assert_eq!(
            note,
            format!(" [cut: {} more bytes]", message.len() - kept.len())
        );
    }

    #[test]
    fn nuls_count_at_their_stored_width() {
        // Just short enough as bytes, too long once each NUL takes three.
        let message = "\0".repeat(MAX_MESSAGE_BYTES);
        let stored = storable_message(message);
        assert!(stored.len() <= MAX_MESSAGE_BYTES);
        assert!(!stored.contains('\0'));
        assert!(stored.starts_with('\u{FFFD}'));
        assert!(stored.ends_with("more bytes]"));
    }

    #[test]
    fn storable_message_is_idempotent() {
        for message in [
            "plain".to_owned(),
            "a\0b".to_owned(),
            "x".repeat(5 * 1024 * 1024),
            "\0".repeat(MAX_MESSAGE_BYTES),
            "✓".repeat(MAX_MESSAGE_BYTES),
        ] {
            let once = storable_message(message);
            assert_eq!(storable_message(once.clone()), once);
        }
    }

    #[test]
    fn json_strings_and_keys_lose_their_nuls() {
        let mut value = json!({
            "a\0": ["x\0y", { "k\0k": "v\0", "n": 1 }, null, true, 2.5],
            "clean": "clean",
        });
        storable_json(&mut value);
        assert_eq!(
            value,
            json!({
                "a\u{FFFD}": ["x\u{FFFD}y", { "k\u{FFFD}k": "v\u{FFFD}", "n": 1 }, null, true, 2.5],
                "clean": "clean",
            })
        );
        assert!(!serde_json::to_string(&value).unwrap().contains("\\u0000"));
    }

    #[test]
    fn deeply_nested_json_does_not_overflow_the_stack() {
        let mut value = json!("\0");
        for _ in 0..100_000 {
            value = serde_json::Value::Array(vec![value]);
        }
        storable_json(&mut value);
        let mut inner = &value;
        while let serde_json::Value::Array(items) = inner {
            inner = &items[0];
        }
        assert_eq!(inner, &json!("\u{FFFD}"));
        // Dropping a value this deep recurses in serde_json; take it apart by hand.
        let mut pending = vec![value];
        while let Some(value) = pending.pop() {
            if let serde_json::Value::Array(items) = value {
                pending.extend(items);
            }
        }
    }
}
