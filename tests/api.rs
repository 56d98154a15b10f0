//! The /v1 API against the running binary: every path in the OpenAPI
//! document is served and guarded as documented, CORS answers only the
//! configured origin, and leads and consents round-trip through SQLite.

mod common;

use common::*;

const ADMIN: &str = "admin-token-0123456789abcdef";
const OPERATOR: &str = "operator-token-0123456789ab";

fn gateway() -> Gateway {
    Gateway::start(&format!(
        "[http]\nadmin_token = \"{ADMIN}\"\noperator_token = \"{OPERATOR}\"\ncors_origins = [\"https://console.example.com\"]\n"
    ))
}

#[test]
fn every_documented_route_is_served_and_guarded() {
    let gw = gateway();
    let doc = gw.http_get("/v1/openapi.json");
    assert_eq!(doc.0, 200);
    let doc: serde_json::Value = serde_json::from_str(&doc.1).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 12, "{}", paths.len());
    let operator = format!("Bearer {OPERATOR}");
    let admin = format!("Bearer {ADMIN}");
    for (path, item) in paths {
        let concrete = path
            .replace("{call_id}", "no-such-call")
            .replace("{id}", "no-such-id")
            .replace("{name}", "no-such-user");
        for (method, op) in item.as_object().unwrap() {
            let m = method.to_ascii_uppercase();
            let body = (m == "POST").then_some("{}");
            // A good sign-in clears this client's failed ones, so the wrong
            // tokens below never add up to the sign-in throttle's block.
            let reset = gw.http("GET", "/v1/status", &[("Authorization", &operator)], None);
            assert_eq!(reset.status, 200);
            let public = op["security"] == serde_json::json!([]);
            let anonymous = gw.http(&m, &concrete, &[], body);
            if public {
                assert!(
                    [200, 204, 400, 422].contains(&anonymous.status),
                    "{m} {path}: {}",
                    anonymous.status
                );
                continue;
            }
            assert_eq!(anonymous.status, 401, "{m} {path} without a token");
            assert!(anonymous.headers.contains("www-authenticate: bearer"));
            let wrong = gw.http(&m, &concrete, &[("Authorization", "Bearer nope")], body);
            assert_eq!(wrong.status, 401, "{m} {path} with a wrong token");
            let admin_only = path.starts_with("/v1/admin/") || path.starts_with("/v1/users");
            let as_operator = gw.http(&m, &concrete, &[("Authorization", &operator)], body);
            if admin_only {
                assert_eq!(as_operator.status, 401, "{m} {path} is admin-only");
                continue;
            }
            // Served (not 404 for the route, not 405): a missing record is a
            // JSON 404 with an error, a bad body a 400/422.
            assert!(
                [200, 400, 404, 409, 422].contains(&as_operator.status),
                "{m} {path}: {} {}",
                as_operator.status,
                as_operator.body
            );
            if as_operator.status != 200 {
                assert!(as_operator.json()["error"].is_string(), "{m} {path}");
            }
            let as_admin = gw.http(&m, &concrete, &[("Authorization", &admin)], body);
            assert_eq!(as_admin.status, as_operator.status, "{m} {path} as admin");
        }
    }
    let metrics = gw.http_get("/metrics").1;
    assert!(metrics.contains("crossline_http_auth_failures_total{reason=\"missing\"}"));
}

#[test]
fn cors_only_for_configured_origins() {
    let gw = gateway();
    let pre = |origin: &str| {
        gw.http(
            "OPTIONS",
            "/v1/calls",
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "GET"),
                ("Access-Control-Request-Headers", "authorization"),
            ],
            None,
        )
    };
    let ok = pre("https://console.example.com");
    assert!(
        ok.headers
            .contains("access-control-allow-origin: https://console.example.com"),
        "{}",
        ok.headers
    );
    let other = pre("https://evil.example.net");
    assert!(
        !other.headers.contains("access-control-allow-origin"),
        "{}",
        other.headers
    );
    // A console may change and remove things too (users, recordings).
    let delete = gw.http(
        "OPTIONS",
        "/v1/users/alice",
        &[
            ("Origin", "https://console.example.com"),
            ("Access-Control-Request-Method", "DELETE"),
            ("Access-Control-Request-Headers", "authorization"),
        ],
        None,
    );
    let allowed = delete
        .headers
        .lines()
        .find(|l| l.starts_with("access-control-allow-methods:"))
        .unwrap_or_default()
        .to_string();
    // (The harness gives headers lower-cased.)
    for method in ["get", "post", "put", "patch", "delete"] {
        assert!(allowed.contains(method), "{method}: {}", delete.headers);
    }
}

