//! Inbound routing: DID / caller / trunk patterns to a flow name.

use std::sync::Arc;

use crate::config::{glob_match, RouteConfig};
use crate::media::player::HoldProgram;

/// The hold programs call control plays: `[media]`'s, and each route's
/// own (index by route; `None` where a route has none); and each route's
/// early media, the same way.
#[derive(Debug, Clone)]
pub struct HoldPrograms {
    pub default: Arc<HoldProgram>,
    pub routes: Vec<Option<Arc<HoldProgram>>>,
    pub early_media: Vec<Option<EarlyAudio>>,
}

/// What a route plays as early media while the call rings.
#[derive(Debug, Clone)]
pub struct EarlyAudio {
    pub samples: Arc<[i16]>,
    /// Ringback loops; an announcement plays once.
    pub looped: bool,
}

impl HoldPrograms {
    /// `[media]`'s program for every route; no early media.
    pub fn only(default: Arc<HoldProgram>) -> HoldPrograms {
        HoldPrograms {
            default,
            routes: Vec::new(),
            early_media: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Router {
    routes: Vec<RouteConfig>,
    holds: HoldPrograms,
    /// Each route's webhook app (index by route).
    apps: Vec<Option<RouteApp>>,
}

/// A route's webhook app: a one-node flow that runs before the answer,
/// and where its status events go.
#[derive(Debug, Clone)]
pub struct RouteApp {
    pub flow: Arc<crate::flow::Flow>,
    pub status: Option<Arc<crate::twiml::StatusTarget>>,
}

/// A matched route, the hold program its built-in flows play and its
/// early media.
pub struct Routed<'a> {
    pub config: &'a RouteConfig,
    pub hold: &'a Arc<HoldProgram>,
    pub early_media: Option<&'a EarlyAudio>,
    /// The route's webhook app.
    pub app: Option<&'a RouteApp>,
}

impl Router {
    pub fn new(routes: Vec<RouteConfig>, holds: HoldPrograms) -> Router {
        let apps = routes
            .iter()
            .map(|r| {
                r.app.as_ref().map(|a| RouteApp {
                    flow: Arc::new(crate::twiml::app_flow(a)),
                    status: crate::twiml::StatusTarget::of(a).map(Arc::new),
                })
            })
            .collect();
        Router {
            routes,
            holds,
            apps,
        }
    }

    /// The first route that matches, in config order.
    pub fn route(&self, did: &str, caller: &str, trunk: Option<&str>) -> Option<Routed<'_>> {
        let (i, config) = self.routes.iter().enumerate().find(|(_, r)| {
            glob_match(&r.did, did)
                && glob_match(&r.caller, caller)
                && r.trunk.as_deref().is_none_or(|t| Some(t) == trunk)
        })?;
        let hold = match self.holds.routes.get(i) {
            Some(Some(own)) => own,
            _ => &self.holds.default,
        };
        let early_media = self.holds.early_media.get(i).and_then(Option::as_ref);
        let app = self.apps.get(i).and_then(Option::as_ref);
        Some(Routed {
            config,
            hold,
            early_media,
            app,
        })
    }

    /// `[media]`'s hold program.
    pub fn default_hold(&self) -> &Arc<HoldProgram> {
        &self.holds.default
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(did: &str, caller: &str, trunk: Option<&str>, flow: &str) -> RouteConfig {
        RouteConfig {
            did: did.into(),
            caller: caller.into(),
            trunk: trunk.map(str::to_string),
            ..RouteConfig::to_flow(flow)
        }
    }

    #[test]
    fn first_match_wins() {
        let r = Router::new(
            vec![
                route("1000", "*", None, "a"),
                route("+1555*", "*", Some("carrier"), "b"),
                route("*", "+44*", None, "c"),
            ],
            HoldPrograms::only(Arc::new(HoldProgram::new(
                Vec::new(),
                None,
                std::time::Duration::from_secs(15),
                0.0,
            ))),
        );
        let flow = |did, caller, trunk| r.route(did, caller, trunk).map(|r| r.config.flow.as_str());
        assert_eq!(flow("1000", "x", None), Some("a"));
        assert_eq!(flow("+15551", "x", Some("carrier")), Some("b"));
        assert_eq!(flow("+15551", "x", Some("other")), None);
        assert_eq!(flow("9", "+4420", None), Some("c"));
        assert_eq!(flow("9", "+1", None), None);
    }
}
