//! `set`: assign variables from templates.

use crate::flow::interp::{Ended, FlowCx, Next};
use crate::flow::model::Set;
use crate::flow::template::render;

pub async fn run(node: &Set, cx: &mut FlowCx) -> Result<Next, Ended> {
    // Render all first, so `a = "{{b}}", b = "x"` sees the old b.
    let rendered: Vec<(String, String)> = node
        .vars
        .iter()
        .map(|(k, v)| (k.clone(), render(v, &cx.vars)))
        .collect();
    cx.vars.extend(rendered);
    Ok(node.next.clone())
}
