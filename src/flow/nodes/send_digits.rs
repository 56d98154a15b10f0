//! `send_digits`: DTMF to the caller's side (a PBX's extension, an IVR's
//! menu). Call control paces the digits and picks RFC 4733 or SIP INFO.

use crate::flow::interp::{Ended, FlowCx, Next};
use crate::flow::model::SendDigits;
use crate::flow::template::render;

/// A DTMF digit RFC 4733 can carry.
pub fn is_digit(c: char) -> bool {
    matches!(c, '0'..='9' | '*' | '#' | 'A'..='D')
}

/// What of `digits` can be sent: digits and pauses, in order.
pub fn sendable(digits: &str) -> String {
    digits
        .chars()
        .map(|c| c.to_ascii_uppercase())
        .filter(|c| is_digit(*c) || *c == ',')
        .collect()
}

pub async fn run(node: &SendDigits, cx: &mut FlowCx) -> Result<Next, Ended> {
    let digits = sendable(&render(&node.digits, &cx.vars));
    if !digits.is_empty() {
        cx.send_digits(digits, node.duration_ms).await?;
    }
    Ok(node.next.clone())
}
