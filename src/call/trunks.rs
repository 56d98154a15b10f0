//! Outbound trunks as call control uses them: each one's OPTIONS
//! keep-alive ([`TrunkHealth`] decides when, and what the answers mean),
//! and the trunks a call goes out through when config names a trunk or a
//! `[[trunk_groups]]` entry.
//!
//! A probe goes where a call would go now, through the same DNS: the
//! first of the proxy's targets (RFC 3263 order) that is not resting
//! after a failure. A failed probe rests that target as a failed call
//! would, so the next probe and the next call go to the one after it; an
//! answered one brings it back. A trunk with several targets is thus down
//! when `options_failures_down` probes in a row failed, whichever of its
//! targets each went to.
//!
//! A call skips trunks that are down. When every trunk it could take is
//! down it fails at once (503, "trunk down") rather than waiting on
//! peers that stopped answering.

use std::time::Instant;

use metrics::{counter, gauge};

use super::outbound::Waiter;
use super::trunk_health::{ProbeResult, TrunkHealth, TrunkState};
use super::{CallControl, PortSource};
use crate::config::{GroupStrategy, TrunkConfig};
use crate::dns::{self, Query, Resolution, ResolveError, Target};
use crate::sip::endpoint::{OptionsPing, PingId, PingOutcome};
use crate::sip::message::Uri;
use crate::telemetry::names;

/// Why a call can't go out through the trunk (or group) it names.
pub(crate) const TRUNK_DOWN: &str = "trunk down";

impl<P: PortSource, F> CallControl<P, F> {
    /// Start the keep-alives of every trunk that has them (the first
    /// probes go now).
    pub fn start_trunk_probes(&mut self, now: Instant) {
        self.outbound.health = TrunkHealth::new(&self.config, now);
        for (i, trunk) in self.config.trunks.iter().enumerate() {
            if self.outbound.health.state(i) == Some(TrunkState::Unknown) {
                gauge!(names::TRUNK_UP, "trunk" => trunk.name.clone()).set(0.0);
            }
        }
        self.probe_trunks(now);
        self.process_events(now);
    }

    /// Every trunk's health, for the API.
    pub fn trunk_health(&self) -> &TrunkHealth {
        &self.outbound.health
    }

    /// Send the probes that are due.
    pub(crate) fn probe_trunks(&mut self, now: Instant) {
        if self.draining() {
            return;
        }
        for i in self.outbound.health.due(now) {
            let Some(trunk) = self.config.trunks.get(i) else {
                continue;
            };
            let Some(proxy) = probe_uri(trunk) else {
                self.probe_ended(now, i, ProbeResult::Unresolved);
                continue;
            };
            let forced = trunk.outbound_transport.map(|n| n.transport());
            let query = Query::for_uri(&proxy, forced, self.outbound.supported());
            match dns::literal(&query) {
                Some(t) => self.send_probe(now, i, &[t]),
                None => self.outbound.request(query, Waiter::Probe(i)),
            }
        }
    }

    /// The proxy of trunk `i` resolved (or didn't) for its probe.
    pub(super) fn probe_resolved(
        &mut self,
        now: Instant,
        i: usize,
        result: Result<Resolution, ResolveError>,
    ) {
        match result {
            Ok(res) => {
                let targets = self.outbound.order(&res);
                self.send_probe(now, i, &targets);
            }
            Err(e) => {
                let trunk = self.outbound.health.name(i).unwrap_or_default();
                tracing::warn!(trunk, error = %e, "trunk keep-alive: cannot resolve the proxy");
                self.probe_ended(now, i, ProbeResult::Unresolved);
            }
        }
    }

