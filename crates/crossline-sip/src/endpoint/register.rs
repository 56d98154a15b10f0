//! Our registrar (RFC 3261 §10.3): REGISTERs from configured users,
//! digest-authenticated (401, then 403 for a wrong answer, counted toward
//! the same per-source and per-user bans as trunk digest failures), then
//! applied to the location service in [`crate::registrar`].

use std::time::Instant;

use super::{Endpoint, Event, Peer, ServerKey};
use crate::auth::{Algorithm, Verdict};
use crate::message::Request;
use crate::registrar::{Binding, BindingLimits, RegisterError, RegisterRequest};
use crate::secret::Secret;

/// A user that may register (and call in with its digest).
#[derive(Debug, Clone)]
pub struct LocalUser {
    /// The user part of its address and its digest username.
    pub name: String,
    /// Its digest password.
    pub password: Secret,
}

/// A user kept in the store: its digest HA1s (RFC 7616 §3.4.2) for the
/// realm they were made in, never its password. A `[[users]]` entry of
/// the same name wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredUser {
    /// The user part of its address and its digest username.
    pub name: String,
    /// The realm the HA1s were computed for: our domain when they were.
    pub realm: String,
    /// MD5(name:realm:password), lowercase hex.
    pub ha1_md5: Secret,
    /// SHA-256(name:realm:password), lowercase hex.
    pub ha1_sha256: Secret,
}

/// What our registrar serves.
#[derive(Debug, Clone)]
pub struct RegistrarConfig {
    /// Our domain: the digest realm, and the host of users' addresses
    /// (our own IP addresses are accepted too).
    pub domain: String,
    /// Who may register.
    pub users: Vec<LocalUser>,
    /// Expiry limits and the contact cap.
    pub limits: BindingLimits,
    /// Digest algorithms we challenge with, preferred first; empty:
    /// SHA-256 then MD5.
    pub digest_algorithms: Vec<Algorithm>,
}

impl RegistrarConfig {
    fn config_user(&self, user: &str) -> Option<&LocalUser> {
        self.users.iter().find(|u| u.name == user)
    }

    /// Whether `host` names us: the domain, or an IP literal (a phone
    /// configured with our address).
    pub fn serves_host(&self, host: &str) -> bool {
        host.eq_ignore_ascii_case(&self.domain)
            || host
                .trim_matches(|c| c == '[' || c == ']')
                .parse::<std::net::IpAddr>()
                .is_ok()
    }
}

/// How one REGISTER went, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegisterOutcome {
    /// 200: bindings applied (or listed).
    Ok,
    /// 401: challenged.
    Challenged,
    /// 403: a wrong digest answer, a banned user, someone else's address.
    Forbidden,
    /// 404: not a user of ours.
    NotFound,
    /// 400, 423, 500, or over the contact cap.
    Refused,
}

impl RegisterOutcome {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            RegisterOutcome::Ok => "ok",
            RegisterOutcome::Challenged => "challenged",
            RegisterOutcome::Forbidden => "forbidden",
            RegisterOutcome::NotFound => "not_found",
            RegisterOutcome::Refused => "refused",
        }
    }
}

/// What a user's digest answer came to.
enum UserAuth {
    /// Right, and for the user the request is about.
    Signed,
    /// None yet, or a stale nonce: challenge (again).
    Challenge { stale: bool },
    /// Wrong (counted toward bans), banned, or someone else's.
    Forbidden,
}

