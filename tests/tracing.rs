//! Per-call tracing in the real binary. A SIPp call runs a flow of say,
//! http, send_sms (to the Twilio stand-in) and hangup. Without
//! `[telemetry]`, every log line the call's flow and call control write
//! names the call, and nothing is exported even with the OTel environment
//! variables pointing at a collector. With `otlp_endpoint`, a collector
//! stand-in receives the call as one trace: the `call` span at its root,
//! one `node` span per node in order, and the http request and the SMS
//! send under their nodes; a web chat is a trace of its own under `chat`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use common::standin::*;
use common::*;

/// The flow every call here runs; HOOK is the stand-in's address.
const FLOW: &str = r#"name = "traced"

[[nodes]]
id = "greet"
type = "say"
text = "Thank you for calling."
language = "en"
next = "lookup"

[[nodes]]
id = "lookup"
type = "http"
method = "POST"
url = "HOOK/hook/traced"
body = '{"caller": "{{caller}}"}'
next = "text"

[[nodes]]
id = "text"
type = "send_sms"
body = "Thanks for calling"
next = "bye"

[[nodes]]
id = "bye"
type = "hangup"
"#;

/// The web chat's flow: two bot messages, then its end closes the chat.
const CHAT_FLOW: &str = r#"name = "traced-chat"
channel = "chat"

[[nodes]]
id = "hello"
type = "message"
text = "Hello"
next = "bye"

[[nodes]]
id = "bye"
type = "message"
text = "Bye"
"#;

/// What the collector stand-in was sent, decoded, in order.
type Exports = Arc<Mutex<Vec<ExportTraceServiceRequest>>>;

/// An OTLP/HTTP collector on loopback: POST /v1/traces with protobuf, as
/// the OTLP spec has it; anything else gets the collector's 415/400. The
/// answer is an empty ExportTraceServiceResponse (full success).
fn collector() -> (u16, Exports, Arc<Mutex<u32>>) {
    let exports: Exports = Arc::default();
    let requests = Arc::new(Mutex::new(0u32));
    let app = axum::Router::new()
        .route(
            "/v1/traces",
            post(
                |State((exports, requests)): State<(Exports, Arc<Mutex<u32>>)>,
                 headers: HeaderMap,
                 body: Bytes| async move {
                    *requests.lock().unwrap() += 1;
                    let protobuf = headers
                        .get("content-type")
                        .is_some_and(|v| v == "application/x-protobuf");
                    if !protobuf {
                        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, Vec::new());
                    }
                    match ExportTraceServiceRequest::decode(body) {
                        Ok(req) => {
                            exports.lock().unwrap().push(req);
                            (
                                StatusCode::OK,
                                ExportTraceServiceResponse::default().encode_to_vec(),
                            )
                        }
                        Err(_) => (StatusCode::BAD_REQUEST, Vec::new()),
                    }
                },
            ),
        )
        .with_state((exports.clone(), requests.clone()));
    (serve(app), exports, requests)
}

/// The gateway with the traced flow on every call and the traced chat
/// flow on the web chat; `extra` is appended.
fn gateway(stand_in_port: u16, extra: &str, env: &[(&str, &str)]) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("traced.toml"),
        FLOW.replace("HOOK", &format!("http://127.0.0.1:{stand_in_port}")),
    )
    .unwrap();
    std::fs::write(dir.path().join("traced-chat.toml"), CHAT_FLOW).unwrap();
    let gw = Gateway::start_with_env(
        &format!(
            "[flows]\ndir = \"{flows}\"\n\n\
             [messaging.sms]\nprovider = \"twilio\"\nbase_url = \"http://127.0.0.1:{stand_in_port}\"\naccount_sid = \"AC0123456789abcdef\"\nauth_token = \"secret-token\"\nfrom = \"+15550100000\"\n\n\
             [chat]\nweb_flow = \"traced-chat\"\n\n\
             {extra}\n\
             [[routes]]\nflow = \"traced\"\n",
            flows = dir.path().display(),
        ),
        env,
    );
    // The flow files are read at start; the directory may go.
    drop(dir);
    gw
}

