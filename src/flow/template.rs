//! `{{var}}` templating. Deliberately tiny: names only, no expressions, so a
//! template can never run code or loop. Unknown names render empty.

use std::collections::HashMap;

pub type Vars = HashMap<String, String>;

/// Replace every `{{ name }}` with its value.
pub fn render(template: &str, vars: &Vars) -> String {
    render_with(template, vars, |s| s.to_string())
}

/// Like [`render`], but each value is JSON-string-escaped: for JSON bodies.
pub fn render_json(template: &str, vars: &Vars) -> String {
    render_with(template, vars, |s| {
        let quoted = serde_json::Value::String(s.to_string()).to_string();
        // Strip the surrounding quotes: the template supplies them.
        quoted
            .get(1..quoted.len().saturating_sub(1))
            .unwrap_or_default()
            .to_string()
    })
}

fn render_with(template: &str, vars: &Vars, escape: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        match after.find("}}") {
            Some(close) => {
                let name = after[..close].trim();
                if let Some(v) = vars.get(name) {
                    out.push_str(&escape(v));
                }
                rest = &after[close + 2..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_names_and_leaves_the_rest() {
        let mut v = Vars::new();
        v.insert("caller".into(), "+15551234".into());
        v.insert("q".into(), "say \"hi\"\n".into());
        assert_eq!(
            render("Hi {{caller}}, {{ caller }}!", &v),
            "Hi +15551234, +15551234!"
        );
        assert_eq!(render("{{missing}}x", &v), "x");
        assert_eq!(render("open {{ never closed", &v), "open {{ never closed");
        assert_eq!(
            render_json("{\"q\":\"{{q}}\"}", &v),
            "{\"q\":\"say \\\"hi\\\"\\n\"}"
        );
    }
}