impl Endpoint {
    /// Check `req`'s digest answer in `header` for our user `user`; wrong
    /// answers count toward the per-source and per-user bans, as trunk
    /// digest failures do.
    fn check_user_digest(
        &mut self,
        now: Instant,
        peer: Peer,
        req: &Request,
        header: &str,
        user: &str,
    ) -> UserAuth {
        let Some(authorization) = req.headers.get(header) else {
            return UserAuth::Challenge { stale: false };
        };
        let ip = self.admission.client_of(peer.remote.ip(), &req.headers);
        let named = crate::auth::DigestResponse::parse(authorization)
            .map(|d| d.username)
            .unwrap_or_default();
        if self.admission.user_gate(now, ip, &named) == super::admission::UserGate::Refuse {
            self.counters.auth_refused_banned_user += 1;
            return UserAuth::Forbidden;
        }
        let request_uri = req.uri.to_string();
        let verdict = {
            let registrar = self.config.registrar.as_ref();
            let stored = &self.stored_users;
            let realm = self.user_digest.realm().to_string();
            self.user_digest.verify_ha1(
                now,
                authorization,
                req.method.as_str(),
                &request_uri,
                |u, alg| user_ha1(registrar, stored, &realm, u, alg),
            )
        };
        match verdict {
            Verdict::Authorized { username } if username == user => {
                self.admission.auth_ok(now, ip, &named);
                UserAuth::Signed
            }
            Verdict::Authorized { .. } => {
                // Right password, someone else's address.
                tracing::info!(user = %named, method = req.method.as_str(), "a user's request for another user refused");
                UserAuth::Forbidden
            }
            Verdict::Stale => UserAuth::Challenge { stale: true },
            Verdict::Rejected(why) => {
                tracing::info!(%why, from = %peer.remote, method = req.method.as_str(), "user digest refused");
                self.counters.auth_failures += 1;
                self.admission.auth_failed(now, ip, &named);
                self.counters.bans_sources = self.admission.bans_started.sources;
                self.counters.bans_users = self.admission.bans_started.users;
                UserAuth::Forbidden
            }
        }
    }

    /// The digest algorithms users are challenged with, preferred first.
    fn user_algorithms(&self) -> Vec<Algorithm> {
        match self
            .config
            .registrar
            .as_ref()
            .map(|r| r.digest_algorithms.as_slice())
        {
            Some([]) | None => vec![Algorithm::Sha256, Algorithm::Md5],
            Some(chosen) => chosen.to_vec(),
        }
    }

    /// The user an INVITE claims to come from: its From names one of our
    /// users at a host we serve.
    pub(super) fn calling_user(&self, req: &Request) -> Option<String> {
        let registrar = self.config.registrar.as_ref()?;
        let from = req.headers.from().ok()?;
        let user = from.uri.user?;
        (registrar.serves_host(&from.uri.host) && self.is_local_user(&user)).then_some(user)
    }

    /// A call from our user `user`: 407 until its digest answer is right
    /// (403 when wrong). True: go on with the call.
    pub(super) fn authorize_user_call(
        &mut self,
        now: Instant,
        key: &ServerKey,
        peer: Peer,
        req: &Request,
        user: &str,
    ) -> bool {
        let stale = match self.check_user_digest(now, peer, req, "Proxy-Authorization", user) {
            UserAuth::Signed => return true,
            UserAuth::Challenge { stale } => stale,
            UserAuth::Forbidden => {
                self.reply(now, key, req, 403);
                return false;
            }
        };
        let tag = super::util::new_tag(&mut self.id_rng);
        let mut resp = self.make_response(req, 407, Some(&tag));
        for algorithm in self.user_algorithms() {
            let challenge = self.user_digest.challenge(now, algorithm, stale);
            resp.headers
                .push("Proxy-Authenticate", challenge.to_header_value());
        }
        self.respond(now, key, resp);
        false
    }

    /// The user's live bindings, best q first.
    pub fn bindings_of(&self, user: &str, now: Instant) -> Vec<Binding> {
        self.bindings.of(user, now)
    }

    /// Every user's bindings (some may have lapsed and not been swept yet).
    pub fn all_bindings(&self) -> Vec<(String, Binding)> {
        self.bindings
            .all()
            .flat_map(|(u, l)| l.iter().map(move |b| (u.to_string(), b.clone())))
            .collect()
    }