/// One call from +15551234567 that stays until the flow hangs up; its
/// send_sms reached the Twilio stand-in (`sent`).
fn call(gw: &Gateway, sent: &Log) {
    let run = sipp(
        &[
            "-sf",
            &scenario("uac_wait_bye.xml"),
            &gw.sip_addr(),
            "-s",
            "4000",
            "-m",
            "1",
        ],
        Duration::from_secs(60),
    );
    assert!(
        run.ok(),
        "the flow's hangup ends the call: {}",
        run.describe()
    );
    let sms = wait_seen(sent, Duration::from_secs(5), |s| {
        s.path.starts_with("twilio/")
    });
    assert!(sms.is_some(), "the SMS went out");
}

/// SIGTERM, and wait for a clean exit (the drain flushes what is queued).
fn stop(gw: &mut Gateway) {
    gw.signal(libc::SIGTERM);
    let status = gw.wait_exit(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?}:\n{}",
        gw.log()
    );
}

/// The target of a text-format log line (`crossline::flow::interp`).
fn target(line: &str) -> Option<&str> {
    line.split(' ')
        .find(|t| t.starts_with("crossline") && t.ends_with(':') && !t.contains('{'))
        .map(|t| t.trim_end_matches(':'))
}

/// Modules whose lines, during a call, are about that call.
fn about_the_call(target: &str) -> bool {
    [
        "crossline::flow",
        "crossline::messaging",
        "crossline::tts",
        "crossline::call",
    ]
    .iter()
    .any(|m| target == *m || target.starts_with(&format!("{m}::")))
}

#[test]
fn every_log_line_of_a_call_names_it_and_nothing_is_exported_without_an_endpoint() {
    require("espeak-ng", "espeak-ng");
    let (port, sent, _) = stand_in();
    let (collector_port, _, requests) = collector();
    let otel = format!("http://127.0.0.1:{collector_port}");
    // The SDK's own variables must not switch export on.
    let mut gw = gateway(
        port,
        "",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &otel),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                &format!("{otel}/v1/traces"),
            ),
        ],
    );
    call(&gw, &sent);
    let log = gw.log();
    let lines: Vec<&str> = log.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.contains("incoming call"))
        .unwrap_or_else(|| panic!("no incoming call:\n{log}"));
    // `call{id=call-N ...}` opens every line about the call.
    let span = lines[start]
        .split("call{id=")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .map(|id| format!("call{{id={id} "))
        .unwrap_or_else(|| panic!("the incoming call line is not in the call's span:\n{log}"));
    let end = start
        + lines[start..]
            .iter()
            .position(|l| l.contains("call ended"))
            .unwrap_or_else(|| panic!("the call never ended:\n{log}"));
    let mut checked = 0;
    for line in &lines[start..=end] {
        if target(line).is_some_and(about_the_call) {
            assert!(line.contains(&span), "a line without {span}: {line}\n{log}");
            checked += 1;
        }
    }
    // Among them: each node's line, inside its `node` span, and the SMS.
    for (needle, node) in [
        ("flow node", "node{id=greet type=say}"),
        ("flow node", "node{id=lookup type=http}"),
        ("SMS sent", "node{id=text type=send_sms}"),
        ("flow node", "node{id=bye type=hangup}"),
    ] {
        assert!(
            lines[start..=end]
                .iter()
                .any(|l| l.contains(needle) && l.contains(&span) && l.contains(node)),
            "no {needle:?} line in {span}…:{node}:\n{log}"
        );
    }
    assert!(checked >= 6, "only {checked} lines checked:\n{log}");
    // The span shows the caller masked, never whole.
    assert!(
        lines[start].contains("caller=+155******67"),
        "{}",
        lines[start]
    );
    assert!(!log.contains("15551234567"), "unmasked number in logs");
    assert!(
        !log.contains("OTLP"),
        "no exporter without otlp_endpoint:\n{log}"
    );

    stop(&mut gw);
    assert_eq!(
        *requests.lock().unwrap(),
        0,
        "nothing reached the collector"
    );
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn text<'a>(attrs: &'a [KeyValue], key: &str) -> &'a str {
    match attr(attrs, key) {
        Some(any_value::Value::StringValue(s)) => s,
        other => panic!("{key}: expected a string, got {other:?}"),
    }
}

