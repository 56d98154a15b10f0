//! What a waiting caller is told, in English or Spanish: their place, the
//! wait to expect, the callback offer and its confirmation.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    En,
    Es,
}

impl Language {
    pub fn parse(code: &str) -> Option<Language> {
        match code {
            "en" => Some(Language::En),
            "es" => Some(Language::Es),
            _ => None,
        }
    }

    /// The TTS language code.
    pub fn code(self) -> &'static str {
        match self {
            Language::En => "en",
            Language::Es => "es",
        }
    }
}

/// "You are number 2 in the queue. Your wait is about 3 minutes."
pub fn position(language: Language, position: usize, wait: Duration) -> String {
    // Rounded up: an estimate that comes early beats one that comes late.
    let minutes = wait.as_secs().div_ceil(60);
    match language {
        Language::En => {
            let wait = match minutes {
                0 => "less than a minute".to_string(),
                1 => "about 1 minute".to_string(),
                m => format!("about {m} minutes"),
            };
            format!("You are number {position} in the queue. Your wait is {wait}.")
        }
        Language::Es => {
            let wait = match minutes {
                0 => "menos de un minuto".to_string(),
                1 => "de alrededor de 1 minuto".to_string(),
                m => format!("de alrededor de {m} minutos"),
            };
            format!("Usted es el número {position} en la cola. Su espera es {wait}.")
        }
    }
}

/// The virtual-hold offer, said after the position.
pub fn callback_offer(language: Language) -> &'static str {
    match language {
        Language::En => "To be called back without losing your place, press 1.",
        Language::Es => "Para que le llamemos sin perder su lugar, pulse 1.",
    }
}

/// Said once the caller took the offer, before hanging up: the number
/// they will be called at, by its last four digits (the whole number is
/// theirs, but the line may be overheard).
pub fn callback_confirmed(language: Language, phone: &str) -> String {
    let digits: Vec<char> = phone.chars().filter(char::is_ascii_digit).collect();
    let tail: Vec<String> = digits[digits.len().saturating_sub(4)..]
        .iter()
        .map(char::to_string)
        .collect();
    let tail = tail.join(" ");
    match language {
        Language::En => format!(
            "Thank you. We will call you back at your number ending in {tail} when an agent is free, and you keep your place in the queue. Goodbye."
        ),
        Language::Es => format!(
            "Gracias. Le llamaremos a su número terminado en {tail} cuando un agente esté libre, y conserva su lugar en la cola. Adiós."
        ),
    }
}

/// Said when the called-back customer answers, before the agent rings.
pub fn callback_connecting(language: Language) -> &'static str {
    match language {
        Language::En => {
            "Hello, this is the call back you asked for. Connecting you to an agent now."
        }
        Language::Es => "Hola, le devolvemos la llamada que pidió. Le pasamos con un agente ahora.",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn english_and_spanish() {
        let m = Duration::from_secs(60);
        assert_eq!(
            position(Language::En, 2, 3 * m),
            "You are number 2 in the queue. Your wait is about 3 minutes."
        );
        assert_eq!(
            position(Language::En, 1, Duration::from_secs(61)),
            "You are number 1 in the queue. Your wait is about 2 minutes."
        );
        assert_eq!(
            position(Language::En, 1, Duration::ZERO),
            "You are number 1 in the queue. Your wait is less than a minute."
        );
        assert_eq!(
            position(Language::Es, 3, m),
            "Usted es el número 3 en la cola. Su espera es de alrededor de 1 minuto."
        );
        assert_eq!(Language::parse("fr"), None);
        assert!(callback_confirmed(Language::En, "+15551234567").contains("ending in 4 5 6 7"));
        assert!(callback_confirmed(Language::Es, "+34612345678").contains("terminado en 5 6 7 8"));
    }
}