    /// Put back bindings saved earlier (a restart; another node's).
    pub fn restore_binding(&mut self, user: &str, binding: Binding) {
        self.bindings.restore(user, binding);
        self.counters.bindings = self.bindings.count() as u64;
    }

    /// Whether `user` is one of ours: in the config, or in the store.
    pub fn is_local_user(&self, user: &str) -> bool {
        self.config
            .registrar
            .as_ref()
            .is_some_and(|r| r.config_user(user).is_some() || self.stored_users.contains_key(user))
    }

    /// A user from the store added, changed (`Some`), or deleted or
    /// disabled (`None`): those lose their bindings at once. A password
    /// change is read on the user's next REGISTER.
    pub fn set_stored_user(&mut self, name: &str, user: Option<StoredUser>) {
        match user {
            Some(user) => {
                self.stored_users.insert(name.to_string(), user);
            }
            None => {
                self.stored_users.remove(name);
                let in_config = self
                    .config
                    .registrar
                    .as_ref()
                    .and_then(|r| r.config_user(name))
                    .is_some();
                if !in_config {
                    self.drop_bindings(name);
                }
            }
        }
    }

    /// Every user from the store at once (start, or after missed news):
    /// those no longer there lose their bindings.
    pub fn set_stored_users(&mut self, users: Vec<StoredUser>) {
        let gone: Vec<String> = self
            .stored_users
            .keys()
            .filter(|name| !users.iter().any(|u| &u.name == *name))
            .cloned()
            .collect();
        for name in gone {
            self.set_stored_user(&name, None);
        }
        for user in users {
            self.stored_users.insert(user.name.clone(), user);
        }
    }

    /// Users from the store it knows.
    pub fn stored_user_count(&self) -> usize {
        self.stored_users.len()
    }

    fn drop_bindings(&mut self, user: &str) {
        if self.bindings.remove_user(user) {
            tracing::info!(%user, "a user's registrations dropped: deleted or disabled");
            self.counters.bindings = self.bindings.count() as u64;
            self.events.push_back(Event::BindingsChanged {
                user: user.to_string(),
            });
        }
    }

    /// Drop lapsed bindings; each user whose list changed is an event.
    pub(super) fn expire_bindings(&mut self, now: Instant) {
        if self.bindings.next_expiry().is_none_or(|at| at > now) {
            return;
        }
        for user in self.bindings.expire(now) {
            tracing::info!(%user, "a registration lapsed");
            self.events.push_back(Event::BindingsChanged { user });
        }
        self.counters.bindings = self.bindings.count() as u64;
    }

    fn register_outcome(&mut self, outcome: RegisterOutcome) {
        *self.counters.registers.entry(outcome).or_default() += 1;
    }

