//! Chat conversations: the transcript (events with ids that only grow), the
//! live feed web clients subscribe to, and the visitor inputs a chat flow
//! reads. Channel-neutral; the web socket lives in `http::chat`.

mod event;
mod hub;
pub mod input;
mod keyword;
pub mod switch;
mod weblink;

pub use event::{
    Accepted, Binding, ChannelKind, Choice, Event, InputKind, Live, Role, VisitorInput,
};
pub use hub::{
    AnonymousCaps, ChannelSender, ChatHub, Conversation, Feed, FlowResumer, Found, NewConversation,
    NoRoom,
};
pub use keyword::{SwitchKeywords, MAX_KEYWORD_LEN};
pub use switch::{InboundOutcome, SwitchBy, SwitchError, SwitchTexts, Switchboard};
pub use weblink::WebLinks;

/// `n` random decimal digits (codes people type), from the CSPRNG; a
/// byte over 249 is drawn again so every digit is equally likely.
pub fn random_digits(n: usize) -> String {
    use rand::Rng;
    let mut out = String::with_capacity(n);
    let mut byte = [0u8; 1];
    while out.len() < n {
        rand::rng().fill_bytes(&mut byte);
        if byte[0] < 250 {
            out.push(char::from(b'0' + byte[0] % 10));
        }
    }
    out
}

/// A random id or secret: `bytes` from the OS-seeded CSPRNG, base64url.
pub fn random_token(bytes: usize) -> String {
    use base64::Engine;
    use rand::Rng;
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// Characters of a short link token.
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A link token short enough to share an SMS segment with a message: 22
/// base62 characters, each drawn uniformly, about 131 random bits.
pub fn short_token() -> String {
    use rand::Rng;
    let mut out = String::with_capacity(22);
    let mut rng = rand::rng();
    while out.len() < 22 {
        let b = rng.next_u32() as u8;
        // 248 = 4 × 62: rejecting the rest keeps every character equally likely.
        if let Some(c) = (b < 248).then(|| BASE62.get(usize::from(b % 62))).flatten() {
            out.push(char::from(*c));
        }
    }
    out
}

/// SHA-256 of a secret: what we keep instead of the secret itself.
pub fn secret_hash(secret: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(secret.as_bytes()).into()
}

/// A secret's hash as stored: lowercase hex.
pub fn hash_hex(hash: &[u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// A stored hash back; `None` for anything but 64 hex digits.
pub fn hash_from_hex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Equal without an early exit, so timing tells nothing about the secret.
pub fn same_hash(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
