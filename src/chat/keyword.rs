//! Channel keywords a phone-side visitor texts to move their conversation
//! (`[chat] switch_keywords`): only a message that is the keyword and
//! nothing else is a command; a keyword inside a sentence is just text.

use super::event::ChannelKind;

/// Longest keyword accepted in config; longer texts are never commands.
pub const MAX_KEYWORD_LEN: usize = 32;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SwitchKeywords {
    /// (keyword in lowercase, target channel).
    words: Vec<(String, ChannelKind)>,
}

impl SwitchKeywords {
    pub fn new(pairs: impl IntoIterator<Item = (String, ChannelKind)>) -> SwitchKeywords {
        SwitchKeywords {
            words: pairs
                .into_iter()
                .map(|(word, channel)| (word.trim().to_lowercase(), channel))
                .filter(|(word, _)| !word.is_empty())
                .collect(),
        }
    }

    /// The channel `text` asks for: the whole message, trimmed, compared
    /// without case.
    pub fn command(&self, text: &str) -> Option<ChannelKind> {
        let text = text.trim();
        // Cheap refusal before lowercasing: no keyword is this long.
        if text.len() > MAX_KEYWORD_LEN * 4 {
            return None;
        }
        let text = text.to_lowercase();
        self.words
            .iter()
            .find(|(word, _)| *word == text)
            .map(|(_, channel)| *channel)
    }

    /// The keyword that moves to `channel` as configured (upper case, as
    /// messages show it), if any.
    pub fn word_for(&self, channel: ChannelKind) -> Option<String> {
        self.words
            .iter()
            .find(|(_, c)| *c == channel)
            .map(|(word, _)| word.to_uppercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> SwitchKeywords {
        SwitchKeywords::new([
            ("WHATSAPP".to_string(), ChannelKind::WhatsApp),
            ("SMS".to_string(), ChannelKind::Sms),
            ("Web".to_string(), ChannelKind::Web),
        ])
    }

    #[test]
    fn only_the_whole_message_is_a_command() {
        let k = defaults();
        assert_eq!(k.command("WHATSAPP"), Some(ChannelKind::WhatsApp));
        assert_eq!(k.command("  whatsapp \n"), Some(ChannelKind::WhatsApp));
        assert_eq!(k.command("WhatsApp"), Some(ChannelKind::WhatsApp));
        assert_eq!(k.command("web"), Some(ChannelKind::Web));
        assert_eq!(k.command("sms"), Some(ChannelKind::Sms));
        assert_eq!(k.command("can we use whatsapp?"), None);
        assert_eq!(k.command("WHATSAPP please"), None);
        assert_eq!(k.command("whats app"), None);
        assert_eq!(k.command(""), None);
        assert_eq!(k.command(&"sms ".repeat(500)), None);
        assert_eq!(k.word_for(ChannelKind::Web).as_deref(), Some("WEB"));
        assert_eq!(SwitchKeywords::default().command("SMS"), None);
    }
}
