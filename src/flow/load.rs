//! Loading and validating flow files. Every problem is reported with its
//! file, line and node id, and one bad node doesn't hide the next.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::model::*;
use crate::config::{ConfigError, Diagnostics};

/// Every flow in the flows directory, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlowSet {
    pub flows: HashMap<String, Arc<Flow>>,
}

impl FlowSet {
    pub fn get(&self, name: &str) -> Option<Arc<Flow>> {
        self.flows.get(name).cloned()
    }

    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.flows.keys().map(String::as_str).collect();
        v.sort();
        v
    }
}

/// Load every `*.toml` in `dir`. Relative audio files resolve in `audio_dir`.
pub fn load_dir(dir: &Path, audio_dir: &Path) -> Result<FlowSet, Vec<ConfigError>> {
    let (set, errors) = load_all(dir, audio_dir);
    if errors.is_empty() {
        Ok(set)
    } else {
        Err(errors)
    }
}

/// The flows that loaded and every error: so that a config check can go on
/// to check what refers to the good ones.
pub fn load_all(dir: &Path, audio_dir: &Path) -> (FlowSet, Vec<ConfigError>) {
    let mut errors = Vec::new();
    let mut set = FlowSet::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            let error = ConfigError {
                file: dir.to_path_buf(),
                line: 0,
                column: 0,
                key: String::new(),
                message: format!("cannot read the flows directory: {e}"),
            };
            return (set, vec![error]);
        }
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut origin: HashMap<String, PathBuf> = HashMap::new();
    for file in files {
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                errors.push(ConfigError {
                    file: file.clone(),
                    line: 0,
                    column: 0,
                    key: String::new(),
                    message: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        match parse_flow(&text, &file, audio_dir) {
            Ok(flow) => {
                if let Some(first) = origin.get(&flow.name) {
                    errors.push(ConfigError {
                        file: file.clone(),
                        line: 1,
                        column: 1,
                        key: "name".into(),
                        message: format!(
                            "flow {:?} is already defined in {}",
                            flow.name,
                            first.display()
                        ),
                    });
                    continue;
                }
                origin.insert(flow.name.clone(), file.clone());
                set.flows.insert(flow.name.clone(), Arc::new(flow));
            }
            Err(mut e) => errors.append(&mut e),
        }
    }
    check_references(&set, &mut errors);
    (set, errors)
}

/// Flows named by other flows exist and run on the right channel.
fn check_references(set: &FlowSet, errors: &mut Vec<ConfigError>) {
    let mut names: Vec<&String> = set.flows.keys().collect();
    names.sort();
    for name in names {
        let Some(flow) = set.flows.get(name) else {
            continue;
        };
        for node in flow.nodes.values() {
            let mut check = |prop: &str, target: &str, want: Channel| {
                let problem = match set.flows.get(target) {
                    None => Some(format!("no flow named {target:?}")),
                    Some(f) if f.channel != want => Some(format!(
                        "flow {target:?} is a {} flow; this needs a {} flow",
                        f.channel.as_str(),
                        want.as_str()
                    )),
                    Some(_) => None,
                };
                if let Some(message) = problem {
                    errors.push(ConfigError {
                        file: flow.file.clone(),
                        line: node.line,
                        column: 1,
                        key: format!("{}.{prop}", node_key(&node.id)),
                        message,
                    });
                }
            };
            match &node.kind {
                NodeKind::Breakout(b) => {
                    check("breakout_flow", &b.breakout_flow, Channel::Chat);
                    if let Some(t) = &b.timeout_flow {
                        check("timeout_flow", t, Channel::Voice);
                    }
                    // Every voice flow is checked, so breakouts inside a
                    // `timeout_flow` are too.
                    let chat = set
                        .flows
                        .get(&b.breakout_flow)
                        .filter(|f| f.channel == Channel::Chat);
                    if let Some(end) = chat.and_then(|f| super::returns::unreturned_end(f)) {
                        errors.push(ConfigError {
                            file: flow.file.clone(),
                            line: node.line,
                            column: 1,
                            key: format!("{}.breakout_flow", node_key(&node.id)),
                            message: format!(
                                "chat flow {:?} can end at node {end:?} without reaching breakout_return: the caller would wait for timeout_secs",
                                b.breakout_flow
                            ),
                        });
                    }
                }
                NodeKind::EscalateToCall(e) => {
                    if let Some(f) = e.flow.as_deref().filter(|f| !matches!(*f, "demo" | "hold")) {
                        check("flow", f, Channel::Voice);
                    }
                }
                _ => {}
            }
        }
    }
}

/// DTMF to send: what RFC 4733 can carry, `,` for pauses, and template
/// placeholders (checked again, as sent, at run time).
fn check_digits(digits: &str) -> Result<(), String> {
    if digits.trim().is_empty() || digits.len() > 64 {
        return Err("1 to 64 characters".into());
    }
    let without_templates = digits
        .split("{{")
        .map(|part| part.split_once("}}").map_or(part, |(_, rest)| rest));
    for part in without_templates {
        if let Some(bad) = part
            .chars()
            .find(|c| !crate::flow::nodes::send_digits::is_digit(*c) && *c != ',')
        {
            return Err(format!(
                "{bad:?} is not a DTMF digit (0-9, *, #, A-D) or a pause (,)"
            ));
        }
    }
    Ok(())
}

fn node_key(id: &str) -> String {
    format!("node {id:?}")
}

/// Parse and validate one flow file.
pub fn parse_flow(text: &str, file: &Path, audio_dir: &Path) -> Result<Flow, Vec<ConfigError>> {
    let mut d = Diagnostics {
        text,
        file,
        errors: Vec::new(),
    };
    let doc = match DeTable::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            d.push_toml("", e);
            return Err(d.errors);
        }
    };
    let mut name = None;
    let mut start = None;
    let mut channel = Channel::Voice;
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for (key, value) in doc.get_ref().iter() {
        match key.get_ref().as_ref() {
            "name" => name = string(&mut d, "name", value),
            "start" => start = string(&mut d, "start", value),
            "description" => {
                string(&mut d, "description", value);
            }
            "channel" => match string(&mut d, "channel", value).as_deref() {
                Some("voice") | None => {}
                Some("chat") => channel = Channel::Chat,
                Some(other) => d.push_span(
                    "channel",
                    value.span(),
                    format!("unknown channel {other:?}; voice or chat"),
                ),
            },
            "nodes" => {
                let Some(items) = value.get_ref().as_array() else {
                    d.push_span("nodes", value.span(), "expected [[nodes]] tables".into());
                    continue;
                };
                for (i, item) in items.iter().enumerate() {
                    if let Some(node) = parse_node(&mut d, i, item) {
                        if nodes.contains_key(&node.id) {
                            d.push_span(
                                &node_key(&node.id),
                                item.span(),
                                "duplicate node id".into(),
                            );
                            continue;
                        }
                        order.push(node.id.clone());
                        nodes.insert(node.id.clone(), node);
                    }
                }
            }
            other => d.push_span(
                other,
                key.span(),
                "unknown key; a flow has name, description, channel, start and [[nodes]]".into(),
            ),
        }
    }
    let Some(name) = name else {
        d.push_span("name", 0..0, "a flow needs a name".into());
        return Err(d.errors);
    };
    let start = start.or_else(|| order.first().cloned());
    let Some(start) = start else {
        d.push_span("nodes", 0..0, "a flow needs at least one node".into());
        return Err(d.errors);
    };
    let flow = Flow {
        name,
        file: file.to_path_buf(),
        channel,
        start,
        nodes,
    };
    validate(&flow, &mut d, audio_dir);
    if d.errors.is_empty() {
        Ok(flow)
    } else {
        Err(d.errors)
    }
}