#[test]
fn leads_and_consents_are_validated_and_stored() {
    let gw = gateway();
    let auth = format!("Bearer {OPERATOR}");
    let h = [("Authorization", auth.as_str())];
    let bad = gw.http("POST", "/v1/leads", &h, Some(r#"{"email":"not-an-email"}"#));
    assert_eq!(bad.status, 422, "{}", bad.body);
    let bad = gw.http("POST", "/v1/leads", &h, Some(r#"{"phone":"600 123 456"}"#));
    assert_eq!(bad.status, 422);
    assert!(bad.body.contains("country code"), "{}", bad.body);
    let unknown = gw.http("POST", "/v1/leads", &h, Some(r#"{"mail":"a@b.example"}"#));
    assert_eq!(
        unknown.status, 422,
        "unknown fields are refused: {}",
        unknown.body
    );
    let made = gw.http(
        "POST",
        "/v1/leads",
        &h,
        Some(r#"{"name":"Ana","email":"Ana@Example.COM","phone":"+34 600 12 34 56"}"#),
    );
    assert_eq!(made.status, 201, "{}", made.body);
    let consent = gw.http(
        "POST",
        "/v1/consents",
        &h,
        Some(r#"{"subject":"+34600123456","purpose":"callback","text":"We may call you back about your order.","given":true}"#),
    );
    assert_eq!(consent.status, 201, "{}", consent.body);
    // Writes are queued to the store's writer thread: give it a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let leads = loop {
        let leads = gw.http("GET", "/v1/leads", &h, None).json();
        if leads["leads"].as_array().is_some_and(|l| !l.is_empty())
            || std::time::Instant::now() > deadline
        {
            break leads;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(leads["leads"][0]["email"], "Ana@example.com");
    assert_eq!(leads["leads"][0]["phone"], "+34600123456");
    let consents = gw
        .http("GET", "/v1/consents?subject=%2B34600123456", &h, None)
        .json();
    assert_eq!(consents["consents"][0]["given"], true);
    assert_eq!(
        consents["consents"][0]["text"],
        "We may call you back about your order."
    );
    assert!(consents["consents"][0]["created_at"].as_u64().unwrap() > 1_700_000_000_000);
}

/// Guessing the operator token through the console's sign-in is slowed
/// per client: after five free failures each wrong guess doubles the
/// wait, and while it lasts that client's attempts get 429 unchecked.
/// Another client (told apart behind a trusted proxy) signs in at once.
#[test]
fn console_sign_in_is_throttled_per_client() {
    let gw = Gateway::start(&format!(
        "[http]\nadmin_token = \"{ADMIN}\"\noperator_token = \"{OPERATOR}\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n"
    ));
    let sign_in = |token: &str, client: &str| {
        gw.http(
            "POST",
            "/v1/console/session",
            &[("X-Forwarded-For", client)],
            Some(&format!("{{\"token\": \"{token}\"}}")),
        )
    };
    // The right token works while nothing has failed.
    assert_eq!(sign_in(OPERATOR, "203.0.113.1").status, 204);
    for i in 0..6 {
        let r = sign_in(&format!("wrong-guess-number-{i}"), "203.0.113.1");
        assert_eq!(r.status, 401, "{} {}", r.status, r.body);
    }
    let blocked = sign_in(OPERATOR, "203.0.113.1");
    assert_eq!(blocked.status, 429, "{}", blocked.body);
    assert!(
        blocked.headers.contains("retry-after: 1"),
        "{}",
        blocked.headers
    );
    // Someone else behind the same proxy is not locked out.
    assert_eq!(sign_in(OPERATOR, "203.0.113.2").status, 204);
    // The wait is over after its second: the right token works again.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(sign_in(OPERATOR, "203.0.113.1").status, 204);
    assert!(gw
        .http_get("/metrics")
        .1
        .contains("crossline_http_auth_failures_total{reason=\"throttled\"}"));
}

/// Every response carries the security headers; pages with a policy of
/// their own keep it; no HSTS over plain HTTP.
#[test]
fn security_headers_on_every_response() {
    let gw = gateway();
    for path in ["/healthz", "/console/", "/v1/openapi.json", "/no-such-page"] {
        let r = gw.http("GET", path, &[], None);
        for want in [
            "x-content-type-options: nosniff",
            "referrer-policy: no-referrer",
            "x-frame-options: deny",
            "content-security-policy: ",
        ] {
            assert!(r.headers.contains(want), "{path}: no {want}\n{}", r.headers);
        }
        assert!(
            !r.headers.contains("strict-transport-security"),
            "{path}: HSTS over plain HTTP"
        );
    }
    let health = gw.http("GET", "/healthz", &[], None);
    assert!(health
        .headers
        .contains("content-security-policy: default-src 'none'; frame-ancestors 'none'"));
    // The console keeps the policy it runs under.
    let console = gw.http("GET", "/console/", &[], None);
    assert!(
        console
            .headers
            .contains("content-security-policy: default-src 'self'; connect-src 'self'"),
        "{}",
        console.headers
    );
}

/// Without CORS, /v1 answers still say no-store; bodies are held to each
/// route's limit (32 KiB for /v1 JSON, 4 KiB for the console sign-in).
#[test]
fn api_answers_are_not_cached_and_bodies_are_limited_per_route() {
    let gw = Gateway::start(&format!(
        "[http]\nadmin_token = \"{ADMIN}\"\noperator_token = \"{OPERATOR}\"\n"
    ));
    let auth = format!("Bearer {OPERATOR}");
    let h = [("Authorization", auth.as_str())];
    let calls = gw.http("GET", "/v1/calls", &h, None);
    assert_eq!(calls.status, 200, "{}", calls.body);
    assert!(
        calls.headers.contains("cache-control: no-store"),
        "{}",
        calls.headers
    );
    let padding = "x".repeat(40 * 1024);
    let big = format!(r#"{{"email":"a@b.example","note":"{padding}"}}"#);
    assert_eq!(gw.http("POST", "/v1/leads", &h, Some(&big)).status, 413);
    let big_login = format!(r#"{{"token":"{}"}}"#, "y".repeat(8 * 1024));
    assert_eq!(
        gw.http("POST", "/v1/console/session", &[], Some(&big_login))
            .status,
        413
    );
    // A normal sign-in still works.
    let ok = gw.http(
        "POST",
        "/v1/console/session",
        &[],
        Some(&format!(r#"{{"token":"{OPERATOR}"}}"#)),
    );
    assert_eq!(ok.status, 204, "{}", ok.body);
}

/// Every series on /metrics carries the `# HELP` text from the one names
/// table (src/telemetry/names.rs), so nothing is emitted undescribed.
#[test]
fn metrics_are_described_from_the_names_table() {
    use crossline::telemetry::names;
    let gw = gateway();
    // One counter from an HTTP handler, beside the ones exported each tick.
    assert_eq!(gw.http_get("/v1/calls").0, 401);
    std::thread::sleep(std::time::Duration::from_millis(1500)); // one export tick
    let (status, metrics) = gw.http_get("/metrics");
    assert_eq!(status, 200);
    let help = |name: &str| {
        let prefix = format!("# HELP {name} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .map(str::to_owned)
    };
    for always in [
        names::SIP_PARSE_ERRORS,
        names::CALLS_ACTIVE,
        names::RTP_JITTER_MICROSECONDS_SUM,
        names::DRAINING,
        names::HTTP_AUTH_FAILURES,
    ] {
        assert_eq!(
            help(always.name).as_deref(),
            Some(always.help),
            "{}: {metrics}",
            always.name
        );
    }
    // The release build's allocator (jemalloc) reports its own view.
    let gauge = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
    };
    let live = gauge(names::ALLOCATOR_ALLOCATED_BYTES.name).unwrap_or(0.0);
    let resident = gauge(names::ALLOCATOR_RESIDENT_BYTES.name).unwrap_or(0.0);
    assert!(live > 1_000_000.0, "{live} bytes live: {metrics}");
    assert!(resident >= live, "{resident} resident, {live} live");
    let samples = metrics
        .lines()
        .filter(|l| l.starts_with("crossline_"))
        .map(|l| l.split(['{', ' ']).next().unwrap_or(l));
    for sample in samples {
        // A histogram renders as a summary: its `_sum` and `_count` series
        // share the base name's HELP line.
        let base = ["_sum", "_count"]
            .iter()
            .find_map(|s| sample.strip_suffix(s))
            .filter(|b| names::ALL.iter().any(|m| m.name == *b))
            .unwrap_or(sample);
        let metric = names::ALL.iter().find(|m| m.name == base);
        assert!(metric.is_some(), "{sample} is not in the names table");
        assert_eq!(help(base).as_deref(), metric.map(|m| m.help), "{base}");
    }
}

/// The viewer token (and a console session signed in with it) reads
/// status, queues and agents, and nothing else: operator routes and
/// pausing an agent answer 401.
#[test]
fn a_viewer_reads_queues_and_agents_only() {
    const VIEWER: &str = "viewer-token-0123456789abc";
    let gw = Gateway::start(&format!(
        "[http]\noperator_token = \"{OPERATOR}\"\nviewer_token = \"{VIEWER}\"\n\n\
         [[queues]]\nname = \"support\"\nagents = [{{ target = \"sip:a@127.0.0.1:5999\" }}]\n"
    ));
    let sign_in = gw.http(
        "POST",
        "/v1/console/session",
        &[],
        Some(&format!("{{\"token\": \"{VIEWER}\"}}")),
    );
    assert_eq!(sign_in.status, 204, "{}", sign_in.body);
    let cookie = sign_in
        .raw_headers
        .lines()
        .find_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or(l.strip_prefix("Set-Cookie: "))
        })
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_string();
    let bearer = format!("Bearer {VIEWER}");
    for (name, header) in [
        ("Authorization", bearer.as_str()),
        ("Cookie", cookie.as_str()),
    ] {
        let get = |path: &str| gw.http("GET", path, &[(name, header)], None);
        let status = get("/v1/status");
        assert_eq!(status.status, 200, "{name}: {}", status.body);
        assert_eq!(status.json()["role"], "viewer");
        let queues = get("/v1/queues");
        assert_eq!(queues.json()["queues"][0]["name"], "support", "{name}");
        assert_eq!(queues.json()["queues"][0]["sla_secs"], 20, "{name}");
        assert_eq!(get("/v1/agents").status, 200, "{name}");
        for path in ["/v1/calls", "/v1/conversations", "/v1/flows"] {
            assert_eq!(get(path).status, 401, "{name} {path}");
        }
        let pause = gw.http(
            "POST",
            "/v1/agents/state",
            &[(name, header)],
            Some(r#"{"target": "sip:a@127.0.0.1:5999", "state": "paused"}"#),
        );
        assert_eq!(pause.status, 401, "{name}: {}", pause.body);
    }
    let operator = gw.api(OPERATOR, "GET", "/v1/status", None);
    assert_eq!(operator.json()["role"], "operator");
    let agents = gw.api(OPERATOR, "GET", "/v1/agents", None).json();
    assert_eq!(agents["agents"][0]["state"], "available", "{agents}");
}
