//! A real headless Chromium, driven over WebDriver (chromedriver +
//! fantoccini), at a phone-sized viewport. Synchronous wrappers so tests
//! can mix it with SIPp and the gateway.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

pub struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    _profile: tempfile::TempDir,
}

/// Where screenshots go: kept after the run as test artifacts.
pub fn artifacts_dir(test: &str) -> PathBuf {
    let dir = super::repo().join("target/test-artifacts").join(test);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Browser {
    /// Chromium emulating a 390x844 phone (3x pixels, touch, mobile UA).
    pub fn phone() -> Browser {
        Browser::phone_with(&[])
    }

    /// A phone with extra Chromium switches (fake microphone and so on).
    pub fn phone_with(extra: &[String]) -> Browser {
        Browser::launch(
            extra,
            Some(serde_json::json!({
                "deviceMetrics": { "width": 390, "height": 844, "pixelRatio": 3.0, "touch": true },
                "userAgent": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Mobile Safari/537.36"
            })),
        )
    }

    /// Chromium in a 1280x800 desktop window (the operator's console).
    pub fn desktop() -> Browser {
        Browser::launch(&[], None)
    }

    fn launch(extra: &[String], mobile: Option<serde_json::Value>) -> Browser {
        super::require("chromium", "chromium");
        super::require("chromedriver", "chromium-driver");
        let port = super::free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let profile = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut options = serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,800",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        });
        if let Some(mobile) = mobile {
            options["mobileEmulation"] = mobile;
        }
        if let Some(args) = options["args"].as_array_mut() {
            args.extend(extra.iter().map(|a| serde_json::Value::String(a.clone())));
        }
        let caps = serde_json::json!({ "goog:chromeOptions": options });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!()
        };
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = loop {
            let mut builder =
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
            builder.capabilities(caps.clone());
            match rt.block_on(builder.connect(&url)) {
                Ok(c) => break c,
                Err(e) if Instant::now() > deadline => panic!("chromedriver session: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        Browser {
            rt,
            client: Some(client),
            driver,
            _profile: profile,
        }
    }

    fn c(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    pub fn goto(&self, url: &str) {
        self.rt.block_on(self.c().goto(url)).unwrap();
    }

    /// Run JavaScript; the value it returns.
    pub fn js(&self, script: &str) -> serde_json::Value {
        self.rt.block_on(self.c().execute(script, vec![])).unwrap()
    }

    /// Wait until `script` returns true (polling), or panic with `what`.
    /// `script` is an expression, or a body with its own `return`.
    pub fn wait_js(&self, script: &str, timeout: Duration, what: &str) {
        let script = if script.trim_start().starts_with("return") {
            script.to_string()
        } else {
            format!("return ({script})")
        };
        let deadline = Instant::now() + timeout;
        loop {
            if self.js(&script) == serde_json::Value::Bool(true) {
                return;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; page:\n{}", self.text("body"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn type_into(&self, css: &str, text: &str) {
        self.rt
            .block_on(async {
                let el = self.c().find(Locator::Css(css)).await?;
                el.clear().await?;
                el.send_keys(text).await
            })
            .unwrap();
    }

    pub fn click(&self, css: &str) {
        self.rt
            .block_on(async { self.c().find(Locator::Css(css)).await?.click().await })
            .unwrap();
    }

    pub fn text(&self, css: &str) -> String {
        self.rt
            .block_on(async { self.c().find(Locator::Css(css)).await?.text().await })
            .unwrap_or_default()
    }

    /// A Chrome DevTools Protocol command on the current page, through
    /// chromedriver's `goog/cdp/execute`: Chromium's own answer.
    pub fn cdp(&self, cmd: &str, params: serde_json::Value) -> serde_json::Value {
        let command = Cdp {
            cmd: cmd.to_string(),
            params,
        };
        self.rt
            .block_on(self.c().issue_cmd(command))
            .unwrap_or_else(|e| panic!("CDP {cmd}: {e}"))
    }

    /// Open the operator console on `http_port` and sign in with `token`.
    pub fn sign_in_to_console(&self, http_port: u16, token: &str) {
        let wait = Duration::from_secs(20);
        self.goto(&format!("http://127.0.0.1:{http_port}/console/"));
        self.wait_js(
            "document.body.dataset.auth === 'out'",
            wait,
            "the login form",
        );
        self.type_into("#login-token", token);
        self.click("#login-submit");
        self.wait_js("document.body.dataset.auth === 'in'", wait, "signed in");
    }

    pub fn source(&self) -> String {
        self.rt.block_on(self.c().source()).unwrap()
    }

    /// Save a PNG screenshot; returns its path.
    pub fn screenshot(&self, dir: &std::path::Path, name: &str) -> PathBuf {
        let png = self.rt.block_on(self.c().screenshot()).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = self.rt.block_on(c.close());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[derive(Debug)]
struct Cdp {
    cmd: String,
    params: serde_json::Value,
}

impl fantoccini::wd::WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &reqwest::Url,
        session_id: Option<&str>,
    ) -> Result<reqwest::Url, <reqwest::Url as std::str::FromStr>::Err> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &reqwest::Url) -> (axum::http::Method, Option<String>) {
        let body = serde_json::json!({ "cmd": self.cmd, "params": self.params });
        (axum::http::Method::POST, Some(body.to_string()))
    }
}

/// Width and height of a PNG (from its IHDR chunk).
pub fn png_size(path: &std::path::Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    (w, h)
}
