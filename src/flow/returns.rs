//! "You need the Breakout flow to end with Breakout: Return": find a path
//! through a chat flow that ends without handing anything back, which would
//! leave the caller on hold until the breakout's timeout.

use std::collections::{HashSet, VecDeque};

use super::model::{Flow, NodeKind};

/// The first node (breadth first, so the shortest path) at which `flow`
/// can end without reaching a `breakout_return`: the end of the flow, a
/// `handoff`, or a node whose exit is unset. Cycles are walked once.
pub fn unreturned_end(flow: &Flow) -> Option<&str> {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut queue = VecDeque::from([flow.start.as_str()]);
    while let Some(id) = queue.pop_front() {
        if !seen.insert(id) {
            continue;
        }
        // A missing node is reported by the reference checks.
        let Some(node) = flow.nodes.get(id) else {
            continue;
        };
        if matches!(node.kind, NodeKind::BreakoutReturn(_)) {
            continue;
        }
        if can_end(&node.kind) {
            return Some(node.id.as_str());
        }
        for (_, next) in node.kind.edges() {
            queue.push_back(next);
        }
    }
    None
}

/// Whether some outcome of this node ends the flow: an exit it takes is
/// unset (an unset `on_error` falls back to `next`; an unset `on_failure`
/// ends the flow).
fn can_end(kind: &NodeKind) -> bool {
    match kind {
        NodeKind::Handoff(_) | NodeKind::Hangup(_) | NodeKind::WebhookApp(_) => true,
        NodeKind::BreakoutReturn(_) => false,
        NodeKind::Message(n) => n.next.is_none(),
        NodeKind::Set(n) => n.next.is_none(),
        NodeKind::Pause(n) => n.next.is_none(),
        NodeKind::SaveLead(n) => n.next.is_none(),
        NodeKind::Http(n) => n.next.is_none(),
        NodeKind::SendSms(n) => n.next.is_none(),
        NodeKind::SendWhatsApp(n) => n.next.is_none(),
        NodeKind::Branch(n) => n.default.is_none(),
        NodeKind::Ask(n) => n.next.is_none() || n.on_failure.is_none(),
        NodeKind::Choice(n) => {
            n.on_failure.is_none()
                || (n.next.is_none() && n.choices.iter().any(|c| c.next.is_none()))
        }
        NodeKind::EscalateToCall(n) => {
            n.next.is_none() || n.on_failure.is_none() || n.on_chat.is_none()
        }
        // Voice nodes are refused in chat flows; walk past them.
        NodeKind::Say(n) => n.next.is_none(),
        NodeKind::Record(n) => n.next.is_none(),
        NodeKind::Play(n) => n.next.is_none(),
        NodeKind::Gather(n) => n.next.is_none() || n.on_failure.is_none(),
        NodeKind::Transfer(n) => n.next.is_none() || n.on_failure.is_none(),
        NodeKind::Breakout(n) => n.next.is_none(),
        NodeKind::SendDigits(n) => n.next.is_none(),
        NodeKind::Stream(n) => n.next.is_none() || n.on_error.is_none(),
        NodeKind::Queue(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn flow(body: &str) -> Flow {
        let text = format!("name = \"c\"\nchannel = \"chat\"\n{body}");
        crate::flow::parse_flow(&text, Path::new("c.toml"), Path::new(".")).unwrap()
    }

    const ASK: &str = "[[nodes]]\nid = \"ask\"\ntype = \"ask\"\ninput = \"email\"\nvar = \"email\"\ntext = \"Email?\"\nnext = \"ret\"\n";
    const RET: &str = "[[nodes]]\nid = \"ret\"\ntype = \"breakout_return\"\nvars = [\"email\"]\n";

    #[test]
    fn every_path_returning_passes() {
        let f = flow(&format!("{ASK}on_failure = \"ret\"\n{RET}"));
        assert_eq!(unreturned_end(&f), None);
    }

    #[test]
    fn an_unset_on_failure_ends_the_flow() {
        let f = flow(&format!("{ASK}{RET}"));
        assert_eq!(unreturned_end(&f), Some("ask"));
    }

    #[test]
    fn a_give_up_message_that_ends_is_named() {
        let f = flow(&format!(
            "{ASK}on_failure = \"bye\"\n{RET}[[nodes]]\nid = \"bye\"\ntype = \"message\"\ntext = \"Sorry\"\n"
        ));
        assert_eq!(unreturned_end(&f), Some("bye"));
    }

    #[test]
    fn a_handoff_is_an_end() {
        let f = flow(&format!(
            "{ASK}on_failure = \"human\"\n{RET}[[nodes]]\nid = \"human\"\ntype = \"handoff\"\n"
        ));
        assert_eq!(unreturned_end(&f), Some("human"));
    }

    #[test]
    fn a_cycle_is_walked_once() {
        // ask → retry message → ask …, never returning and never ending:
        // no end to report, and no hang.
        let f = flow(&format!(
            "{ASK}on_failure = \"again\"\n{RET}[[nodes]]\nid = \"again\"\ntype = \"message\"\ntext = \"Again\"\nnext = \"ask\"\n"
        ));
        assert_eq!(unreturned_end(&f), None);
    }
}
