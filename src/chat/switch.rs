//! The switchboard: moves live conversations between the web chat, SMS and
//! WhatsApp, carries bot and agent messages to the phone a conversation is
//! on, and routes inbound texts to the conversation bound to their number.
//!
//! Every state change goes through the conversation's lock (see
//! `Conversation::rebind`), so racing events settle one way: a revert and
//! an inbound SMS arriving together leave the chat on the web, with the
//! SMS in the transcript.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use dashmap::DashMap;

use super::event::{Accepted, ChannelKind, Role, VisitorInput};
use super::hub::{ChannelSender, ChatHub, Conversation};
use crate::messaging::inbound::{opt_keyword, InboundChannel, InboundMessage, OptChange};
use crate::messaging::opt_out::OptOuts;
use crate::messaging::whatsapp_template::Component;
use crate::messaging::window::WhatsAppWindow;
use crate::messaging::{MessageKind, MessagingProvider, OutboundMessage, SendError};
use crate::store::{SendChannel, Store};
use crate::telemetry::names;

/// How long a handled provider id stays in memory; the store answers after.
const SEEN_IN_MEMORY: Duration = Duration::from_secs(600);

/// Why a switch, reconnect or agent message didn't happen. The text is
/// fit to show to the visitor or operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SwitchError {
    #[error("Please enter the number with its country code, e.g. +34 600 123 456.")]
    BadPhone,
    #[error("No phone number for this conversation.")]
    NoPhone,
    #[error("{0} is not available here.")]
    Unavailable(&'static str),
    /// The detail (provider's words) is for logs, never shown: it could
    /// tell a stranger that the number's owner sent STOP.
    #[error("We could not send a message to that number.")]
    Send(String),
    /// The number texted STOP on that channel (here or at the provider).
    /// Shown like `Send`: only operators are told why.
    #[error("We could not send a message to that number.")]
    OptedOut,
    #[error("Sorry, {0}.")]
    Refused(crate::messaging::policy::Refusal),
    #[error("That code is not right. Please check the message we sent and try again.")]
    WrongCode,
    #[error("That code has expired. Please ask for a new one.")]
    CodeExpired,
    #[error("It is too late to undo the switch.")]
    TooLate,
    #[error("The conversation is closed.")]
    Closed,
    #[error("The conversation is still open: ask the visitor for a number instead.")]
    StillOpen,
    #[error("No such conversation or lead.")]
    NotFound,
}

/// Texts the switchboard sends and shows.
#[derive(Debug, Clone)]
pub struct SwitchTexts {
    /// Name of the service, used in the welcome message.
    pub title: String,
    pub revert_window: Duration,
    /// Chat flows a text from a new number starts (`[chat] sms_flow`,
    /// `whatsapp_flow`).
    pub sms_flow: Option<String>,
    pub whatsapp_flow: Option<String>,
    /// (template, language) of the WhatsApp authentication template that
    /// carries a switch's code; unset: visitors can't switch to WhatsApp.
    pub whatsapp_code_template: Option<(String, String)>,
    /// What a visitor on a phone texts to move (`[chat] switch_keywords`).
    pub keywords: super::SwitchKeywords,
    /// How long a link back to the web chat can be opened.
    pub web_link_ttl: Duration,
    /// Where links point (`[http] public_base_url`), without a trailing `/`.
    pub link_base: String,
    /// (template, language) for the first WhatsApp message of a switch or
    /// reconnect; unset: operators can't move chats to WhatsApp.
    pub whatsapp_welcome_template: Option<(String, String)>,
}

/// Who moved a conversation from a phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchBy {
    /// An operator, from the console or the API.
    Operator,
    /// The visitor, texting a channel keyword.
    Keyword,
}

/// A visitor's switch waiting for the code sent to the phone.
struct PendingSwitch {
    channel: ChannelKind,
    phone: String,
    code_hash: [u8; 32],
    expires: Instant,
    tries: u32,
}

/// How long a switch code is good for, and how many wrong tries it takes.
const CODE_LIFETIME: Duration = Duration::from_secs(600);
const CODE_TRIES: u32 = 3;

/// What became of an inbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundOutcome {
    /// The same provider message id was handled before.
    Duplicate,
    OptedOut,
    OptedIn,
    /// Added to this conversation (or handed to the node that runs it).
    Delivered(String),
    /// Couldn't be handed to the node that runs its conversation: the
    /// provider should send it again.
    Failed,
}

pub struct Switchboard {
    hub: Arc<ChatHub>,
    store: Arc<dyn Store>,
    sms: Option<Arc<dyn MessagingProvider>>,
    /// Gated by `window`: free text only inside the 24 h window.
    whatsapp: Option<Arc<dyn MessagingProvider>>,
    window: Arc<WhatsAppWindow>,
    texts: SwitchTexts,
    /// Who sent STOP: inbound STOP/START change it; the providers this
    /// board sends through are gated by it.
    opt_outs: Arc<OptOuts>,
    /// Provider message ids handled recently: the atomic guard against a
    /// provider's retry racing the first delivery. Older ids are answered
    /// by the store; this map is pruned so it stays small.
    seen: DashMap<String, Instant>,
    /// Visitors' switches waiting for their codes, by conversation.
    pending: DashMap<String, PendingSwitch>,
    /// Links back to the web chat not yet opened.
    links: super::WebLinks,
    policy: Arc<crate::messaging::policy::OutboundPolicy>,
    me: Weak<Switchboard>,
}

/// The send log's and opt-out list's name for a phone channel.
fn send_channel(c: ChannelKind) -> SendChannel {
    match c {
        ChannelKind::WhatsApp => SendChannel::WhatsApp,
        _ => SendChannel::Sms,
    }
}

impl SwitchError {
    fn from_send(e: SendError) -> SwitchError {
        match e {
            SendError::OptOutBlocked | SendError::OptedOut { .. } => SwitchError::OptedOut,
            other => SwitchError::Send(other.to_string()),
        }
    }
}

/// The transcript's note for a message that didn't reach the phone.
fn not_delivered(channel: ChannelKind, e: &SendError) -> String {
    format!(
        "Not delivered by {}: {}",
        channel.label(),
        e.kind().replace('_', " ")
    )
}

fn from_inbound(c: InboundChannel) -> ChannelKind {
    match c {
        InboundChannel::Sms => ChannelKind::Sms,
        InboundChannel::WhatsApp => ChannelKind::WhatsApp,
    }
}

