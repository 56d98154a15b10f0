//! `record`: start (after `[recording] announcement`), stop, pause or
//! resume recording the call. Call control owns the recording; a refused
//! action (already recording, nothing to pause) is logged there.

use crate::flow::interp::{CallRequest, Ended, FlowCx, Next};
use crate::flow::model::{Record, RecordNodeAction};
use crate::recording::{RecordAction, RecordOptions};

pub async fn run(node: &Record, cx: &mut FlowCx) -> Result<Next, Ended> {
    let action = match node.action {
        RecordNodeAction::Start => {
            if let Some(announcement) = cx.services.recordings.announcement() {
                cx.play(announcement, false).await?;
            }
            RecordAction::Start(RecordOptions {
                channels: node.channels,
                format: node.format,
            })
        }
        RecordNodeAction::Stop => RecordAction::Stop,
        RecordNodeAction::Pause => RecordAction::Pause,
        RecordNodeAction::Resume => RecordAction::Resume,
    };
    cx.request(CallRequest::Record(action))?;
    Ok(node.next.clone())
}
