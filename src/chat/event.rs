//! What a conversation is made of, in the shape the web client reads.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Bot,
    Visitor,
    System,
    /// A human operator writing from the console.
    Agent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Bot => "bot",
            Role::Visitor => "visitor",
            Role::System => "system",
            Role::Agent => "agent",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "bot" => Some(Role::Bot),
            "visitor" => Some(Role::Visitor),
            "system" => Some(Role::System),
            "agent" => Some(Role::Agent),
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
        /// Set on the operator's "visitor action command": answering with
        /// a phone number moves the chat ("switch_sms", "switch_whatsapp").
        #[serde(default, skip_serializing_if = "Option::is_none")]
        action: Option<String>,
        /// Unix milliseconds.
        #[serde(default)]
        at: u64,
    },
    /// The conversation moved to another channel.
    Channel {
        id: u64,
        /// "web", "sms" or "whatsapp".
        channel: String,
        /// The phone number, masked for display.
        address: Option<String>,
        text: String,
        /// Until when (unix ms) the visitor may undo the switch.
        revert_until: Option<u64>,
        at: u64,
    },
    /// The conversation is over; clients stop reconnecting.
    Closed {
        id: u64,
        text: String,
        /// Unix milliseconds.
        #[serde(default)]
        at: u64,
    },
}

impl Event {
    /// The row the store keeps: who, what kind, the text, and the rest of
    /// the event as JSON.
    pub fn stored(&self) -> (Role, &'static str, String, Option<String>) {
        match self {
            Event::Message { role, text, .. } => (*role, "message", text.clone(), None),
            Event::Prompt {
                input,
                text,
                choices,
                placeholder,
                action,
                ..
            } => (
                Role::Bot,
                "prompt",
                text.clone(),
                serde_json::to_string(&serde_json::json!({
                    "input": input, "choices": choices, "placeholder": placeholder,
                    "action": action
                }))
                .ok(),
            ),
            Event::Closed { text, .. } => (Role::System, "closed", text.clone(), None),
            Event::Channel {
                channel,
                address,
                revert_until,
                text,
                ..
            } => (
                Role::System,
                "channel",
                text.clone(),
                serde_json::to_string(&serde_json::json!({
                    "channel": channel, "address": address, "revert_until": revert_until
                }))
                .ok(),
            ),
        }
    }

    /// When it happened (unix ms).
    pub fn at(&self) -> u64 {
        match self {
            Event::Message { at, .. }
            | Event::Channel { at, .. }
            | Event::Prompt { at, .. }
            | Event::Closed { at, .. } => *at,
        }
    }

    pub fn id(&self) -> u64 {
        match self {
            Event::Message { id, .. }
            | Event::Prompt { id, .. }
            | Event::Closed { id, .. }
            | Event::Channel { id, .. } => *id,
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

/// Where a conversation is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    Web,
    Sms,
    #[serde(rename = "whatsapp")]
    WhatsApp,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Web => "web",
            ChannelKind::Sms => "sms",
            ChannelKind::WhatsApp => "whatsapp",
        }
    }

    pub fn parse(s: &str) -> Option<ChannelKind> {
        match s {
            "web" => Some(ChannelKind::Web),
            "sms" => Some(ChannelKind::Sms),
            "whatsapp" => Some(ChannelKind::WhatsApp),
            _ => None,
        }
    }

    /// "SMS", "WhatsApp", "web chat": for sentences shown to people.
    pub fn label(self) -> &'static str {
        match self {
            ChannelKind::Web => "web chat",
            ChannelKind::Sms => "SMS",
            ChannelKind::WhatsApp => "WhatsApp",
        }
    }
}

/// One stretch of a conversation on one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub channel: ChannelKind,
    /// E.164 for phone channels.
    pub address: Option<String>,
    pub started_at: std::time::SystemTime,
    pub ended_at: Option<std::time::SystemTime>,
}

/// What became of a visitor's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Echoed and handed to the flow (free text: echoed, flow or not).
    Flow,
    /// The answer to a visitor action command: switch to `channel` at
    /// `phone` (as typed).
    Switch { channel: ChannelKind, phone: String },
    /// Dropped: closed, stale or repeated.
    Refused,
}
