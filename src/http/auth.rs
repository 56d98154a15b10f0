//! Bearer tokens for the API: viewers (read queues and agents), operators
//! (read conversations, write into a chat, pause agents) and admins
//! (everything, reload). Each role's token works for the roles below it. A
//! role with no token configured is closed, never open.

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::HttpState;
use crate::telemetry::names;

/// Ordered: a role may do what the roles before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

fn matches(given: &str, want: &Option<String>) -> bool {
    want.as_deref().is_some_and(|w| {
        crate::chat::same_hash(
            &crate::chat::secret_hash(given),
            &crate::chat::secret_hash(w),
        )
    })
}

/// The role a bearer token stands for, if any.
pub fn role_of(state: &HttpState, token: &str) -> Option<Role> {
    [
        (Role::Admin, &state.admin_token),
        (Role::Operator, &state.operator_token),
        (Role::Viewer, &state.viewer_token),
    ]
    .into_iter()
    .find(|(_, want)| matches(token, want))
    .map(|(role, _)| role)
}

/// The role this request's console session or bearer token stands for.
pub fn role(state: &HttpState, headers: &HeaderMap) -> Option<Role> {
    super::console::session_role(state, headers).or_else(|| role_of(state, bearer(headers)?))
}

/// Which key an allowed request used, for per-key rate limits: "admin",
/// "operator", or "console" (the console's session).
pub fn key_name(state: &HttpState, headers: &HeaderMap) -> &'static str {
    match bearer(headers) {
        Some(given) if matches(given, &state.admin_token) => "admin",
        Some(_) => "operator",
        None => "console",
    }
}

/// `Ok` if the request carries a token good for `role`.
// A refusal is a whole Response; it is the cold path.
#[allow(clippy::result_large_err)]
pub fn check(state: &HttpState, headers: &HeaderMap, role: Role) -> Result<(), Response> {
    let configured = match role {
        Role::Admin => state.admin_token.is_some(),
        Role::Operator => state.admin_token.is_some() || state.operator_token.is_some(),
        Role::Viewer => {
            state.admin_token.is_some()
                || state.operator_token.is_some()
                || state.viewer_token.is_some()
        }
    };
    if !configured {
        metrics::counter!(names::HTTP_AUTH_FAILURES, "reason" => "disabled").increment(1);
        return Err(super::api::error(
            StatusCode::FORBIDDEN,
            match role {
                Role::Admin => "admin API disabled: set [http] admin_token",
                Role::Operator => "operator API disabled: set [http] operator_token",
                Role::Viewer => "API disabled: set [http] viewer_token or operator_token",
            },
        ));
    }
    // The console's session cookie stands for the token signed in with.
    if super::console::session_role(state, headers).is_some_and(|r| r >= role) {
        return Ok(());
    }
    let Some(given) = bearer(headers) else {
        metrics::counter!(names::HTTP_AUTH_FAILURES, "reason" => "missing").increment(1);
        return Err(unauthorized());
    };
    if role_of(state, given).is_some_and(|r| r >= role) {
        Ok(())
    } else {
        metrics::counter!(names::HTTP_AUTH_FAILURES, "reason" => "wrong").increment(1);
        Err(unauthorized())
    }
}

fn unauthorized() -> Response {
    let mut r = super::api::error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    r.into_response()
}
