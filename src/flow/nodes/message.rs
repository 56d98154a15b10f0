//! `message`: a bot message in a chat.

use crate::flow::interp::{Ended, FlowCx, Next};
use crate::flow::model::Message;
use crate::flow::template::render;

pub async fn run(node: &Message, cx: &mut FlowCx) -> Result<Next, Ended> {
    let text = render(&node.text, &cx.vars);
    cx.bot_says(&text, node.typing_ms).await?;
    Ok(node.next.clone())
}
