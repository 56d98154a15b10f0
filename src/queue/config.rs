//! `[[queues]]`: who answers, how they are chosen, what callers hear and
//! where they go when they give up.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::acd::{QueueRules, Strategy};
use crate::registrar::UserConfig;

/// One `[[queues]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// What flows name (`queue = "support"`, `transfer` to `queue:support`).
    pub name: String,
    pub agents: Vec<AgentConfig>,
    #[serde(default)]
    pub strategy: Strategy,
    /// How long one agent rings before the next is tried.
    #[serde(default = "defaults::ring_timeout")]
    pub ring_timeout_secs: u64,
    /// After a call, the agent rests this long before the next.
    #[serde(default = "defaults::wrap_up")]
    pub wrap_up_secs: u64,
    /// Waiting longer than this sends the caller to the fallback.
    #[serde(default = "defaults::max_wait")]
    pub max_wait_secs: u64,
    /// Position and estimated wait are said this often; 0: never.
    #[serde(default = "defaults::announce_interval")]
    pub announce_interval_secs: u64,
    /// Virtual hold: from this long on, each announcement offers a
    /// callback (press 1) that keeps the caller's place; unset: never.
    #[serde(default)]
    pub offer_callback_after_secs: Option<u64>,
    /// Callbacks tried (each `[callbacks] ring_timeout_secs` long) before a
    /// virtual-hold caller is dropped.
    #[serde(default = "defaults::callback_attempts")]
    pub callback_attempts: u32,
    /// After a callback that wasn't answered, the next try waits this long.
    #[serde(default = "defaults::callback_retry")]
    pub callback_retry_secs: u64,
    /// Wait music (WAV files, relative to the audio directory); empty:
    /// `[media] hold_music`.
    #[serde(default)]
    pub hold_music: Vec<PathBuf>,
    /// What the announcements are said in: "en" or "es".
    #[serde(default = "defaults::language")]
    pub language: String,
    /// Answered within this long counts toward the service level.
    #[serde(default = "defaults::sla")]
    pub sla_secs: u64,
    /// The handle time assumed for the estimate until calls were handled.
    #[serde(default = "defaults::assumed_handle")]
    pub assumed_handle_secs: u64,
    /// Where a caller goes on max_wait_secs or pressing 0: a voice flow (a
    /// `record` for voicemail, a `breakout` to chat). Unset: the call ends.
    #[serde(default)]
    pub fallback_flow: Option<String>,
    /// Callers waiting at most; the next goes straight to the fallback (or
    /// is turned away busy). Unset: no limit.
    #[serde(default)]
    pub max_callers: Option<usize>,
}

/// An agent of a queue.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// A SIP URI, or `user:<name>` for a registered `[[users]]` entry.
    pub target: String,
    /// Tags the `skills` strategy matches a caller's needs against; a
    /// `user:` agent has its user's `tags` too.
    #[serde(default)]
    pub skills: Vec<String>,
}

mod defaults {
    pub fn ring_timeout() -> u64 {
        20
    }
    pub fn wrap_up() -> u64 {
        10
    }
    pub fn max_wait() -> u64 {
        600
    }
    pub fn announce_interval() -> u64 {
        30
    }
    pub fn language() -> String {
        "en".into()
    }
    pub fn sla() -> u64 {
        20
    }
    pub fn assumed_handle() -> u64 {
        180
    }
    pub fn callback_attempts() -> u32 {
        3
    }
    pub fn callback_retry() -> u64 {
        120
    }
}

impl AgentConfig {
    /// Its own skills, then (a `user:` agent) its user's tags not already
    /// among them.
    pub fn skills_with(&self, users: &[UserConfig]) -> Vec<String> {
        let tags = self
            .target
            .strip_prefix("user:")
            .and_then(|name| users.iter().find(|u| u.name == name))
            .map_or(&[][..], |u| &u.tags[..]);
        let mut skills = self.skills.clone();
        for tag in tags {
            if !skills.contains(tag) {
                skills.push(tag.clone());
            }
        }
        skills
    }
}

