//! What a conversation is made of, in the shape the web client reads.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Bot,
    Visitor,
    System,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Bot => "bot",
            Role::Visitor => "visitor",
            Role::System => "system",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "bot" => Some(Role::Bot),
            "visitor" => Some(Role::Visitor),
            "system" => Some(Role::System),
            _ => None,
        }
    }
}

/// What an `ask` prompt expects; the client picks its keyboard from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum InputKind {
    Email,
    Phone,
    Number,
    #[default]
    Text,
    Choice,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    pub label: String,
    pub value: String,
}

/// One stored event of a transcript. `id` grows by one per event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Message {
        id: u64,
        role: Role,
        text: String,
        /// Unix milliseconds.
        at: u64,
    },
    Prompt {
        id: u64,
        input: InputKind,
        text: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        choices: Vec<Choice>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        placeholder: Option<String>,
    },
    /// The conversation is over; clients stop reconnecting.
    Closed { id: u64, text: String },
}

impl Event {
    pub fn id(&self) -> u64 {
        match self {
            Event::Message { id, .. } | Event::Prompt { id, .. } | Event::Closed { id, .. } => *id,
        }
    }
}

/// What subscribers hear: stored events, and the typing indicator (not
/// stored: it means nothing after the fact).
#[derive(Debug, Clone)]
pub enum Live {
    Event(Arc<Event>),
    Typing(bool),
}

/// What the visitor sent, as the flow reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VisitorInput {
    /// An answer to prompt `prompt`.
    Answer { prompt: u64, value: String },
    /// Free text with no prompt open.
    Text(String),
}