impl Switchboard {
    // The parts it is built from, each passed once at start.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        hub: Arc<ChatHub>,
        store: Arc<dyn Store>,
        sms: Option<Arc<dyn MessagingProvider>>,
        whatsapp: Option<Arc<dyn MessagingProvider>>,
        window: Arc<WhatsAppWindow>,
        texts: SwitchTexts,
        policy: Arc<crate::messaging::policy::OutboundPolicy>,
        opt_outs: Arc<OptOuts>,
    ) -> Arc<Switchboard> {
        let board = Arc::new_cyclic(|me| Switchboard {
            hub: hub.clone(),
            store,
            sms,
            whatsapp,
            window,
            links: super::WebLinks::new(texts.web_link_ttl),
            texts,
            opt_outs,
            seen: DashMap::new(),
            pending: DashMap::new(),
            policy,
            me: me.clone(),
        });
        hub.set_sender(board.clone());
        board
    }

    /// The channels a web chat can move to.
    pub fn channels(&self) -> Vec<ChannelKind> {
        let mut v = Vec::new();
        if self.sms.is_some() {
            v.push(ChannelKind::Sms);
        }
        // Visitors prove they hold the phone with a code, which on
        // WhatsApp needs an authentication template.
        if self.whatsapp.is_some()
            && self.texts.whatsapp_welcome_template.is_some()
            && self.texts.whatsapp_code_template.is_some()
        {
            v.push(ChannelKind::WhatsApp);
        }
        v
    }

    fn provider(&self, channel: ChannelKind) -> Result<&Arc<dyn MessagingProvider>, SwitchError> {
        match channel {
            ChannelKind::Sms => self.sms.as_ref().ok_or(SwitchError::Unavailable("SMS")),
            ChannelKind::WhatsApp => self
                .whatsapp
                .as_ref()
                .ok_or(SwitchError::Unavailable("WhatsApp")),
            ChannelKind::Web => Err(SwitchError::Unavailable("web")),
        }
    }

    /// Send `kind` to `to` on `channel` and log it (the provider is gated
    /// by the opt-out list).
    async fn send(
        &self,
        channel: ChannelKind,
        to: &str,
        kind: MessageKind,
        conversation: &str,
    ) -> Result<(), SendError> {
        let provider = self
            .provider(channel)
            .map_err(|e| SendError::Config(e.to_string()))?
            .clone();
        let msg = OutboundMessage {
            to: to.to_string(),
            from: None,
            kind,
            idempotency_key: format!("chat:{conversation}:{}", super::random_token(9)),
        };
        let result = provider.send(&msg).await;
        crate::messaging::send_log::record(
            Some(self.store.as_ref()),
            send_channel(channel),
            provider.name(),
            crate::messaging::send_log::SendOrigin {
                call_id: None,
                flow: None,
                node: format!("chat:{conversation}"),
            },
            &msg,
            &result,
        );
        result.map(|_| ())
    }

    /// Free text to a phone: plain SMS, or WhatsApp text inside the window.
    async fn send_text(
        &self,
        channel: ChannelKind,
        to: &str,
        text: &str,
        conversation: &str,
    ) -> Result<(), SendError> {
        // The WhatsApp provider refuses it outside the window.
        let kind = match channel {
            ChannelKind::WhatsApp => MessageKind::WhatsAppText {
                body: text.to_string(),
            },
            _ => MessageKind::Text {
                body: text.to_string(),
            },
        };
        self.send(channel, to, kind, conversation).await
    }

    /// The first message on a phone channel: SMS text; on WhatsApp, free
    /// text inside the 24-hour window, else the approved template.
    async fn send_welcome(
        &self,
        channel: ChannelKind,
        to: &str,
        text: &str,
        conversation: &str,
    ) -> Result<(), SendError> {
        match channel {
            ChannelKind::WhatsApp if self.window.is_open(to, SystemTime::now()).await => {
                let kind = MessageKind::WhatsAppText {
                    body: text.to_string(),
                };
                self.send(channel, to, kind, conversation).await
            }
            ChannelKind::WhatsApp => {
                let (name, language) = self
                    .texts
                    .whatsapp_welcome_template
                    .clone()
                    .ok_or_else(|| SendError::Config("no WhatsApp welcome template".into()))?;
                let kind = MessageKind::WhatsAppTemplate {
                    name,
                    language,
                    components: vec![Component::body_texts([self.texts.title.clone()])],
                };
                self.send(channel, to, kind, conversation).await
            }
            _ => {
                self.send(
                    channel,
                    to,
                    MessageKind::Text {
                        body: text.to_string(),
                    },
                    conversation,
                )
                .await
            }
        }
    }

    /// Move a live conversation to `channel` at `raw_phone`: the welcome
    /// message must go out first; if it doesn't, nothing changes.
    pub async fn switch_to_phone(
        &self,
        conv: &Conversation,
        channel: ChannelKind,
        raw_phone: &str,
    ) -> Result<u64, SwitchError> {
        self.provider(channel)?;
        if conv.is_closed() {
            return Err(SwitchError::Closed);
        }
        let phone = self
            .hub
            .phone(raw_phone)
            .map_err(|_| SwitchError::BadPhone)?;
        let welcome = format!(
            "{}: this is your conversation with us, moved from the web chat. Reply here to carry on.",
            self.texts.title
        );
        self.send_welcome(channel, &phone, &welcome, &conv.id)
            .await
            .map_err(SwitchError::from_send)?;
        let text = format!(
            "We sent a message to {}. The conversation continues on {}.",
            crate::mask::phone(&phone),
            channel.label()
        );
        conv.rebind(channel, Some(phone), &text, Some(self.texts.revert_window))
            .ok_or(SwitchError::Closed)
    }

    /// A visitor asks to move to `channel` at `raw_phone`: the outbound
    /// policy decides, then one message carrying a code goes to the phone.
    /// Nothing moves until the code is typed back (`confirm_switch`), so
    /// an anonymous visitor can't make us text numbers they don't hold.
    /// Returns the masked number.
    pub async fn request_switch(
        &self,
        conv: &Conversation,
        channel: ChannelKind,
        raw_phone: &str,
        source: Option<std::net::IpAddr>,
    ) -> Result<String, SwitchError> {
        self.provider(channel)?;
        if conv.is_closed() {
            return Err(SwitchError::Closed);
        }
        if channel == ChannelKind::WhatsApp && self.texts.whatsapp_code_template.is_none() {
            return Err(SwitchError::Unavailable("WhatsApp"));
        }
        // Asking to text a phone is content: the chat is kept from now on.
        conv.promote();
        let phone = self
            .hub
            .phone(raw_phone)
            .map_err(|_| SwitchError::BadPhone)?;
        self.policy
            .admit(
                Instant::now(),
                channel.as_str(),
                &phone,
                crate::messaging::policy::Requester {
                    source,
                    conversation: Some(&conv.id),
                },
            )
            .map_err(SwitchError::Refused)?;
        let code = super::random_digits(6);
        let kind = match (channel, &self.texts.whatsapp_code_template) {
            (ChannelKind::WhatsApp, Some((name, language))) => MessageKind::WhatsAppTemplate {
                name: name.clone(),
                language: language.clone(),
                components: vec![Component::body_texts([code.clone()])],
            },
            _ => MessageKind::Text {
                body: format!(
                    "{}: your code is {code}. Type it in the web chat to continue the conversation here.",
                    self.texts.title
                ),
            },
        };
        if let Err(e) = self.send(channel, &phone, kind, &conv.id).await {
            tracing::warn!(conversation = %conv.id, error = %e, "switch code not sent");
            return Err(SwitchError::from_send(e));
        }
        self.pending.insert(
            conv.id.clone(),
            PendingSwitch {
                channel,
                phone: phone.clone(),
                code_hash: super::secret_hash(&code),
                expires: Instant::now() + CODE_LIFETIME,
                tries: 0,
            },
        );
        Ok(crate::mask::phone(&phone))
    }

    /// The visitor typed the code: the switch happens (no further message:
    /// the code's message told the phone how to carry on).
    pub fn confirm_switch(
        &self,
        conv: &Conversation,
        channel: ChannelKind,
        code: &str,
    ) -> Result<u64, SwitchError> {
        let phone = {
            let Some(mut p) = self.pending.get_mut(&conv.id) else {
                return Err(SwitchError::CodeExpired);
            };
            if p.channel != channel || Instant::now() > p.expires {
                drop(p);
                self.pending.remove(&conv.id);
                return Err(SwitchError::CodeExpired);
            }
            if !super::same_hash(&super::secret_hash(code.trim()), &p.code_hash) {
                p.tries += 1;
                metrics::counter!(names::CHAT_SWITCH_CODES, "result" => "wrong").increment(1);
                if p.tries >= CODE_TRIES {
                    drop(p);
                    self.pending.remove(&conv.id);
                    return Err(SwitchError::CodeExpired);
                }
                return Err(SwitchError::WrongCode);
            }
            p.phone.clone()
        };
        self.pending.remove(&conv.id);
        metrics::counter!(names::CHAT_SWITCH_CODES, "result" => "confirmed").increment(1);
        let text = format!(
            "Number confirmed: {}. The conversation continues on {}.",
            crate::mask::phone(&phone),
            channel.label()
        );
        let id = conv
            .rebind(
                channel,
                Some(phone.clone()),
                &text,
                Some(self.texts.revert_window),
            )
            .ok_or(SwitchError::Closed)?;
        // WhatsApp's code template is Meta's fixed wording: the welcome
        // follows, so the person sees who the conversation is with.
        if channel == ChannelKind::WhatsApp {
            if let (Some(me), Some(conv)) = (self.me.upgrade(), self.hub.get(&conv.id)) {
                tokio::spawn(async move {
                    let welcome = me.moved_welcome(ChannelKind::Web);
                    if let Err(e) = me.send_welcome(channel, &phone, &welcome, &conv.id).await {
                        tracing::warn!(conversation = %conv.id, error = %e, "WhatsApp welcome not sent");
                        conv.note(
                            Role::System,
                            &format!("Not delivered by WhatsApp: {}", e.kind().replace('_', " ")),
                        );
                    }
                });
            }
        }
        Ok(id)
    }

    /// What a keyword makes us send is budgeted per number, like any
    /// other text a stranger can cause.
    fn admit_keyword(&self, channel: ChannelKind, to: &str) -> Result<(), SwitchError> {
        self.policy
            .admit(
                Instant::now(),
                channel.as_str(),
                to,
                crate::messaging::policy::Requester::default(),
            )
            .map_err(SwitchError::Refused)
    }

    /// The welcome on the channel a conversation moved to.
    fn moved_welcome(&self, from: ChannelKind) -> String {
        let from = match from {
            ChannelKind::Web => "the web chat",
            other => other.label(),
        };
        format!(
            "{}: this is your conversation with us, moved from {from}. Reply here to carry on.",
            self.texts.title
        )
    }

    /// Move a conversation to a phone channel at `to`, the number it is
    /// on or the one that texted the keyword: SMS to WhatsApp and back,
    /// or from the web chat after a link. The welcome goes out first; if
    /// it doesn't, nothing changes. A keyword's welcome is budgeted per
    /// number by the outbound policy; an operator's tells the old channel.
    pub async fn switch_phone(
        &self,
        conv: &Conversation,
        target: ChannelKind,
        to: &str,
        by: SwitchBy,
    ) -> Result<u64, SwitchError> {
        self.provider(target)?;
        if conv.is_closed() {
            return Err(SwitchError::Closed);
        }
        let (from_channel, from_address) = conv.active();
        if by == SwitchBy::Keyword {
            self.admit_keyword(target, to)?;
        }
        let welcome = self.moved_welcome(from_channel);
        self.send_welcome(target, to, &welcome, &conv.id)
            .await
            .map_err(|e| SwitchError::Send(e.to_string()))?;
        let masked = crate::mask::phone(to);
        let text = match by {
            SwitchBy::Operator => format!(
                "An operator moved the conversation to {} ({masked}).",
                target.label()
            ),
            SwitchBy::Keyword => format!(
                "The visitor asked to continue on {}: the conversation continues there ({masked}).",
                target.label()
            ),
        };
        let id = conv
            .rebind(target, Some(to.to_string()), &text, None)
            .ok_or(SwitchError::Closed)?;
        // The person didn't ask: tell the phone channel they were on.
        if let (SwitchBy::Operator, Some(old), Some(me)) = (by, from_address, self.me.upgrade()) {
            if from_channel != ChannelKind::Web {
                let conv_id = conv.id.clone();
                let note = format!("This conversation continues on {}.", target.label());
                tokio::spawn(async move {
                    if let Err(e) = me.send_text(from_channel, &old, &note, &conv_id).await {
                        tracing::warn!(conversation = %conv_id, error = %e, "could not tell the old channel about the switch");
                    }
                });
            }
        }
        Ok(id)
    }

    /// Text `to` on `channel` a link that opens this conversation in the
    /// web chat. Nothing moves until a browser opens it
    /// (`claim_web_link`): till then the conversation stays on the phone.
    pub async fn send_web_link(
        &self,
        conv: &Conversation,
        channel: ChannelKind,
        to: &str,
        by: SwitchBy,
    ) -> Result<(), SwitchError> {
        self.provider(channel)?;
        if conv.is_closed() {
            return Err(SwitchError::Closed);
        }
        if by == SwitchBy::Keyword {
            self.admit_keyword(channel, to)?;
        }
        let now = Instant::now();
        let token = self.links.issue(&conv.id, now);
        let minutes = self.links.ttl().as_secs().div_ceil(60);
        let text = format!(
            "{}: open {}/w/{token} to continue this conversation in the web chat. The link works once, for {minutes} minutes.",
            self.texts.title, self.texts.link_base
        );
        if let Err(e) = self.send_text(channel, to, &text, &conv.id).await {
            // Never sent: nobody can have it, so it goes at once.
            self.links.claim(&token, now);
            metrics::counter!(names::CHAT_WEB_LINKS, "event" => "not_sent").increment(1);
            return Err(SwitchError::Send(e.to_string()));
        }
        metrics::counter!(names::CHAT_WEB_LINKS, "event" => "sent").increment(1);
        // The token stays out of the transcript: the link is a key.
        let how = match by {
            SwitchBy::Operator => "An operator sent a link to the web chat",
            SwitchBy::Keyword => "The visitor asked for a link to the web chat, sent",
        };
        conv.note(
            Role::System,
            &format!(
                "{how} by {} ({}). The conversation moves there when it is opened.",
                channel.label(),
                crate::mask::phone(to)
            ),
        );
        Ok(())
    }

    /// Would this web link open a conversation? (A preview's GET: uses
    /// nothing.)
    pub fn web_link_claimable(&self, token: &str) -> bool {
        self.links.claimable(token, Instant::now())
    }

    /// A browser opened a web link: the conversation moves to the web chat
    /// (if it was on a phone) and that browser gets a new key to it.
    /// `None`: unknown, used or expired, or the conversation is over.
    pub async fn claim_web_link(&self, token: &str) -> Option<(Arc<Conversation>, String)> {
        let Some(id) = self.links.claim(token, Instant::now()) else {
            metrics::counter!(names::CHAT_WEB_LINKS, "event" => "refused").increment(1);
            return None;
        };
        let Some(conv) = self
            .hub
            .get_or_restore(&id)
            .await
            .filter(|c| !c.is_closed())
        else {
            metrics::counter!(names::CHAT_WEB_LINKS, "event" => "refused").increment(1);
            return None;
        };
        let key = conv.rekey();
        if conv.active().0 != ChannelKind::Web {
            conv.rebind(
                ChannelKind::Web,
                None,
                "The visitor opened the web chat link: the conversation continues in the web chat.",
                None,
            )?;
        }
        metrics::counter!(names::CHAT_WEB_LINKS, "event" => "claimed").increment(1);
        Some((conv, key))
    }

    /// A phone-side visitor texted a channel keyword. `false`: not a
    /// command here (already on that channel at that number, or the
    /// channel isn't configured), so the text is an ordinary message.
    async fn keyword_command(
        &self,
        conv: &Conversation,
        channel: ChannelKind,
        from: &str,
        target: ChannelKind,
    ) -> bool {
        let result = match target {
            ChannelKind::Web => self
                .send_web_link(conv, channel, from, SwitchBy::Keyword)
                .await
                .map(|_| ()),
            _ if self.provider(target).is_err()
                || conv.active() == (target, Some(from.to_string())) =>
            {
                return false
            }
            _ => self
                .switch_phone(conv, target, from, SwitchBy::Keyword)
                .await
                .map(|_| ()),
        };
        let outcome = if result.is_ok() { "switched" } else { "failed" };
        metrics::counter!(names::CHAT_SWITCH_KEYWORDS, "to" => target.as_str(), "result" => outcome)
            .increment(1);
        if let Err(e) = result {
            tracing::warn!(conversation = %conv.id, error = %e, to = target.as_str(), "keyword switch failed");
            let reason = match &e {
                SwitchError::Send(detail) => detail.clone(),
                other => other.to_string(),
            };
            conv.note(
                Role::System,
                &format!(
                    "The visitor asked by {} to move to {}; that failed: {reason}",
                    channel.label(),
                    target.label()
                ),
            );
            // Answer where they wrote, so they are not left waiting.
            let sorry = match target {
                ChannelKind::Web => {
                    "Sorry, we could not send you a link to the web chat.".to_string()
                }
                _ => format!(
                    "Sorry, we could not move this conversation to {}.",
                    target.label()
                ),
            };
            if let Err(e) = self.send_text(channel, from, &sorry, &conv.id).await {
                tracing::warn!(conversation = %conv.id, error = %e, "could not answer a failed keyword");
            }
        }
        true
    }

    /// Back to the web chat. `undo`: only within the revert window.
    pub async fn to_web(&self, conv: &Conversation, undo: bool) -> Result<u64, SwitchError> {
        if undo && !conv.can_revert() {
            return Err(SwitchError::TooLate);
        }
        let (channel, address) = conv.active();
        if channel == ChannelKind::Web {
            return Err(SwitchError::Unavailable("a switch back"));
        }
        let text = if undo {
            "Switch undone: the conversation stays in the web chat."
        } else {
            "The conversation is back in the web chat."
        };
        let id = conv
            .rebind(ChannelKind::Web, None, text, None)
            .ok_or(SwitchError::Closed)?;
        // Tell the phone side; the switch stands even if this fails.
        if let (Some(to), Some(me)) = (address, self.me.upgrade()) {
            let conv_id = conv.id.clone();
            let admitted = self.policy.admit(
                Instant::now(),
                channel.as_str(),
                &to,
                crate::messaging::policy::Requester::default(),
            );
            tokio::spawn(async move {
                if admitted.is_err() {
                    return;
                }
                let note = "This conversation continues in the web chat.";
                if let Err(e) = me.send_text(channel, &to, note, &conv_id).await {
                    tracing::warn!(conversation = %conv_id, error = %e, "could not tell the phone side about the switch back");
                }
            });
        }
        Ok(id)
    }

    /// An operator's message, sent on the current channel before it joins
    /// the transcript: a failed send shows as an error, not a message.
    pub async fn agent_message(
        &self,
        conv: &Conversation,
        text: &str,
    ) -> Result<(u64, ChannelKind), SwitchError> {
        if conv.is_closed() {
            return Err(SwitchError::Closed);
        }
        let (channel, address) = conv.active();
        if let (ChannelKind::Sms | ChannelKind::WhatsApp, Some(to)) = (channel, &address) {
            if let Err(e) = self.send_text(channel, to, text, &conv.id).await {
                let note = not_delivered(channel, &e);
                let e = SwitchError::from_send(e);
                // The operator is told why; the transcript keeps that
                // nothing went to a phone whose owner said STOP.
                if e == SwitchError::OptedOut {
                    conv.note(Role::System, &note);
                }
                return Err(e);
            }
        }
        let id = conv.note(Role::Agent, text).ok_or(SwitchError::Closed)?;
        Ok((id, channel))
    }

    /// Reconnect by SMS with a finished conversation whose lead has a
    /// phone number (or with `phone` given).
    pub async fn reconnect(
        &self,
        conv: Arc<Conversation>,
        channel: ChannelKind,
        phone: Option<String>,
    ) -> Result<Arc<Conversation>, SwitchError> {
        self.provider(channel)?;
        // Reconnecting a live chat would pull it away from the visitor.
        if !conv.is_closed() {
            return Err(SwitchError::StillOpen);
        }
        let phone = phone.ok_or(SwitchError::NoPhone)?;
        let welcome = format!(
            "{}: hello again! Reply to this message to carry on the conversation you had with us.",
            self.texts.title
        );
        self.send_welcome(channel, &phone, &welcome, &conv.id)
            .await
            .map_err(SwitchError::from_send)?;
        conv.reopen();
        let text = format!(
            "Reconnected by {} with {}.",
            channel.label(),
            crate::mask::phone(&phone)
        );
        conv.rebind(channel, Some(phone), &text, None);
        Ok(conv)
    }

    /// Reconnect with a lead who has no conversation open: a new one.
    pub async fn reconnect_lead(
        &self,
        lead: &crate::store::LeadRecord,
        channel: ChannelKind,
    ) -> Result<Arc<Conversation>, SwitchError> {
        self.provider(channel)?;
        let phone = lead.phone.clone().ok_or(SwitchError::NoPhone)?;
        let new = self
            .hub
            .create_on("reconnect", None, None, ChannelKind::Web, None);
        let conv = new.conversation;
        let welcome = format!(
            "{}: hello! You left us your number; reply to this message to talk to us.",
            self.texts.title
        );
        if let Err(e) = self.send_welcome(channel, &phone, &welcome, &conv.id).await {
            conv.close("Reconnect failed.");
            return Err(SwitchError::from_send(e));
        }
        let text = format!(
            "Reconnected by {} with {}.",
            channel.label(),
            crate::mask::phone(&phone)
        );
        conv.rebind(channel, Some(phone), &text, None);
        Ok(conv)
    }

    /// A text from a phone: de-duplicated by provider id, STOP/START
    /// honoured, then added to the conversation bound to that number (a
    /// new one if none is open).
    pub async fn inbound(&self, msg: InboundMessage) -> InboundOutcome {
        if self.seen.len() >= 10_000 && self.seen.len() % 1_000 == 0 {
            self.seen.retain(|_, at| at.elapsed() < SEEN_IN_MEMORY);
        }
        let seen_here = self
            .seen
            .insert(msg.provider_id.clone(), Instant::now())
            .is_some();
        if seen_here
            || self
                .store
                .inbound_known(&msg.provider_id)
                .await
                .unwrap_or(false)
        {
            metrics::counter!(names::INBOUND_MESSAGES, "channel" => msg.channel.as_str(), "result" => "duplicate").increment(1);
            return InboundOutcome::Duplicate;
        }
        let _ = self
            .store
            .mark_inbound(&msg.provider_id, msg.channel.as_str(), &msg.from);
        let channel = from_inbound(msg.channel);
        if channel == ChannelKind::WhatsApp {
            self.window.wrote(&msg.from, SystemTime::now());
        }
        let (conv, elsewhere) = match self.hub.find_by_address(channel, &msg.from).await {
            super::Found::Here(c) => (Some(c).filter(|c| !c.is_closed()), None),
            super::Found::OnNode { id, node } => (None, Some((id, node))),
            super::Found::Nowhere => (None, None),
        };
        // START/YES only means something to someone who sent STOP; from
        // anyone else it is an answer in the conversation.
        let keyword = match opt_keyword(&msg.text) {
            Some(OptChange::Start)
                if !self
                    .opt_outs
                    .is_opted_out(send_channel(channel), &msg.from)
                    .await =>
            {
                None
            }
            other => other,
        };
        if let Some(keyword) = keyword {
            let stop = keyword == OptChange::Stop;
            self.opt_outs.set(send_channel(channel), &msg.from, stop);
            if let Some(c) = &conv {
                let note = if stop {
                    format!(
                        "The visitor opted out of {} messages (STOP).",
                        channel.label()
                    )
                } else {
                    format!(
                        "The visitor opted back in to {} messages (START).",
                        channel.label()
                    )
                };
                c.note(Role::System, &note);
            }
            let result = if stop { "stop" } else { "start" };
            metrics::counter!(names::INBOUND_MESSAGES, "channel" => msg.channel.as_str(), "result" => result).increment(1);
            return if stop {
                InboundOutcome::OptedOut
            } else {
                InboundOutcome::OptedIn
            };
        }
        // Another node runs this chat: hand the text over through the
        // store; that node's flow takes it.
        if let Some((id, node)) = elsewhere {
            return match self.store.post_input(&id, &node, &msg.text).await {
                Ok(()) => {
                    metrics::counter!(names::INBOUND_MESSAGES, "channel" => msg.channel.as_str(), "result" => "handed_over").increment(1);
                    InboundOutcome::Delivered(id)
                }
                Err(e) => {
                    tracing::error!(%e, conversation = %id, %node, "cannot hand a text over");
                    InboundOutcome::Failed
                }
            };
        }
        // A channel keyword, as the whole text, moves an open conversation.
        if let (Some(c), Some(target)) = (&conv, self.texts.keywords.command(&msg.text)) {
            if self.keyword_command(c, channel, &msg.from, target).await {
                metrics::counter!(names::INBOUND_MESSAGES, "channel" => msg.channel.as_str(), "result" => "switch_command").increment(1);
                return InboundOutcome::Delivered(c.id.clone());
            }
        }
        let conv = match conv {
            Some(c) => c,
            None => {
                let flow = match channel {
                    ChannelKind::WhatsApp => self.texts.whatsapp_flow.clone(),
                    _ => self.texts.sms_flow.clone(),
                };
                let new = self.hub.create_on(
                    channel.as_str(),
                    flow.clone(),
                    None,
                    channel,
                    Some(msg.from.clone()),
                );
                let conv = new.conversation.clone();
                if let Some(flow) = flow {
                    // The text that opened it is shown, not taken as the
                    // answer to the flow's first question.
                    conv.note(
                        Role::Visitor,
                        &msg.text
                            .chars()
                            .take(super::hub::MAX_VISITOR_TEXT)
                            .collect::<String>(),
                    );
                    let mut vars = std::collections::HashMap::new();
                    vars.insert("first_message".to_string(), msg.text.clone());
                    vars.insert("phone".to_string(), msg.from.clone());
                    vars.insert("conversation_id".to_string(), conv.id.clone());
                    if self.hub.start_flow(new, &flow, vars) {
                        metrics::counter!(names::INBOUND_MESSAGES, "channel" => msg.channel.as_str(), "result" => "started_flow").increment(1);
                        return InboundOutcome::Delivered(conv.id.clone());
                    }
                }
                conv
            }
        };
        metrics::counter!(names::INBOUND_MESSAGES, "channel" => msg.channel.as_str(), "result" => "delivered").increment(1);
        match conv.visitor_input(VisitorInput::Text(msg.text)) {
            Accepted::Flow | Accepted::Refused | Accepted::Switch { .. } => {}
        }
        InboundOutcome::Delivered(conv.id.clone())
    }
}

