//! `/v1/users`: the registrar's users kept in the store (admins only).
//! Passwords go in and never come out: the store keeps their digest HA1s.
//! `[[users]]` from the config are listed too, and can't be changed here.
//!
//! Each change is in the store before the answer, and this node's
//! registrar has it at once; other nodes sharing the store hear of it
//! through the store (see `registrar::cluster`).

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{body, error, store_call};
use super::auth::Role;
use super::HttpState;
use crate::registrar::users::{check_display_name, check_password, check_tags, UserRecord};

pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/v1/users", get(list).post(create))
        .route(
            "/v1/users/{name}",
            get(show).put(update).patch(update).delete(remove),
        )
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn stored_json(u: &UserRecord) -> Value {
    json!({
        "name": u.name,
        "display_name": u.display_name,
        "tags": u.tags,
        "enabled": u.enabled,
        "source": "store",
        "created_at": ms(u.created_at),
        "updated_at": ms(u.updated_at),
    })
}

fn config_json(u: &crate::registrar::UserConfig) -> Value {
    json!({
        "name": u.name,
        "display_name": u.display_name,
        "tags": u.tags,
        "enabled": true,
        "source": "config",
    })
}

/// Users need the registrar (its domain is the digest realm).
// A refusal is a whole Response; it is the cold path.
#[allow(clippy::result_large_err)]
fn registrar_on(s: &HttpState) -> Result<(), Response> {
    if s.users.enabled {
        Ok(())
    } else {
        Err(error(
            StatusCode::CONFLICT,
            "the registrar is off: set [registrar] enabled and domain",
        ))
    }
}

async fn list(State(s): State<HttpState>, h: HeaderMap) -> Response {
    guard!(s, h, Role::Admin);
    let stored = tri!(store_call(s.users.store().sip_users()).await);
    let mut users: Vec<Value> = s.users.config_users.iter().map(config_json).collect();
    users.extend(
        stored
            .iter()
            .filter(|u| !s.users.in_config(&u.name))
            .map(stored_json),
    );
    Json(json!({ "users": users })).into_response()
}

async fn show(State(s): State<HttpState>, h: HeaderMap, Path(name): Path<String>) -> Response {
    guard!(s, h, Role::Admin);
    if let Some(u) = s.users.config_users.iter().find(|u| u.name == name) {
        return Json(config_json(u)).into_response();
    }
    match tri!(store_call(s.users.store().sip_user(&name)).await) {
        Some(u) => Json(stored_json(&u)).into_response(),
        None => error(StatusCode::NOT_FOUND, "no such user"),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    password: String,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default = "yes")]
    enabled: bool,
}

fn yes() -> bool {
    true
}

/// What a PUT or PATCH changes: the fields given.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserChange {
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    enabled: Option<bool>,
}

/// The checks every written field passes: 422 with the reason.
// A refusal is a whole Response; it is the cold path.
#[allow(clippy::result_large_err)]
fn checked(
    password: Option<&str>,
    display_name: Option<&str>,
    tags: Option<&[String]>,
) -> Result<(), Response> {
    let problem = password
        .map(check_password)
        .and_then(Result::err)
        .or_else(|| display_name.map(check_display_name).and_then(Result::err))
        .or_else(|| tags.map(check_tags).and_then(Result::err));
    match problem {
        Some(why) => Err(error(StatusCode::UNPROCESSABLE_ENTITY, &why)),
        None => Ok(()),
    }
}

/// Store `user`, wait until it is in, and tell this node's registrar.
async fn save(s: &HttpState, user: UserRecord) -> Result<(), Response> {
    let name = user.name.clone();
    tri_store(s.users.store().put_sip_user(user))?;
    store_call(s.users.store().flush()).await?;
    s.users.user_changed(&name).await;
    Ok(())
}

// A refusal is a whole Response; it is the cold path.
#[allow(clippy::result_large_err)]
fn tri_store(r: Result<(), crate::store::StoreError>) -> Result<(), Response> {
    r.map_err(|e| {
        tracing::error!(%e, "API: store write failed");
        error(StatusCode::INTERNAL_SERVER_ERROR, "store unavailable")
    })
}

async fn create(
    State(s): State<HttpState>,
    h: HeaderMap,
    b: Result<Json<NewUser>, JsonRejection>,
) -> Response {
    guard!(s, h, Role::Admin);
    tri!(registrar_on(&s));
    let b = tri!(body(b));
    if !crate::registrar::valid_user_name(&b.name) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "name must be 1 to 64 letters, digits or - _ . +",
        );
    }
    tri!(checked(
        Some(&b.password),
        b.display_name.as_deref(),
        Some(&b.tags)
    ));
    if s.users.in_config(&b.name) {
        return error(StatusCode::CONFLICT, "a [[users]] entry has that name");
    }
    if tri!(store_call(s.users.store().sip_user(&b.name)).await).is_some() {
        return error(StatusCode::CONFLICT, "a user with that name exists");
    }
    let mut user = UserRecord::new(&b.name, &s.users.realm, &b.password, SystemTime::now());
    user.display_name = b.display_name;
    user.tags = b.tags;
    user.enabled = b.enabled;
    tri!(save(&s, user.clone()).await);
    tracing::info!(user = %user.name, "registrar: user created");
    (StatusCode::CREATED, Json(stored_json(&user))).into_response()
}

async fn update(
    State(s): State<HttpState>,
    h: HeaderMap,
    Path(name): Path<String>,
    b: Result<Json<UserChange>, JsonRejection>,
) -> Response {
    guard!(s, h, Role::Admin);
    tri!(registrar_on(&s));
    let b = tri!(body(b));
    tri!(checked(
        b.password.as_deref(),
        b.display_name.as_deref(),
        b.tags.as_deref()
    ));
    if s.users.in_config(&name) {
        return error(
            StatusCode::CONFLICT,
            "a [[users]] entry: change it in the config file",
        );
    }
    let Some(mut user) = tri!(store_call(s.users.store().sip_user(&name)).await) else {
        return error(StatusCode::NOT_FOUND, "no such user");
    };
    if let Some(password) = &b.password {
        user.set_password(&s.users.realm, password);
    }
    if let Some(display_name) = b.display_name {
        user.display_name = Some(display_name).filter(|d| !d.is_empty());
    }
    if let Some(tags) = b.tags {
        user.tags = tags;
    }
    if let Some(enabled) = b.enabled {
        user.enabled = enabled;
    }
    user.updated_at = SystemTime::now();
    tri!(save(&s, user.clone()).await);
    tracing::info!(user = %user.name, password = b.password.is_some(), enabled = user.enabled, "registrar: user changed");
    Json(stored_json(&user)).into_response()
}

async fn remove(State(s): State<HttpState>, h: HeaderMap, Path(name): Path<String>) -> Response {
    guard!(s, h, Role::Admin);
    if s.users.in_config(&name) {
        return error(
            StatusCode::CONFLICT,
            "a [[users]] entry: remove it from the config file",
        );
    }
    if tri!(store_call(s.users.store().sip_user(&name)).await).is_none() {
        return error(StatusCode::NOT_FOUND, "no such user");
    }
    tri!(tri_store(s.users.store().delete_sip_user(&name)));
    tri!(store_call(s.users.store().flush()).await);
    s.users.user_changed(&name).await;
    tracing::info!(user = %name, "registrar: user deleted");
    StatusCode::NO_CONTENT.into_response()
}
