//! Configuration: TOML in, a validated [`Config`] or every error out.
//!
//! Each top-level section (and each element of an array of tables) is
//! deserialised on its own, so one bad key does not hide the next one.
//! Errors name the file, the line and the key.

mod glob;
mod model;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

pub use glob::glob_match;
pub use model::*;

/// Flows built into the binary. The flow engine adds file-based flows.
pub const BUILTIN_FLOWS: &[&str] = &["demo", "hold"];

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// Dotted key path, e.g. `trunks[1].inbound_cidrs`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.column,
            if self.key.is_empty() {
                "(file)"
            } else {
                &self.key
            },
            self.message
        )
    }
}

/// All errors found in one file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl Config {
    /// The embedded defaults: loopback listeners, SQLite in the working
    /// directory and every call routed to the demo flow.
    pub fn embedded() -> Config {
        Config {
            routes: vec![RouteConfig::to_flow("demo")],
            ..Config::default()
        }
    }

    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                line: 0,
                column: 0,
                key: String::new(),
                message: format!("cannot read: {e}"),
            }])
        })?;
        Config::parse(&text, path)
    }

    /// Parse and validate `text`; `file` is only used in messages.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigErrors> {
        let mut sink = Diagnostics {
            text,
            file,
            errors: Vec::new(),
        };
        let doc = match DeTable::parse(text) {
            Ok(doc) => doc,
            Err(e) => {
                sink.push_toml("", e);
                return Err(ConfigErrors(sink.errors));
            }
        };
        let mut config = Config::default();
        for (key, value) in doc.get_ref().iter() {
            let name = key.get_ref().as_ref();
            match name {
                "sip" => sink.section(name, value, &mut config.sip),
                "http" => sink.section(name, value, &mut config.http),
                "store" => sink.section(name, value, &mut config.store),
                "media" => sink.section(name, value, &mut config.media),
                "logging" => sink.section(name, value, &mut config.logging),
                "telemetry" => sink.section(name, value, &mut config.telemetry),
                "trunks" => config.trunks = sink.array(name, value),
                "trunk_groups" => config.trunk_groups = sink.array(name, value),
                "registrations" => config.registrations = sink.array(name, value),
                "routes" => config.routes = sink.array(name, value),
                "tts" => sink.section(name, value, &mut config.tts),
                "prompts" => config.prompts = sink.array(name, value),
                "flows" => sink.section(name, value, &mut config.flows),
                "messaging" => sink.section(name, value, &mut config.messaging),
                "chat" => sink.section(name, value, &mut config.chat),
                "callbacks" => sink.section(name, value, &mut config.callbacks),
                "media_streams" => sink.section(name, value, &mut config.media_streams),
                "asr" => sink.section(name, value, &mut config.asr),
                "webrtc" => sink.section(name, value, &mut config.webrtc),
                "twiml" => sink.section(name, value, &mut config.twiml),
                "recording" => sink.section(name, value, &mut config.recording),
                "registrar" => sink.section(name, value, &mut config.registrar),
                "users" => config.users = sink.array(name, value),
                "queues" => config.queues = sink.array(name, value),
                other => sink.push_span(
                    other,
                    key.span(),
                    "unknown section; expected one of sip, http, store, media, logging, telemetry, trunks, trunk_groups, registrations, routes, tts, prompts, flows, messaging, chat, callbacks, webrtc, registrar, users, queues, recording, twiml, media_streams, asr".into(),
                ),
            }
        }
        if let Some(dir) = &config.flows.dir {
            let (set, mut errors) = crate::flow::load::load_all(dir, &config.media.audio_dir);
            config.flow_set = set;
            sink.errors.append(&mut errors);
        }
        validate(&config, &doc, &mut sink);
        if sink.errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(sink.errors))
        }
    }
}

/// Collects errors with file:line:column; shared with the flow loader.
pub(crate) struct Diagnostics<'a> {
    pub(crate) text: &'a str,
    pub(crate) file: &'a Path,
    pub(crate) errors: Vec<ConfigError>,
}

impl Diagnostics<'_> {
    pub(crate) fn section<T: DeserializeOwned>(
        &mut self,
        name: &str,
        value: &Spanned<DeValue<'_>>,
        slot: &mut T,
    ) {
        if !value.get_ref().is_table() {
            self.push_span(name, value.span(), "expected a table".into());
            return;
        }
        match T::deserialize(ValueDeserializer::from(value.clone())) {
            Ok(v) => *slot = v,
            Err(first) => {
                // serde stops at the first bad key; every key of a section
                // has a default, so trying each alone finds all of them.
                let before = self.errors.len();
                if let DeValue::Table(table) = value.get_ref() {
                    for (key, item) in table.iter() {
                        let mut alone = DeTable::new();
                        alone.insert(key.clone(), item.clone());
                        let one = Spanned::new(value.span(), DeValue::Table(alone));
                        if let Err(e) = T::deserialize(ValueDeserializer::from(one)) {
                            self.push_toml(name, e);
                        }
                    }
                }
                if self.errors.len() == before {
                    self.push_toml(name, first);
                }
                // In file order, as the keys were written.
                if let Some(found) = self.errors.get_mut(before..) {
                    found.sort_by_key(|e| (e.line, e.column));
                }
            }
        }
    }

    fn array<T: DeserializeOwned>(&mut self, name: &str, value: &Spanned<DeValue<'_>>) -> Vec<T> {
        let Some(items) = value.get_ref().as_array() else {
            self.push_span(
                name,
                value.span(),
                format!("expected an array of tables ([[{name}]])"),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let key = format!("{name}[{i}]");
            match T::deserialize(ValueDeserializer::from(item.clone())) {
                Ok(v) => out.push(v),
                Err(e) => self.push_toml(&key, e),
            }
        }
        out
    }

    /// A toml/serde error: its span points at the offending key or value.
    pub(crate) fn push_toml(&mut self, section: &str, e: toml::de::Error) {
        let span = e.span().unwrap_or(0..0);
        let mut key = section.to_string();
        if let Some(found) = self.key_at(span.clone()) {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(&found);
        }
        let message = e.message().trim().replace('\n', " ");
        self.push_span(&key, span, message);
    }

    pub(crate) fn push_span(&mut self, key: &str, span: Range<usize>, message: String) {
        let (line, column) = line_col(self.text, span.start);
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            column,
            key: key.to_string(),
            message,
        });
    }

    /// The key at `span`: the span itself when it covers a bare key, else
    /// the `key =` before a value on the same line.
    fn key_at(&self, span: Range<usize>) -> Option<String> {
        let bare = |s: &str| {
            let s = s.trim();
            (!s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .then(|| s.to_string())
        };
        // A value (`secs = true`): the key before it on its line, even
        // when the value itself looks like a key (true, -1).
        let before = self.text.get(..span.start)?;
        let line = before.rsplit('\n').next()?;
        if let Some((key, rest)) = line.rsplit_once('=') {
            if rest.trim().is_empty() {
                return bare(key);
            }
        }
        self.text.get(span).and_then(bare)
    }
}

pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, column)
}

