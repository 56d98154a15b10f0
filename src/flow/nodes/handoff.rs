//! `handoff`: the bot steps aside. The conversation stays open for the
//! operators in the console; what the visitor writes joins the transcript
//! (the hub records it) until the chat is closed or idles out.

use crate::flow::interp::{Ended, FlowCx, Next};
use crate::flow::model::Handoff;
use crate::flow::template::render;

pub async fn run(node: &Handoff, cx: &mut FlowCx) -> Result<Next, Ended> {
    if let Some(text) = &node.text {
        let text = render(text, &cx.vars);
        cx.bot_says(&text, node.typing_ms).await?;
    }
    loop {
        cx.next_input().await?;
    }
}
