//! The retention sweep: every `sweep_interval_secs`, recordings older than
//! `retention_days` go, then the oldest while all of them together take
//! more than `max_total_mb`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::Recordings;
use crate::config::RecordingConfig;
use crate::store::RecordingRecord;

/// Most rows one sweep looks at (the oldest).
const SWEEP_ROWS: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Policy {
    /// Zero: keep whatever their age.
    pub(super) max_age: Duration,
    /// Zero: no cap.
    pub(super) max_total_bytes: u64,
    pub(super) every: Duration,
}

impl Policy {
    pub(super) fn from_config(c: &RecordingConfig) -> Policy {
        Policy {
            max_age: Duration::from_secs(c.retention_days.saturating_mul(86_400)),
            max_total_bytes: c.max_total_mb.saturating_mul(1024 * 1024),
            every: Duration::from_secs(c.sweep_interval_secs.max(1)),
        }
    }

    fn active(&self) -> bool {
        !self.max_age.is_zero() || self.max_total_bytes > 0
    }

    /// Which of `rows` (oldest first) go, and why.
    pub(super) fn expired<'a>(
        &self,
        rows: &'a [RecordingRecord],
        now: SystemTime,
    ) -> Vec<(&'a RecordingRecord, &'static str)> {
        let mut gone = Vec::new();
        let mut total: u64 = rows.iter().map(|r| r.size_bytes).sum();
        for r in rows {
            let age = now.duration_since(r.started_at).unwrap_or_default();
            let reason = if !self.max_age.is_zero() && age > self.max_age {
                "retention_days"
            } else if self.max_total_bytes > 0 && total > self.max_total_bytes {
                "max_total_mb"
            } else {
                // Oldest first: nothing after this one is due.
                break;
            };
            total = total.saturating_sub(r.size_bytes);
            gone.push((r, reason));
        }
        gone
    }
}

pub(super) fn spawn(recordings: Arc<Recordings>, policy: Policy) {
    if !policy.active() {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(policy.every);
        loop {
            tick.tick().await;
            let rows = match recordings.store().oldest_recordings(SWEEP_ROWS).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(%e, "recording retention: cannot read the recordings");
                    continue;
                }
            };
            for (row, reason) in policy.expired(&rows, SystemTime::now()) {
                if let Err(e) = recordings.remove(row, reason).await {
                    tracing::warn!(recording = %row.id, %e, "recording retention: cannot delete");
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, age_days: u64, mb: u64, now: SystemTime) -> RecordingRecord {
        RecordingRecord {
            id: id.into(),
            call_id: "c".into(),
            started_at: now - Duration::from_secs(age_days * 86_400),
            duration_ms: 1000,
            size_bytes: mb * 1024 * 1024,
            sha256: String::new(),
            channels: "dual".into(),
            format: "wav".into(),
            complete: true,
            storage: "local".into(),
            path: format!("{id}.wav"),
        }
    }

    #[test]
    fn old_ones_go_then_the_oldest_until_under_the_cap() {
        let now = SystemTime::now();
        let rows = [
            row("a", 40, 1, now),
            row("b", 20, 5, now),
            row("c", 10, 5, now),
            row("d", 1, 5, now),
        ];
        let policy = Policy {
            max_age: Duration::from_secs(30 * 86_400),
            max_total_bytes: 10 * 1024 * 1024,
            every: Duration::from_secs(1),
        };
        let gone: Vec<_> = policy
            .expired(&rows, now)
            .into_iter()
            .map(|(r, why)| (r.id.as_str(), why))
            .collect();
        assert_eq!(gone, vec![("a", "retention_days"), ("b", "max_total_mb")]);
        let keep_all = Policy {
            max_age: Duration::ZERO,
            max_total_bytes: 0,
            every: Duration::from_secs(1),
        };
        assert!(keep_all.expired(&rows, now).is_empty());
    }
}