fn integer(attrs: &[KeyValue], key: &str) -> i64 {
    match attr(attrs, key) {
        Some(any_value::Value::IntValue(i)) => *i,
        other => panic!("{key}: expected an integer, got {other:?}"),
    }
}

/// `child` sits under `parent`: its parent id, trace and time inside.
fn assert_under(child: &Span, parent: &Span) {
    assert_eq!(
        child.parent_span_id, parent.span_id,
        "{} under {}",
        child.name, parent.name
    );
    assert_eq!(
        child.trace_id, parent.trace_id,
        "{} in {}'s trace",
        child.name, parent.name
    );
    assert!(
        parent.start_time_unix_nano <= child.start_time_unix_nano
            && child.end_time_unix_nano <= parent.end_time_unix_nano
            && child.start_time_unix_nano <= child.end_time_unix_nano,
        "{} [{}, {}] not within {} [{}, {}]",
        child.name,
        child.start_time_unix_nano,
        child.end_time_unix_nano,
        parent.name,
        parent.start_time_unix_nano,
        parent.end_time_unix_nano,
    );
}

#[test]
fn a_call_and_a_chat_are_exported_as_one_trace_each() {
    require("espeak-ng", "espeak-ng");
    let (port, sent, _) = stand_in();
    let (collector_port, exports, _) = collector();
    let mut gw = gateway(
        port,
        &format!(
            "[store]\nnode_id = \"node-a\"\n\n\
             [telemetry]\notlp_endpoint = \"http://127.0.0.1:{collector_port}\"\n"
        ),
        &[],
    );
    call(&gw, &sent);
    // A web chat: its flow starts when the page's socket connects.
    let (conversation, cookies) = common::chat::open_chat(&gw);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use common::chat::*;
        let mut ws = connect(&gw, &conversation, &cookies).await;
        send(&mut ws, serde_json::json!({"type": "resume", "after": 0})).await;
        assert_eq!(next(&mut ws).await["text"], "Hello");
        assert_eq!(next(&mut ws).await["text"], "Bye");
    });
    // The batches go out on their own within seconds, counted.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while ["call", "chat"].iter().any(|name| {
        !exports
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .any(|s| s.name == *name)
    }) {
        assert!(
            std::time::Instant::now() < deadline,
            "no call or chat span exported:\n{}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, metrics) = gw.http_get("/metrics");
    assert!(
        metrics.contains(r#"crossline_otlp_exports_total{outcome="ok"}"#),
        "{metrics}"
    );
    // The drain's flush sends whatever is left.
    stop(&mut gw);
    let db = rusqlite::Connection::open(gw.db_path()).unwrap();
    let call_id: String = db
        .query_row("SELECT call_id FROM calls", [], |r| r.get(0))
        .unwrap();

    let exports = exports.lock().unwrap().clone();
    let mut spans: Vec<Span> = Vec::new();
    for req in &exports {
        for rs in &req.resource_spans {
            let resource = rs.resource.as_ref().expect("a resource");
            assert_eq!(text(&resource.attributes, "service.name"), "crossline");
            assert_eq!(text(&resource.attributes, "service.instance.id"), "node-a");
            for ss in &rs.scope_spans {
                spans.extend(ss.spans.iter().cloned());
            }
        }
    }
    // The chat is a trace of its own, its flow's nodes under its root.
    let chat_trace = spans
        .iter()
        .find(|s| s.name == "chat")
        .map(|s| s.trace_id.clone())
        .unwrap_or_else(|| panic!("no chat span: {spans:#?}"));
    let (chat_spans, spans): (Vec<Span>, Vec<Span>) =
        spans.into_iter().partition(|s| s.trace_id == chat_trace);
    let chat = &chat_spans[chat_spans
        .iter()
        .position(|s| s.name == "chat")
        .unwrap_or(0)];
    assert!(chat.parent_span_id.is_empty(), "the chat span is a root");
    assert_eq!(text(&chat.attributes, "conversation"), conversation);
    assert_eq!(text(&chat.attributes, "channel"), "web");
    let mut chat_nodes: Vec<&Span> = chat_spans.iter().filter(|s| s.name == "node").collect();
    assert_eq!(chat_spans.len(), 1 + chat_nodes.len(), "{chat_spans:#?}");
    chat_nodes.sort_by_key(|s| s.start_time_unix_nano);
    let said: Vec<&str> = chat_nodes
        .iter()
        .map(|s| text(&s.attributes, "id"))
        .collect();
    assert_eq!(said, ["hello", "bye"]);
    for n in &chat_nodes {
        assert_under(n, chat);
    }

    let named = |name: &str| -> Vec<&Span> { spans.iter().filter(|s| s.name == name).collect() };
    let calls = named("call");
    assert_eq!(calls.len(), 1, "one call span: {spans:#?}");
    let root = calls[0];
    assert!(root.parent_span_id.is_empty(), "the call span is a root");
    assert!(text(&root.attributes, "id").starts_with("call-"));
    assert_eq!(text(&root.attributes, "call_id"), call_id);
    assert_eq!(text(&root.attributes, "direction"), "inbound");
    assert_eq!(text(&root.attributes, "caller"), "+155******67");
    assert_eq!(text(&root.attributes, "did"), "****");
    // Everything else is the call's one trace.
    for s in &spans {
        assert_eq!(s.trace_id, root.trace_id, "{} in another trace", s.name);
    }

    let mut nodes = named("node");
    nodes.sort_by_key(|s| s.start_time_unix_nano);
    let ran: Vec<(&str, &str)> = nodes
        .iter()
        .map(|s| (text(&s.attributes, "id"), text(&s.attributes, "type")))
        .collect();
    assert_eq!(
        ran,
        [
            ("greet", "say"),
            ("lookup", "http"),
            ("text", "send_sms"),
            ("bye", "hangup")
        ]
    );
    for n in &nodes {
        assert_under(n, root);
    }
    for pair in nodes.windows(2) {
        assert!(
            pair[0].end_time_unix_nano <= pair[1].start_time_unix_nano,
            "{:?} overlaps the next node",
            text(&pair[0].attributes, "id")
        );
    }
    let node = |id: &str| {
        *nodes
            .iter()
            .find(|s| text(&s.attributes, "id") == id)
            .unwrap()
    };

    let sends = named("provider_send");
    assert_eq!(sends.len(), 1, "{sends:#?}");
    assert_under(sends[0], node("text"));
    assert_eq!(text(&sends[0].attributes, "channel"), "sms");
    assert_eq!(text(&sends[0].attributes, "provider"), "twilio");
    assert_eq!(text(&sends[0].attributes, "outcome"), "sent");

    let requests = named("http");
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_under(requests[0], node("lookup"));
    assert_eq!(text(&requests[0].attributes, "method"), "POST");
    assert_eq!(integer(&requests[0].attributes, "status"), 200);

    // Log lines inside a span travel with it as events, masked as logged.
    let events: Vec<&str> = root.events.iter().map(|e| e.name.as_str()).collect();
    assert!(events.contains(&"incoming call"), "{events:?}");
    assert!(events.contains(&"call ended"), "{events:?}");
    let everything = format!("{spans:?}{chat_spans:?}");
    assert!(
        !everything.contains("15551234567"),
        "unmasked number exported"
    );
}

/// A collector that is down: the call runs as ever, the failed export is
/// counted, logged once, and the drain still ends promptly.
#[test]
fn a_collector_that_is_down_costs_the_call_nothing() {
    require("espeak-ng", "espeak-ng");
    let (port, sent, _) = stand_in();
    // Bound, then let go: nothing listens there.
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut gw = gateway(
        port,
        &format!("[telemetry]\notlp_endpoint = \"http://127.0.0.1:{down}\"\n"),
        &[],
    );
    call(&gw, &sent);
    gw.wait_for_log("OTLP export failed", Duration::from_secs(15));
    let (_, metrics) = gw.http_get("/metrics");
    assert!(
        metrics.contains(r#"crossline_otlp_exports_total{outcome="failed"}"#),
        "{metrics}"
    );
    let started = std::time::Instant::now();
    stop(&mut gw);
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "the final flush held the exit for {:?}",
        started.elapsed()
    );
    assert_eq!(
        gw.log().matches("OTLP export failed").count(),
        1,
        "logged at most once a minute:\n{}",
        gw.log()
    );
}
