//! `choice`: buttons in a chat. A click sends the choice's value; typing a
//! label or value (any case) counts too. Each choice may branch.

use crate::chat::{Choice, InputKind, VisitorInput};
use crate::flow::interp::{Ended, FlowCx, Next};
use crate::flow::model::ChoiceNode;
use crate::flow::template::render;

/// Which choice an answer means: its value, or a label typed (any case).
pub(crate) fn pick(choices: &[Choice], raw: &str) -> Option<usize> {
    let raw = raw.trim();
    choices.iter().position(|c| {
        c.value == raw || c.value.eq_ignore_ascii_case(raw) || c.label.eq_ignore_ascii_case(raw)
    })
}

pub async fn run(node: &ChoiceNode, cx: &mut FlowCx) -> Result<Next, Ended> {
    let choices: Vec<Choice> = node
        .choices
        .iter()
        .map(|c| Choice {
            label: render(&c.label, &cx.vars),
            value: c.value.clone().unwrap_or_else(|| c.label.clone()),
        })
        .collect();
    for attempt in 0..=node.retries {
        let text = super::attempt_text(
            attempt,
            &node.text,
            &node.retry_prompt,
            "Please pick one of the options.",
            &cx.vars,
        );
        cx.typing_for(node.typing_ms)
            .await?
            .prompt(InputKind::Choice, &text, choices.clone(), None)
            .ok_or(Ended)?;
        let raw = match cx.next_input().await? {
            VisitorInput::Answer { value, .. } => value,
            VisitorInput::Text(t) => t,
        };
        let picked = pick(&choices, &raw);
        if let (Some(i), Some(option)) = (picked, picked.and_then(|i| node.choices.get(i))) {
            let value = choices.get(i).map(|c| c.value.clone()).unwrap_or_default();
            cx.vars.insert(node.var.clone(), value);
            return Ok(option.next.clone().or_else(|| node.next.clone()));
        }
    }
    Ok(node.on_failure.clone())
}
