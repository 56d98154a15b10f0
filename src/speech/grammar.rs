//! What a transcript means for a menu: each value has phrases, and the
//! value whose phrase appears in the transcript (as whole words, accents
//! and case aside) wins; the longest phrase first, so "text me" beats "me".

use std::collections::BTreeMap;

/// Lower case, accents off, punctuation to spaces, single spaces.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars().flat_map(char::to_lowercase) {
        let c = match c {
            'á' | 'à' | 'â' | 'ä' | 'ã' => 'a',
            'é' | 'è' | 'ê' | 'ë' => 'e',
            'í' | 'ì' | 'î' | 'ï' => 'i',
            'ó' | 'ò' | 'ô' | 'ö' | 'õ' => 'o',
            'ú' | 'ù' | 'û' | 'ü' => 'u',
            'ñ' => 'n',
            'ç' => 'c',
            c if c.is_alphanumeric() => c,
            _ => ' ',
        };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        out.push(c);
    }
    out.trim_end().to_string()
}

/// The value `transcript` picks, if any.
pub fn pick<'a>(grammar: &'a BTreeMap<String, Vec<String>>, transcript: &str) -> Option<&'a str> {
    let said = format!(" {} ", normalize(transcript));
    let mut phrases: Vec<(&str, String)> = grammar
        .iter()
        .flat_map(|(value, phrases)| phrases.iter().map(move |p| (value.as_str(), normalize(p))))
        .filter(|(_, p)| !p.is_empty())
        .collect();
    phrases.sort_by_key(|(_, p)| std::cmp::Reverse(p.len()));
    phrases
        .into_iter()
        .find(|(_, p)| said.contains(&format!(" {p} ")))
        .map(|(value, _)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn menu() -> BTreeMap<String, Vec<String>> {
        [
            ("agent", vec!["agent", "agente", "operator"]),
            ("sms", vec!["text me", "mándame un SMS"]),
            ("whatsapp", vec!["WhatsApp"]),
            ("bye", vec!["goodbye", "adiós"]),
        ]
        .into_iter()
        .map(|(v, ps)| (v.to_string(), ps.into_iter().map(String::from).collect()))
        .collect()
    }

    #[test]
    fn phrases_match_as_whole_words_accents_and_case_aside() {
        let g = menu();
        assert_eq!(pick(&g, "I'd like an Agent, please."), Some("agent"));
        assert_eq!(pick(&g, "Quiero hablar con un agente"), Some("agent"));
        assert_eq!(pick(&g, "Mandame un sms por favor"), Some("sms"));
        assert_eq!(pick(&g, "can you text me"), Some("sms"));
        assert_eq!(pick(&g, "whatsapp"), Some("whatsapp"));
        assert_eq!(pick(&g, "ADIOS"), Some("bye"));
        assert_eq!(pick(&g, "agents of shield"), None, "whole words only");
        assert_eq!(pick(&g, "banana"), None);
        assert_eq!(pick(&g, ""), None);
    }
}