/// Find the span of a key path such as `["trunks", "0", "inbound_cidrs"]`.
fn locate(doc: &Spanned<DeTable<'_>>, path: &[&str]) -> Range<usize> {
    let mut span = doc.span();
    let mut table: Option<&DeTable<'_>> = Some(doc.get_ref());
    let mut array: Option<&toml::de::DeArray<'_>> = None;
    for seg in path {
        let next = if let Some(t) = table.take() {
            t.iter()
                .find(|(k, _)| k.get_ref().as_ref() == *seg)
                .map(|(k, v)| (k.span(), v))
        } else if let (Some(a), Ok(i)) = (array.take(), seg.parse::<usize>()) {
            a.get(i).map(|v| (v.span(), v))
        } else {
            None
        };
        let Some((key_span, value)) = next else {
            break;
        };
        span = key_span;
        table = value.get_ref().as_table();
        array = value.get_ref().as_array();
    }
    span
}

/// `[registrar]` and `[[users]]`: limits in order, a domain when enabled,
/// every user named once with a password.
fn validate_registrar(config: &Config, err: &mut impl FnMut(&[&str], String)) {
    let r = &config.registrar;
    if r.enabled && r.domain.trim().is_empty() {
        err(
            &["registrar", "domain"],
            "the registrar needs a domain".into(),
        );
    }
    if r.min_expires_secs == 0
        || r.min_expires_secs > r.default_expires_secs
        || r.default_expires_secs > r.max_expires_secs
    {
        err(
            &["registrar", "default_expires_secs"],
            "need 0 < min_expires_secs <= default_expires_secs <= max_expires_secs".into(),
        );
    }
    if r.max_contacts_per_user == 0 {
        err(
            &["registrar", "max_contacts_per_user"],
            "must be at least 1".into(),
        );
    }
    for (j, algorithm) in r.digest_algorithms.iter().enumerate() {
        if crate::sip::auth::Algorithm::parse(algorithm).is_err() {
            err(
                &["registrar", "digest_algorithms", &j.to_string()],
                format!("unknown algorithm {algorithm:?}; expected \"SHA-256\" or \"MD5\""),
            );
        }
    }
    for (j, cidr) in r.cluster_nodes.iter().enumerate() {
        if let Err(e) = crate::net::Cidr::parse(cidr) {
            err(&["registrar", "cluster_nodes", &j.to_string()], e);
        }
    }
    for (i, user) in config.users.iter().enumerate() {
        let idx = i.to_string();
        if !crate::registrar::valid_user_name(&user.name) {
            err(
                &["users", &idx, "name"],
                "letters, digits and - _ . + only (1 to 64)".into(),
            );
        }
        if config.users[..i].iter().any(|u| u.name == user.name) {
            err(
                &["users", &idx, "name"],
                "another user has this name".into(),
            );
        }
        if let Err(e) = user.password() {
            err(&["users", &idx, "password"], e);
        }
    }
}

/// `[[queues]]`: each queue sound and named once; every queue a flow
/// names (`queue` nodes, `transfer` to `queue:<name>`) exists.
fn validate_queues(config: &Config, err: &mut impl FnMut(&[&str], String)) {
    let voice_flow = |name: &str| match config.flow_set.get(name) {
        Some(f) if f.channel == crate::flow::Channel::Voice => Ok(()),
        Some(_) => Err(format!(
            "flow {name:?} is a chat flow; a queue needs a voice flow"
        )),
        None => Err(format!("no flow named {name:?}")),
    };
    for (i, queue) in config.queues.iter().enumerate() {
        let idx = i.to_string();
        for (key, message) in queue.problems(
            &config.media.audio_dir,
            config.registrar.enabled,
            &config.users,
            crate::callback::outbound_trunk(config).is_some(),
            voice_flow,
        ) {
            err(&["queues", &idx, key], message);
        }
        let per_phone = config.callbacks.max_per_phone_per_hour;
        if queue.offer_callback_after_secs.is_some() && queue.callback_attempts > per_phone {
            err(
                &["queues", &idx, "callback_attempts"],
                format!(
                    "more than [callbacks] max_per_phone_per_hour ({per_phone}) allows: the last tries would be refused"
                ),
            );
        }
        if config.queues[..i].iter().any(|q| q.name == queue.name) {
            err(
                &["queues", &idx, "name"],
                "another queue has this name".into(),
            );
        }
    }
    for (name, flow) in &config.flow_set.flows {
        for node in flow.nodes.values() {
            for queue in crate::flow::nodes::queue::queues_named(&node.kind) {
                if !config.queues.iter().any(|q| q.name == queue) {
                    err(
                        &["flows", "dir"],
                        format!(
                            "flow {name:?} node {:?}: no [[queues]] named {queue:?}",
                            node.id
                        ),
                    );
                }
            }
        }
    }
}

