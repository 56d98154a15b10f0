//! Two calls of ours bridged to each other, neither an agent leg of the
//! other: a queue's caller and the call that dequeued it (`<Dial><Queue>`).
//! Each keeps its own flow; when one leaves (or asks `HangUpAgent`), the
//! other hears `AgentHungUp` and its flow goes on.

use super::{CallControl, MediaCommand, PortSource};
use crate::flow::interp::{CallSignal, TransferEvent};
use crate::media::audio_loop::Source;
use crate::sip::endpoint::CallId;

impl<P: PortSource, F> CallControl<P, F> {
    /// Bridge `id` with `other`; both must be answered and free (no
    /// transfer, not joined already), else `id` hears `Failed` (480).
    pub(crate) fn join_calls(&mut self, id: CallId, other: CallId) {
        let free = |c: CallId| {
            !self.joins.contains_key(&c)
                && self.calls.get(&c).is_some_and(|call| {
                    call.streaming() && call.has_flow && call.transfer.is_none()
                })
        };
        if id == other || !free(id) || !free(other) {
            tracing::info!(%id, %other, "join: the other call is gone or busy");
            return self.signal(
                id,
                CallSignal::Transfer(TransferEvent::Failed { status: 480 }),
            );
        }
        self.joins.insert(id, other);
        self.joins.insert(other, id);
        let sid = |c: CallId| self.calls.get(&c).map(|call| call.sid().to_string());
        let (sid_id, sid_other) = (sid(id), sid(other));
        // The other's stream comes to this one's audio loop if need be.
        self.media_out.push_back(MediaCommand::Bridge(id, other));
        for (this, target) in [(id, sid_other), (other, sid_id)] {
            self.leave_shared_hold(this);
            let target = target.unwrap_or_default();
            self.signal(
                this,
                CallSignal::Transfer(TransferEvent::Bridged { target }),
            );
        }
        tracing::info!(%id, %other, "join: bridged");
    }

    /// End `id`'s join: both sides (those still here) are unbridged, hear
    /// silence and `AgentHungUp`.
    pub(crate) fn unjoin(&mut self, id: CallId) {
        let other = self.joins.remove(&id);
        for this in std::iter::once(id).chain(other) {
            self.joins.remove(&this);
            if self.calls.contains_key(&this) {
                self.media_out.push_back(MediaCommand::Unbridge(this));
                self.play(this, Source::Silence, 0);
                self.signal(this, CallSignal::Transfer(TransferEvent::AgentHungUp));
            }
        }
    }
}