    /// OPTIONS to the target a call would take: the first that isn't
    /// resting, else the first.
    fn send_probe(&mut self, now: Instant, i: usize, targets: &[Target]) {
        let backoff = self.outbound.backoff();
        let pick = targets
            .iter()
            .find(|t| !backoff.is_down(now, t))
            .or(targets.first())
            .copied();
        let (Some(target), Some(trunk)) = (pick, self.config.trunks.get(i)) else {
            return self.probe_ended(now, i, ProbeResult::Unresolved);
        };
        let Some(uri) = probe_uri(trunk) else {
            return self.probe_ended(now, i, ProbeResult::Unresolved);
        };
        let name = trunk.name.clone();
        let ping = OptionsPing {
            uri,
            destination: target.addr,
            transport: target.transport,
            timeout: self.outbound.health.probe_timeout(i),
        };
        match self.endpoint.ping(now, ping) {
            Ok(id) => {
                counter!(names::TRUNK_OPTIONS_SENT, "trunk" => name).increment(1);
                self.outbound.probes.insert(id, (i, target));
            }
            Err(e) => {
                tracing::warn!(trunk = %name, %e, "trunk keep-alive: cannot send");
                self.probe_ended(now, i, ProbeResult::Unreachable);
            }
        }
    }

    /// A probe's OPTIONS ended.
    pub(super) fn ping_answered(&mut self, now: Instant, ping: PingId, outcome: PingOutcome) {
        let Some((i, target)) = self.outbound.probes.remove(&ping) else {
            return;
        };
        let result = match outcome {
            PingOutcome::Answered(status) => ProbeResult::Answered(status),
            PingOutcome::Timeout => ProbeResult::Timeout,
            PingOutcome::Unreachable => ProbeResult::Unreachable,
        };
        match result.failure() {
            Some(_) => self.outbound.backoff().mark_down(now, target, None),
            None => self.outbound.backoff().mark_up(&target),
        }
        self.probe_ended(now, i, result);
    }

    fn probe_ended(&mut self, now: Instant, i: usize, result: ProbeResult) {
        let trunk = self.outbound.health.name(i).unwrap_or_default().to_string();
        if let Some(reason) = result.failure() {
            counter!(names::TRUNK_OPTIONS_FAILED, "trunk" => trunk.clone(), "reason" => reason)
                .increment(1);
            tracing::debug!(%trunk, reason, "trunk keep-alive failed");
        }
        let Some(moved) = self.outbound.health.record(now, i, result) else {
            return;
        };
        counter!(names::TRUNK_TRANSITIONS, "trunk" => trunk.clone(), "to" => moved.to.as_str())
            .increment(1);
        let up = if moved.to == TrunkState::Up { 1.0 } else { 0.0 };
        gauge!(names::TRUNK_UP, "trunk" => trunk.clone()).set(up);
        let (from, to) = (moved.from.as_str(), moved.to.as_str());
        match moved.to {
            TrunkState::Down => {
                tracing::warn!(%trunk, from, to, ?result, "trunk down: calls pass it over")
            }
            _ => tracing::info!(%trunk, from, to, ?result, "trunk state"),
        }
    }

    /// The trunks a call through `name` (a trunk or a group) tries, in
    /// order, those that are down left out. Err: every one is down, or the
    /// name stands for none that takes calls.
    pub(crate) fn trunk_route(&mut self, name: &str) -> Result<Vec<TrunkConfig>, &'static str> {
        let Some((trunks, strategy)) = self.config.outbound_trunks(name) else {
            return Err("no outbound trunk");
        };
        let mut trunks: Vec<TrunkConfig> = trunks.into_iter().cloned().collect();
        if strategy == GroupStrategy::RoundRobin && trunks.len() > 1 {
            let next = self
                .outbound
                .round_robin
                .entry(name.to_string())
                .or_default();
            let len = trunks.len();
            trunks.rotate_left(*next % len);
            *next = next.wrapping_add(1);
        }
        let health = &self.outbound.health;
        let (up, down): (Vec<TrunkConfig>, Vec<TrunkConfig>) =
            trunks.into_iter().partition(|t| health.usable(&t.name));
        for t in &down {
            counter!(names::TRUNK_SKIPPED, "trunk" => t.name.clone()).increment(1);
            tracing::info!(trunk = %t.name, "trunk down: passed over");
        }
        if up.is_empty() {
            tracing::warn!(
                trunk = name,
                "every trunk it could take is down: the call fails (503)"
            );
            return Err(TRUNK_DOWN);
        }
        Ok(up)
    }
}

/// Where a trunk's OPTIONS go: its proxy URI.
fn probe_uri(trunk: &TrunkConfig) -> Option<Uri> {
    trunk
        .outbound_proxy
        .as_deref()
        .and_then(|p| Uri::parse(p).ok())
}
