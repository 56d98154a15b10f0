//! Prometheus metrics. The sans-IO endpoint and the audio loops keep plain
//! counters; the runtime copies them into the `metrics` recorder once a
//! second, so the hot paths never touch a shared registry.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use metrics::{counter, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::media::audio_loop::LoopStats;
use crate::sip::endpoint::Counters;
use crate::sip::transport::TransportStats;

/// Install the global recorder. `None` if one is already installed.
pub fn install() -> Option<PrometheusHandle> {
    PrometheusBuilder::new().install_recorder().ok()
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
    pub registrations: &'a [(String, bool)],
}

pub fn export(now: std::time::Instant, s: &Snapshot<'_>, tally: &mut CallTally) {
    counter!("crossline_sip_messages_received_total").absolute(s.sip.messages_in);
    counter!("crossline_sip_parse_errors_total").absolute(s.sip.parse_errors);
    counter!("crossline_sip_oversize_total").absolute(s.sip.oversize);
    counter!("crossline_sip_dropped_total", "reason" => "rate_limited")
        .absolute(s.sip.rate_limited);
    counter!("crossline_sip_dropped_total", "reason" => "scanner").absolute(s.sip.scanners_dropped);
    counter!("crossline_calls_refused_total", "reason" => "capacity").absolute(s.sip.over_capacity);
    counter!("crossline_calls_refused_total", "reason" => "source_share")
        .absolute(s.sip.over_source_share);
    counter!("crossline_sip_dropped_total", "reason" => "banned").absolute(s.sip.banned_dropped);
    counter!("crossline_sip_auth_failures_total", "reason" => "wrong")
        .absolute(s.sip.auth_failures);
    counter!("crossline_sip_auth_failures_total", "reason" => "user_banned")
        .absolute(s.sip.auth_refused_banned_user);
    counter!("crossline_sip_bans_total", "kind" => "source").absolute(s.sip.bans_sources);
    counter!("crossline_sip_bans_total", "kind" => "user").absolute(s.sip.bans_users);
    counter!("crossline_tcp_idle_closed_total")
        .absolute(s.transport.tcp_idle_closed.load(Ordering::Relaxed));
    counter!("crossline_tcp_rejected_per_source_total")
        .absolute(s.transport.tcp_rejected_per_source.load(Ordering::Relaxed));
    counter!("crossline_sip_stray_responses_total").absolute(s.sip.stray_responses);
    counter!("crossline_sip_retransmissions_absorbed_total")
        .absolute(s.sip.retransmissions_absorbed);
    for (code, n) in &s.sip.responses_sent {
        counter!("crossline_sip_responses_sent_total", "code" => code.to_string()).absolute(*n);
    }
    for (code, n) in &s.sip.responses_received {
        counter!("crossline_sip_responses_received_total", "code" => code.to_string()).absolute(*n);
    }
    let t = s.transport;
    counter!("crossline_sip_inbound_dropped_total")
        .absolute(t.inbound_dropped.load(Ordering::Relaxed));
    counter!("crossline_sip_send_errors_total").absolute(t.send_errors.load(Ordering::Relaxed));
    counter!("crossline_tcp_rejected_total").absolute(t.tcp_rejected.load(Ordering::Relaxed));
    counter!("crossline_tls_handshake_failures_total")
        .absolute(t.tls_handshake_failures.load(Ordering::Relaxed));
    gauge!("crossline_tcp_connections").set(t.tcp_open.load(Ordering::Relaxed) as f64);

    counter!("crossline_calls_started_total").absolute(s.sip.calls_started);
    gauge!("crossline_calls_active").set(s.active_calls as f64);
    for (outcome, n) in &tally.ended {
        counter!("crossline_calls_total", "outcome" => *outcome).absolute(*n);
    }
    if let Some(last) = tally.last_at {
        let secs = now.duration_since(last).as_secs_f64();
        if secs > 0.0 {
            let cps = (s.sip.calls_started - tally.last_started) as f64 / secs;
            gauge!("crossline_calls_per_second").set(cps);
        }
    }
    tally.last_at = Some(now);
    tally.last_started = s.sip.calls_started;

    let sum = |f: fn(&LoopStats) -> u64| s.audio.iter().map(|l| f(l)).sum::<u64>();
    counter!("crossline_rtp_packets_sent_total")
        .absolute(sum(|l| l.packets_sent.load(Ordering::Relaxed)));
    counter!("crossline_rtp_packets_received_total")
        .absolute(sum(|l| l.packets_received.load(Ordering::Relaxed)));
    counter!("crossline_rtp_packets_lost_total")
        .absolute(sum(|l| l.packets_lost.load(Ordering::Relaxed)));
    counter!("crossline_rtp_jitter_microseconds_sum")
        .absolute(sum(|l| l.jitter_sum_us.load(Ordering::Relaxed)));
    counter!("crossline_rtp_jitter_samples_total")
        .absolute(sum(|l| l.jitter_samples.load(Ordering::Relaxed)));
    counter!("crossline_rtp_send_errors_total")
        .absolute(sum(|l| l.send_errors.load(Ordering::Relaxed)));
    counter!("crossline_audio_late_ticks_total")
        .absolute(sum(|l| l.late_ticks.load(Ordering::Relaxed)));
    gauge!("crossline_rtp_streams").set(sum(|l| l.streams.load(Ordering::Relaxed)) as f64);
    counter!("crossline_audio_busy_microseconds_total")
        .absolute(sum(|l| l.busy_us.load(Ordering::Relaxed)));
    gauge!("crossline_audio_max_tick_microseconds").set(
        s.audio
            .iter()
            .map(|l| l.max_tick_us.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0) as f64,
    );

    gauge!("crossline_rtp_ports_free").set(s.free_rtp_ports as f64);
    gauge!("crossline_flows_active").set(s.active_flows as f64);
    gauge!("crossline_draining").set(if s.draining { 1.0 } else { 0.0 });
    for (registrar, up) in s.registrations {
        gauge!("crossline_registration_up", "registrar" => registrar.clone()).set(if *up {
            1.0
        } else {
            0.0
        });
    }
}