fn validate(config: &Config, doc: &Spanned<DeTable<'_>>, sink: &mut Diagnostics<'_>) {
    let mut err = |path: &[&str], message: String| {
        let key = path_to_key(path);
        let span = locate(doc, path);
        sink.push_span(&key, span, message);
    };
    let sip = &config.sip;
    if sip.udp.is_empty() && sip.tcp.is_empty() {
        err(
            &["sip"],
            "at least one of udp or tcp listeners is needed".into(),
        );
    }
    if sip.t1_ms == 0 || sip.t2_ms < sip.t1_ms {
        err(&["sip", "t2_ms"], "need 0 < t1_ms <= t2_ms".into());
    }
    if !(1_500..=1_048_576).contains(&sip.max_message_size) {
        err(
            &["sip", "max_message_size"],
            "must be between 1500 and 1048576 bytes".into(),
        );
    }
    for (key, list) in [
        ("exempt_sources", &sip.exempt_sources),
        ("trusted_proxies", &sip.trusted_proxies),
    ] {
        for (j, cidr) in list.iter().enumerate() {
            if let Err(e) = crate::net::Cidr::parse(cidr) {
                err(&["sip", key, &j.to_string()], e);
            }
        }
    }
    if sip.max_tcp_connections == 0 || sip.max_tcp_connections_per_source == 0 {
        err(
            &["sip", "max_tcp_connections_per_source"],
            "max_tcp_connections and max_tcp_connections_per_source must be at least 1".into(),
        );
    }
    if !(1..=86_400).contains(&sip.min_se_secs) {
        err(&["sip", "min_se_secs"], "must be 1..=86400".into());
    }
    if sip.session_expires_secs != 0
        && !(sip.min_se_secs..=86_400).contains(&sip.session_expires_secs)
    {
        err(
            &["sip", "session_expires_secs"],
            "must be 0 (ask for no timer) or between min_se_secs and 86400".into(),
        );
    }
    if sip.tcp_idle_secs > 86_400 || sip.auth_ban_secs > 86_400 {
        err(
            &["sip", "tcp_idle_secs"],
            "tcp_idle_secs and auth_ban_secs must be at most 86400".into(),
        );
    }
    let http = &config.http;
    for (j, cidr) in http.trusted_proxies.iter().enumerate() {
        if let Err(e) = crate::net::Cidr::parse(cidr) {
            err(&["http", "trusted_proxies", &j.to_string()], e);
        }
    }
    if http.max_connections == 0 || http.max_connections_per_source == 0 {
        err(
            &["http", "max_connections_per_source"],
            "max_connections and max_connections_per_source must be at least 1".into(),
        );
    }
    for (key, v) in [
        ("header_read_timeout_secs", http.header_read_timeout_secs),
        ("body_timeout_secs", http.body_timeout_secs),
    ] {
        if !(1..=3600).contains(&v) {
            err(&["http", key], "must be 1..=3600".into());
        }
    }
    if http.admin_listen.is_some() && http.admin_listen == Some(http.listen) {
        err(&["http", "admin_listen"], "must differ from listen".into());
    }
    let media = &config.media;
    if media.rtp_port_min == 0 || media.rtp_port_min >= media.rtp_port_max {
        err(
            &["media", "rtp_port_min"],
            "need 0 < rtp_port_min < rtp_port_max".into(),
        );
    }
    if !(0..=99).contains(&media.realtime_priority) {
        err(&["media", "realtime_priority"], "must be 0..=99".into());
    }
    if !(0.0..=100.0).contains(&media.overload_threshold_percent) {
        err(
            &["media", "overload_threshold_percent"],
            "must be 0..=100 (0: off)".into(),
        );
    }
    if !(1..=3600).contains(&media.overload_retry_after_secs) {
        err(
            &["media", "overload_retry_after_secs"],
            "must be 1..=3600".into(),
        );
    }
    if !(1..=50).contains(&media.rtp_poll_ticks) {
        err(&["media", "rtp_poll_ticks"], "must be 1..=50".into());
    }
    if media.loop_max_sleep_us != 0 && !(100..=5_000).contains(&media.loop_max_sleep_us) {
        err(
            &["media", "loop_max_sleep_us"],
            "must be 0 (off) or 100..=5000".into(),
        );
    }
    if !(1..=86_400).contains(&media.hold_repeat_secs) {
        err(&["media", "hold_repeat_secs"], "must be 1..=86400".into());
    }
    if !(-60.0..=0.0).contains(&media.hold_duck_db) {
        err(
            &["media", "hold_duck_db"],
            "must be between -60 and 0 dB".into(),
        );
    }
    if media.rtp_timeout_secs > 86_400 {
        err(
            &["media", "rtp_timeout_secs"],
            "must be at most 86400".into(),
        );
    }
    // Bounded so timer arithmetic can never overflow.
    if sip.t1_ms > 60_000 || sip.t2_ms > 600_000 || sip.t4_ms > 600_000 {
        err(
            &["sip", "t1_ms"],
            "timers: t1_ms <= 60000, t2_ms and t4_ms <= 600000".into(),
        );
    }
    for (i, server) in sip.dns_servers.iter().enumerate() {
        if crate::config::model::parse_dns_server(server).is_none() {
            let i = i.to_string();
            err(
                &["sip", "dns_servers", &i],
                format!("not an IP address or IP:port: {server:?}"),
            );
        }
    }
    if !(50..=30_000).contains(&sip.dns_timeout_ms) {
        err(
            &["sip", "dns_timeout_ms"],
            "must be between 50 and 30000".into(),
        );
    }
    if !(1..=1_000_000).contains(&sip.dns_cache_size) {
        err(
            &["sip", "dns_cache_size"],
            "must be between 1 and 1000000".into(),
        );
    }
    if sip.dns_cache_min_ttl_secs > sip.dns_cache_max_ttl_secs {
        err(
            &["sip", "dns_cache_min_ttl_secs"],
            "must not be more than dns_cache_max_ttl_secs".into(),
        );
    }
    if sip.failover_timeout_ms > 600_000 {
        err(
            &["sip", "failover_timeout_ms"],
            "must be at most 600000".into(),
        );
    }
    if sip.max_redirects > 20 {
        err(&["sip", "max_redirects"], "must be at most 20".into());
    }
    for (key, v) in [
        ("shutdown_grace_secs", sip.shutdown_grace_secs),
        ("nonce_ttl_secs", sip.nonce_ttl_secs),
        ("dns_cache_max_ttl_secs", sip.dns_cache_max_ttl_secs),
        ("dns_negative_ttl_secs", sip.dns_negative_ttl_secs),
        ("failover_backoff_secs", sip.failover_backoff_secs),
    ] {
        if v > 86_400 {
            err(&["sip", key], "must be at most 86400".into());
        }
    }
    if crate::media::tones::Ringback::from_name(&media.ringback_tone).is_none() {
        err(
            &["media", "ringback_tone"],
            format!(
                "unknown ringback {:?}: use \"us\", \"eu\" or \"uk\"",
                media.ringback_tone
            ),
        );
    }
    if media.codecs.is_empty() {
        err(&["media", "codecs"], "list at least one codec".into());
    }
    if !(96..=127).contains(&media.telephone_event_payload_type) {
        err(
            &["media", "telephone_event_payload_type"],
            "must be a dynamic payload type, 96..=127".into(),
        );
    }
    if config
        .logging
        .level
        .parse::<tracing_subscriber::EnvFilter>()
        .is_err()
    {
        err(
            &["logging", "level"],
            format!("not a valid log filter: {:?}", config.logging.level),
        );
    }
    if let Some(url) = config.telemetry.otlp_traces_url() {
        let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
        if !scheme_ok || reqwest::Url::parse(&url).is_err() {
            err(
                &["telemetry", "otlp_endpoint"],
                "must be an http:// or https:// URL, e.g. \"http://otel-collector:4318\"".into(),
            );
        }
    }

    // TTS, prompts and messaging report dotted keys like "prompts[2].name".
    for (key, message) in crate::tts::validate(&config.tts)
        .into_iter()
        .chain(crate::tts::validate_prompts(&config.prompts))
        .chain(crate::messaging::validate(&config.messaging))
    {
        let segments: Vec<String> = key
            .split(['.', '[', ']'])
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let path: Vec<&str> = segments.iter().map(String::as_str).collect();
        err(&path, message);
    }
    let hold = media.hold_message.trim();
    if !hold.is_empty()
        && !hold.to_ascii_lowercase().ends_with(".wav")
        && !config.prompts.iter().any(|p| p.name == hold)
    {
        err(
            &["media", "hold_message"],
            format!("{hold:?} is neither a .wav file nor the name of a [[prompts]] entry"),
        );
    }

    validate_trunk_groups(config, &mut err);
    let mut names = std::collections::HashSet::new();
    for (i, trunk) in config.trunks.iter().enumerate() {
        let idx = i.to_string();
        if trunk.name.is_empty() || !names.insert(trunk.name.as_str()) {
            err(
                &["trunks", &idx, "name"],
                "names must be unique and non-empty".into(),
            );
        }
        for (j, algorithm) in trunk.inbound_digest_algorithms.iter().enumerate() {
            if crate::sip::auth::Algorithm::parse(algorithm).is_err() {
                let j = j.to_string();
                err(
                    &["trunks", &idx, "inbound_digest_algorithms", &j],
                    format!("{algorithm:?}: use \"SHA-256\" or \"MD5\""),
                );
            }
        }
        if let Some(country) = &trunk.default_country {
            if country.parse::<crate::chat::input::Region>().is_err() {
                err(
                    &["trunks", &idx, "default_country"],
                    format!("{country:?} is not an ISO 3166 country code (e.g. \"ES\", \"US\")"),
                );
            }
        }
        if trunk.options_interval_secs > 0 {
            if trunk.outbound_proxy.is_none() {
                err(
                    &["trunks", &idx, "options_interval_secs"],
                    "only a trunk with an outbound_proxy is probed with OPTIONS".into(),
                );
            } else if trunk.options_interval_secs > 3_600 {
                err(
                    &["trunks", &idx, "options_interval_secs"],
                    "must be 0 (off) or 1..=3600".into(),
                );
            }
        }
        for (key, n) in [
            ("options_failures_down", trunk.options_failures_down),
            ("options_successes_up", trunk.options_successes_up),
        ] {
            if !(1..=100).contains(&n) {
                err(&["trunks", &idx, key], "must be 1..=100".into());
            }
        }
        if trunk.trust_identity
            && trunk.inbound_cidrs.is_empty()
            && trunk.inbound_username.is_none()
        {
            err(
                &["trunks", &idx, "trust_identity"],
                "only a trunk whose calls are told apart (inbound_cidrs or inbound_username) can be trusted about identity".into(),
            );
        }
        for (j, cidr) in trunk.inbound_cidrs.iter().enumerate() {
            if let Err(e) = crate::net::Cidr::parse(cidr) {
                let j = j.to_string();
                err(&["trunks", &idx, "inbound_cidrs", &j], e);
            }
        }
        match trunk.inbound_password() {
            Ok(password) if trunk.inbound_username.is_some() != password.is_some() => err(
                &["trunks", &idx, "inbound_username"],
                "inbound_username and inbound_password go together".into(),
            ),
            Ok(_) => {}
            Err(e) => err(&["trunks", &idx, "inbound_password"], e),
        }
        if let Err(e) = trunk.password() {
            err(&["trunks", &idx, "password"], e);
        }
        if let Some(uri) = &trunk.outbound_proxy {
            if let Err(e) = crate::dns::check_destination(uri) {
                err(
                    &["trunks", &idx, "outbound_proxy"],
                    format!("{e}: {:?}", crate::mask::uri_secret(uri)),
                );
            }
        }
    }
    validate_registrar(config, &mut err);
    validate_queues(config, &mut err);
    for (i, reg) in config.registrations.iter().enumerate() {
        let idx = i.to_string();
        if let Err(e) = crate::dns::check_destination(&reg.registrar) {
            err(
                &["registrations", &idx, "registrar"],
                format!("{e}: {:?}", crate::mask::uri_secret(&reg.registrar)),
            );
        }
        if crate::sip::message::Uri::parse(&reg.aor).is_err() {
            err(
                &["registrations", &idx, "aor"],
                format!("not a SIP URI: {:?}", crate::mask::uri_secret(&reg.aor)),
            );
        }
        if let Err(e) = reg.password() {
            err(&["registrations", &idx, "password"], e);
        }
        if reg.expires < 60 {
            err(
                &["registrations", &idx, "expires"],
                "must be at least 60 seconds".into(),
            );
        }
    }
    // TLS material is read now, so `crossline check` finds a bad file.
    match (&config.sip.tls_cert, &config.sip.tls_key) {
        (Some(cert), Some(key)) => {
            if let Err(e) = crate::tls::server_config(cert, key) {
                err(&["sip", "tls_cert"], e);
            }
        }
        (None, None) if config.sip.tls.is_empty() => {}
        _ => err(
            &["sip", "tls"],
            "TLS listeners need both tls_cert and tls_key".into(),
        ),
    }
    if let Some(ca) = &config.sip.tls_ca {
        if let Err(e) = crate::tls::client_config(Some(ca)) {
            err(&["sip", "tls_ca"], e);
        }
    }
    match (&config.http.tls_cert, &config.http.tls_key) {
        (Some(cert), Some(key)) => {
            if let Err(e) = crate::tls::server_config(cert, key) {
                err(&["http", "tls_cert"], e);
            }
        }
        (None, None) => {}
        _ => err(
            &["http", "tls_cert"],
            "set both tls_cert and tls_key, or neither".into(),
        ),
    }
    // What we post is signed; unsigned would let anyone forge it.
    if config.callbacks.webhook_url.is_some()
        && matches!(config.callbacks.webhook_secret(), Ok(None))
    {
        err(
            &["callbacks", "webhook_url"],
            "a webhook needs webhook_secret or webhook_secret_env (its requests are signed)".into(),
        );
    }
    if !(2..=600).contains(&config.store.lease_secs) {
        err(&["store", "lease_secs"], "must be 2..=600 seconds".into());
    }
    match (config.store.backend, config.store.postgres_url()) {
        (_, Err(e)) => err(&["store", "postgres_url"], e),
        (StoreBackend::Postgres, Ok(None)) => err(
            &["store", "backend"],
            "backend = \"postgres\" needs postgres_url or postgres_url_env".into(),
        ),
        _ => {}
    }
    for (key, r) in [
        ("admin_token", config.http.admin_token()),
        ("operator_token", config.http.operator_token()),
        ("viewer_token", config.http.viewer_token()),
    ] {
        if let Err(e) = r {
            err(&["http", key], e);
        }
    }
    if let Some(u) = &config.http.public_base_url {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            err(
                &["http", "public_base_url"],
                "must start with http:// or https://".into(),
            );
        }
    }
    for origin in &config.http.cors_origins {
        if axum::http::HeaderValue::from_str(origin).is_err()
            || !(origin.starts_with("http://") || origin.starts_with("https://"))
        {
            err(
                &["http", "cors_origins"],
                format!("not an origin: {origin:?}"),
            );
        }
    }
    for (key, flow) in [
        ("web_flow", &config.chat.web_flow),
        ("sms_flow", &config.chat.sms_flow),
        ("whatsapp_flow", &config.chat.whatsapp_flow),
    ] {
        let Some(name) = flow else { continue };
        match config.flow_set.get(name) {
            None => err(&["chat", key], format!("no flow named {name:?}")),
            Some(f) if f.channel != crate::flow::Channel::Chat => err(
                &["chat", key],
                format!("flow {name:?} is a voice flow; chats need channel = \"chat\""),
            ),
            Some(_) => {}
        }
    }
    let w = &config.webrtc;
    if w.opus_complexity > 10 {
        err(
            &["webrtc", "opus_complexity"],
            "must be between 0 and 10".into(),
        );
    }
    if w.transcode_threads > 64 {
        err(
            &["webrtc", "transcode_threads"],
            "must be between 0 (automatic) and 64".into(),
        );
    }
    if w.did.is_empty()
        || !w
            .did
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-_.".contains(c))
    {
        err(
            &["webrtc", "did"],
            "must be a non-empty SIP user part (letters, digits, + - _ .)".into(),
        );
    }
    if w.enabled && config.sip.udp.is_empty() {
        err(
            &["webrtc", "enabled"],
            "web calls reach the gateway over SIP/UDP: add a [sip] udp listener".into(),
        );
    }
    for (key, problem) in config.media_streams.problems(&config.twiml) {
        err(&["media_streams", key], problem);
    }
    match config.asr.provider() {
        Err(e) => err(&["asr", "provider"], e),
        Ok(Some(crate::speech::provider::Provider::PocketSphinx(_))) => {
            // A grammar decoder with nothing to listen for hears nothing.
            for (name, flow) in &config.flow_set.flows {
                for node in flow.nodes.values() {
                    if let crate::flow::model::NodeKind::Gather(g) = &node.kind {
                        if g.wants_speech() && g.grammar.is_empty() && g.hints.is_empty() {
                            err(
                                &["asr", "provider"],
                                format!(
                                    "flow {name:?} node {:?} gathers speech with pocketsphinx, which needs a grammar or hints",
                                    g.id
                                ),
                            );
                        }
                    }
                }
            }
        }
        Ok(Some(_)) => {}
        Ok(None) => {
            // Speech asked for with nowhere to send it would fail silently.
            for (name, flow) in &config.flow_set.flows {
                for node in flow.nodes.values() {
                    if let crate::flow::model::NodeKind::Gather(g) = &node.kind {
                        if g.wants_speech() {
                            err(
                                &["asr", "provider"],
                                format!(
                                    "flow {name:?} node {:?} gathers speech: set [asr] provider",
                                    g.id
                                ),
                            );
                        }
                    }
                }
            }
        }
    }
    let cb = &config.callbacks;
    if let Some(name) = &cb.trunk {
        let is_group = config.trunk_groups.iter().any(|g| &g.name == name);
        match config.trunks.iter().find(|t| &t.name == name) {
            None if is_group => {}
            None => err(
                &["callbacks", "trunk"],
                format!("no trunk or trunk group named {name:?}"),
            ),
            Some(t) if t.outbound_proxy.is_none() => err(
                &["callbacks", "trunk"],
                format!("trunk {name:?} has no outbound_proxy to send calls to"),
            ),
            Some(_) => {}
        }
    }
    if !(5..=300).contains(&cb.ring_timeout_secs) {
        err(
            &["callbacks", "ring_timeout_secs"],
            "must be between 5 and 300".into(),
        );
    }
    if cb.max_per_phone_per_hour == 0 {
        err(
            &["callbacks", "max_per_phone_per_hour"],
            "must be at least 1".into(),
        );
    }
    if cb.max_per_key_per_minute == 0 {
        err(
            &["callbacks", "max_per_key_per_minute"],
            "must be at least 1".into(),
        );
    }
    if let Some(u) = &cb.webhook_url {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            err(
                &["callbacks", "webhook_url"],
                "must start with http:// or https://".into(),
            );
        }
    }
    if let Err(e) = cb.webhook_secret() {
        err(&["callbacks", "webhook_secret"], e);
    }
    let rec = &config.recording;
    if rec.recordings_dir.as_os_str().is_empty() {
        err(&["recording", "recordings_dir"], "must not be empty".into());
    }
    if !(1..=86_400).contains(&rec.sweep_interval_secs) {
        err(
            &["recording", "sweep_interval_secs"],
            "must be between 1 and 86400".into(),
        );
    }
    if !(100..=60_000).contains(&rec.buffer_ms) {
        err(
            &["recording", "buffer_ms"],
            "must be between 100 and 60000".into(),
        );
    }
    if let Some(u) = &rec.webhook_url {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            err(
                &["recording", "webhook_url"],
                "must start with http:// or https://".into(),
            );
        }
        if matches!(rec.webhook_secret(), Ok(None)) {
            err(
                &["recording", "webhook_url"],
                "a webhook needs webhook_secret or webhook_secret_env (its requests are signed)"
                    .into(),
            );
        }
    }
    if let Err(e) = rec.webhook_secret() {
        err(&["recording", "webhook_secret"], e);
    }
    if rec.storage == crate::config::RecordStorage::S3
        && rec.s3_bucket.as_deref().is_none_or(str::is_empty)
    {
        err(
            &["recording", "s3_bucket"],
            "storage = \"s3\" needs a bucket".into(),
        );
    }
    if let Some(u) = &rec.s3_endpoint {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            err(
                &["recording", "s3_endpoint"],
                "must start with http:// or https://".into(),
            );
        }
    }
    if let Some(name) = rec.announcement.as_deref() {
        let is_prompt = config.prompts.iter().any(|p| p.name == name);
        if !is_prompt && !name.to_ascii_lowercase().ends_with(".wav") {
            err(
                &["recording", "announcement"],
                format!("{name:?} is neither a [[prompts]] name nor a .wav file"),
            );
        }
    }
    if let Some(country) = &config.chat.default_country {
        if country.parse::<crate::chat::input::Region>().is_err() {
            err(
                &["chat", "default_country"],
                format!("{country:?} is not an ISO 3166 country code like \"ES\" or \"GB\""),
            );
        }
    }
    if !(1..=600).contains(&config.chat.switch_revert_secs) {
        err(
            &["chat", "switch_revert_secs"],
            "must be between 1 and 600".into(),
        );
    }
    if !(60..=86_400).contains(&config.chat.web_link_ttl_secs) {
        err(
            &["chat", "web_link_ttl_secs"],
            "must be between 60 and 86400".into(),
        );
    }
    let mut keywords_seen = std::collections::HashSet::new();
    for (word, channel) in &config.chat.switch_keywords {
        let key = ["chat", "switch_keywords", word.as_str()];
        let trimmed = word.trim();
        if trimmed.is_empty() || trimmed.len() > crate::chat::MAX_KEYWORD_LEN {
            err(
                &key,
                format!("a keyword is 1 to {} bytes", crate::chat::MAX_KEYWORD_LEN),
            );
        } else if crate::messaging::inbound::opt_keyword(trimmed).is_some() {
            err(
                &key,
                format!("{trimmed:?} is an opt-out/opt-in keyword (STOP, START...)"),
            );
        } else if !keywords_seen.insert(trimmed.to_lowercase()) {
            err(
                &key,
                format!("{trimmed:?} is listed twice (keywords ignore case)"),
            );
        }
        if crate::chat::ChannelKind::parse(channel).is_none() {
            err(
                &key,
                format!("{channel:?} is not a channel: use \"web\", \"sms\" or \"whatsapp\""),
            );
        }
    }
    if config.chat.breakout_left_secs > 3600 {
        err(
            &["chat", "breakout_left_secs"],
            "must be between 0 (never) and 3600".into(),
        );
    }
    if !(60..=604_800).contains(&config.chat.idle_timeout_secs) {
        err(
            &["chat", "idle_timeout_secs"],
            "must be between 60 and 604800".into(),
        );
    }
    let flows_use_apps = config.flow_set.names().iter().any(|name| {
        config.flow_set.get(name).is_some_and(|f| {
            f.nodes
                .values()
                .any(|n| matches!(n.kind, crate::flow::NodeKind::WebhookApp(_)))
        })
    });
    if flows_use_apps || config.routes.iter().any(|r| r.app.is_some()) {
        for (key, message) in config.twiml.problems() {
            err(&["twiml", key], message);
        }
    }
    for (key, message) in config.twiml.api_problems() {
        err(&["twiml", key], message);
    }
    for (i, route) in config.routes.iter().enumerate() {
        let idx = i.to_string();
        if let Some(app) = &route.app {
            if !route.flow.is_empty() {
                err(&["routes", &idx, "app"], "set flow or app, not both".into());
            }
            for (key, message) in app.problems() {
                err(&["routes", &idx, "app", key], message);
            }
            for (key, set) in [
                ("ring_ms", route.ring_ms > 0),
                ("early_media", route.early_media.is_some()),
                ("hold_music", route.has_own_hold()),
            ] {
                if set {
                    err(
                        &["routes", &idx, key],
                        "an app route rings until its TwiML answers; this key is for flows".into(),
                    );
                }
            }
            continue;
        }
        if route.flow.is_empty() {
            err(
                &["routes", &idx, "flow"],
                "set flow (a flow's name) or app (a webhook app)".into(),
            );
            continue;
        }
        if config
            .flow_set
            .get(&route.flow)
            .is_some_and(|f| f.channel != crate::flow::Channel::Voice)
        {
            err(
                &["routes", &idx, "flow"],
                format!(
                    "flow {:?} is a chat flow; calls need a voice flow",
                    route.flow
                ),
            );
        }
        if !BUILTIN_FLOWS.contains(&route.flow.as_str())
            && config.flow_set.get(&route.flow).is_none()
        {
            let mut known: Vec<&str> = BUILTIN_FLOWS.to_vec();
            known.extend(config.flow_set.names());
            err(
                &["routes", &idx, "flow"],
                format!(
                    "unknown flow {:?}; known flows: {}",
                    route.flow,
                    known.join(", ")
                ),
            );
        }
        if route.has_own_hold() && !["hold", "demo"].contains(&route.flow.as_str()) {
            let key = if route.hold_music.is_empty() {
                if route.hold_message.is_some() {
                    "hold_message"
                } else {
                    "hold_repeat_secs"
                }
            } else {
                "hold_music"
            };
            err(
                &["routes", &idx, key],
                format!(
                    "only the built-in \"hold\" and \"demo\" flows play a route's hold program; \
                     flow {:?} sets hold_music/hold_message on its transfer and breakout nodes",
                    route.flow
                ),
            );
        }
        if route
            .hold_repeat_secs
            .is_some_and(|s| !(1..=86_400).contains(&s))
        {
            err(
                &["routes", &idx, "hold_repeat_secs"],
                "must be 1..=86400".into(),
            );
        }
        if let Some(early) = &route.early_media {
            if route.ring_ms == 0 {
                err(
                    &["routes", &idx, "early_media"],
                    "plays while the call rings: set ring_ms too".into(),
                );
            } else if early != "ringback" && !config.prompts.iter().any(|p| &p.name == early) {
                err(
                    &["routes", &idx, "early_media"],
                    format!("{early:?} is neither \"ringback\" nor a [[prompts]] name"),
                );
            }
        }
        if let Some(trunk) = &route.trunk {
            if !config.trunks.iter().any(|t| &t.name == trunk) {
                err(
                    &["routes", &idx, "trunk"],
                    format!("no trunk named {trunk:?}"),
                );
            }
        }
    }
}