impl ChannelSender for Switchboard {
    fn send_later(
        &self,
        conversation: Arc<Conversation>,
        channel: ChannelKind,
        to: String,
        text: String,
    ) {
        let Some(me) = self.me.upgrade() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(tracing::Instrument::in_current_span(async move {
            if let Err(e) = me.send_text(channel, &to, &text, &conversation.id).await {
                tracing::warn!(conversation = %conversation.id, error = %e, "message to the phone not delivered");
                conversation.note(Role::System, &not_delivered(channel, &e));
            }
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Event;
    use crate::messaging::test_util::FakeProvider;

    struct Rig {
        _dir: tempfile::TempDir,
        store: Arc<dyn Store>,
        hub: Arc<ChatHub>,
        sms: Arc<FakeProvider>,
        whatsapp: Arc<FakeProvider>,
        board: Arc<Switchboard>,
    }

    /// A switchboard over these parts (a process start, in effect).
    fn board(
        hub: &Arc<ChatHub>,
        store: &Arc<dyn Store>,
        sms: &Arc<FakeProvider>,
        whatsapp: &Arc<FakeProvider>,
    ) -> Arc<Switchboard> {
        // As the runtime wires it: opt-outs gate both providers, and the
        // window gates WhatsApp free text.
        let opt_outs = OptOuts::new(store.clone());
        let providers = crate::messaging::Providers {
            sms: Some(sms.clone()),
            whatsapp: Some(whatsapp.clone()),
            ..Default::default()
        }
        .gated(&opt_outs);
        let window = WhatsAppWindow::new(store.clone());
        Switchboard::new(
            hub.clone(),
            store.clone(),
            providers.sms,
            providers.whatsapp.map(|w| window.gate(w)),
            window,
            SwitchTexts {
                title: "Example".into(),
                revert_window: Duration::from_secs(10),
                sms_flow: None,
                whatsapp_flow: None,
                whatsapp_code_template: Some(("code".into(), "es".into())),
                keywords: super::super::SwitchKeywords::new([
                    ("WHATSAPP".to_string(), ChannelKind::WhatsApp),
                    ("SMS".to_string(), ChannelKind::Sms),
                    ("WEB".to_string(), ChannelKind::Web),
                ]),
                web_link_ttl: Duration::from_secs(1800),
                link_base: "https://chat.example.com".into(),
                whatsapp_welcome_template: Some(("moved".into(), "es".into())),
            },
            Arc::new(crate::messaging::policy::OutboundPolicy::new(
                crate::messaging::policy::OutboundPolicyConfig::default(),
            )),
            opt_outs,
        )
    }

    fn rig() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(crate::store::SqliteStore::open(&dir.path().join("s.db")).unwrap());
        let hub = Arc::new(ChatHub::new(store.clone()).with_phone_region("ES".parse().ok()));
        let sms = Arc::new(FakeProvider::default());
        let whatsapp = Arc::new(FakeProvider::default());
        let board = board(&hub, &store, &sms, &whatsapp);
        Rig {
            _dir: dir,
            store,
            hub,
            sms,
            whatsapp,
            board,
        }
    }

    fn sms(id: &str, from: &str, text: &str) -> InboundMessage {
        InboundMessage {
            channel: InboundChannel::Sms,
            provider_id: id.into(),
            from: from.into(),
            text: text.into(),
        }
    }

    fn texts_of(c: &Conversation) -> Vec<String> {
        c.transcript().iter().map(|e| e.stored().2).collect()
    }

    /// The last code texted, read from the message that carried it.
    fn code_in(p: &FakeProvider) -> String {
        let sent = p.sent.lock().unwrap();
        let last = sent.last().expect("a code was sent");
        match &last.kind {
            MessageKind::Text { body } => body
                .split(|c: char| !c.is_ascii_digit())
                .find(|w| w.len() == 6)
                .expect("six digits")
                .to_string(),
            MessageKind::WhatsAppTemplate { components, .. } => match components.as_slice() {
                [Component::Body(params)] => match &params[0].value {
                    crate::messaging::whatsapp_template::BodyValue::Text(code) => code.clone(),
                    other => panic!("{other:?}"),
                },
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_visitor_switch_waits_for_the_code_sent_to_the_phone() {
        let r = rig();
        let c = r.hub.create("web", None, None).conversation;
        let ip: std::net::IpAddr = "192.0.2.4".parse().unwrap();
        let masked = r
            .board
            .request_switch(&c, ChannelKind::Sms, "612 345 678", Some(ip))
            .await
            .unwrap();
        assert!(!masked.contains("2345"), "{masked}");
        // Nothing moved yet: one message, with the code, went out.
        assert_eq!(c.active(), (ChannelKind::Web, None));
        assert_eq!(r.sms.sent.lock().unwrap().len(), 1);
        let code = code_in(&r.sms);
        let wrong = if code == "000000" { "111111" } else { "000000" };
        assert_eq!(
            r.board.confirm_switch(&c, ChannelKind::Sms, wrong),
            Err(SwitchError::WrongCode)
        );
        assert_eq!(
            r.board.confirm_switch(&c, ChannelKind::WhatsApp, &code),
            Err(SwitchError::CodeExpired),
            "a code is for the channel it was asked for"
        );
        // That dropped the pending switch: ask again, then confirm.
        r.board
            .request_switch(&c, ChannelKind::Sms, "612 345 678", Some(ip))
            .await
            .unwrap();
        let code = code_in(&r.sms);
        r.board.confirm_switch(&c, ChannelKind::Sms, &code).unwrap();
        assert_eq!(c.active(), (ChannelKind::Sms, Some("+34612345678".into())));
        assert_eq!(r.sms.sent.lock().unwrap().len(), 2, "no second welcome");
        // Three attempts per conversation, then the policy says no.
        let d = r.hub.create("web", None, None).conversation;
        for _ in 0..3 {
            r.board
                .request_switch(&d, ChannelKind::Sms, "+34 612 000 001", Some(ip))
                .await
                .unwrap();
        }
        assert_eq!(
            r.board
                .request_switch(&d, ChannelKind::Sms, "+34 612 000 002", Some(ip))
                .await,
            Err(SwitchError::Refused(
                crate::messaging::policy::Refusal::ConversationAttempts
            ))
        );
        // Three wrong codes and the pending switch is gone.
        let code = code_in(&r.sms);
        let wrong = if code == "000000" { "111111" } else { "000000" };
        for want in [
            SwitchError::WrongCode,
            SwitchError::WrongCode,
            SwitchError::CodeExpired,
        ] {
            assert_eq!(
                r.board.confirm_switch(&d, ChannelKind::Sms, wrong),
                Err(want)
            );
        }
        assert_eq!(
            r.board.confirm_switch(&d, ChannelKind::Sms, &code),
            Err(SwitchError::CodeExpired)
        );
        // WhatsApp codes go in the authentication template.
        let w = r.hub.create("web", None, None).conversation;
        r.board
            .request_switch(&w, ChannelKind::WhatsApp, "+34 622 000 111", None)
            .await
            .unwrap();
        let code = code_in(&r.whatsapp);
        assert_eq!(code.len(), 6);
        assert!(r.whatsapp.texts().contains(&"template:code".to_string()));
        r.board
            .confirm_switch(&w, ChannelKind::WhatsApp, &code)
            .unwrap();
        assert_eq!(w.active().0, ChannelKind::WhatsApp);
    }

    #[tokio::test]
    async fn a_stranger_is_not_told_that_a_number_sent_stop() {
        let r = rig();
        assert_eq!(
            r.board.inbound(sms("SMa", "+34612345999", "STOP")).await,
            InboundOutcome::OptedOut
        );
        let c = r.hub.create("web", None, None).conversation;
        let e = r
            .board
            .request_switch(&c, ChannelKind::Sms, "+34612345999", None)
            .await
            .unwrap_err();
        let shown = e.to_string();
        assert!(!shown.to_lowercase().contains("stop"), "{shown}");
        assert!(!shown.to_lowercase().contains("opt"), "{shown}");
        assert_eq!(shown, "We could not send a message to that number.");
    }

    #[tokio::test]
    async fn switch_needs_the_welcome_and_normalises_the_number() {
        let r = rig();
        let c = r.hub.create("web", None, None).conversation;
        assert_eq!(
            r.board.switch_to_phone(&c, ChannelKind::Sms, "12").await,
            Err(SwitchError::BadPhone)
        );
        *r.sms.refuse.lock().unwrap() = Some("down".into());
        let e = r
            .board
            .switch_to_phone(&c, ChannelKind::Sms, "612 345 678")
            .await;
        assert!(matches!(e, Err(SwitchError::Send(_))), "{e:?}");
        assert_eq!(c.active(), (ChannelKind::Web, None), "nothing switched");
        *r.sms.refuse.lock().unwrap() = None;
        r.board
            .switch_to_phone(&c, ChannelKind::Sms, "612 345 678")
            .await
            .unwrap();
        assert_eq!(c.active(), (ChannelKind::Sms, Some("+34612345678".into())));
        assert_eq!(r.sms.sent.lock().unwrap()[0].to, "+34612345678");
        // The bot's next words go to the phone, not only the transcript.
        c.say(Role::Bot, "still here");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(r.sms.texts().contains(&"still here".to_string()));
        // WhatsApp opens with the approved template.
        let w = r.hub.create("web", None, None).conversation;
        r.board
            .switch_to_phone(&w, ChannelKind::WhatsApp, "+34 622 000 111")
            .await
            .unwrap();
        assert_eq!(r.whatsapp.texts(), ["template:moved"]);
    }

    #[tokio::test]
    async fn revert_only_inside_the_window() {
        let r = rig();
        let c = r.hub.create("web", None, None).conversation;
        r.board
            .switch_to_phone(&c, ChannelKind::Sms, "+34612345678")
            .await
            .unwrap();
        let now = Instant::now();
        assert!(c.can_revert_at(now + Duration::from_secs(9)));
        assert!(!c.can_revert_at(now + Duration::from_secs(11)));
        r.board.to_web(&c, true).await.unwrap();
        assert_eq!(c.active().0, ChannelKind::Web);
        // Nothing left to undo.
        assert_eq!(r.board.to_web(&c, true).await, Err(SwitchError::TooLate));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            r.sms.texts().iter().any(|t| t.contains("web chat")),
            "the phone is told"
        );
        let kinds: Vec<ChannelKind> = c.bindings().iter().map(|b| b.channel).collect();
        assert_eq!(
            kinds,
            [ChannelKind::Web, ChannelKind::Sms, ChannelKind::Web]
        );
        // The history is in the store too, one row per binding, in order.
        r.store.flush().await.unwrap();
        let stored: Vec<String> = r
            .store
            .bindings(&c.id)
            .await
            .unwrap()
            .iter()
            .map(|b| b.channel.clone())
            .collect();
        assert_eq!(stored, ["web", "sms", "web"]);
    }

    #[tokio::test]
    async fn a_revert_racing_an_inbound_sms_settles_one_way() {
        // Whichever runs first, the chat ends on the web and the SMS is in
        // the transcript exactly once.
        for sms_first in [true, false] {
            let r = rig();
            let c = r.hub.create("web", None, None).conversation;
            r.board
                .switch_to_phone(&c, ChannelKind::Sms, "+34612345678")
                .await
                .unwrap();
            let inbound = || r.board.inbound(sms("SMa", "+34612345678", "racing text"));
            if sms_first {
                assert_eq!(inbound().await, InboundOutcome::Delivered(c.id.clone()));
                r.board.to_web(&c, true).await.unwrap();
            } else {
                r.board.to_web(&c, true).await.unwrap();
                assert_eq!(inbound().await, InboundOutcome::Delivered(c.id.clone()));
            }
            assert_eq!(c.active().0, ChannelKind::Web);
            let n = texts_of(&c).iter().filter(|t| *t == "racing text").count();
            assert_eq!(n, 1);
        }
    }

    #[tokio::test]
    async fn inbound_is_idempotent_and_honours_stop_and_start() {
        let r = rig();
        let from = "+34633000111";
        let first = r.board.inbound(sms("SM1", from, "hola")).await;
        let InboundOutcome::Delivered(id) = first else {
            panic!("{first:?}")
        };
        assert_eq!(
            r.board.inbound(sms("SM1", from, "hola")).await,
            InboundOutcome::Duplicate
        );
        let c = r.hub.get(&id).unwrap();
        assert_eq!(c.active(), (ChannelKind::Sms, Some(from.into())));
        // "Yes" from someone who never sent STOP is just a message.
        assert_eq!(
            r.board.inbound(sms("SM2", from, "Yes")).await,
            InboundOutcome::Delivered(id.clone())
        );
        assert_eq!(
            r.board.inbound(sms("SM3", from, "STOP")).await,
            InboundOutcome::OptedOut
        );
        // Written another way, the number is still the one that said STOP.
        assert_eq!(
            r.board
                .send_text(ChannelKind::Sms, "34 633 000 111", "hi", &c.id)
                .await
                .map_err(|e| e.kind()),
            Err("opted_out")
        );
        let refused = r.board.agent_message(&c, "are you there?").await;
        assert_eq!(refused, Err(SwitchError::OptedOut));
        assert!(r.sms.texts().is_empty());
        assert!(!texts_of(&c).contains(&"are you there?".to_string()));
        assert_eq!(
            texts_of(&c).last().map(String::as_str),
            Some("Not delivered by SMS: opted out")
        );
        assert_eq!(
            r.board.inbound(sms("SM4", from, "Yes")).await,
            InboundOutcome::OptedIn
        );
        r.board.agent_message(&c, "welcome back").await.unwrap();
        assert_eq!(r.sms.texts(), ["welcome back"]);
        // A restart remembers the ids already handled.
        r.store.flush().await.unwrap();
        let again = board(&r.hub, &r.store, &r.sms, &r.whatsapp);
        assert_eq!(
            again.inbound(sms("SM1", from, "hola")).await,
            InboundOutcome::Duplicate
        );
    }

    #[tokio::test]
    async fn whatsapp_free_text_only_inside_the_24_hour_window() {
        let r = rig();
        let c = r.hub.create("web", None, None).conversation;
        r.board
            .switch_to_phone(&c, ChannelKind::WhatsApp, "+34612345678")
            .await
            .unwrap();
        let e = r.board.agent_message(&c, "hello").await;
        assert!(
            matches!(&e, Err(SwitchError::Send(m)) if m.contains("24 h")),
            "{e:?}"
        );
        r.board
            .inbound(InboundMessage {
                channel: InboundChannel::WhatsApp,
                provider_id: "wamid.1".into(),
                from: "+34612345678".into(),
                text: "hi".into(),
            })
            .await;
        r.board.agent_message(&c, "hello").await.unwrap();
        assert_eq!(r.whatsapp.texts(), ["template:moved", "hello"]);
        // The window survives a restart: it is read back from the store.
        r.store.flush().await.unwrap();
        let fresh = board(&r.hub, &r.store, &r.sms, &r.whatsapp);
        fresh.agent_message(&c, "again").await.unwrap();
        assert_eq!(r.whatsapp.texts(), ["template:moved", "hello", "again"]);
    }

    fn whatsapp(id: &str, from: &str, text: &str) -> InboundMessage {
        InboundMessage {
            channel: InboundChannel::WhatsApp,
            provider_id: id.into(),
            from: from.into(),
            text: text.into(),
        }
    }

    /// A conversation opened by a text from `from`.
    async fn phone_chat(r: &Rig, from: &str) -> Arc<Conversation> {
        match r.board.inbound(sms("SM1", from, "hola")).await {
            InboundOutcome::Delivered(id) => r.hub.get(&id).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn keywords_move_a_phone_conversation_between_sms_and_whatsapp() {
        let r = rig();
        let from = "+34612345678";
        let c = phone_chat(&r, from).await;
        let id = c.id.clone();
        // A keyword inside a sentence is just text.
        r.board
            .inbound(sms("SM2", from, "can we use WhatsApp instead?"))
            .await;
        assert_eq!(c.active(), (ChannelKind::Sms, Some(from.into())));
        assert!(texts_of(&c).contains(&"can we use WhatsApp instead?".to_string()));
        // The whole message, any case: outside the 24 h window, the template.
        assert_eq!(
            r.board.inbound(sms("SM3", from, "  whatsapp \n")).await,
            InboundOutcome::Delivered(id.clone())
        );
        assert_eq!(c.active(), (ChannelKind::WhatsApp, Some(from.into())));
        assert_eq!(r.whatsapp.texts(), ["template:moved"]);
        assert!(!texts_of(&c).iter().any(|t| t.trim() == "whatsapp"));
        // The visitor writes on WhatsApp (the window opens) and asks for SMS.
        r.board.inbound(whatsapp("wamid.1", from, "hi")).await;
        r.board.inbound(whatsapp("wamid.2", from, "SMS")).await;
        assert_eq!(c.active(), (ChannelKind::Sms, Some(from.into())));
        assert!(r
            .sms
            .texts()
            .iter()
            .any(|t| t.contains("moved from WhatsApp")));
        // "SMS" on SMS is not a command: it is said in the conversation.
        r.board.inbound(sms("SM4", from, "sms")).await;
        assert_eq!(texts_of(&c).iter().filter(|t| *t == "sms").count(), 1);
        // The operator moves it back: inside the window, free text, and
        // the old channel is told.
        r.board
            .switch_phone(&c, ChannelKind::WhatsApp, from, SwitchBy::Operator)
            .await
            .unwrap();
        assert_eq!(r.whatsapp.sent.lock().unwrap().len(), 2);
        assert!(matches!(
            &r.whatsapp.sent.lock().unwrap()[1].kind,
            MessageKind::WhatsAppText { body } if body.contains("moved from SMS")
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(r
            .sms
            .texts()
            .iter()
            .any(|t| t == "This conversation continues on WhatsApp."));
        let kinds: Vec<ChannelKind> = c.bindings().iter().map(|b| b.channel).collect();
        use ChannelKind::{Sms, WhatsApp};
        assert_eq!(kinds, [Sms, WhatsApp, Sms, WhatsApp]);
        // STOP on WhatsApp: a keyword can't move it there again; the
        // visitor is told on SMS, the operators in the transcript.
        r.board.inbound(whatsapp("wamid.3", from, "STOP")).await;
        r.board
            .switch_phone(&c, ChannelKind::Sms, from, SwitchBy::Operator)
            .await
            .unwrap();
        let sent_before = r.whatsapp.sent.lock().unwrap().len();
        r.board.inbound(sms("SM5", from, "WhatsApp")).await;
        assert_eq!(c.active().0, ChannelKind::Sms);
        assert_eq!(r.whatsapp.sent.lock().unwrap().len(), sent_before);
        assert!(r
            .sms
            .texts()
            .contains(&"Sorry, we could not move this conversation to WhatsApp.".to_string()));
        assert!(texts_of(&c).iter().any(|t| t.contains("that failed")));
    }

    #[tokio::test]
    async fn a_web_link_moves_the_conversation_only_when_opened_and_only_once() {
        let r = rig();
        let from = "+34612345678";
        let c = phone_chat(&r, from).await;
        let id = c.id.clone();
        r.board.inbound(sms("SM2", from, "Web")).await;
        let link = r.sms.texts().pop().unwrap();
        let token = link
            .split("https://chat.example.com/w/")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .unwrap()
            .to_string();
        assert_eq!(token.len(), 22, "{link}");
        assert!(link.contains("30 minutes"), "{link}");
        // Until it is opened the conversation stays on the phone.
        assert_eq!(c.active().0, ChannelKind::Sms);
        assert!(r.board.web_link_claimable(&token));
        assert!(r.board.web_link_claimable(&token), "peeking uses nothing");
        assert!(!texts_of(&c).iter().any(|t| t.contains(&token)));
        let (opened, key) = r.board.claim_web_link(&token).await.unwrap();
        assert_eq!(opened.id, id);
        assert!(c.key_matches(&key));
        assert_eq!(c.active(), (ChannelKind::Web, None));
        assert!(r.board.claim_web_link(&token).await.is_none(), "single use");
        assert!(!r.board.web_link_claimable(&token));
        // A text the phone still sends lands in the same conversation.
        assert_eq!(
            r.board.inbound(sms("SM3", from, "still me")).await,
            InboundOutcome::Delivered(id.clone())
        );
        // The new key is what a restart reads back.
        r.store.flush().await.unwrap();
        let stored = r.store.conversation(&id).await.unwrap().unwrap();
        assert_eq!(
            stored
                .key_hash
                .as_deref()
                .and_then(crate::chat::hash_from_hex),
            Some(crate::chat::secret_hash(&key))
        );
        // An operator's link, refused by the provider, is never usable.
        *r.sms.refuse.lock().unwrap() = Some("down".into());
        let e = r
            .board
            .send_web_link(&c, ChannelKind::Sms, from, SwitchBy::Operator)
            .await;
        assert!(matches!(e, Err(SwitchError::Send(_))), "{e:?}");
    }

    #[tokio::test]
    async fn the_visitor_action_answer_is_masked_and_free_text_clears_the_request() {
        let r = rig();
        let c = r.hub.create("web", None, None).conversation;
        let p = c.ask_phone(ChannelKind::Sms, "Your number?").unwrap();
        let accepted = c.visitor_input(VisitorInput::Answer {
            prompt: p,
            value: "+34 612 345 678".into(),
        });
        assert_eq!(
            accepted,
            Accepted::Switch {
                channel: ChannelKind::Sms,
                phone: "+34 612 345 678".into()
            }
        );
        assert!(
            !texts_of(&c).iter().any(|t| t.contains("612 345 678")),
            "{:?}",
            texts_of(&c)
        );
        // A second command replaces the first; free text clears it.
        c.ask_phone(ChannelKind::Sms, "Number?").unwrap();
        c.ask_phone(ChannelKind::WhatsApp, "Number for WhatsApp?")
            .unwrap();
        c.visitor_input(VisitorInput::Text("never mind".into()));
        let last = c.transcript().len() as u64;
        assert_eq!(
            c.visitor_input(VisitorInput::Answer {
                prompt: last - 1,
                value: "+34612345678".into()
            }),
            Accepted::Refused
        );
        assert!(matches!(
            c.transcript().last().unwrap().as_ref(),
            Event::Message { .. }
        ));
    }
}
