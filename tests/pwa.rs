//! The web chat as an installable PWA, checked in a real Chromium over
//! http://127.0.0.1 (a secure context): the manifest's fields, its icons
//! (they load, at the sizes declared), the service worker registered and
//! controlling the page, and Chromium's own installability verdict.

mod common;

use std::time::Duration;

use common::browser::Browser;
use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(15);

#[test]
fn the_web_chat_is_an_installable_pwa() {
    let gw = Gateway::start(&format!(
        "[flows]\ndir = \"{}\"\n\n[chat]\nweb_flow = \"ws-test\"\n",
        repo().join("tests/flows/chat").display()
    ));
    let b = Browser::phone();
    b.goto(&format!("http://127.0.0.1:{}/chat/", gw.http_port));
    assert_eq!(b.js("return window.isSecureContext"), true);

    // The manifest the page links to, as the browser fetches it.
    let manifest = b.js(
        "const link = document.querySelector('link[rel=manifest]');
         return fetch(link.href).then(r => r.ok && r.headers.get('content-type').includes('manifest+json') ? r.json() : null);",
    );
    assert!(manifest.is_object(), "no manifest: {manifest}");
    assert!(!manifest["name"].as_str().unwrap_or("").is_empty());
    assert!(!manifest["short_name"].as_str().unwrap_or("").is_empty());
    assert_eq!(manifest["start_url"], "/chat/");
    assert_eq!(manifest["display"], "standalone");
    let icons = manifest["icons"].as_array().expect("icons");
    for size in [192, 512] {
        let declared = format!("{size}x{size}");
        let icon = icons
            .iter()
            .find(|i| i["sizes"] == declared.as_str() && i["type"] == "image/png")
            .unwrap_or_else(|| panic!("no {declared} PNG icon: {manifest}"));
        // Loaded as an image by the page: its real size is the declared one.
        let src = serde_json::to_string(icon["src"].as_str().unwrap()).unwrap();
        let loaded = b.js(&format!(
            "return new Promise(done => {{
                const img = new Image();
                img.onload = () => done([img.naturalWidth, img.naturalHeight]);
                img.onerror = () => done(null);
                img.src = {src};
            }});"
        ));
        assert_eq!(loaded, serde_json::json!([size, size]), "{src}");
    }

    // The service worker is registered, active and controls the page.
    let registration = b.js(
        "return navigator.serviceWorker.ready.then(r => ({ scope: r.scope, active: !!r.active, state: r.active && r.active.state }));",
    );
    assert_eq!(registration["active"], true, "{registration}");
    assert_eq!(
        registration["scope"],
        format!("http://127.0.0.1:{}/", gw.http_port)
    );
    b.wait_js(
        "!!navigator.serviceWorker.controller",
        WAIT,
        "the service worker to control the page",
    );
    let script = b.js("return navigator.serviceWorker.controller.scriptURL");
    assert_eq!(script, format!("http://127.0.0.1:{}/sw.js", gw.http_port));

    // Chromium's own verdict: the manifest parses cleanly and nothing
    // keeps the app from being installed.
    let parsed = b.cdp("Page.getAppManifest", serde_json::json!({}));
    assert_eq!(parsed["errors"], Value::Array(vec![]), "{parsed}");
    let verdict = b.cdp("Page.getInstallabilityErrors", serde_json::json!({}));
    assert_eq!(
        verdict["installabilityErrors"],
        Value::Array(vec![]),
        "{verdict}"
    );
}
