//! App calls the Calls API can reach while they run: each running
//! executor registers its CallSid here and `select!`s on what comes in,
//! so a redirect stops the verb that is playing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::Method;

/// Where a call's TwiML comes from next.
#[derive(Debug, Clone)]
pub enum Document {
    Url(reqwest::Url),
    /// TwiML given with the request (`Twiml`).
    Inline(Arc<str>),
}

/// A redirect: the document and how to ask for it.
#[derive(Debug, Clone)]
pub struct AppTarget {
    pub document: Document,
    pub method: Method,
}

/// The base an inline document's relative URLs resolve against: none
/// (it can't be a base), so they are an app error, as on Twilio.
pub fn inline_base() -> reqwest::Url {
    // A constant that parses; the fallback is never taken.
    reqwest::Url::parse("twiml:inline").unwrap_or_else(|_| {
        reqwest::Url::parse("http://invalid./").unwrap_or_else(|_| unreachable!())
    })
}

/// Running app calls by CallSid.
#[derive(Default)]
pub struct LiveApps(Arc<Mutex<HashMap<String, mpsc::UnboundedSender<AppTarget>>>>);

/// A call's place in [`LiveApps`]: dropping it (the executor ends) frees it.
pub struct Registration {
    map: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<AppTarget>>>>,
    sid: String,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.sid);
    }
}

impl LiveApps {
    /// Register `sid`'s executor; it reads redirects from the receiver.
    pub fn register(&self, sid: &str) -> (Registration, mpsc::UnboundedReceiver<AppTarget>) {
        let (tx, rx) = mpsc::unbounded_channel();
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sid.to_string(), tx);
        let registration = Registration {
            map: self.0.clone(),
            sid: sid.to_string(),
        };
        (registration, rx)
    }

    /// Redirect `sid`'s running app; false when no app runs it here.
    pub fn redirect(&self, sid: &str, target: AppTarget) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(sid)
            .is_some_and(|tx| tx.send(target).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redirect_reaches_only_a_registered_call_and_ends_with_it() {
        let live = LiveApps::default();
        let target = || AppTarget {
            document: Document::Inline("<Response/>".into()),
            method: Method::Post,
        };
        assert!(!live.redirect("CA1", target()));
        let (registration, mut rx) = live.register("CA1");
        assert!(live.redirect("CA1", target()));
        assert!(rx.try_recv().is_ok());
        drop(registration);
        assert!(!live.redirect("CA1", target()), "gone with its executor");
        assert!(inline_base().join("/next").is_err(), "relative URLs fail");
    }
}
