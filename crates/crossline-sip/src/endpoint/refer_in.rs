//! REFER we receive (RFC 3515): the peer asks us to call someone. The
//! application decides ([`Endpoint::accept_refer`] or
//! [`Endpoint::refuse_refer`]); once accepted, the implicit subscription
//! reports the new call's progress as message/sipfrag NOTIFYs until
//! [`Endpoint::notify_refer`] sends a final status. `Refer-Sub: false`
//! (RFC 4488) turns the NOTIFYs off.

use std::time::Instant;

use bytes::Bytes;

use super::calls::CallState;
use super::{CallId, Endpoint, EndpointError, Event, ServerKey, TxOwner};
use crate::message::{Method, NameAddr, Request, Uri};

/// A REFER we received on a call, and its subscription once accepted.
#[derive(Debug)]
pub(super) struct ReferIn {
    /// Waiting for the application's decision.
    pending: Option<(ServerKey, Request)>,
    /// The REFER's CSeq: NOTIFYs name it in `Event: refer;id=`.
    id: u32,
    /// Send NOTIFYs (not turned off by `Refer-Sub: false`).
    notify: bool,
    /// Accepted and not yet finished with a final NOTIFY.
    active: bool,
}

/// How long the implicit subscription lasts unless a final NOTIFY ends it.
const SUBSCRIPTION_SECS: u32 = 120;

/// Where a REFER asks us to call, or the status to refuse it with.
fn refer_target(req: &Request) -> Result<Uri, (u16, &'static str)> {
    let values: Vec<&str> = req.headers.get_all("Refer-To").collect();
    let value = match values.as_slice() {
        [one] => one.trim(),
        [] => return Err((400, "Missing Refer-To")),
        _ => return Err((400, "Multiple Refer-To")),
    };
    let Ok(addr) = NameAddr::parse(value) else {
        return Err((400, "Bad Refer-To"));
    };
    let mut uri = addr.uri;
    if !matches!(uri.scheme.as_str(), "sip" | "sips" | "tel") {
        return Err((416, "Unsupported URI Scheme"));
    }
    // Embedded headers (Replaces and the like) would need us to join a
    // dialog we know nothing of; never copy them into our INVITE.
    if uri.headers.take().is_some_and(|h| {
        h.split('&')
            .any(|p| p.trim().to_ascii_lowercase().starts_with("replaces="))
    }) {
        return Err((501, "Replaces Not Supported"));
    }
    Ok(uri)
}

impl Endpoint {
    /// An in-dialog REFER: checked here, decided by the application.
    pub(super) fn incoming_refer(
        &mut self,
        now: Instant,
        key: ServerKey,
        call: CallId,
        req: Request,
    ) {
        let confirmed = self
            .calls
            .get(&call)
            .is_some_and(|c| c.state == CallState::Confirmed);
        if !confirmed {
            return self.refuse_in_dialog(now, &key, &req, 491, "Request Pending");
        }
        if self
            .calls
            .get(&call)
            .and_then(|c| c.refer_in.as_ref())
            .is_some_and(|r| r.active || r.pending.is_some())
        {
            // One transfer at a time; the referrer may try again later.
            return self.refuse_in_dialog(now, &key, &req, 491, "Transfer In Progress");
        }
        let target = match refer_target(&req) {
            Ok(t) => t,
            Err((status, reason)) => {
                self.counters.refers_malformed += 1;
                return self.refuse_in_dialog(now, &key, &req, status, reason);
            }
        };
        let referred_by = req.headers.get("Referred-By").map(|s| s.trim().to_string());
        let notify = !req
            .headers
            .get("Refer-Sub")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"));
        let id = req.headers.cseq().map(|c| c.seq).unwrap_or(0);
        if let Some(c) = self.calls.get_mut(&call) {
            c.refer_in = Some(Box::new(ReferIn {
                pending: Some((key, req)),
                id,
                notify,
                active: false,
            }));
        }
        self.events.push_back(Event::ReferRequested {
            call,
            target,
            referred_by,
        });
    }

    fn refuse_in_dialog(
        &mut self,
        now: Instant,
        key: &ServerKey,
        req: &Request,
        status: u16,
        reason: &str,
    ) {
        let mut resp = self.make_response(req, status, None);
        resp.reason = reason.into();
        self.respond(now, key, resp);
    }

