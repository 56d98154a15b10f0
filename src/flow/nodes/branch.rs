//! `branch`: the first condition that holds picks the next node.

use crate::config::glob_match;
use crate::flow::interp::{Ended, FlowCx, Next};
use crate::flow::model::{Branch, Op};
use crate::flow::template::render;

pub async fn run(node: &Branch, cx: &mut FlowCx) -> Result<Next, Ended> {
    for c in &node.conditions {
        let value = cx.vars.get(&c.var).map(String::as_str).unwrap_or("");
        let operand = render(&c.value, &cx.vars);
        let holds = match c.op {
            Op::Eq => value == operand,
            Op::Ne => value != operand,
            Op::Contains => value.contains(&operand),
            Op::StartsWith => value.starts_with(&operand),
            Op::Empty => value.is_empty(),
            Op::NotEmpty => !value.is_empty(),
            Op::Matches => glob_match(&operand, value),
        };
        if holds {
            return Ok(Some(c.next.clone()));
        }
    }
    Ok(node.default.clone())
}