fn string(d: &mut Diagnostics<'_>, key: &str, v: &Spanned<DeValue<'_>>) -> Option<String> {
    match v.get_ref().as_str() {
        Some(s) => Some(s.to_string()),
        None => {
            d.push_span(
                key,
                v.span(),
                format!("expected a string, found {}", v.get_ref().type_str()),
            );
            None
        }
    }
}

fn parse_node(d: &mut Diagnostics<'_>, i: usize, item: &Spanned<DeValue<'_>>) -> Option<Node> {
    let at = format!("nodes[{i}]");
    let Some(table) = item.get_ref().as_table() else {
        d.push_span(&at, item.span(), "expected a table".into());
        return None;
    };
    let get = |k: &str| {
        table
            .iter()
            .find(|(key, _)| key.get_ref().as_ref() == k)
            .map(|(_, v)| v)
    };
    let Some(id) = get("id")
        .and_then(|v| v.get_ref().as_str())
        .map(str::to_string)
    else {
        d.push_span(&at, item.span(), "every node needs a string id".into());
        return None;
    };
    let key = node_key(&id);
    let Some(type_value) = get("type") else {
        d.push_span(
            &key,
            item.span(),
            format!("missing type; one of {}", NODE_TYPES.join(", ")),
        );
        return None;
    };
    let Some(kind) = type_value.get_ref().as_str() else {
        d.push_span(
            &format!("{key}.type"),
            type_value.span(),
            "expected a string".into(),
        );
        return None;
    };
    fn de<T: DeserializeOwned>(
        d: &mut Diagnostics<'_>,
        key: &str,
        item: &Spanned<DeValue<'_>>,
    ) -> Option<T> {
        match T::deserialize(ValueDeserializer::from(item.clone())) {
            Ok(v) => Some(v),
            Err(e) => {
                d.push_toml(key, e);
                None
            }
        }
    }
    let kind = match kind {
        "say" => NodeKind::Say(de(d, &key, item)?),
        "play" => NodeKind::Play(de(d, &key, item)?),
        "pause" => NodeKind::Pause(de(d, &key, item)?),
        "send_digits" => NodeKind::SendDigits(de(d, &key, item)?),
        "stream" => NodeKind::Stream(de(d, &key, item)?),
        "record" => NodeKind::Record(de(d, &key, item)?),
        "gather" => NodeKind::Gather(de(d, &key, item)?),
        "branch" => NodeKind::Branch(de(d, &key, item)?),
        "set" => NodeKind::Set(de(d, &key, item)?),
        "http" => NodeKind::Http(de(d, &key, item)?),
        "send_sms" => NodeKind::SendSms(de(d, &key, item)?),
        "send_whatsapp" => NodeKind::SendWhatsApp(de(d, &key, item)?),
        "transfer" => NodeKind::Transfer(de(d, &key, item)?),
        "hangup" => NodeKind::Hangup(de(d, &key, item)?),
        "breakout" => NodeKind::Breakout(de(d, &key, item)?),
        "message" => NodeKind::Message(de(d, &key, item)?),
        "ask" => NodeKind::Ask(de(d, &key, item)?),
        "choice" => NodeKind::Choice(de(d, &key, item)?),
        "breakout_return" => NodeKind::BreakoutReturn(de(d, &key, item)?),
        "handoff" => NodeKind::Handoff(de(d, &key, item)?),
        "save_lead" => NodeKind::SaveLead(de(d, &key, item)?),
        "escalate_to_call" => NodeKind::EscalateToCall(de(d, &key, item)?),
        "webhook_app" => NodeKind::WebhookApp(de(d, &key, item)?),
        "queue" => NodeKind::Queue(de(d, &key, item)?),
        other => {
            d.push_span(
                &format!("{key}.type"),
                type_value.span(),
                format!(
                    "unknown node type {other:?}; one of {}",
                    NODE_TYPES.join(", ")
                ),
            );
            return None;
        }
    };
    let (line, _) = crate::config::line_col(d.text, item.span().start);
    Some(Node { id, line, kind })
}

