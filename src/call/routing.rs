//! Inbound routing: DID / caller / trunk patterns to a flow name.

use crate::config::{glob_match, RouteConfig};

#[derive(Debug, Clone)]
pub struct Router {
    routes: Vec<RouteConfig>,
}

impl Router {
    pub fn new(routes: Vec<RouteConfig>) -> Router {
        Router { routes }
    }

    /// The first route that matches, in config order.
    pub fn route(&self, did: &str, caller: &str, trunk: Option<&str>) -> Option<&RouteConfig> {
        self.routes.iter().find(|r| {
            glob_match(&r.did, did)
                && glob_match(&r.caller, caller)
                && r.trunk.as_deref().is_none_or(|t| Some(t) == trunk)
        })
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
            flow: flow.into(),
            ring_ms: 0,
        }
    }

    #[test]
    fn first_match_wins() {
        let r = Router::new(vec![
            route("1000", "*", None, "a"),
            route("+1555*", "*", Some("carrier"), "b"),
            route("*", "+44*", None, "c"),
        ]);
        let flow = |did, caller, trunk| r.route(did, caller, trunk).map(|r| r.flow.as_str());
        assert_eq!(flow("1000", "x", None), Some("a"));
        assert_eq!(flow("+15551", "x", Some("carrier")), Some("b"));
        assert_eq!(flow("+15551", "x", Some("other")), None);
        assert_eq!(flow("9", "+4420", None), Some("c"));
        assert_eq!(flow("9", "+1", None), None);
    }
}