    /// Take on the REFER of [`Event::ReferRequested`]: 202, then the
    /// first NOTIFY (100 Trying).
    pub fn accept_refer(&mut self, now: Instant, call: CallId) -> Result<(), EndpointError> {
        let refer = self
            .calls
            .get_mut(&call)
            .and_then(|c| c.refer_in.as_mut())
            .ok_or(EndpointError::NoSuchCall)?;
        let (key, req) = refer.pending.take().ok_or(EndpointError::BadState)?;
        refer.active = true;
        let notify = refer.notify;
        self.counters.refers_accepted += 1;
        let mut resp = self.make_response(&req, 202, None);
        if !notify {
            resp.headers.push("Refer-Sub", "false");
        }
        self.respond(now, &key, resp);
        self.notify_refer(now, call, 100, "Trying")
    }

    /// Turn down the REFER of [`Event::ReferRequested`] with `status`.
    pub fn refuse_refer(
        &mut self,
        now: Instant,
        call: CallId,
        status: u16,
        reason: &str,
    ) -> Result<(), EndpointError> {
        let refer = self
            .calls
            .get_mut(&call)
            .and_then(|c| c.refer_in.take())
            .ok_or(EndpointError::NoSuchCall)?;
        let (key, req) = refer.pending.ok_or(EndpointError::BadState)?;
        self.counters.refers_refused += 1;
        self.refuse_in_dialog(now, &key, &req, status, reason);
        Ok(())
    }

    /// Report the new call's progress to the referrer; a final `status`
    /// (≥ 200) ends the subscription.
    pub fn notify_refer(
        &mut self,
        now: Instant,
        call: CallId,
        status: u16,
        reason: &str,
    ) -> Result<(), EndpointError> {
        let c = self.calls.get_mut(&call).ok_or(EndpointError::NoSuchCall)?;
        let Some(refer) = c.refer_in.as_mut().filter(|r| r.active) else {
            return Err(EndpointError::BadState);
        };
        let (id, notify) = (refer.id, refer.notify);
        let final_status = status >= 200;
        if final_status {
            c.refer_in = None;
        }
        if !notify {
            return Ok(());
        }
        let (mut req, peer) = self
            .dialog_request(call, Method::Notify, None)
            .ok_or(EndpointError::NoSuchCall)?;
        req.headers.push("Event", format!("refer;id={id}"));
        let state = match final_status {
            true => "terminated;reason=noresource".to_string(),
            false => format!("active;expires={SUBSCRIPTION_SECS}"),
        };
        req.headers.push("Subscription-State", state);
        req.headers
            .push("Content-Type", "message/sipfrag;version=2.0".to_string());
        req.body = Bytes::from(format!("SIP/2.0 {status} {reason}\r\n"));
        self.start_client(now, req, peer, TxOwner::Detached);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::parse_message;

    fn refer_with(headers: &str) -> Request {
        let text = format!(
            "REFER sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
             From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:gw@127.0.0.1>;tag=2\r\nCall-ID: c1\r\n\
             CSeq: 3 REFER\r\nMax-Forwards: 70\r\n{headers}Content-Length: 0\r\n\r\n"
        );
        match parse_message(text.as_bytes()) {
            Ok(crate::message::SipMessage::Request(r)) => r,
            other => panic!("not a request: {other:?}"),
        }
    }

    #[test]
    fn refer_to_is_read_and_checked() {
        let ok = refer_target(&refer_with(
            "Refer-To: <sip:+34911234567@pstn.example.com;user=phone>\r\n",
        ));
        assert_eq!(ok.map(|u| u.user), Ok(Some("+34911234567".to_string())));
        let bare = refer_target(&refer_with("Refer-To: sip:200@127.0.0.1:5080\r\n"));
        assert_eq!(bare.map(|u| u.port), Ok(Some(5080)));
        assert_eq!(
            refer_target(&refer_with("")),
            Err((400, "Missing Refer-To"))
        );
        assert_eq!(
            refer_target(&refer_with(
                "Refer-To: <sip:a@h>\r\nRefer-To: <sip:b@h>\r\n"
            )),
            Err((400, "Multiple Refer-To"))
        );
        assert_eq!(
            refer_target(&refer_with("Refer-To: <mailto:a@h>\r\n")),
            Err((416, "Unsupported URI Scheme"))
        );
        assert_eq!(
            refer_target(&refer_with(
                "Refer-To: <sip:a@h?Replaces=x%40y%3Bto-tag%3D1>\r\n"
            )),
            Err((501, "Replaces Not Supported"))
        );
        assert_eq!(
            refer_target(&refer_with("Refer-To: <<<\r\n")),
            Err((400, "Bad Refer-To"))
        );
    }

    #[test]
    fn other_embedded_headers_are_dropped() {
        let uri = refer_target(&refer_with("Refer-To: <sip:a@h?X-Evil=1&Subject=hi>\r\n"));
        assert_eq!(uri.map(|u| u.headers), Ok(None));
    }
}
