//! `play`: a WAV file, once or looped.

use std::time::Duration;

use crate::flow::interp::{Ended, FlowCx, Next};
use crate::flow::model::Play;

pub async fn run(node: &Play, cx: &mut FlowCx) -> Result<Next, Ended> {
    let samples = match cx.clip(&node.file).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(call = %cx.label, node = %node.id, %e, "play: cannot load audio");
            return Ok(node.next.clone());
        }
    };
    if node.looped {
        cx.play_loop(samples)?;
        match node.duration_secs {
            Some(secs) => {
                cx.sleep(Duration::from_secs_f64(secs)).await?;
                cx.silence()?;
            }
            // Looped with no end: until the caller hangs up.
            None => std::future::pending::<()>().await,
        }
    } else {
        cx.play(samples, false).await?;
    }
    Ok(node.next.clone())
}