/// Each group names trunks that exist and can take calls, at least one,
/// and a name no trunk or other group has.
fn validate_trunk_groups(config: &Config, err: &mut impl FnMut(&[&str], String)) {
    let mut names = std::collections::HashSet::new();
    for (i, group) in config.trunk_groups.iter().enumerate() {
        let idx = i.to_string();
        if group.name.is_empty() || !names.insert(group.name.as_str()) {
            err(
                &["trunk_groups", &idx, "name"],
                "names must be unique and non-empty".into(),
            );
        } else if config.trunks.iter().any(|t| t.name == group.name) {
            err(
                &["trunk_groups", &idx, "name"],
                format!("{:?} is already a trunk's name", group.name),
            );
        }
        if group.trunks.is_empty() {
            err(
                &["trunk_groups", &idx, "trunks"],
                "list at least one [[trunks]] name".into(),
            );
        }
        for (j, name) in group.trunks.iter().enumerate() {
            let listed_before = group.trunks.iter().take(j).any(|n| n == name);
            let j = j.to_string();
            let key = ["trunk_groups", &idx, "trunks", &j];
            match config.trunks.iter().find(|t| &t.name == name) {
                None => err(&key, format!("no trunk named {name:?}")),
                Some(t) if t.outbound_proxy.is_none() => err(
                    &key,
                    format!("trunk {name:?} has no outbound_proxy to send calls to"),
                ),
                Some(_) if listed_before => err(&key, format!("{name:?} is listed twice")),
                Some(_) => {}
            }
        }
    }
}

