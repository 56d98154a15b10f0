//! Prometheus metrics, and optional trace export ([`otlp`]). The sans-IO
//! endpoint and the audio loops keep plain counters; the runtime copies
//! them into the `metrics` recorder once a second, so the hot paths never
//! touch a shared registry.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use metrics::{counter, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::media::audio_loop::LoopStats;
use crate::sip::endpoint::Counters;
use crate::sip::transport::TransportStats;

pub mod names;
pub mod otlp;

/// Install the global recorder and describe every metric in
/// [`names::ALL`], so `/metrics` carries a `# HELP` line for each.
/// `None` if a recorder is already installed.
pub fn install() -> Option<PrometheusHandle> {
    let handle = PrometheusBuilder::new().install_recorder().ok()?;
    for metric in names::ALL {
        match metric.kind {
            names::Kind::Counter => metrics::describe_counter!(metric.name, metric.help),
            names::Kind::Gauge => metrics::describe_gauge!(metric.name, metric.help),
            names::Kind::Histogram => metrics::describe_histogram!(metric.name, metric.help),
        }
    }
    Some(handle)
}

/// Calls ended, by outcome, and the CPS gauge's last sample.
#[derive(Default)]
pub struct CallTally {
    pub ended: HashMap<&'static str, u64>,
    last_started: u64,
    last_at: Option<std::time::Instant>,
}

impl CallTally {
    pub fn ended(&mut self, outcome: &'static str) {
        *self.ended.entry(outcome).or_default() += 1;
    }
}

pub struct Snapshot<'a> {
    pub sip: &'a Counters,
    pub transport: &'a TransportStats,
    pub audio: &'a [Arc<LoopStats>],
    pub active_calls: usize,
    pub free_rtp_ports: usize,
    pub active_flows: usize,
    pub draining: bool,
    pub overloaded: bool,
    pub registrations: &'a [(String, bool)],
}

/// Session timers, UPDATE, PRACK and early media.
fn export_dialog_extensions(sip: &Counters) {
    let by = |metric, label: &'static str, pairs: [(&'static str, u64); 2]| {
        for (value, n) in pairs {
            counter!(metric, label => value).absolute(n);
        }
    };
    by(
        names::SIP_SESSION_REFRESHES,
        "direction",
        [
            ("sent", sip.session_refreshes_sent),
            ("received", sip.session_refreshes_received),
        ],
    );
    by(
        names::SIP_SESSION_TIMER_REFUSED,
        "reason",
        [
            ("too_small", sip.session_interval_too_small),
            ("malformed", sip.session_timer_malformed),
        ],
    );
    by(
        names::SIP_PRACKS,
        "direction",
        [("sent", sip.pracks_sent), ("received", sip.pracks_received)],
    );
    by(
        names::SIP_EARLY_MEDIA,
        "direction",
        [
            ("sent", sip.early_media_sent),
            ("received", sip.early_media_received),
        ],
    );
    counter!(names::SIP_SESSIONS_EXPIRED).absolute(sip.sessions_expired);
    counter!(names::SIP_UPDATES_RECEIVED).absolute(sip.updates_received);
    counter!(names::SIP_GLARE).absolute(sip.glare_refused);
    counter!(names::REFERS_RECEIVED, "outcome" => "malformed").absolute(sip.refers_malformed);
    counter!(names::SIP_RELIABLE_PROVISIONALS).absolute(sip.reliable_provisionals_sent);
    counter!(names::SIP_PRACKS_REFUSED).absolute(sip.pracks_unmatched);
    counter!(names::SIP_PRACK_TIMEOUTS).absolute(sip.prack_timeouts);
}

