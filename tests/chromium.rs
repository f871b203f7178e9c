//! Headless Chromium (Debian's `chromium`) driven over the DevTools protocol on a pipe
//! (`--remote-debugging-pipe`: NUL-terminated JSON on fds 3 and 4), for testing the status page
//! in a real browser: navigate, evaluate script in the page, take screenshots. Every wait is
//! bounded; the browser is killed when this is dropped.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support;

/// How long one DevTools command may take.
const COMMAND_LIMIT: Duration = Duration::from_secs(30);

pub struct Browser {
    child: Child,
    input: ChildStdin,
    output: mpsc::Receiver<Value>,
    next_id: u64,
    session: String,
    /// Protocol events that arrived while waiting for a command's answer.
    events: Vec<Value>,
}

impl Browser {
    /// Chromium in network namespace `ns` (or this one), its profile in `dir`, one page open at
    /// `width` x `height`.
    pub fn start(ns: Option<&str>, dir: &Path, width: u32, height: u32) -> Browser {
        let found = Command::new("sh").args(["-c", "command -v chromium"]).output().expect("sh");
        assert!(found.status.success(), "chromium is not installed; run ./scripts/test, which installs it");
        let profile = dir.join("chromium-profile");
        std::fs::create_dir_all(&profile).expect("profile dir");
        let log = std::fs::File::create(dir.join("chromium.log")).expect("log");
        let mut command = Command::new("sh");
        // The pipe protocol reads fd 3 and writes fd 4: the shell moves this side's pipes there.
        command.args(["-c", r#"exec 3<&0 4>&1 </dev/null >/dev/null; exec "$@""#, "sh"]);
        if let Some(ns) = ns {
            command.args(["ip", "netns", "exec", ns]);
        }
        command
            .arg("chromium")
            .args([
                "--headless=new",
                // Root in CI: Chromium's sandbox needs an unprivileged user.
                "--no-sandbox",
                "--remote-debugging-pipe",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--mute-audio",
                &format!("--window-size={width},{height}"),
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = command.spawn().expect("chromium");
        let input = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, output) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut message = Vec::new();
            while reader.read_until(0, &mut message).is_ok_and(|n| n > 0) {
                message.pop_if(|b| *b == 0);
                if let Ok(value) = serde_json::from_slice::<Value>(&message)
                    && tx.send(value).is_err()
                {
                    return;
                }
                message.clear();
            }
        });
        let mut browser = Browser { child, input, output, next_id: 0, session: String::new(), events: Vec::new() };
        let target = browser.browser_call("Target.createTarget", json!({ "url": "about:blank" }));
        let target = target["targetId"].as_str().expect("a target id").to_owned();
        let attached = browser.browser_call("Target.attachToTarget", json!({ "targetId": target, "flatten": true }));
        browser.session = attached["sessionId"].as_str().expect("a session id").to_owned();
        browser.call("Page.enable", json!({}));
        browser.call("Runtime.enable", json!({}));
        browser.call("Log.enable", json!({}));
        browser
    }

    fn send(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message).expect("json");
        bytes.push(0);
        self.input.write_all(&bytes).expect("write to chromium");
        let deadline = Instant::now() + COMMAND_LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let reply = self.output.recv_timeout(left).unwrap_or_else(|_| panic!("chromium did not answer {method}"));
            if reply["id"] == id {
                assert!(reply.get("error").is_none(), "{method}: {}", reply["error"]);
                return reply["result"].clone();
            }
            if reply.get("method").is_some() {
                self.events.push(reply);
            }
        }
    }

    fn browser_call(&mut self, method: &str, params: Value) -> Value {
        self.send(None, method, params)
    }

    /// A DevTools command to the page.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(Some(&session), method, params)
    }

    /// Opens `url` and waits for its load event.
    pub fn open(&mut self, url: &str) {
        let navigated = self.call("Page.navigate", json!({ "url": url }));
        assert!(navigated.get("errorText").is_none(), "{url}: {navigated}");
        self.wait_for("the page to load", Duration::from_secs(20), "document.readyState === 'complete'");
    }

    /// The value of `expression` in the page (awaited if it is a promise); a thrown exception fails.
    pub fn eval(&mut self, expression: &str) -> Value {
        let got = self
            .call("Runtime.evaluate", json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }));
        assert!(got.get("exceptionDetails").is_none(), "{expression}: {}", got["exceptionDetails"]);
        got["result"]["value"].clone()
    }

    /// Waits until `expression` is true in the page, at most `limit`; fails naming `what`, with
    /// the page's text.
    pub fn wait_for(&mut self, what: &str, limit: Duration, expression: &str) -> Duration {
        let started = Instant::now();
        while started.elapsed() < limit {
            if self.eval(&format!("Boolean({expression})")) == json!(true) {
                return started.elapsed();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let text = self.eval("document.body ? document.body.innerText : ''");
        panic!("waited {limit:?} for {what}; the page shows:\n{}", text.as_str().unwrap_or_default());
    }

    /// A PNG of the element `selector` (the whole page for `None`), written to `path`.
    pub fn screenshot(&mut self, selector: Option<&str>, path: &Path) {
        let clip = match selector {
            Some(selector) => {
                let rect = self.eval(&format!(
                    "(() => {{ const r = document.querySelector({selector:?}).getBoundingClientRect(); \
                     return {{ x: r.x + scrollX, y: r.y + scrollY, width: r.width, height: r.height, scale: 1 }}; }})()"
                ));
                assert!(rect["width"].as_f64().is_some_and(|w| w > 0.0), "{selector} is not shown: {rect}");
                rect
            }
            None => {
                self.eval("({ x: 0, y: 0, width: document.documentElement.scrollWidth, height: document.documentElement.scrollHeight, scale: 1 })")
            }
        };
        let shot = self
            .call("Page.captureScreenshot", json!({ "format": "png", "clip": clip, "captureBeyondViewport": true }));
        let data = shot["data"].as_str().expect("png data");
        let png = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, data).expect("base64");
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("screenshot dir");
        }
        std::fs::write(path, png).expect("write screenshot");
    }

    /// Messages the page logged to its console as errors, exceptions it did not catch, and what
    /// the browser refused it (Content-Security-Policy).
    pub fn console_errors(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        while let Ok(message) = self.output.try_recv() {
            self.events.push(message);
        }
        for message in self.events.drain(..) {
            match message["method"].as_str() {
                Some("Runtime.exceptionThrown") => {
                    errors.push(message["params"]["exceptionDetails"].to_string());
                }
                Some("Runtime.consoleAPICalled") if message["params"]["type"] == "error" => {
                    errors.push(message["params"]["args"].to_string());
                }
                // Content-Security-Policy violations and script errors the browser reports.
                Some("Log.entryAdded")
                    if message["params"]["entry"]["level"] == "error"
                        && ["security", "javascript"]
                            .contains(&message["params"]["entry"]["source"].as_str().unwrap_or("")) =>
                {
                    errors.push(message["params"]["entry"]["text"].to_string());
                }
                _ => {}
            }
        }
        errors
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closed politely, Chromium ends its renderer and helper processes itself.
        self.next_id += 1;
        let close = format!(r#"{{"id":{},"method":"Browser.close","params":{{}}}}"#, self.next_id);
        let _ = self.input.write_all(format!("{close}\0").as_bytes());
        let _ = support::wait_exit(&mut self.child, Duration::from_secs(5));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
