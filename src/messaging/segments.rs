//! How many SMS segments a text takes, which is what carriers bill.
//!
//! GSM-7 (3GPP TS 23.038 default alphabet) when every character is in it:
//! 160 septets in one message, 153 per part once concatenated (the user
//! data header takes the rest); an extension-table character (`€ ^ { } [ ]
//! ~ | \` and form feed) is an escape plus itself, two septets. Any other
//! character makes the whole text UCS-2: 70 UTF-16 code units alone, 67
//! per part, a character outside the BMP (most emoji) taking two. As
//! Twilio's segment calculator does, a character is never split across
//! parts: one that doesn't fit opens the next part.

/// The alphabet a text is sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Gsm7,
    Ucs2,
}

/// The basic GSM 03.38 table, characters 0x00–0x7F (0x1B, the escape, is
/// not a character of its own).
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
                          ¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";

/// Reached through the escape: two septets each.
const GSM7_EXTENSION: &str = "\u{c}^{}\\[~]|€";

/// Septets of `c` in GSM-7, or `None` when GSM-7 can't carry it.
fn gsm7_septets(c: char) -> Option<u32> {
    if GSM7_BASIC.contains(c) {
        Some(1)
    } else if GSM7_EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// The encoding `text` goes out in.
pub fn encoding(text: &str) -> Encoding {
    if text.chars().all(|c| gsm7_septets(c).is_some()) {
        Encoding::Gsm7
    } else {
        Encoding::Ucs2
    }
}

/// What `c` costs in `encoding`: septets, or UTF-16 code units.
fn units(encoding: Encoding, c: char) -> u32 {
    match encoding {
        Encoding::Gsm7 => gsm7_septets(c).unwrap_or(1),
        Encoding::Ucs2 => c.len_utf16() as u32,
    }
}

/// Segments `text` takes; an empty text takes none.
pub fn count(text: &str) -> u32 {
    let encoding = encoding(text);
    let (single, part) = match encoding {
        Encoding::Gsm7 => (160, 153),
        Encoding::Ucs2 => (70, 67),
    };
    let total: u32 = text.chars().map(|c| units(encoding, c)).sum();
    if total <= single {
        return u32::from(total > 0);
    }
    let (mut parts, mut used) = (1, 0);
    for size in text.chars().map(|c| units(encoding, c)) {
        if used + size > part {
            parts += 1;
            used = 0;
        }
        used += size;
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gsm7_single_and_concatenated() {
        assert_eq!(count(""), 0);
        assert_eq!(count("a"), 1);
        assert_eq!(count(&"a".repeat(160)), 1);
        assert_eq!(count(&"a".repeat(161)), 2);
        assert_eq!(count(&"a".repeat(306)), 2);
        assert_eq!(count(&"a".repeat(307)), 3);
        // The GSM table has some accents (é, ñ, ¿, ¡) but not others (í, ó).
        assert_eq!(encoding("¿Qué tal, señor? ¡Ya!\r\n€"), Encoding::Gsm7);
        assert_eq!(encoding("¿Envío el código?"), Encoding::Ucs2);
        assert_eq!(count(&format!("í{}", "a".repeat(69))), 1);
        assert_eq!(count(&format!("í{}", "a".repeat(70))), 2);
    }

    #[test]
    fn extension_characters_take_two_septets_and_are_not_split() {
        for c in ['€', '^', '{', '}', '[', ']', '~', '|', '\\', '\u{c}'] {
            assert_eq!(encoding(&c.to_string()), Encoding::Gsm7, "{c:?}");
        }
        assert_eq!(count(&"€".repeat(80)), 1, "160 septets");
        assert_eq!(count(&"€".repeat(81)), 2, "162 septets");
        assert_eq!(count(&format!("{}^", "a".repeat(158))), 1);
        assert_eq!(count(&format!("{}{{", "a".repeat(159))), 2);
        // 306 septets would be two parts, but the escape and its character
        // can't straddle them: the € opens the second part, one `a` spills.
        let straddling = format!("{}€{}", "a".repeat(152), "a".repeat(152));
        assert_eq!(count(&straddling), 3);
    }

    #[test]
    fn anything_else_is_ucs2_counted_in_utf16_units() {
        assert_eq!(encoding("hola 😀"), Encoding::Ucs2);
        assert_eq!(encoding("tab\there"), Encoding::Ucs2, "tab is not GSM-7");
        assert_eq!(count(&"ж".repeat(70)), 1);
        assert_eq!(count(&"ж".repeat(71)), 2);
        assert_eq!(count(&"ж".repeat(134)), 2);
        assert_eq!(count(&"ж".repeat(135)), 3);
        // One emoji turns 159 GSM characters into UCS-2.
        assert_eq!(count(&format!("{}😀", "a".repeat(159))), 3);
        assert_eq!(count(&"😀".repeat(35)), 1, "70 code units");
        assert_eq!(count(&"😀".repeat(36)), 2, "72 code units");
        // A surrogate pair is not split between parts either.
        let straddling = format!("{}😀{}", "ж".repeat(66), "ж".repeat(66));
        assert_eq!(count(&straddling), 3);
    }

    #[test]
    fn a_breakout_link_fits_one_segment() {
        let token = "a".repeat(22);
        let text = format!(
            "Hello from crossline. Please type your email address here: https://chat.example.com/b/{token}"
        );
        assert_eq!((encoding(&text), count(&text)), (Encoding::Gsm7, 1));
    }
}