    pub(super) fn register(&mut self, now: Instant, key: ServerKey, peer: Peer, req: Request) {
        let Some(registrar) = self.config.registrar.as_ref() else {
            self.reply(now, &key, &req, 405);
            return;
        };
        let to = req.headers.to().ok();
        let served = to
            .as_ref()
            .map(|to| registrar.serves_host(&to.uri.host) && registrar.serves_host(&req.uri.host));
        let aor = match (to, served) {
            (Some(to), Some(true)) => to.uri.user.unwrap_or_default(),
            (Some(_), _) => {
                self.register_outcome(RegisterOutcome::NotFound);
                self.reply(now, &key, &req, 404);
                return;
            }
            (None, _) => {
                self.register_outcome(RegisterOutcome::Refused);
                self.reply(now, &key, &req, 400);
                return;
            }
        };
        match self.check_user_digest(now, peer, &req, "Authorization", &aor) {
            UserAuth::Signed => {}
            UserAuth::Challenge { stale } => {
                return self.challenge_register(now, &key, &req, stale)
            }
            UserAuth::Forbidden => {
                self.register_outcome(RegisterOutcome::Forbidden);
                self.reply(now, &key, &req, 403);
                return;
            }
        }
        let (Ok(contacts), Ok(expires)) = (req.headers.contacts(), req.headers.expires()) else {
            self.register_outcome(RegisterOutcome::Refused);
            self.reply(now, &key, &req, 400);
            return;
        };
        let path: Vec<String> = req
            .headers
            .get_all("Path")
            .flat_map(|v| v.split(','))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        let register = RegisterRequest {
            star: req.headers.is_star_contact(),
            contacts,
            expires,
            call_id: req.headers.call_id().unwrap_or_default().to_string(),
            cseq: req.headers.cseq().map(|c| c.seq).unwrap_or(0),
            flow: peer,
            path: path.clone(),
            user_agent: req
                .headers
                .get("User-Agent")
                .map(|ua| ua.chars().take(128).collect()),
        };
        let querying = register.contacts.is_empty() && !register.star;
        let result = if querying {
            Ok(self.bindings.of(&aor, now))
        } else {
            self.bindings.register(now, &aor, &register)
        };
        let tag = super::util::new_tag(&mut self.id_rng);
        match result {
            Ok(list) => {
                let mut resp = self.make_response(&req, 200, Some(&tag));
                for b in &list {
                    resp.headers.push("Contact", b.contact_value(now));
                }
                // RFC 3327 §5.3: echoed when the UA said it supports path.
                if req.headers.tokens("Supported").iter().any(|t| t == "path") {
                    for p in &path {
                        resp.headers.push("Path", p.clone());
                    }
                }
                self.register_outcome(RegisterOutcome::Ok);
                self.respond(now, &key, resp);
                if !querying {
                    tracing::info!(user = %aor, contacts = list.len(), from = %peer.remote, "registered");
                    self.counters.bindings = self.bindings.count() as u64;
                    self.events.push_back(Event::BindingsChanged { user: aor });
                }
            }
            Err(RegisterError::TooBrief(min)) => {
                let mut resp = self.make_response(&req, 423, Some(&tag));
                resp.headers.push("Min-Expires", min.to_string());
                self.register_outcome(RegisterOutcome::Refused);
                self.respond(now, &key, resp);
            }
            Err(err) => {
                let (status, reason) = match err {
                    RegisterError::OutOfOrder => (500, "Out Of Order"),
                    RegisterError::TooMany => (403, "Too Many Contacts"),
                    _ => (400, "Bad Request"),
                };
                let mut resp = self.make_response(&req, status, Some(&tag));
                resp.reason = reason.into();
                self.register_outcome(RegisterOutcome::Refused);
                self.respond(now, &key, resp);
            }
        }
    }

    fn challenge_register(&mut self, now: Instant, key: &ServerKey, req: &Request, stale: bool) {
        let tag = super::util::new_tag(&mut self.id_rng);
        let mut resp = self.make_response(req, 401, Some(&tag));
        for algorithm in self.user_algorithms() {
            let challenge = self.user_digest.challenge(now, algorithm, stale);
            resp.headers
                .push("WWW-Authenticate", challenge.to_header_value());
        }
        self.register_outcome(RegisterOutcome::Challenged);
        self.respond(now, key, resp);
    }
}

/// `user`'s HA1 for `alg` in `realm`: a `[[users]]` password first, else
/// a stored user's (only for the realm its HA1s were made in).
fn user_ha1(
    registrar: Option<&RegistrarConfig>,
    stored: &std::collections::HashMap<String, StoredUser>,
    realm: &str,
    user: &str,
    alg: Algorithm,
) -> Option<String> {
    let registrar = registrar?;
    if let Some(u) = registrar.config_user(user) {
        return Some(alg.ha1(user, realm, u.password.expose()));
    }
    let u = stored.get(user).filter(|u| u.realm == realm)?;
    Some(
        match alg {
            Algorithm::Md5 => u.ha1_md5.expose(),
            Algorithm::Sha256 => u.ha1_sha256.expose(),
        }
        .to_string(),
    )
}
