//! WhatsApp template components: what fills an approved template's header,
//! body and buttons, checked against the Cloud API's rules when a flow is
//! loaded, filled with flow variables at send time, and written as the
//! `template.components` JSON of `POST /{phone-number-id}/messages`.
//!
//! The flow file mirrors the Cloud API's own shape, so its documentation
//! reads across:
//!
//! ```toml
//! [[nodes.components]]
//! type = "body"
//! parameters = [{ type = "text", text = "{{caller}}" }]
//! ```

use serde::Deserialize;
use serde_json::{json, Map, Value};

/// The Cloud API takes at most this many buttons in a template.
pub const MAX_BUTTONS: usize = 10;
/// Template names are at most this long.
const MAX_NAME: usize = 512;

/// One filled-in template component.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawComponent")]
pub enum Component {
    /// The one header parameter: text, or media by link.
    Header(HeaderParameter),
    Body(Vec<BodyParameter>),
    Button(Button),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderParameter {
    Text {
        name: Option<String>,
        text: String,
    },
    Image {
        link: String,
    },
    Video {
        link: String,
    },
    Document {
        link: String,
        filename: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyParameter {
    /// `parameter_name` for templates with named parameters; `None`:
    /// positional (`{{1}}`, `{{2}}`, … in order).
    pub name: Option<String>,
    pub value: BodyValue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyValue {
    Text(String),
    /// The Cloud API shows `fallback_value`; the rest is for other clients.
    Currency {
        fallback_value: String,
        code: String,
        amount_1000: i64,
    },
    DateTime {
        fallback_value: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Button {
    /// The payload comes back in the webhook when the person taps it.
    QuickReply { index: u8, payload: String },
    /// `text` is appended to the URL the template defines.
    Url { index: u8, text: String },
}

impl Button {
    pub fn index(&self) -> u8 {
        match self {
            Button::QuickReply { index, .. } | Button::Url { index, .. } => *index,
        }
    }
}

impl Component {
    /// Positional text parameters for the body: the simple template.
    pub fn body_texts<I: IntoIterator<Item = String>>(texts: I) -> Component {
        Component::Body(
            texts
                .into_iter()
                .map(|t| BodyParameter {
                    name: None,
                    value: BodyValue::Text(t),
                })
                .collect(),
        )
    }

    /// The same component with every free-text field passed through
    /// `fill` (flow variables); names, codes and indexes stay as written.
    pub fn filled(&self, fill: &dyn Fn(&str) -> String) -> Component {
        match self {
            Component::Header(h) => Component::Header(match h {
                HeaderParameter::Text { name, text } => HeaderParameter::Text {
                    name: name.clone(),
                    text: fill(text),
                },
                HeaderParameter::Image { link } => HeaderParameter::Image { link: fill(link) },
                HeaderParameter::Video { link } => HeaderParameter::Video { link: fill(link) },
                HeaderParameter::Document { link, filename } => HeaderParameter::Document {
                    link: fill(link),
                    filename: filename.as_deref().map(fill),
                },
            }),
            Component::Body(params) => Component::Body(
                params
                    .iter()
                    .map(|p| BodyParameter {
                        name: p.name.clone(),
                        value: match &p.value {
                            BodyValue::Text(t) => BodyValue::Text(fill(t)),
                            BodyValue::Currency {
                                fallback_value,
                                code,
                                amount_1000,
                            } => BodyValue::Currency {
                                fallback_value: fill(fallback_value),
                                code: code.clone(),
                                amount_1000: *amount_1000,
                            },
                            BodyValue::DateTime { fallback_value } => BodyValue::DateTime {
                                fallback_value: fill(fallback_value),
                            },
                        },
                    })
                    .collect(),
            ),
            Component::Button(b) => Component::Button(match b {
                Button::QuickReply { index, payload } => Button::QuickReply {
                    index: *index,
                    payload: fill(payload),
                },
                Button::Url { index, text } => Button::Url {
                    index: *index,
                    text: fill(text),
                },
            }),
        }
    }

    /// The Cloud API's JSON for this component.
    pub fn to_json(&self) -> Value {
        match self {
            Component::Header(h) => {
                let param = match h {
                    HeaderParameter::Text { name, text } => {
                        named(json!({ "type": "text", "text": text }), name)
                    }
                    HeaderParameter::Image { link } => {
                        json!({ "type": "image", "image": { "link": link } })
                    }
                    HeaderParameter::Video { link } => {
                        json!({ "type": "video", "video": { "link": link } })
                    }
                    HeaderParameter::Document { link, filename } => {
                        let mut doc = Map::new();
                        doc.insert("link".into(), json!(link));
                        if let Some(f) = filename {
                            doc.insert("filename".into(), json!(f));
                        }
                        json!({ "type": "document", "document": doc })
                    }
                };
                json!({ "type": "header", "parameters": [param] })
            }
            Component::Body(params) => {
                let params: Vec<Value> = params
                    .iter()
                    .map(|p| {
                        let v = match &p.value {
                            BodyValue::Text(t) => json!({ "type": "text", "text": t }),
                            BodyValue::Currency {
                                fallback_value,
                                code,
                                amount_1000,
                            } => json!({
                                "type": "currency",
                                "currency": {
                                    "fallback_value": fallback_value,
                                    "code": code,
                                    "amount_1000": amount_1000
                                }
                            }),
                            BodyValue::DateTime { fallback_value } => json!({
                                "type": "date_time",
                                "date_time": { "fallback_value": fallback_value }
                            }),
                        };
                        named(v, &p.name)
                    })
                    .collect();
                json!({ "type": "body", "parameters": params })
            }
            // The API documents the index as a string.
            Component::Button(Button::QuickReply { index, payload }) => json!({
                "type": "button",
                "sub_type": "quick_reply",
                "index": index.to_string(),
                "parameters": [{ "type": "payload", "payload": payload }]
            }),
            Component::Button(Button::Url { index, text }) => json!({
                "type": "button",
                "sub_type": "url",
                "index": index.to_string(),
                "parameters": [{ "type": "text", "text": text }]
            }),
        }
    }
}

fn named(mut param: Value, name: &Option<String>) -> Value {
    if let (Some(name), Some(obj)) = (name, param.as_object_mut()) {
        obj.insert("parameter_name".into(), json!(name));
    }
    param
}

/// `template.components` for a send: `None` when there are none (a
/// template without placeholders takes no components at all).
pub fn components_json(components: &[Component]) -> Option<Value> {
    (!components.is_empty())
        .then(|| Value::Array(components.iter().map(Component::to_json).collect()))
}

/// What the Cloud API would refuse in a template as a whole: its name,
/// its language, and how its components fit together. Each problem names
/// the property it is about.
pub fn problems(
    name: &str,
    language: Option<&str>,
    components: &[Component],
) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if name.is_empty()
        || name.len() > MAX_NAME
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        out.push((
            "template",
            format!("{name:?} is not a template name: lowercase letters, digits and _ only (at most {MAX_NAME})"),
        ));
    }
    match language {
        None => out.push((
            "language",
            "a template needs its language code, e.g. \"es\" or \"en_US\"".into(),
        )),
        Some(l) if !is_language_code(l) => out.push((
            "language",
            format!("{l:?} is not a template language code like \"es\" or \"en_US\""),
        )),
        Some(_) => {}
    }
    let count = |want: fn(&Component) -> bool| components.iter().filter(|c| want(c)).count();
    if count(|c| matches!(c, Component::Header(_))) > 1 {
        out.push(("components", "more than one header".into()));
    }
    if count(|c| matches!(c, Component::Body(_))) > 1 {
        out.push(("components", "more than one body".into()));
    }
    let buttons: Vec<u8> = components
        .iter()
        .filter_map(|c| match c {
            Component::Button(b) => Some(b.index()),
            _ => None,
        })
        .collect();
    if buttons.len() > MAX_BUTTONS {
        out.push((
            "components",
            format!(
                "{} buttons; a template has at most {MAX_BUTTONS}",
                buttons.len()
            ),
        ));
    }
    let mut seen = [false; MAX_BUTTONS];
    for i in &buttons {
        if let Some(slot) = seen.get_mut(usize::from(*i)) {
            if *slot {
                out.push(("components", format!("two buttons with index {i}")));
            }
            *slot = true;
        }
    }
    // Header and body share one parameter format: named or positional.
    let naming: Vec<bool> = components
        .iter()
        .flat_map(|c| match c {
            Component::Header(HeaderParameter::Text { name, .. }) => vec![name.is_some()],
            Component::Body(params) => params.iter().map(|p| p.name.is_some()).collect(),
            _ => Vec::new(),
        })
        .collect();
    if naming.iter().any(|n| *n) && naming.iter().any(|n| !*n) {
        out.push((
            "components",
            "header and body parameters must be all named (parameter_name) or all positional"
                .into(),
        ));
    }
    out
}

/// `es`, `en_US`, `fil`: the shapes of the Cloud API's language codes.
fn is_language_code(code: &str) -> bool {
    let (lang, region) = code.split_once('_').unwrap_or((code, ""));
    (2..=3).contains(&lang.len())
        && lang.bytes().all(|b| b.is_ascii_lowercase())
        && (region.is_empty()
            || (region.len() == 2 && region.bytes().all(|b| b.is_ascii_uppercase())))
        && !(code.contains('_') && region.is_empty())
}

// ---- the flow file's shape, checked into the types above ----------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComponent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    sub_type: Option<String>,
    #[serde(default)]
    index: Option<RawIndex>,
    #[serde(default)]
    parameters: Vec<RawParameter>,
}

/// The API writes the index as a string; a number is accepted too.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawIndex {
    Number(i64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParameter {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    parameter_name: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    payload: Option<String>,
    #[serde(default)]
    image: Option<RawMedia>,
    #[serde(default)]
    video: Option<RawMedia>,
    #[serde(default)]
    document: Option<RawMedia>,
    #[serde(default)]
    currency: Option<RawCurrency>,
    #[serde(default)]
    date_time: Option<RawDateTime>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMedia {
    #[serde(default)]
    link: Option<String>,
    #[serde(default)]
    filename: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCurrency {
    #[serde(default)]
    fallback_value: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    amount_1000: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDateTime {
    #[serde(default)]
    fallback_value: Option<String>,
}

const PARAMETER_TYPES: &str = "text, currency, date_time, image, video, document or payload";

impl RawParameter {
    /// Which of the type-specific fields are set: exactly the one its
    /// type names may be.
    fn fields(&self) -> Vec<&'static str> {
        let mut f = Vec::new();
        for (set, name) in [
            (self.text.is_some(), "text"),
            (self.payload.is_some(), "payload"),
            (self.image.is_some(), "image"),
            (self.video.is_some(), "video"),
            (self.document.is_some(), "document"),
            (self.currency.is_some(), "currency"),
            (self.date_time.is_some(), "date_time"),
        ] {
            if set {
                f.push(name);
            }
        }
        f
    }

    fn check_shape(&self) -> Result<(), String> {
        let kind = self.kind.as_str();
        if !matches!(
            kind,
            "text" | "currency" | "date_time" | "image" | "video" | "document" | "payload"
        ) {
            return Err(format!(
                "unknown parameter type {kind:?}; one of {PARAMETER_TYPES}"
            ));
        }
        let fields = self.fields();
        if !fields.contains(&kind) {
            return Err(format!("type {kind:?} needs `{kind}`"));
        }
        if let Some(extra) = fields.iter().find(|f| **f != kind) {
            return Err(format!("type {kind:?} takes `{kind}`, not `{extra}`"));
        }
        let blank = |s: &Option<String>| s.as_deref().is_some_and(|s| s.trim().is_empty());
        if blank(&self.text) || blank(&self.payload) {
            return Err(format!("`{kind}` is empty"));
        }
        if let Some(name) = &self.parameter_name {
            if !matches!(kind, "text" | "currency" | "date_time") {
                return Err(format!(
                    "type {kind:?} takes no parameter_name (text, currency and date_time do)"
                ));
            }
            if !is_parameter_name(name) {
                return Err(format!(
                    "parameter_name {name:?}: lowercase letters, digits and _, not starting with a digit"
                ));
            }
        }
        Ok(())
    }

    fn link(media: &Option<RawMedia>, kind: &str) -> Result<String, String> {
        let link = media
            .as_ref()
            .and_then(|m| m.link.clone())
            .unwrap_or_default();
        if link.trim().is_empty() {
            return Err(format!("{kind} header without a link"));
        }
        if !(link.starts_with("https://") || link.starts_with("http://") || link.starts_with("{{"))
        {
            return Err(format!("{kind} link {link:?} is not an http(s) URL"));
        }
        if kind != "document" && media.as_ref().is_some_and(|m| m.filename.is_some()) {
            return Err(format!("{kind} takes no filename (a document does)"));
        }
        Ok(link)
    }

    fn into_header(self) -> Result<HeaderParameter, String> {
        self.check_shape()?;
        match self.kind.as_str() {
            "text" => Ok(HeaderParameter::Text {
                name: self.parameter_name,
                text: self.text.unwrap_or_default(),
            }),
            "image" => Ok(HeaderParameter::Image {
                link: Self::link(&self.image, "image")?,
            }),
            "video" => Ok(HeaderParameter::Video {
                link: Self::link(&self.video, "video")?,
            }),
            "document" => Ok(HeaderParameter::Document {
                link: Self::link(&self.document, "document")?,
                filename: self.document.and_then(|d| d.filename),
            }),
            other => Err(format!(
                "a header parameter is text, image, video or document, not {other}"
            )),
        }
    }

    fn into_body(self) -> Result<BodyParameter, String> {
        self.check_shape()?;
        let value = match self.kind.as_str() {
            "text" => BodyValue::Text(self.text.unwrap_or_default()),
            "currency" => {
                let c = self
                    .currency
                    .ok_or("a currency parameter needs `currency`")?;
                let fallback_value = c
                    .fallback_value
                    .filter(|f| !f.trim().is_empty())
                    .ok_or("currency needs a fallback_value (what the message shows)")?;
                let code = c
                    .code
                    .ok_or("currency needs a code (ISO 4217, e.g. \"EUR\")")?;
                if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
                    return Err(format!(
                        "currency code {code:?} is not an ISO 4217 code like \"EUR\""
                    ));
                }
                let amount_1000 = c
                    .amount_1000
                    .ok_or("currency needs amount_1000 (the amount times 1000)")?;
                BodyValue::Currency {
                    fallback_value,
                    code,
                    amount_1000,
                }
            }
            "date_time" => BodyValue::DateTime {
                fallback_value: self
                    .date_time
                    .and_then(|d| d.fallback_value)
                    .filter(|f| !f.trim().is_empty())
                    .ok_or("date_time needs a fallback_value (what the message shows)")?,
            },
            other => {
                return Err(format!(
                    "a body parameter is text, currency or date_time, not {other}"
                ))
            }
        };
        Ok(BodyParameter {
            name: self.parameter_name,
            value,
        })
    }
}

fn is_parameter_name(name: &str) -> bool {
    name.bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn button_index(index: Option<RawIndex>) -> Result<u8, String> {
    let max = MAX_BUTTONS - 1;
    let n = match index {
        None => return Err(format!("a button needs its index (0 to {max})")),
        Some(RawIndex::Number(n)) => n,
        Some(RawIndex::Text(t)) => t
            .trim()
            .parse()
            .map_err(|_| format!("button index {t:?} is not a number 0 to {max}"))?,
    };
    u8::try_from(n)
        .ok()
        .filter(|i| usize::from(*i) <= max)
        .ok_or_else(|| format!("button index {n} is not 0 to {max}"))
}

impl TryFrom<RawComponent> for Component {
    type Error = String;

    fn try_from(raw: RawComponent) -> Result<Component, String> {
        let kind = raw.kind.as_str();
        if kind != "button" && (raw.sub_type.is_some() || raw.index.is_some()) {
            return Err(format!("sub_type and index are for buttons, not {kind}"));
        }
        let mut params = raw.parameters.into_iter();
        let at = |i: usize, e: String| format!("parameters[{i}]: {e}");
        match kind {
            "header" => {
                let (Some(only), None) = (params.next(), params.next()) else {
                    return Err("a header has exactly one parameter".into());
                };
                only.into_header()
                    .map(Component::Header)
                    .map_err(|e| at(0, e))
            }
            "body" => {
                let params: Vec<BodyParameter> = params
                    .enumerate()
                    .map(|(i, p)| p.into_body().map_err(|e| at(i, e)))
                    .collect::<Result<_, _>>()?;
                if params.is_empty() {
                    return Err("a body component lists at least one parameter".into());
                }
                let named = params.iter().filter(|p| p.name.is_some()).count();
                if named != 0 && named != params.len() {
                    return Err(
                        "body parameters must be all named (parameter_name) or all positional"
                            .into(),
                    );
                }
                let mut names: Vec<&str> =
                    params.iter().filter_map(|p| p.name.as_deref()).collect();
                names.sort_unstable();
                if let Some(w) = names.windows(2).find(|w| w.first() == w.get(1)) {
                    return Err(format!(
                        "parameter_name {:?} is given twice",
                        w.first().copied().unwrap_or_default()
                    ));
                }
                Ok(Component::Body(params))
            }
            "button" => {
                let index = button_index(raw.index)?;
                let sub_type = raw
                    .sub_type
                    .ok_or("a button needs a sub_type: quick_reply or url")?;
                let (Some(only), None) = (params.next(), params.next()) else {
                    return Err(format!("a button ({sub_type}) has exactly one parameter"));
                };
                only.check_shape().map_err(|e| at(0, e))?;
                if only.parameter_name.is_some() {
                    return Err(at(0, "a button parameter takes no parameter_name".into()));
                }
                match (sub_type.as_str(), only.kind.as_str()) {
                    ("quick_reply", "payload") => Ok(Component::Button(Button::QuickReply {
                        index,
                        payload: only.payload.unwrap_or_default(),
                    })),
                    ("url", "text") => Ok(Component::Button(Button::Url {
                        index,
                        text: only.text.unwrap_or_default(),
                    })),
                    ("quick_reply", other) => Err(at(
                        0,
                        format!("a quick_reply button takes a payload parameter, not {other}"),
                    )),
                    ("url", other) => Err(at(
                        0,
                        format!(
                            "a url button takes a text parameter (the URL's suffix), not {other}"
                        ),
                    )),
                    (other, _) => Err(format!(
                        "unknown button sub_type {other:?}; quick_reply or url"
                    )),
                }
            }
            other => Err(format!(
                "unknown component type {other:?}; header, body or button"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Doc {
        components: Vec<Component>,
    }

    fn parse(text: &str) -> Result<Vec<Component>, String> {
        toml::from_str::<Doc>(text)
            .map(|d| d.components)
            .map_err(|e| e.message().trim().to_string())
    }

    fn one(text: &str) -> Component {
        let mut all = parse(&format!("components = [{text}]")).expect("parses");
        assert_eq!(all.len(), 1);
        all.remove(0)
    }

    fn refused(text: &str) -> String {
        parse(&format!("components = [{text}]")).expect_err("refused")
    }

    #[test]
    fn text_header_and_positional_body() {
        let header = one(
            r#"{ type = "header", parameters = [{ type = "text", text = "Pedido {{ref}}" }] }"#,
        );
        assert_eq!(
            header.to_json(),
            json!({ "type": "header", "parameters": [{ "type": "text", "text": "Pedido {{ref}}" }] })
        );
        let body = one(r#"{ type = "body", parameters = [
                { type = "text", text = "Ana" },
                { type = "currency", currency = { fallback_value = "12,50 €", code = "EUR", amount_1000 = 12500 } },
                { type = "date_time", date_time = { fallback_value = "1 de diciembre" } },
            ] }"#);
        assert_eq!(
            body.to_json(),
            json!({
                "type": "body",
                "parameters": [
                    { "type": "text", "text": "Ana" },
                    {
                        "type": "currency",
                        "currency": { "fallback_value": "12,50 €", "code": "EUR", "amount_1000": 12500 }
                    },
                    { "type": "date_time", "date_time": { "fallback_value": "1 de diciembre" } }
                ]
            })
        );
    }

    #[test]
    fn named_parameters() {
        let header = one(
            r#"{ type = "header", parameters = [{ type = "text", parameter_name = "ref", text = "A-17" }] }"#,
        );
        assert_eq!(
            header.to_json(),
            json!({
                "type": "header",
                "parameters": [{ "type": "text", "parameter_name": "ref", "text": "A-17" }]
            })
        );
        let body = one(r#"{ type = "body", parameters = [
                { type = "text", parameter_name = "first_name", text = "Ana" },
                { type = "currency", parameter_name = "total", currency = { fallback_value = "$10", code = "USD", amount_1000 = 10000 } },
                { type = "date_time", parameter_name = "due", date_time = { fallback_value = "May 1" } },
            ] }"#);
        assert_eq!(
            body.to_json(),
            json!({
                "type": "body",
                "parameters": [
                    { "type": "text", "parameter_name": "first_name", "text": "Ana" },
                    {
                        "type": "currency",
                        "parameter_name": "total",
                        "currency": { "fallback_value": "$10", "code": "USD", "amount_1000": 10000 }
                    },
                    { "type": "date_time", "parameter_name": "due", "date_time": { "fallback_value": "May 1" } }
                ]
            })
        );
    }

    #[test]
    fn media_headers() {
        let image = one(
            r#"{ type = "header", parameters = [{ type = "image", image = { link = "https://cdn.example.com/a.png" } }] }"#,
        );
        assert_eq!(
            image.to_json(),
            json!({
                "type": "header",
                "parameters": [{ "type": "image", "image": { "link": "https://cdn.example.com/a.png" } }]
            })
        );
        let video = one(
            r#"{ type = "header", parameters = [{ type = "video", video = { link = "https://cdn.example.com/a.mp4" } }] }"#,
        );
        assert_eq!(
            video.to_json(),
            json!({
                "type": "header",
                "parameters": [{ "type": "video", "video": { "link": "https://cdn.example.com/a.mp4" } }]
            })
        );
        let named = one(
            r#"{ type = "header", parameters = [{ type = "document", document = { link = "https://x.example/f.pdf", filename = "factura.pdf" } }] }"#,
        );
        assert_eq!(
            named.to_json(),
            json!({
                "type": "header",
                "parameters": [{
                    "type": "document",
                    "document": { "link": "https://x.example/f.pdf", "filename": "factura.pdf" }
                }]
            })
        );
        let bare = one(
            r#"{ type = "header", parameters = [{ type = "document", document = { link = "{{invoice_url}}" } }] }"#,
        );
        assert_eq!(
            bare.to_json(),
            json!({
                "type": "header",
                "parameters": [{ "type": "document", "document": { "link": "{{invoice_url}}" } }]
            })
        );
    }

    #[test]
    fn quick_reply_and_url_buttons() {
        let quick = one(
            r#"{ type = "button", sub_type = "quick_reply", index = 0, parameters = [{ type = "payload", payload = "confirm-{{call_id}}" }] }"#,
        );
        assert_eq!(
            quick.to_json(),
            json!({
                "type": "button",
                "sub_type": "quick_reply",
                "index": "0",
                "parameters": [{ "type": "payload", "payload": "confirm-{{call_id}}" }]
            })
        );
        // The index as the API writes it, a string, is taken too.
        let url = one(
            r#"{ type = "button", sub_type = "url", index = "9", parameters = [{ type = "text", text = "A-17" }] }"#,
        );
        assert_eq!(
            url.to_json(),
            json!({
                "type": "button",
                "sub_type": "url",
                "index": "9",
                "parameters": [{ "type": "text", "text": "A-17" }]
            })
        );
    }

    #[test]
    fn filled_from_variables_but_names_and_codes_kept() {
        let vars: std::collections::HashMap<String, String> = [
            ("ref", "A-17"),
            ("total", "12,50 €"),
            ("url", "https://x.example/A-17.pdf"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let fill = |s: &str| crate::flow::template::render(s, &vars);
        let parsed = parse(
            r#"components = [
                { type = "header", parameters = [{ type = "document", document = { link = "{{url}}", filename = "{{ref}}.pdf" } }] },
                { type = "body", parameters = [
                    { type = "text", parameter_name = "ref", text = "{{ref}}" },
                    { type = "currency", parameter_name = "total", currency = { fallback_value = "{{total}}", code = "EUR", amount_1000 = 12500 } },
                ] },
                { type = "button", sub_type = "url", index = 1, parameters = [{ type = "text", text = "{{ref}}" }] },
            ]"#,
        )
        .expect("parses");
        let filled: Vec<Component> = parsed.iter().map(|c| c.filled(&fill)).collect();
        assert_eq!(
            components_json(&filled),
            Some(json!([
                {
                    "type": "header",
                    "parameters": [{
                        "type": "document",
                        "document": { "link": "https://x.example/A-17.pdf", "filename": "A-17.pdf" }
                    }]
                },
                {
                    "type": "body",
                    "parameters": [
                        { "type": "text", "parameter_name": "ref", "text": "A-17" },
                        {
                            "type": "currency",
                            "parameter_name": "total",
                            "currency": { "fallback_value": "12,50 €", "code": "EUR", "amount_1000": 12500 }
                        }
                    ]
                },
                {
                    "type": "button",
                    "sub_type": "url",
                    "index": "1",
                    "parameters": [{ "type": "text", "text": "A-17" }]
                }
            ]))
        );
        assert_eq!(components_json(&[]), None);
    }

    #[test]
    fn what_the_cloud_api_would_refuse_is_refused_when_read() {
        for (text, want) in [
            (r#"{ type = "footer" }"#, "unknown component type \"footer\"; header, body or button"),
            (
                r#"{ type = "body", parameters = [{ type = "location", text = "x" }] }"#,
                "parameters[0]: unknown parameter type \"location\"; one of text, currency, date_time, image, video, document or payload",
            ),
            (r#"{ type = "header" }"#, "a header has exactly one parameter"),
            (
                r#"{ type = "header", parameters = [{ type = "image", image = {} }] }"#,
                "parameters[0]: image header without a link",
            ),
            (
                r#"{ type = "header", parameters = [{ type = "video", video = { link = "ftp://x/v.mp4" } }] }"#,
                "parameters[0]: video link \"ftp://x/v.mp4\" is not an http(s) URL",
            ),
            (
                r#"{ type = "header", parameters = [{ type = "image", image = { link = "https://x/i.png", filename = "i.png" } }] }"#,
                "parameters[0]: image takes no filename (a document does)",
            ),
            (
                r#"{ type = "header", parameters = [{ type = "currency", currency = { fallback_value = "1", code = "EUR", amount_1000 = 1 } }] }"#,
                "parameters[0]: a header parameter is text, image, video or document, not currency",
            ),
            (
                r#"{ type = "header", parameters = [{ type = "image", parameter_name = "pic", image = { link = "https://x/i.png" } }] }"#,
                "parameters[0]: type \"image\" takes no parameter_name (text, currency and date_time do)",
            ),
            (
                r#"{ type = "body", parameters = [{ type = "currency", currency = { fallback_value = "1 €", amount_1000 = 1000 } }] }"#,
                "parameters[0]: currency needs a code (ISO 4217, e.g. \"EUR\")",
            ),
            (
                r#"{ type = "body", parameters = [{ type = "currency", currency = { fallback_value = "1 €", code = "EUR" } }] }"#,
                "parameters[0]: currency needs amount_1000 (the amount times 1000)",
            ),
            (
                r#"{ type = "body", parameters = [{ type = "currency", currency = { fallback_value = "1 €", code = "euro", amount_1000 = 1 } }] }"#,
                "parameters[0]: currency code \"euro\" is not an ISO 4217 code like \"EUR\"",
            ),
            (
                r#"{ type = "body", parameters = [{ type = "date_time", date_time = {} }] }"#,
                "parameters[0]: date_time needs a fallback_value (what the message shows)",
            ),
            (
                r#"{ type = "body", parameters = [{ type = "text" }] }"#,
                "parameters[0]: type \"text\" needs `text`",
            ),
            (
                r#"{ type = "body", parameters = [{ type = "text", text = "a", payload = "b" }] }"#,
                "parameters[0]: type \"text\" takes `text`, not `payload`",
            ),
            (
                r#"{ type = "body", parameters = [{ type = "text", text = " " }] }"#,
                "parameters[0]: `text` is empty",
            ),
            (r#"{ type = "body" }"#, "a body component lists at least one parameter"),
            (
                r#"{ type = "body", parameters = [{ type = "text", parameter_name = "a", text = "x" }, { type = "text", text = "y" }] }"#,
                "body parameters must be all named (parameter_name) or all positional",
            ),
            (
                r#"{ type = "body", parameters = [{ type = "text", parameter_name = "a", text = "x" }, { type = "text", parameter_name = "a", text = "y" }] }"#,
                "parameter_name \"a\" is given twice",
            ),
            (
                r#"{ type = "body", parameters = [{ type = "text", parameter_name = "First", text = "x" }] }"#,
                "parameters[0]: parameter_name \"First\": lowercase letters, digits and _, not starting with a digit",
            ),
            (
                r#"{ type = "body", index = 0, parameters = [{ type = "text", text = "x" }] }"#,
                "sub_type and index are for buttons, not body",
            ),
            (
                r#"{ type = "button", sub_type = "quick_reply", parameters = [{ type = "payload", payload = "p" }] }"#,
                "a button needs its index (0 to 9)",
            ),
            (
                r#"{ type = "button", sub_type = "quick_reply", index = 10, parameters = [{ type = "payload", payload = "p" }] }"#,
                "button index 10 is not 0 to 9",
            ),
            (
                r#"{ type = "button", sub_type = "quick_reply", index = "first", parameters = [{ type = "payload", payload = "p" }] }"#,
                "button index \"first\" is not a number 0 to 9",
            ),
            (
                r#"{ type = "button", index = 0, parameters = [{ type = "payload", payload = "p" }] }"#,
                "a button needs a sub_type: quick_reply or url",
            ),
            (
                r#"{ type = "button", sub_type = "copy_code", index = 0, parameters = [{ type = "text", text = "p" }] }"#,
                "unknown button sub_type \"copy_code\"; quick_reply or url",
            ),
            (
                r#"{ type = "button", sub_type = "quick_reply", index = 0, parameters = [{ type = "text", text = "p" }] }"#,
                "parameters[0]: a quick_reply button takes a payload parameter, not text",
            ),
            (
                r#"{ type = "button", sub_type = "url", index = 0, parameters = [{ type = "payload", payload = "p" }] }"#,
                "parameters[0]: a url button takes a text parameter (the URL's suffix), not payload",
            ),
            (
                r#"{ type = "button", sub_type = "url", index = 0 }"#,
                "a button (url) has exactly one parameter",
            ),
        ] {
            assert_eq!(refused(text), want, "{text}");
        }
        assert!(
            refused(r#"{ type = "body", parameters = [{ type = "text", txt = "x" }] }"#)
                .starts_with("unknown field `txt`"),
        );
    }

    fn quick_replies(n: usize) -> Vec<Component> {
        (0..n)
            .map(|i| {
                Component::Button(Button::QuickReply {
                    index: u8::try_from(i % MAX_BUTTONS).unwrap(),
                    payload: "p".into(),
                })
            })
            .collect()
    }

    #[test]
    fn the_template_as_a_whole() {
        assert!(problems("pedido_listo_2", Some("es"), &quick_replies(10)).is_empty());
        assert!(problems("hello_world", Some("en_US"), &[]).is_empty());
        assert!(problems("x", Some("fil"), &[]).is_empty());
        let messages = |name, language: &str, c: &[Component]| -> Vec<String> {
            problems(name, Some(language), c)
                .into_iter()
                .map(|(prop, m)| format!("{prop}: {m}"))
                .collect()
        };
        assert_eq!(
            messages("Pedido-Listo", "es", &[]),
            ["template: \"Pedido-Listo\" is not a template name: lowercase letters, digits and _ only (at most 512)"]
        );
        for bad in ["", "english", "en-US", "en_us", "en_", "e"] {
            assert_eq!(
                messages("a", bad, &[]),
                [format!(
                    "language: {bad:?} is not a template language code like \"es\" or \"en_US\""
                )]
            );
        }
        assert_eq!(
            messages("a", "es", &quick_replies(11)),
            [
                "components: 11 buttons; a template has at most 10",
                "components: two buttons with index 0"
            ]
        );
        let body = |named: bool| {
            Component::Body(vec![BodyParameter {
                name: named.then(|| "n".to_string()),
                value: BodyValue::Text("x".into()),
            }])
        };
        let header = |named: bool| {
            Component::Header(HeaderParameter::Text {
                name: named.then(|| "h".to_string()),
                text: "x".into(),
            })
        };
        assert!(problems("a", Some("es"), &[header(true), body(true)]).is_empty());
        assert!(problems("a", Some("es"), &[header(false), body(false)]).is_empty());
        assert_eq!(
            problems("a", None, &[]),
            [(
                "language",
                "a template needs its language code, e.g. \"es\" or \"en_US\"".to_string()
            )]
        );
        assert_eq!(
            messages("a", "es", &[header(false), body(true)]),
            ["components: header and body parameters must be all named (parameter_name) or all positional"]
        );
        assert_eq!(
            messages(
                "a",
                "es",
                &[header(false), header(false), body(false), body(false)]
            ),
            [
                "components: more than one header",
                "components: more than one body"
            ]
        );
    }
}