fn validate(flow: &Flow, d: &mut Diagnostics<'_>, audio_dir: &Path) {
    let file = d.file.to_path_buf();
    let mut found: Vec<ConfigError> = Vec::new();
    let mut err = |node: &Node, prop: &str, message: String| {
        found.push(ConfigError {
            file: file.clone(),
            line: node.line,
            column: 1,
            key: if prop.is_empty() {
                node_key(&node.id)
            } else {
                format!("{}.{prop}", node_key(&node.id))
            },
            message,
        });
    };
    if !flow.nodes.contains_key(&flow.start) {
        d.errors.push(ConfigError {
            file: d.file.to_path_buf(),
            line: 1,
            column: 1,
            key: "start".into(),
            message: format!("no node {:?} in this flow", flow.start),
        });
    }
    for node in flow.nodes.values() {
        if !node.kind.channels().contains(&flow.channel) {
            err(
                node,
                "type",
                format!(
                    "{} nodes can't run in a {} flow (set channel = \"{}\" at the top?)",
                    node.kind.type_name(),
                    flow.channel.as_str(),
                    node.kind.channels()[0].as_str()
                ),
            );
        }
        for (prop, target) in node.kind.edges() {
            if !flow.nodes.contains_key(target) {
                err(node, prop, format!("no node {target:?} in this flow"));
            }
        }
        let audio = |f: &Path| {
            if f.is_absolute() {
                f.to_path_buf()
            } else {
                audio_dir.join(f)
            }
        };
        let hold_music = match &node.kind {
            NodeKind::Transfer(t) => t.hold_music.as_slice(),
            NodeKind::Breakout(b) => b.hold_music.as_slice(),
            _ => &[],
        };
        for f in hold_music {
            if !audio(f).is_file() {
                err(
                    node,
                    "hold_music",
                    format!("audio file not found: {}", audio(f).display()),
                );
            }
        }
        match &node.kind {
            NodeKind::Play(p) => {
                if !audio(&p.file).is_file() {
                    err(
                        node,
                        "file",
                        format!("audio file not found: {}", audio(&p.file).display()),
                    );
                }
                if p.duration_secs.is_some_and(|s| !(s > 0.0 && s <= 86_400.0)) {
                    err(node, "duration_secs", "must be between 0 and 86400".into());
                }
            }
            NodeKind::Pause(p) if !(p.secs > 0.0 && p.secs <= 3600.0) => {
                err(node, "secs", "must be between 0 and 3600".into());
            }
            NodeKind::Gather(g) => {
                let words: Vec<&str> = g.input.split_whitespace().collect();
                if words.is_empty() || words.iter().any(|w| !["dtmf", "speech"].contains(w)) {
                    err(
                        node,
                        "input",
                        format!("{:?}: \"dtmf\", \"speech\" or \"dtmf speech\"", g.input),
                    );
                }
                if !g.grammar.is_empty() && !g.wants_speech() {
                    err(node, "grammar", "a grammar needs input with speech".into());
                }
                if !(0.2..=10.0).contains(&g.speech_timeout_secs) {
                    err(node, "speech_timeout_secs", "must be 0.2..=10".into());
                }
                if g.wants_speech() {
                    for value in g.branches.keys() {
                        let is_digit = value
                            .chars()
                            .all(|c| c.is_ascii_digit() || c == '*' || c == '#');
                        if !(g.grammar.contains_key(value) || is_digit && g.wants_dtmf()) {
                            err(node, "branches", format!("{value:?} is no grammar value"));
                        }
                    }
                }
                if let Some(f) = &g.prompt_file {
                    if !audio(f).is_file() {
                        err(
                            node,
                            "prompt_file",
                            format!("audio file not found: {}", audio(f).display()),
                        );
                    }
                }
                if !(1..=32).contains(&g.max_digits) {
                    err(node, "max_digits", "must be 1..=32".into());
                }
                if let Some(t) = &g.terminator {
                    if t.chars().count() != 1 || !"0123456789*#".contains(t.as_str()) {
                        err(
                            node,
                            "terminator",
                            "must be one DTMF key (0-9, *, #)".into(),
                        );
                    }
                }
                // NaN fails these comparisons too.
                let sane = |s: f64| s > 0.0 && s <= 3600.0;
                if !sane(g.timeout_secs) || !sane(g.inter_digit_timeout_secs) {
                    err(
                        node,
                        "timeout_secs",
                        "timeouts must be between 0 and 3600".into(),
                    );
                }
            }
            NodeKind::Http(h) => {
                if !["GET", "POST", "PUT", "PATCH", "DELETE"]
                    .contains(&h.method.to_ascii_uppercase().as_str())
                {
                    err(node, "method", format!("unsupported method {:?}", h.method));
                }
                for (var, pointer) in &h.map {
                    if !pointer.is_empty() && !pointer.starts_with('/') {
                        err(
                            node,
                            "map",
                            format!("{var}: JSON pointer must start with '/': {pointer:?}"),
                        );
                    }
                }
            }
            NodeKind::Stream(n) => {
                if !["connect", "start"].contains(&n.mode.as_str()) {
                    err(node, "mode", format!("{:?}: one of connect, start", n.mode));
                }
                if n.mode == "connect" && n.track.is_some() {
                    err(
                        node,
                        "track",
                        "a connect stream carries the caller's audio only; track is for start"
                            .into(),
                    );
                }
                // A templated URL is checked when it is rendered.
                let scheme_ok = n.url.starts_with("ws://") || n.url.starts_with("wss://");
                if !n.url.starts_with("{{") && !scheme_ok {
                    err(node, "url", format!("must be ws:// or wss://: {:?}", n.url));
                }
            }
            NodeKind::WebhookApp(w) => {
                for (key, message) in w.app.problems() {
                    err(node, key, message);
                }
                if w.app.status_callback.is_some() {
                    err(
                        node,
                        "status_callback",
                        "status callbacks come with a route's app: this call began before the node"
                            .into(),
                    );
                }
            }
            NodeKind::SendDigits(n) => {
                if let Err(e) = check_digits(&n.digits) {
                    err(node, "digits", e);
                }
                if !(40..=2000).contains(&n.duration_ms) {
                    err(node, "duration_ms", "must be 40..=2000".into());
                }
            }
            NodeKind::Transfer(t) => {
                if let Some(Err(e)) = t.send_digits_on_answer.as_deref().map(check_digits) {
                    err(node, "send_digits_on_answer", e);
                }
                if t.targets.is_empty() {
                    err(node, "targets", "list at least one SIP URI".into());
                }
                for target in &t.targets {
                    // `queue:<name>`: wait in that queue (the only target).
                    if target.starts_with("queue:") {
                        if t.refer || t.targets.len() > 1 {
                            err(
                                node,
                                "targets",
                                format!("a queue target is the only target and can't be referred to: {target:?}"),
                            );
                        }
                        continue;
                    }
                    // `user:<name>`: a registered user's devices (see the registrar).
                    if let Some(user) = target.strip_prefix("user:") {
                        if t.refer || !crate::registrar::valid_user_name(user.trim()) {
                            err(
                                node,
                                "targets",
                                format!("a user target names a [[users]] name and can't be referred to: {target:?}"),
                            );
                        }
                        continue;
                    }
                    if let Err(e) = crate::dns::check_destination(target) {
                        err(node, "targets", format!("{e}: {target:?}"));
                    }
                }
                if !(t.ring_timeout_secs > 0.0 && t.ring_timeout_secs <= 3600.0) {
                    err(
                        node,
                        "ring_timeout_secs",
                        "must be between 0 and 3600".into(),
                    );
                }
                if t.refer && t.targets.len() > 1 {
                    err(
                        node,
                        "refer",
                        "a REFER transfer goes to exactly one target".into(),
                    );
                }
            }
            NodeKind::Hangup(h) => {
                if let Some(f) = &h.file {
                    if !audio(f).is_file() {
                        err(
                            node,
                            "file",
                            format!("audio file not found: {}", audio(f).display()),
                        );
                    }
                }
            }
            NodeKind::Breakout(b) => {
                if !(1..=86_400).contains(&b.timeout_secs) {
                    err(node, "timeout_secs", "must be 1..=86400".into());
                }
                if !(1..=3600).contains(&b.repeat_interval_secs) {
                    err(node, "repeat_interval_secs", "must be 1..=3600".into());
                }
                if b.sms_message.len() > 1200 {
                    err(node, "sms_message", "longer than 1200 bytes".into());
                }
            }
            NodeKind::EscalateToCall(e) => {
                if e.flow.is_some() == e.target.is_some() {
                    err(node, "flow", "give exactly one of flow and target".into());
                }
                if let Some(t) = &e.target {
                    if let Err(e) = crate::dns::check_destination(t) {
                        err(node, "target", format!("{e}: {t:?}"));
                    }
                }
                if e.legal_notice.trim().is_empty() {
                    err(
                        node,
                        "legal_notice",
                        "the consent text must not be empty".into(),
                    );
                }
                if !(1..=10).contains(&e.max_attempts) {
                    err(node, "max_attempts", "must be between 1 and 10".into());
                }
            }
            NodeKind::Ask(a) => {
                if a.input == crate::chat::InputKind::Choice {
                    err(node, "input", "use a choice node for buttons".into());
                }
                if a.retries > 20 {
                    err(node, "retries", "at most 20".into());
                }
            }
            NodeKind::Choice(c) => {
                if c.choices.is_empty() {
                    err(node, "choices", "list at least one choice".into());
                }
                if c.retries > 20 {
                    err(node, "retries", "at most 20".into());
                }
            }
            NodeKind::SendWhatsApp(w) => {
                for (prop, message) in crate::flow::nodes::send_whatsapp::problems(w) {
                    err(node, prop, message);
                }
            }
            NodeKind::BreakoutReturn(r) if r.vars.is_empty() => {
                err(
                    node,
                    "vars",
                    "name at least one variable to hand back".into(),
                );
            }
            _ => {}
        }
    }
    d.errors.append(&mut found);
    // Unreachable nodes are mistakes: a `next` that was meant to point there.
    let mut seen: HashSet<&str> = HashSet::new();
    let mut queue = VecDeque::from([flow.start.as_str()]);
    while let Some(id) = queue.pop_front() {
        if !seen.insert(id) {
            continue;
        }
        if let Some(n) = flow.nodes.get(id) {
            for (_, t) in n.kind.edges() {
                queue.push_back(t);
            }
        }
    }
    let mut unreachable: Vec<&Node> = flow
        .nodes
        .values()
        .filter(|n| !seen.contains(n.id.as_str()))
        .collect();
    unreachable.sort_by_key(|n| n.line);
    for node in unreachable {
        d.errors.push(ConfigError {
            file: d.file.to_path_buf(),
            line: node.line,
            column: 1,
            key: node_key(&node.id),
            message: format!("unreachable from the start node {:?}", flow.start),
        });
    }
    d.errors.sort_by_key(|e| e.line);
}
