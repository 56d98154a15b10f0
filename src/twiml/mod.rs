//! Programmable calls: TwiML webhook apps. A route's `app` (or a flow's
//! `webhook_app` node) hands the call to an integrator's HTTP app, asked
//! with Twilio's voice parameters and signature, whose TwiML documents
//! then run the call. The executor drives the call through the same
//! [`FlowCx`](crate::flow::interp::FlowCx) calls the flow nodes use, so
//! there is one call-control path.
//!
//! - [`parse`]: TwiML to verbs, bounded (no DTD, depth and size caps).
//! - [`fetch`]: the signed, bounded HTTP requests and the `<Play>` cache.
//! - [`exec`]: verbs to call requests, app errors to the fallback or the
//!   spoken error.
//! - [`status`]: status callbacks, in order and once per event.
//! - [`live`]: running app calls, for the Calls API to redirect.

pub mod calls;
mod config;
mod exec;
pub mod fetch;
pub mod live;
pub mod parse;
pub mod status;
mod voice_ai;

use std::collections::BTreeMap;

pub use config::{is_account_sid, AppConfig, TwimlConfig};
pub use exec::queue::{queue_sid, QueueMember};
pub use exec::run;
pub use fetch::Apps;
pub use status::{StatusEvent, StatusTarget};

/// How an app is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

impl Method {
    pub fn parse(s: &str) -> Option<Method> {
        match s.trim().to_ascii_uppercase().as_str() {
            "GET" => Some(Method::Get),
            "POST" => Some(Method::Post),
            _ => None,
        }
    }
}

/// The name of the one-node flow a route's app runs as (call records
/// show it as the call's flow).
pub const APP_FLOW: &str = "twiml-app";

/// A route's app as a flow: one `webhook_app` node.
pub fn app_flow(app: &AppConfig) -> crate::flow::Flow {
    let node = crate::flow::model::Node {
        id: "app".into(),
        line: 0,
        kind: crate::flow::NodeKind::WebhookApp(crate::flow::model::WebhookApp {
            id: "app".into(),
            kind: "webhook_app".into(),
            app: app.clone(),
        }),
    };
    crate::flow::Flow {
        name: APP_FLOW.into(),
        file: std::path::PathBuf::new(),
        channel: crate::flow::Channel::Voice,
        start: "app".into(),
        nodes: BTreeMap::from([("app".into(), node)]),
    }
}

/// The variable (and call record field) holding a call's CallSid.
pub const CALL_SID_VAR: &str = "twilio_call_sid";

/// "CA" and 32 hex digits.
pub fn is_call_sid(s: &str) -> bool {
    s.len() == 34 && s.starts_with("CA") && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// A Twilio-style SID: `prefix` and 32 random hex digits.
pub fn new_sid(prefix: &str) -> String {
    format!("{prefix}{:032x}", rand::random::<u128>())
}