fn path_to_key(path: &[&str]) -> String {
    let mut key = String::new();
    for seg in path {
        if seg.parse::<usize>().is_ok() {
            key.push_str(&format!("[{seg}]"));
        } else {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(seg);
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match Config::parse(text, Path::new("t.toml")) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn app_routes_need_an_account_and_a_valid_app() {
        let errs = errors(
            "[[routes]]\ndid = \"1\"\napp = { url = \"ftp://x/y\", method = \"PUT\" }\n\n\
             [[routes]]\ndid = \"2\"\nflow = \"demo\"\napp = { url = \"http://x/y\" }\nring_ms = 100\n\n\
             [[routes]]\ndid = \"3\"\n",
        );
        let keys: Vec<&str> = errs
            .iter()
            .map(|e| e.split(": ").nth(1).unwrap_or_default())
            .collect();
        assert_eq!(
            keys,
            [
                "twiml.account_sid",
                "twiml.auth_token",
                "routes[0].app.url",
                "routes[0].app.method",
                "routes[1].app",
                "routes[1].ring_ms",
                "routes[2].flow",
            ],
            "{errs:#?}"
        );
        let ok = "[twiml]\naccount_sid = \"AC0123456789abcdef0123456789abcdef\"\nauth_token = \"0123456789abcdef\"\n\n\
                  [[routes]]\napp = { url = \"https://app.example.com/voice\", fallback_url = \"https://backup.example.com/voice\", method = \"GET\" }\n";
        assert_eq!(errors(ok), Vec::<String>::new());
    }

    #[test]
    fn queues_are_checked_with_their_file_line_and_key() {
        let errs = errors(
            "[[queues]]\nname = \"support\"\nagents = [{ target = \"user:alice\" }]\nfallback_flow = \"nope\"\n\n\
             [[queues]]\nname = \"support\"\nagents = [{ target = \"sip:a@127.0.0.1\" }]\nlanguage = \"fr\"\n",
        );
        assert_eq!(
            errs,
            [
                "t.toml:3:1: queues[0].agents: \"user:alice\" is a registered user: enable [registrar]",
                "t.toml:4:1: queues[0].fallback_flow: no flow named \"nope\"",
                "t.toml:9:1: queues[1].language: \"fr\": \"en\" or \"es\"",
                "t.toml:7:1: queues[1].name: another queue has this name",
            ],
            "{errs:#?}"
        );
    }

    #[test]
    fn virtual_hold_needs_a_callback_trunk_and_the_budget_for_its_tries() {
        let queue = "[[queues]]\nname = \"support\"\nagents = [{ target = \"sip:a@127.0.0.1\" }]\noffer_callback_after_secs = 60\n";
        let trunk = "[[trunks]]\nname = \"carrier\"\noutbound_proxy = \"sip:192.0.2.1\"\n";
        let errs = errors(queue);
        assert!(
            errs.iter()
                .any(|e| e.contains("queues[0].offer_callback_after_secs: callbacks need a trunk")),
            "{errs:?}"
        );
        assert!(Config::parse(&format!("{queue}\n{trunk}"), Path::new("t.toml")).is_ok());
        let errs = errors(&format!("{queue}callback_attempts = 4\n\n{trunk}"));
        assert!(
            errs.iter().any(|e| e.contains(
                "queues[0].callback_attempts: more than [callbacks] max_per_phone_per_hour (3)"
            )),
            "{errs:?}"
        );
    }

    #[test]
    fn secrets_never_show_in_debug_output_or_errors() {
        let text = "[http]\nadmin_token = \"admin-secret-0123456789\"\noperator_token = \"operator-secret-0123456\"\n\n            [callbacks]\nwebhook_secret = \"hook-secret-0123456789\"\n\n            [[trunks]]\nname = \"carrier\"\ninbound_username = \"pbx\"\ninbound_password = \"inbound-secret-x\"\n            outbound_proxy = \"sip:127.0.0.1:5080\"\nusername = \"me\"\npassword = \"outbound-secret-y\"\n\n            [[registrations]]\nregistrar = \"sip:127.0.0.1:5090\"\naor = \"sip:me@127.0.0.1\"\nusername = \"me\"\npassword = \"register-secret-z\"\n";
        let config = Config::parse(text, Path::new("t.toml")).unwrap();
        let shown = format!("{config:?}");
        for secret in [
            "admin-secret",
            "operator-secret",
            "hook-secret",
            "inbound-secret",
            "outbound-secret",
            "register-secret",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert_eq!(
            config.trunks[0].password().unwrap().unwrap().expose(),
            "outbound-secret-y"
        );
        // A password in a URI the check refuses is starred in the error.
        let errs = errors("[[trunks]]\nname = \"t\"\noutbound_proxy = \"sip:u:leaked-pw@[bad\"\n");
        assert!(errs.iter().any(|e| e.contains("not a SIP URI")), "{errs:?}");
        assert!(errs.iter().all(|e| !e.contains("leaked-pw")), "{errs:?}");
    }

    #[test]
    fn trunk_groups_name_outbound_trunks_and_clash_with_nothing() {
        let trunks = "[[trunks]]\nname = \"a\"\noutbound_proxy = \"sip:192.0.2.1\"\noptions_interval_secs = 5\n\n\
            [[trunks]]\nname = \"b\"\noutbound_proxy = \"sip:pstn.example.com\"\n\n\
            [[trunks]]\nname = \"in\"\ninbound_cidrs = [\"192.0.2.0/24\"]\n";
        let ok = format!(
            "{trunks}\n[callbacks]\ntrunk = \"pstn\"\n\n\
             [[trunk_groups]]\nname = \"pstn\"\ntrunks = [\"b\", \"a\"]\nstrategy = \"round_robin\"\n"
        );
        let config = Config::parse(&ok, Path::new("t.toml")).unwrap();
        let (group, strategy) = config.outbound_trunks("pstn").unwrap();
        let names: Vec<&str> = group.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["b", "a"]);
        assert_eq!(strategy, GroupStrategy::RoundRobin);
        assert_eq!(config.outbound_trunks("a").unwrap().0[0].name, "a");
        assert!(config.outbound_trunks("in").is_none(), "no outbound proxy");
        assert_eq!(config.trunks[0].options_failures_down, 3);
        assert_eq!(config.trunks[0].options_successes_up, 2);
        assert_eq!(config.trunks[1].options_interval_secs, 0, "off unless set");

        let errs = errors(&format!(
            "{trunks}\n[callbacks]\ntrunk = \"nowhere\"\n\n\
             [[trunk_groups]]\nname = \"a\"\ntrunks = [\"b\"]\n\n\
             [[trunk_groups]]\nname = \"empty\"\ntrunks = []\n\n\
             [[trunk_groups]]\nname = \"bad\"\ntrunks = [\"zzz\", \"in\", \"b\", \"b\"]\n\n\
             [[trunk_groups]]\nname = \"odd\"\ntrunks = [\"b\"]\nstrategy = \"random\"\n"
        ));
        let expect = [
            "trunk_groups[0].name",
            "already a trunk's name",
            "trunk_groups[1].trunks",
            "at least one",
            "trunk_groups[2].trunks[0]",
            "no trunk named \"zzz\"",
            "trunk_groups[2].trunks[1]",
            "no outbound_proxy",
            "trunk_groups[2].trunks[3]",
            "listed twice",
            "trunk_groups[3].strategy",
            "unknown variant `random`",
            "callbacks.trunk",
            "no trunk or trunk group named \"nowhere\"",
        ];
        for e in expect {
            assert!(errs.iter().any(|x| x.contains(e)), "{e}: {errs:?}");
        }
        assert!(errs.iter().all(|e| e.starts_with("t.toml:")), "{errs:?}");

        let errs = errors(
            "[[trunks]]\nname = \"in\"\ninbound_cidrs = [\"192.0.2.0/24\"]\noptions_interval_secs = 5\n\n\
             [[trunks]]\nname = \"out\"\noutbound_proxy = \"sip:192.0.2.1\"\noptions_failures_down = 0\n",
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("trunks[0].options_interval_secs")
                    && e.contains("outbound_proxy")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("trunks[1].options_failures_down")),
            "{errs:?}"
        );
    }

    #[test]
    fn passwords_come_from_the_environment_when_named() {
        std::env::set_var("CROSSLINE_TEST_TRUNK_PW", "from-the-env");
        let text = "[[trunks]]\nname = \"t\"\nusername = \"me\"\npassword_env = \"CROSSLINE_TEST_TRUNK_PW\"\n\n            [[registrations]]\nregistrar = \"sip:127.0.0.1:5090\"\naor = \"sip:me@127.0.0.1\"\npassword_env = \"CROSSLINE_TEST_UNSET_PW\"\n";
        let errs = errors(text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains("registrations[0].password"), "{errs:?}");
        assert!(errs[0].contains("CROSSLINE_TEST_UNSET_PW"), "{errs:?}");
        let ok = text.replace("CROSSLINE_TEST_UNSET_PW", "CROSSLINE_TEST_TRUNK_PW");
        let config = Config::parse(&ok, Path::new("t.toml")).unwrap();
        assert_eq!(
            config.trunks[0].password().unwrap().unwrap().expose(),
            "from-the-env"
        );
    }

    #[test]
    fn every_bad_key_of_a_section_is_reported() {
        let errs = errors("[sip]\nt1_ms = \"fast\"\nbogus = 1\nt2_ms = -5\nuser_agent = \"ok\"\n");
        assert_eq!(errs.len(), 3, "{errs:#?}");
        assert!(errs[0].starts_with("t.toml:2:9: sip.t1_ms:"), "{}", errs[0]);
        assert!(
            errs[1].starts_with("t.toml:3:1: sip.bogus: unknown field"),
            "{}",
            errs[1]
        );
        assert!(errs[2].starts_with("t.toml:4:9: sip.t2_ms:"), "{}", errs[2]);
    }

    #[test]
    fn session_timers_ringback_and_early_media_are_checked() {
        let c = Config::parse("", Path::new("t.toml")).unwrap();
        assert_eq!((c.sip.session_expires_secs, c.sip.min_se_secs), (1800, 90));
        assert_eq!(c.media.ringback_tone, "us");
        // The test override: a short Min-SE is allowed (with a warning at start).
        assert!(errors("[sip]\nmin_se_secs = 10\nsession_expires_secs = 10\n").is_empty());
        assert!(errors("[sip]\nsession_expires_secs = 0\n").is_empty());
        let errs = errors(
            "[sip]\nmin_se_secs = 100000\nsession_expires_secs = 30\n\n[media]\nringback_tone = \"mars\"\n",
        );
        assert_eq!(errs.len(), 3, "{errs:#?}");
        assert!(
            errs[0].contains("sip.min_se_secs: must be 1..=86400"),
            "{}",
            errs[0]
        );
        assert!(errs[1].contains("sip.session_expires_secs"), "{}", errs[1]);
        assert!(
            errs[2].contains("media.ringback_tone: unknown ringback \"mars\""),
            "{}",
            errs[2]
        );
        let route = |ring_ms: u64, early: &str| {
            format!(
                "[[routes]]\nflow = \"hold\"\nring_ms = {ring_ms}\nearly_media = \"{early}\"\n\n"
            )
        };
        let text = format!(
            "[[prompts]]\nname = \"welcome\"\ntext = \"Hello\"\n\n{}{}{}{}",
            route(2000, "ringback"),
            route(2000, "welcome"),
            route(2000, "goodbye"),
            route(0, "ringback")
        );
        let errs = errors(&text);
        assert_eq!(errs.len(), 2, "{errs:#?}");
        assert!(
            errs[0].contains(
                "routes[2].early_media: \"goodbye\" is neither \"ringback\" nor a [[prompts]] name"
            ),
            "{}",
            errs[0]
        );
        assert!(
            errs[1].contains("routes[3].early_media: plays while the call rings: set ring_ms too"),
            "{}",
            errs[1]
        );
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::parse("", Path::new("t.toml")).unwrap();
        assert_eq!(c.sip.udp[0].port(), 5060);
        assert_eq!(c.media.codecs, vec![CodecName::Pcmu, CodecName::Pcma]);
    }

    #[test]
    fn every_error_is_reported_with_line_and_key() {
        let text = "[sip]\nudpp = []\n\n[media]\nrtp_port_min = 5000\nrtp_port_max = 4000\n\n[[trunks]]\nname = \"a\"\ninbound_cidrs = [\"10.0.0.0/33\"]\n\n[[routes]]\nflow = \"nope\"\n";
        let errs = errors(text);
        assert_eq!(errs.len(), 4, "{errs:#?}");
        assert!(
            errs[0].starts_with("t.toml:2:1: sip.udpp: unknown field `udpp`"),
            "{}",
            errs[0]
        );
        assert!(
            errs[1].starts_with("t.toml:5:1: media.rtp_port_min:"),
            "{}",
            errs[1]
        );
        assert!(errs[2].starts_with("t.toml:10:"), "{}", errs[2]);
        assert!(
            errs[2].contains("trunks[0].inbound_cidrs[0]"),
            "{}",
            errs[2]
        );
        assert!(
            errs[3].starts_with("t.toml:13:1: routes[0].flow: unknown flow \"nope\""),
            "{}",
            errs[3]
        );
    }

    #[test]
    fn wrong_type_names_the_key() {
        let errs = errors("[sip]\nt1_ms = \"fast\"\n");
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("t.toml:2:"), "{}", errs[0]);
        assert!(
            errs[0].contains("t1_ms") || errs[0].contains("sip"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn syntax_error_has_a_line() {
        let errs = errors("[sip]\nudp = [\n");
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("t.toml:"), "{}", errs[0]);
    }

    #[test]
    fn unknown_section_is_an_error() {
        let errs = errors("[sipp]\nx = 1\n");
        assert_eq!(
            errors("[media]\nrtp_poll_ticks = 0\nhold_duck_db = 3.0\nrealtime_priority = 100\n")
                .len(),
            3
        );
        assert_eq!(errors("[media]\nhold_message = \"nope\"\n").len(), 1);
        let naps = errors("[media]\nloop_max_sleep_us = 50\n");
        assert!(
            naps.len() == 1 && naps[0].contains("media.loop_max_sleep_us"),
            "{naps:?}"
        );
        assert!(errors("[media]\nloop_max_sleep_us = 500\n").is_empty());
        assert!(errors("[media]\nhold_message = \"greeting\"\n[[prompts]]\nname = \"greeting\"\ntext = \"Hi\"\n").is_empty());
        let e = errors("[[prompts]]\nname = \"\"\ntext = \"Hi\"\n");
        assert!(e[0].starts_with("t.toml:2:1: prompts[0].name:"), "{e:?}");
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with("t.toml:1:2: sipp: unknown section"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn transcode_threads_are_bounded() {
        assert!(errors("[webrtc]\ntranscode_threads = 2\n").is_empty());
        let e = errors("[webrtc]\ntranscode_threads = 65\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("webrtc.transcode_threads"), "{e:?}");
    }

    #[test]
    fn trunk_identity_settings_are_checked() {
        let ok = "[[trunks]]\nname = \"c\"\ninbound_cidrs = [\"192.0.2.0/24\"]\ntrust_identity = true\ndefault_country = \"ES\"\n";
        assert!(errors(ok).is_empty(), "{:?}", errors(ok));
        let e = errors("[[trunks]]\nname = \"c\"\ndefault_country = \"Spain\"\n");
        assert!(
            e.len() == 1 && e[0].contains("trunks[0].default_country"),
            "{e:?}"
        );
        let e = errors("[[trunks]]\nname = \"c\"\ntrust_identity = true\n");
        assert!(
            e.len() == 1 && e[0].contains("trunks[0].trust_identity"),
            "{e:?}"
        );
    }

    #[test]
    fn switch_keywords_and_web_links_are_checked() {
        assert!(errors("[chat]\nswitch_keywords = { WA = \"whatsapp\" }\n").is_empty());
        assert!(errors("[chat]\nswitch_keywords = {}\n").is_empty());
        for (bad, says) in [
            ("{ FAX = \"fax\" }", "not a channel"),
            ("{ STOP = \"sms\" }", "opt-out"),
            ("{ Web = \"web\", WEB = \"sms\" }", "twice"),
            ("{ \" \" = \"web\" }", "1 to 32 bytes"),
        ] {
            let e = errors(&format!("[chat]\nswitch_keywords = {bad}\n"));
            assert_eq!(e.len(), 1, "{bad}: {e:?}");
            assert!(e[0].contains("chat.switch_keywords"), "{e:?}");
            assert!(e[0].contains(says), "{bad}: {e:?}");
        }
        let e = errors("[chat]\nweb_link_ttl_secs = 30\n");
        assert!(
            e.len() == 1 && e[0].contains("chat.web_link_ttl_secs"),
            "{e:?}"
        );
    }

    #[test]
    fn otlp_endpoint_is_a_url_and_gets_the_traces_path() {
        let config = Config::parse(
            "[telemetry]\notlp_endpoint = \"http://otel:4318/\"\n",
            Path::new("t.toml"),
        )
        .map_err(|e| e.to_string())
        .unwrap();
        assert_eq!(
            config.telemetry.otlp_traces_url().as_deref(),
            Some("http://otel:4318/v1/traces")
        );
        assert_eq!(Config::default().telemetry.otlp_traces_url(), None);
        for bad in ["otel:4318", "grpc://otel:4317", "http://"] {
            let e = errors(&format!("[telemetry]\notlp_endpoint = \"{bad}\"\n"));
            assert_eq!(e.len(), 1, "{bad}: {e:?}");
            assert!(e[0].contains("telemetry.otlp_endpoint"), "{e:?}");
        }
    }

    #[test]
    fn destinations_may_be_dns_names_and_the_dns_keys_are_checked() {
        let ok = "[sip]\ndns_servers = [\"127.0.0.1:5353\", \"::1\"]\n\n\
                  [[trunks]]\nname = \"t\"\noutbound_proxy = \"sip:pstn.example.com\"\n\n\
                  [[registrations]]\nregistrar = \"sips:pbx.example.com\"\naor = \"sip:me@pbx.example.com\"\n";
        assert_eq!(errors(ok), Vec::<String>::new());
        let e = errors(&format!(
            "[sip]\ndns_servers = [\"dns.example.com\"]\ndns_timeout_ms = 10\n\
             dns_cache_min_ttl_secs = 60\ndns_cache_max_ttl_secs = 30\nmax_redirects = 50\n\n\
             [[trunks]]\nname = \"t\"\noutbound_proxy = \"sip:{}.example.com\"\n",
            "x".repeat(64)
        ));
        for key in [
            "sip.dns_servers[0]",
            "sip.dns_timeout_ms",
            "sip.dns_cache_min_ttl_secs",
            "sip.max_redirects",
            "trunks[0].outbound_proxy",
        ] {
            assert!(e.iter().any(|m| m.contains(key)), "{key}: {e:?}");
        }
        assert!(
            e.iter()
                .any(|m| m.contains("neither an IP address nor a DNS name")),
            "{e:?}"
        );
    }

    #[test]
    fn example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/crossline.example.toml");
        if let Err(e) = Config::load(&path) {
            panic!("{e}");
        }
    }
}
