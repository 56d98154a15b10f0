//! `webhook_app`: hand the call to a TwiML webhook app; its documents run
//! the call to its end (src/twiml).

use crate::flow::interp::{Ended, FlowCx, Next};
use crate::flow::model::WebhookApp;

pub async fn run(node: &WebhookApp, cx: &mut FlowCx) -> Result<Next, Ended> {
    crate::twiml::run(&node.app, cx).await?;
    Ok(None)
}