impl QueueConfig {
    /// The state machine's rules; `users` lend their tags to `user:` agents.
    pub fn rules(&self, users: &[UserConfig]) -> QueueRules {
        QueueRules {
            name: self.name.clone(),
            strategy: self.strategy,
            agents: self
                .agents
                .iter()
                .map(|a| (a.target.clone(), a.skills_with(users)))
                .collect(),
            sla: Duration::from_secs(self.sla_secs),
            wrap_up: Duration::from_secs(self.wrap_up_secs),
            assumed_handle: Duration::from_secs(self.assumed_handle_secs),
            max_callers: self.max_callers,
            callback_attempts: self.callback_attempts,
            callback_retry: Duration::from_secs(self.callback_retry_secs),
        }
    }

    /// What is wrong with this queue, as (key, message); `flow_ok` says
    /// whether a name is a voice flow, `registrar` whether users register,
    /// `users` who they are (their tags are skills).
    /// `can_call_back` whether callbacks have a trunk.
    pub fn problems(
        &self,
        audio_dir: &Path,
        registrar: bool,
        users: &[UserConfig],
        can_call_back: bool,
        flow_ok: impl Fn(&str) -> Result<(), String>,
    ) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !valid_name(&self.name) {
            out.push((
                "name",
                "letters, digits and - _ . only (1 to 64)".to_string(),
            ));
        }
        if self.agents.is_empty() {
            out.push(("agents", "list at least one agent".into()));
        }
        for agent in &self.agents {
            match agent.target.strip_prefix("user:") {
                Some(user) if !crate::registrar::valid_user_name(user) => {
                    out.push(("agents", format!("not a user name: {:?}", agent.target)))
                }
                Some(_) if !registrar => out.push((
                    "agents",
                    format!(
                        "{:?} is a registered user: enable [registrar]",
                        agent.target
                    ),
                )),
                Some(_) => {}
                None => {
                    if let Err(e) = crate::dns::check_destination(&agent.target) {
                        out.push(("agents", format!("{e}: {:?}", agent.target)));
                    }
                }
            }
            if self
                .agents
                .iter()
                .filter(|a| a.target == agent.target)
                .count()
                > 1
            {
                out.push(("agents", format!("{:?} is listed twice", agent.target)));
            }
        }
        if self.strategy == Strategy::Skills
            && self.agents.iter().all(|a| a.skills_with(users).is_empty())
        {
            out.push((
                "strategy",
                "skills needs agents with skills (or users with tags)".into(),
            ));
        }
        if self.max_callers == Some(0) {
            out.push(("max_callers", "must be at least 1 (or unset)".into()));
        }
        for (key, secs, range) in [
            ("ring_timeout_secs", self.ring_timeout_secs, 1..=600),
            ("wrap_up_secs", self.wrap_up_secs, 0..=3600),
            ("max_wait_secs", self.max_wait_secs, 1..=86_400),
            (
                "announce_interval_secs",
                self.announce_interval_secs,
                0..=3600,
            ),
            ("sla_secs", self.sla_secs, 1..=86_400),
            ("assumed_handle_secs", self.assumed_handle_secs, 1..=86_400),
        ] {
            if !range.contains(&secs) {
                out.push((key, format!("must be {}..={}", range.start(), range.end())));
            }
        }
        if let Some(after) = self.offer_callback_after_secs {
            if !(1..=86_400).contains(&after) {
                out.push(("offer_callback_after_secs", "must be 1..=86400".into()));
            } else if self.announce_interval_secs == 0 {
                out.push((
                    "offer_callback_after_secs",
                    "the offer is said with the announcements: set announce_interval_secs".into(),
                ));
            } else if !can_call_back {
                out.push((
                    "offer_callback_after_secs",
                    "callbacks need a trunk with an outbound_proxy ([callbacks] trunk)".into(),
                ));
            }
        }
        if !(1..=10).contains(&self.callback_attempts) {
            out.push(("callback_attempts", "must be 1..=10".into()));
        }
        if !(1..=86_400).contains(&self.callback_retry_secs) {
            out.push(("callback_retry_secs", "must be 1..=86400".into()));
        }
        if super::announce::Language::parse(&self.language).is_none() {
            out.push(("language", format!("{:?}: \"en\" or \"es\"", self.language)));
        }
        for f in &self.hold_music {
            let path = if f.is_absolute() {
                f.clone()
            } else {
                audio_dir.join(f)
            };
            if !path.is_file() {
                out.push((
                    "hold_music",
                    format!("audio file not found: {}", path.display()),
                ));
            }
        }
        if let Some(Err(e)) = self.fallback_flow.as_deref().map(flow_ok) {
            out.push(("fallback_flow", e));
        }
        out
    }
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(toml_text: &str) -> QueueConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn defaults_and_problems() {
        let q = queue(
            r#"name = "support"
agents = [{ target = "sip:a@127.0.0.1:5090" }, { target = "user:bob", skills = ["es"] }]"#,
        );
        assert_eq!(q.strategy, Strategy::LongestIdle);
        assert_eq!((q.ring_timeout_secs, q.wrap_up_secs), (20, 10));
        assert!(q
            .problems(Path::new("."), true, &[], true, |_| Ok(()))
            .is_empty());
        let keys: Vec<&str> = q
            .problems(Path::new("."), false, &[], true, |_| Ok(()))
            .into_iter()
            .map(|p| p.0)
            .collect();
        assert_eq!(keys, ["agents"]);
        let bad = queue(
            r#"name = "bad name"
agents = []
language = "fr"
max_wait_secs = 60
max_callers = 0
offer_callback_after_secs = 90
callback_attempts = 0
fallback_flow = "nope""#,
        );
        let keys: Vec<&str> = bad
            .problems(Path::new("."), true, &[], false, |f| {
                Err(format!("no flow named {f:?}"))
            })
            .into_iter()
            .map(|p| p.0)
            .collect();
        assert_eq!(
            keys,
            [
                "name",
                "agents",
                "max_callers",
                "offer_callback_after_secs",
                "callback_attempts",
                "language",
                "fallback_flow"
            ]
        );
    }

    fn user(name: &str, tags: &[&str]) -> UserConfig {
        toml::from_str(&format!(
            "name = {name:?}\npassword = \"pw-{name}\"\ntags = {tags:?}"
        ))
        .unwrap()
    }

    #[test]
    fn registered_users_lend_their_tags_as_skills() {
        let q = queue(
            r#"name = "support"
strategy = "skills"
agents = [{ target = "user:alice" }, { target = "user:bob", skills = ["vip"] }, { target = "sip:c@127.0.0.1" }]"#,
        );
        let users = [user("alice", &[]), user("bob", &["es", "vip"])];
        let rules = q.rules(&users);
        let skills: Vec<&[String]> = rules.agents.iter().map(|a| &a.1[..]).collect();
        assert_eq!(
            skills,
            [&[][..], &["vip".to_string(), "es".to_string()][..], &[][..]]
        );
        assert!(q
            .problems(Path::new("."), true, &users, true, |_| Ok(()))
            .is_empty());
        // Without bob's tags only his own skill is left; without any, the
        // strategy has nothing to match.
        let nobody = [user("alice", &[])];
        let keys: Vec<&str> = queue(
            r#"name = "support"
strategy = "skills"
agents = [{ target = "user:alice" }]"#,
        )
        .problems(Path::new("."), true, &nobody, true, |_| Ok(()))
        .into_iter()
        .map(|p| p.0)
        .collect();
        assert_eq!(keys, ["strategy"]);
        // The state machine offers a Spanish caller to bob, though alice is
        // listed first and idle as long.
        let t0 = std::time::Instant::now();
        let mut acd = super::super::acd::Acd::new(t0, vec![rules]);
        let entry = acd
            .join(t0, "support", 1, Duration::ZERO, vec!["es".into()])
            .unwrap();
        let offer = acd.poll_offer().unwrap();
        assert_eq!(
            (offer.entry, offer.agents),
            (entry, vec!["user:bob".to_string()])
        );
    }
}