pub fn export(now: std::time::Instant, s: &Snapshot<'_>, tally: &mut CallTally) {
    counter!(names::SIP_MESSAGES_RECEIVED).absolute(s.sip.messages_in);
    counter!(names::SIP_PARSE_ERRORS).absolute(s.sip.parse_errors);
    counter!(names::SIP_OVERSIZE).absolute(s.sip.oversize);
    counter!(names::SIP_DROPPED, "reason" => "rate_limited").absolute(s.sip.rate_limited);
    counter!(names::SIP_DROPPED, "reason" => "scanner").absolute(s.sip.scanners_dropped);
    counter!(names::CALLS_REFUSED, "reason" => "capacity").absolute(s.sip.over_capacity);
    counter!(names::CALLS_REFUSED, "reason" => "media").absolute(s.sip.media_refused);
    counter!(names::CALLS_REFUSED, "reason" => "source_share").absolute(s.sip.over_source_share);
    counter!(names::CALLS_REFUSED, "reason" => "overload").absolute(s.sip.overload_refused);
    counter!(names::OVERLOAD_OPTIONS_REFUSED).absolute(s.sip.overload_options);
    gauge!(names::OVERLOADED).set(if s.overloaded { 1.0 } else { 0.0 });
    counter!(names::SIP_DROPPED, "reason" => "banned").absolute(s.sip.banned_dropped);
    counter!(names::SIP_AUTH_FAILURES, "reason" => "wrong").absolute(s.sip.auth_failures);
    counter!(names::SIP_AUTH_FAILURES, "reason" => "user_banned")
        .absolute(s.sip.auth_refused_banned_user);
    counter!(names::SIP_BANS, "kind" => "source").absolute(s.sip.bans_sources);
    counter!(names::SIP_BANS, "kind" => "user").absolute(s.sip.bans_users);
    for (outcome, n) in &s.sip.registers {
        counter!(names::REGISTERS, "outcome" => outcome.label()).absolute(*n);
    }
    gauge!(names::REGISTRATIONS_ACTIVE).set(s.sip.bindings as f64);
    counter!(names::TCP_IDLE_CLOSED).absolute(s.transport.tcp_idle_closed.load(Ordering::Relaxed));
    counter!(names::TCP_REJECTED_PER_SOURCE)
        .absolute(s.transport.tcp_rejected_per_source.load(Ordering::Relaxed));
    counter!(names::SIP_STRAY_RESPONSES).absolute(s.sip.stray_responses);
    export_dialog_extensions(s.sip);
    counter!(names::SIP_RETRANSMISSIONS_ABSORBED).absolute(s.sip.retransmissions_absorbed);
    for (code, n) in &s.sip.responses_sent {
        counter!(names::SIP_RESPONSES_SENT, "code" => code.to_string()).absolute(*n);
    }
    for (code, n) in &s.sip.responses_received {
        counter!(names::SIP_RESPONSES_RECEIVED, "code" => code.to_string()).absolute(*n);
    }
    let t = s.transport;
    counter!(names::SIP_INBOUND_DROPPED).absolute(t.inbound_dropped.load(Ordering::Relaxed));
    counter!(names::SIP_SEND_ERRORS).absolute(t.send_errors.load(Ordering::Relaxed));
    counter!(names::TCP_REJECTED).absolute(t.tcp_rejected.load(Ordering::Relaxed));
    counter!(names::TLS_HANDSHAKE_FAILURES)
        .absolute(t.tls_handshake_failures.load(Ordering::Relaxed));
    gauge!(names::TCP_CONNECTIONS).set(t.tcp_open.load(Ordering::Relaxed) as f64);

    counter!(names::CALLS_STARTED).absolute(s.sip.calls_started);
    gauge!(names::CALLS_ACTIVE).set(s.active_calls as f64);
    for (outcome, n) in &tally.ended {
        counter!(names::CALLS, "outcome" => *outcome).absolute(*n);
    }
    if let Some(last) = tally.last_at {
        let secs = now.duration_since(last).as_secs_f64();
        if secs > 0.0 {
            let cps = (s.sip.calls_started - tally.last_started) as f64 / secs;
            gauge!(names::CALLS_PER_SECOND).set(cps);
        }
    }
    tally.last_at = Some(now);
    tally.last_started = s.sip.calls_started;

    let sum = |f: fn(&LoopStats) -> u64| s.audio.iter().map(|l| f(l)).sum::<u64>();
    counter!(names::RTP_PACKETS_SENT).absolute(sum(|l| l.packets_sent.load(Ordering::Relaxed)));
    counter!(names::RTP_PACKETS_RECEIVED)
        .absolute(sum(|l| l.packets_received.load(Ordering::Relaxed)));
    counter!(names::RTP_PACKETS_LOST).absolute(sum(|l| l.packets_lost.load(Ordering::Relaxed)));
    counter!(names::RTP_JITTER_MICROSECONDS_SUM)
        .absolute(sum(|l| l.jitter_sum_us.load(Ordering::Relaxed)));
    counter!(names::RTP_JITTER_SAMPLES).absolute(sum(|l| l.jitter_samples.load(Ordering::Relaxed)));
    counter!(names::RTP_PACKETS_SENT_RAW)
        .absolute(sum(|l| l.packets_sent_raw.load(Ordering::Relaxed)));
    counter!(names::RTP_SEND_ERRORS).absolute(sum(|l| l.send_errors.load(Ordering::Relaxed)));
    counter!(names::AUDIO_LATE_TICKS).absolute(sum(|l| l.late_ticks.load(Ordering::Relaxed)));
    gauge!(names::RTP_STREAMS).set(sum(|l| l.streams.load(Ordering::Relaxed)) as f64);
    counter!(names::AUDIO_BUSY_MICROSECONDS).absolute(sum(|l| l.busy_us.load(Ordering::Relaxed)));
    counter!(names::AUDIO_LATE_WAKEUPS).absolute(sum(|l| l.late_wakeups.load(Ordering::Relaxed)));
    counter!(names::AUDIO_NAPS).absolute(sum(|l| l.naps.load(Ordering::Relaxed)));
    let max = |f: fn(&LoopStats) -> u64| s.audio.iter().map(|l| f(l)).max().unwrap_or(0);
    gauge!(names::AUDIO_MAX_WAKE_LATE_MICROSECONDS)
        .set(max(|l| l.max_wake_late_us.load(Ordering::Relaxed)) as f64);
    gauge!(names::AUDIO_MAX_TICK_MICROSECONDS)
        .set(max(|l| l.max_tick_us.load(Ordering::Relaxed)) as f64);

    for (i, l) in s.audio.iter().enumerate() {
        let load = f64::from(l.load.load(Ordering::Relaxed)) / 100.0;
        gauge!(names::AUDIO_LOAD_PERCENT, "loop" => i.to_string()).set(load);
    }
    gauge!(names::RTP_PORTS_FREE).set(s.free_rtp_ports as f64);
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        gauge!(names::RUNTIME_TASKS_ALIVE).set(runtime.metrics().num_alive_tasks() as f64);
    }
    if let Some(usage) = crate::allocator::usage() {
        gauge!(names::ALLOCATOR_ALLOCATED_BYTES).set(usage.allocated as f64);
        gauge!(names::ALLOCATOR_RESIDENT_BYTES).set(usage.resident as f64);
    }
    gauge!(names::FLOWS_ACTIVE).set(s.active_flows as f64);
    gauge!(names::DRAINING).set(if s.draining { 1.0 } else { 0.0 });
    for (registrar, up) in s.registrations {
        gauge!(names::REGISTRATION_UP, "registrar" => registrar.clone()).set(if *up {
            1.0
        } else {
            0.0
        });
    }
}
