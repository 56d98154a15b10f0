//! Dialogs (RFC 3261 §12): identity, CSeq spaces, remote target and route set.

use bytes::Bytes;

use crate::message::{Headers, Method, NameAddr, Request, Response, Uri, Via};

/// What identifies a dialog (RFC 3261 §12): Call-ID and both tags.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    /// The Call-ID.
    pub call_id: String,
    /// Our tag.
    pub local_tag: String,
    /// The peer's tag.
    pub remote_tag: String,
}

impl DialogId {
    /// The dialog of a request we received: our tag is in To.
    pub fn of_received(headers: &Headers) -> DialogId {
        DialogId {
            call_id: headers.call_id().unwrap_or_default().to_string(),
            local_tag: tag_of(headers.to()),
            remote_tag: tag_of(headers.from()),
        }
    }

    /// The dialog of a response to a request we sent: our tag is in From.
    pub fn of_response(headers: &Headers) -> DialogId {
        DialogId {
            call_id: headers.call_id().unwrap_or_default().to_string(),
            local_tag: tag_of(headers.from()),
            remote_tag: tag_of(headers.to()),
        }
    }
}

fn tag_of<E>(addr: Result<NameAddr, E>) -> String {
    addr.ok()
        .and_then(|a| a.tag().map(str::to_string))
        .unwrap_or_default()
}

/// Whether the dialog has a final answer yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogState {
    /// Made by a provisional response with a To tag.
    Early,
    /// Made by a 2xx.
    Confirmed,
}

/// One dialog's state: who, which CSeq numbers, where requests go.
#[derive(Debug, Clone)]
pub struct Dialog {
    /// Its identity.
    pub id: DialogId,
    /// Early or confirmed.
    pub state: DialogState,
    /// Our side's name-addr (From on requests we send).
    pub local: NameAddr,
    /// The peer's name-addr (To on requests we send).
    pub remote: NameAddr,
    /// Our CSeq space: the number last used (the next request adds one).
    pub local_seq: u32,
    /// CSeq of the last request the peer sent, once one arrived.
    pub remote_seq: Option<u32>,
    /// The peer's Contact: where in-dialog requests go.
    pub remote_target: Uri,
    /// Routes in the order our requests must carry them.
    pub route_set: Vec<NameAddr>,
}

/// Why a dialog could not be made from a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialogError {
    /// A header the dialog needs is missing or unparseable.
    #[error("missing or malformed {0}")]
    Header(&'static str),
}

impl Dialog {
    /// UAS side: from the INVITE we received, the tag we chose and the CSeq
    /// our first request in the dialog will carry.
    pub fn new_uas(
        invite: &Request,
        local_tag: &str,
        first_local_seq: u32,
    ) -> Result<Dialog, DialogError> {
        let h = &invite.headers;
        let call_id = h.call_id().ok_or(DialogError::Header("Call-ID"))?;
        let remote = h.from().map_err(|_| DialogError::Header("From"))?;
        let mut local = h.to().map_err(|_| DialogError::Header("To"))?;
        local.set_tag(local_tag);
        let remote_seq = h.cseq().map_err(|_| DialogError::Header("CSeq"))?.seq;
        let remote_target = h
            .contacts()
            .ok()
            .and_then(|c| c.into_iter().next())
            .map(|c| c.uri)
            .ok_or(DialogError::Header("Contact"))?;
        // §12.1.1: the route set is the Record-Route list, in order.
        let route_set = h
            .routes("Record-Route")
            .map_err(|_| DialogError::Header("Record-Route"))?;
        Ok(Dialog {
            id: DialogId {
                call_id: call_id.to_string(),
                local_tag: local_tag.to_string(),
                remote_tag: remote.tag().unwrap_or_default().to_string(),
            },
            state: DialogState::Early,
            local,
            remote,
            local_seq: first_local_seq,
            remote_seq: Some(remote_seq),
            remote_target,
            route_set,
        })
    }

    /// UAC side: from our INVITE and a response carrying a To tag.
    pub fn new_uac(invite: &Request, response: &Response) -> Result<Dialog, DialogError> {
        let call_id = invite
            .headers
            .call_id()
            .ok_or(DialogError::Header("Call-ID"))?;
        let local = invite
            .headers
            .from()
            .map_err(|_| DialogError::Header("From"))?;
        let remote = response
            .headers
            .to()
            .map_err(|_| DialogError::Header("To"))?;
        let remote_tag = remote
            .tag()
            .ok_or(DialogError::Header("To tag"))?
            .to_string();
        let local_seq = invite
            .headers
            .cseq()
            .map_err(|_| DialogError::Header("CSeq"))?
            .seq;
        let remote_target = response
            .headers
            .contacts()
            .ok()
            .and_then(|c| c.into_iter().next())
            .map(|c| c.uri)
            .unwrap_or_else(|| invite.uri.clone());
        // §12.1.2: reversed Record-Route.
        let mut route_set = response
            .headers
            .routes("Record-Route")
            .map_err(|_| DialogError::Header("Record-Route"))?;
        route_set.reverse();
        Ok(Dialog {
            id: DialogId {
                call_id: call_id.to_string(),
                local_tag: local.tag().unwrap_or_default().to_string(),
                remote_tag,
            },
            state: if response.status >= 200 {
                DialogState::Confirmed
            } else {
                DialogState::Early
            },
            local,
            remote,
            local_seq,
            remote_seq: None,
            remote_target,
            route_set,
        })
    }

    /// §12.2.2: an in-dialog request must not go backwards in CSeq.
    pub fn accept_remote_cseq(&mut self, seq: u32) -> bool {
        match self.remote_seq {
            Some(last) if seq < last => false,
            _ => {
                self.remote_seq = Some(seq);
                true
            }
        }
    }

