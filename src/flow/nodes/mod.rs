//! One file per node type: each exposes `run(node, cx) -> Result<Next, Ended>`.

pub mod branch;
pub mod gather;
pub mod hangup;
pub mod http;
pub mod pause;
pub mod play;
pub mod say;
pub mod send_sms;
pub mod send_whatsapp;
pub mod set;
pub mod transfer;

use super::interp::FlowCx;

/// `to` as written, or the caller's number when blank.
pub(crate) fn recipient(to: &str, cx: &FlowCx) -> String {
    let to = super::template::render(to, &cx.vars);
    if to.trim().is_empty() {
        cx.vars.get("caller").cloned().unwrap_or_default()
    } else {
        to.trim().to_string()
    }
}
