//! Stand-in provider servers for the adapter tests: record every request,
//! answer with whatever the test's responder decides. And an in-memory
//! provider for what sits above the adapters.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;

use super::{BoxFuture, MessageKind, MessagingProvider, OutboundMessage, SendError, SendReceipt};

/// One request as the stand-in saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn form(&self) -> Vec<(String, String)> {
        super::form::decode(&String::from_utf8_lossy(&self.body))
    }
}

#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Answer {
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Answer {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }

    pub fn empty(status: u16) -> Self {
        Answer {
            status,
            headers: Vec::new(),
            body: String::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// Answer for request number `index` (0-based).
pub type Responder = Arc<dyn Fn(&Seen, usize) -> Answer + Send + Sync>;

/// The `index`th answer of `script`, the last one repeated after that.
pub fn scripted(script: &[Answer], index: usize) -> Answer {
    script
        .get(index)
        .or_else(|| script.last())
        .cloned()
        .unwrap_or_else(|| Answer::empty(500))
}

#[derive(Clone)]
struct Inner {
    seen: Arc<Mutex<Vec<Seen>>>,
    responder: Responder,
}

pub struct StandIn {
    /// `http://127.0.0.1:<port>` with no trailing slash.
    pub base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl StandIn {
    pub async fn start(responder: Responder) -> StandIn {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let inner = Inner {
            seen: seen.clone(),
            responder,
        };
        let app = Router::new().fallback(handle).with_state(inner);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        StandIn {
            base: format!("http://{addr}"),
            seen,
        }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().expect("lock").len()
    }
}

async fn handle(
    State(inner): State<Inner>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let seen = Seen {
        method,
        path: uri.path().to_owned(),
        headers,
        body: body.to_vec(),
    };
    let index = {
        let mut log = inner.seen.lock().expect("lock");
        log.push(seen.clone());
        log.len() - 1
    };
    let answer = (inner.responder)(&seen, index);
    if !answer.delay.is_zero() {
        tokio::time::sleep(answer.delay).await;
    }
    let mut headers = HeaderMap::new();
    for (name, value) in &answer.headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, headers, answer.body).into_response()
}

/// An address nothing listens on.
pub fn dead_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}")
}

pub fn text_message(to: &str, body: &str, key: &str) -> OutboundMessage {
    OutboundMessage {
        to: to.into(),
        from: None,
        kind: MessageKind::Text { body: body.into() },
        idempotency_key: key.into(),
    }
}

/// Records what it is asked to send; fails while `refuse` is set.
#[derive(Default)]
pub struct FakeProvider {
    pub sent: Mutex<Vec<OutboundMessage>>,
    /// While set, every send fails as unavailable with this text.
    pub refuse: Mutex<Option<String>>,
}

impl MessagingProvider for FakeProvider {
    fn name(&self) -> &'static str {
        "fake"
    }
    fn send<'a>(
        &'a self,
        msg: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<SendReceipt, SendError>> {
        Box::pin(async move {
            if let Some(message) = self.refuse.lock().unwrap().clone() {
                return Err(SendError::Unavailable { message });
            }
            self.sent.lock().unwrap().push(msg.clone());
            Ok(SendReceipt {
                provider_id: "SM1".into(),
                status: "queued".into(),
                attempts: 1,
            })
        })
    }
}

impl FakeProvider {
    pub fn texts(&self) -> Vec<String> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .map(|m| match &m.kind {
                MessageKind::Text { body } | MessageKind::WhatsAppText { body } => body.clone(),
                MessageKind::WhatsAppTemplate { name, .. } => format!("template:{name}"),
            })
            .collect()
    }
}