    /// A target refresh (re-INVITE, UPDATE) may move the remote target.
    pub fn refresh_target(&mut self, request: &Request) {
        if let Some(c) = request
            .headers
            .contacts()
            .ok()
            .and_then(|c| c.into_iter().next())
        {
            self.remote_target = c.uri;
        }
    }

    /// §12.2.1.1: build an in-dialog request. ACK reuses the INVITE's CSeq
    /// number, which the caller passes as `cseq_override`.
    pub fn make_request(
        &mut self,
        method: Method,
        via: &Via,
        contact: &Uri,
        user_agent: &str,
        cseq_override: Option<u32>,
    ) -> Request {
        let seq = match cseq_override {
            Some(seq) => seq,
            None => {
                self.local_seq = self.local_seq.wrapping_add(1);
                self.local_seq
            }
        };
        let mut headers = Headers::new();
        headers.push("Via", via.to_string());
        headers.push("Max-Forwards", "70");
        // Strict routing (§12.2.1.1): a first route without `lr` becomes the
        // request-URI and the remote target goes last.
        let (uri, routes) = match self.route_set.first() {
            Some(first) if first.uri.param("lr").is_none() => {
                let mut routes: Vec<String> =
                    self.route_set[1..].iter().map(|r| r.to_string()).collect();
                routes.push(format!("<{}>", self.remote_target));
                (first.uri.clone(), routes)
            }
            _ => (
                self.remote_target.clone(),
                self.route_set.iter().map(|r| r.to_string()).collect(),
            ),
        };
        for r in routes {
            headers.push("Route", r);
        }
        headers.push("From", self.local.to_string());
        headers.push("To", self.remote.to_string());
        headers.push("Call-ID", self.id.call_id.clone());
        headers.push("CSeq", format!("{seq} {}", method.as_str()));
        if matches!(method, Method::Invite | Method::Update | Method::Refer) {
            headers.push("Contact", format!("<{contact}>"));
        }
        headers.push("User-Agent", user_agent);
        Request {
            method,
            uri,
            headers,
            body: Bytes::new(),
        }
    }

    /// The next hop for requests in this dialog: the first route, or the
    /// remote target.
    pub fn next_hop(&self) -> &Uri {
        self.route_set
            .first()
            .map(|r| &r.uri)
            .unwrap_or(&self.remote_target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{parse_message, SipMessage};

    fn req(text: &str) -> Request {
        match parse_message(text.as_bytes()) {
            Ok(SipMessage::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    const INVITE: &str = "INVITE sip:1000@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK1\r\nRecord-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\nFrom: <sip:a@x>;tag=abc\r\nTo: <sip:1000@10.0.0.1>\r\nCall-ID: d1\r\nCSeq: 7 INVITE\r\nContact: <sip:a@10.0.0.2:5062>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn uas_dialog_takes_route_set_and_target() {
        let inv = req(INVITE);
        let mut d = Dialog::new_uas(&inv, "mytag", 1).unwrap();
        assert_eq!(d.id.remote_tag, "abc");
        assert_eq!(d.remote_target.to_string(), "sip:a@10.0.0.2:5062");
        assert_eq!(d.route_set.len(), 2);
        assert!(!d.accept_remote_cseq(6), "lower CSeq refused");
        assert!(d.accept_remote_cseq(8));
        let via = Via::parse("SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKx").unwrap();
        let contact = Uri::parse("sip:crossline@10.0.0.1").unwrap();
        let bye = d.make_request(Method::Bye, &via, &contact, "ua", None);
        assert_eq!(bye.uri.to_string(), "sip:a@10.0.0.2:5062");
        let routes: Vec<_> = bye.headers.get_all("Route").collect();
        assert_eq!(routes.len(), 2);
        assert!(routes[0].contains("p1.example.com"));
        assert_eq!(bye.headers.from().unwrap().tag(), Some("mytag"));
        assert_eq!(bye.headers.to().unwrap().tag(), Some("abc"));
        let c1 = bye.headers.cseq().unwrap().seq;
        let bye2 = d.make_request(Method::Bye, &via, &contact, "ua", None);
        assert_eq!(bye2.headers.cseq().unwrap().seq, c1 + 1);
    }

    #[test]
    fn strict_route_moves_target_last() {
        let inv = req(&INVITE.replace(
            "<sip:p1.example.com;lr>, <sip:p2.example.com;lr>",
            "<sip:p1.example.com>",
        ));
        let mut d = Dialog::new_uas(&inv, "t", 1).unwrap();
        let via = Via::parse("SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKx").unwrap();
        let contact = Uri::parse("sip:c@10.0.0.1").unwrap();
        let bye = d.make_request(Method::Bye, &via, &contact, "ua", None);
        assert_eq!(bye.uri.host, "p1.example.com");
        let routes: Vec<_> = bye.headers.get_all("Route").collect();
        assert_eq!(routes, vec!["<sip:a@10.0.0.2:5062>"]);
    }

    #[test]
    fn uac_dialog_reverses_record_route() {
        let inv = req(INVITE);
        let mut resp = Response::for_request(&inv, 200);
        resp.headers.set("To", "<sip:1000@10.0.0.1>;tag=remote");
        resp.headers.push("Contact", "<sip:agent@10.0.0.9>");
        resp.headers.push(
            "Record-Route",
            "<sip:p1.example.com;lr>, <sip:p2.example.com;lr>",
        );
        let d = Dialog::new_uac(&inv, &resp).unwrap();
        assert_eq!(d.id.local_tag, "abc");
        assert_eq!(d.id.remote_tag, "remote");
        assert_eq!(d.state, DialogState::Confirmed);
        assert_eq!(d.remote_target.host, "10.0.0.9");
        assert!(d.route_set[0].uri.host.contains("p2"));
    }
}
