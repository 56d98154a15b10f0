//! Bearer tokens for the API: operators (read conversations, write into a
//! chat) and admins (everything, reload). A role with no token configured
//! is closed, never open.

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::HttpState;
use crate::telemetry::names;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Operator,
    Admin,
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
    };
    if !configured {
        metrics::counter!(names::HTTP_AUTH_FAILURES, "reason" => "disabled").increment(1);
        return Err(super::api::error(
            StatusCode::FORBIDDEN,
            match role {
                Role::Admin => "admin API disabled: set [http] admin_token",
                Role::Operator => "operator API disabled: set [http] operator_token",
            },
        ));
    }
    // The console's session cookie stands for the operator token.
    if role == Role::Operator && super::console::session_ok(state, headers) {
        return Ok(());
    }
    let Some(given) = bearer(headers) else {
        metrics::counter!(names::HTTP_AUTH_FAILURES, "reason" => "missing").increment(1);
        return Err(unauthorized());
    };
    let ok = matches(given, &state.admin_token)
        || (role == Role::Operator && matches(given, &state.operator_token));
    if ok {
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
