//! `pause`: silence for a while.

use std::time::Duration;

use crate::flow::interp::{Ended, FlowCx, Next};
use crate::flow::model::Pause;

pub async fn run(node: &Pause, cx: &mut FlowCx) -> Result<Next, Ended> {
    cx.silence()?;
    cx.sleep(Duration::from_secs_f64(node.secs)).await?;
    Ok(node.next.clone())
}
