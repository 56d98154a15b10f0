//! Registrar users kept in the store (`/v1/users`): their digest HA1s,
//! never their passwords, and what the endpoint is told of them.
//!
//! HA1 = H(name:realm:password) for MD5 and for SHA-256 (RFC 7616
//! §3.4.2), in the realm (our domain) of the day they were set: if the
//! domain changes, set the passwords again.

use std::time::SystemTime;

use crate::secret::Secret;
use crate::sip::auth::Algorithm;
use crate::sip::endpoint::StoredUser;

/// Shortest password the API takes.
pub const MIN_PASSWORD: usize = 8;
/// Longest password the API takes.
pub const MAX_PASSWORD: usize = 256;
/// Most tags per user, and longest tag.
pub const MAX_TAGS: usize = 32;
pub const MAX_TAG_LEN: usize = 64;
/// Longest display name.
pub const MAX_DISPLAY_NAME: usize = 128;

/// A user as the store keeps it.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub name: String,
    /// The realm the HA1s are for.
    pub realm: String,
    pub ha1_md5: String,
    pub ha1_sha256: String,
    pub display_name: Option<String>,
    pub tags: Vec<String>,
    /// Disabled: it can't register and calls to it don't ring it.
    pub enabled: bool,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("name", &self.name)
            .field("realm", &self.realm)
            .field("tags", &self.tags)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

impl UserRecord {
    /// A new enabled user with `password` in `realm`.
    pub fn new(name: &str, realm: &str, password: &str, now: SystemTime) -> UserRecord {
        let mut user = UserRecord {
            name: name.to_string(),
            realm: String::new(),
            ha1_md5: String::new(),
            ha1_sha256: String::new(),
            display_name: None,
            tags: Vec::new(),
            enabled: true,
            created_at: now,
            updated_at: now,
        };
        user.set_password(realm, password);
        user
    }

    /// Keep the HA1s of `password` in `realm` (the password itself is not
    /// kept).
    pub fn set_password(&mut self, realm: &str, password: &str) {
        self.realm = realm.to_string();
        self.ha1_md5 = Algorithm::Md5.ha1(&self.name, realm, password);
        self.ha1_sha256 = Algorithm::Sha256.ha1(&self.name, realm, password);
    }

    /// What the endpoint checks REGISTERs against; `None` when disabled.
    pub fn endpoint_user(&self) -> Option<StoredUser> {
        self.enabled.then(|| StoredUser {
            name: self.name.clone(),
            realm: self.realm.clone(),
            ha1_md5: Secret::from(self.ha1_md5.clone()),
            ha1_sha256: Secret::from(self.ha1_sha256.clone()),
        })
    }
}

/// Why a password, tags or display name can't be taken.
pub fn check_password(password: &str) -> Result<(), String> {
    let n = password.chars().count();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&n) {
        return Err(format!(
            "password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters"
        ));
    }
    if password.chars().any(char::is_control) {
        return Err("password must not hold control characters".into());
    }
    Ok(())
}

pub fn check_tags(tags: &[String]) -> Result<(), String> {
    if tags.len() > MAX_TAGS {
        return Err(format!("at most {MAX_TAGS} tags"));
    }
    if tags
        .iter()
        .any(|t| t.is_empty() || t.len() > MAX_TAG_LEN || t.chars().any(char::is_control))
    {
        return Err(format!(
            "each tag must be 1 to {MAX_TAG_LEN} bytes, without control characters"
        ));
    }
    Ok(())
}

pub fn check_display_name(name: &str) -> Result<(), String> {
    if name.chars().count() > MAX_DISPLAY_NAME || name.chars().any(char::is_control) {
        return Err(format!(
            "display_name must be at most {MAX_DISPLAY_NAME} characters, without control characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_becomes_two_ha1s_for_its_realm() {
        let u = UserRecord::new("alice", "pbx.example", "a-long-secret", SystemTime::now());
        // RFC 7616: H(username:realm:password).
        assert_eq!(
            u.ha1_md5,
            Algorithm::Md5.ha1("alice", "pbx.example", "a-long-secret")
        );
        assert_eq!(u.ha1_md5.len(), 32);
        assert_eq!(u.ha1_sha256.len(), 64);
        assert!(!format!("{u:?}").contains(&u.ha1_md5));
        let mut off = u.clone();
        off.enabled = false;
        assert!(off.endpoint_user().is_none());
        assert_eq!(u.endpoint_user().unwrap().realm, "pbx.example");
        assert!(check_password("short").is_err());
        assert!(check_password("long-enough").is_ok());
        assert!(check_tags(&["".into()]).is_err());
    }
}
