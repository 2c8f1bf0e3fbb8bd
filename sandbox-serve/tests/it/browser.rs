//! Headless Chromium driven over the DevTools protocol, for the dashboard
//! test: a browser started through the jail crate's spawn chokepoint (no
//! jail; killed and reaped on drop), a WebSocket client just big enough for
//! DevTools (text frames over a loopback TCP stream), page evaluation that
//! waits in the page for a condition with a deadline, and screenshots.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use sandbox_core::isolate::spawn::{spawn, ChildSpec, JailedChild};
use serde_json::{json, Value};

/// The size of a page's viewport, and so of its screenshots.
pub const VIEWPORT: (u32, u32) = (1280, 860);

/// The Chromium to use: `$SANDBOX_CHROMIUM`, else `chromium`,
/// `chromium-browser` or `google-chrome` on `PATH`. `.ci/run` installs
/// Debian's `chromium` when it is missing.
pub fn find_chromium() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("SANDBOX_CHROMIUM") {
        return Ok(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    bail!(
        "the dashboard test needs headless Chromium: `apt-get install chromium` \
         (what .ci/run does), or set SANDBOX_CHROMIUM to a Chromium binary"
    )
}

/// A headless browser and its DevTools connection.
pub struct Browser {
    _child: JailedChild,
    socket: WebSocket,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts `chromium` headless with a fresh profile and connects to its
    /// DevTools endpoint (which it prints on stderr).
    pub fn launch(chromium: &Path) -> anyhow::Result<Self> {
        let profile = tempfile::tempdir()?;
        let spec = ChildSpec::new(chromium)
            .args([
                "--headless",
                // Root in a container has no user namespace for Chromium's own sandbox.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--hide-scrollbars",
                "--window-size=1280,860",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .env("HOME", profile.path());
        let mut child = spawn(&spec).with_context(|| format!("starting {}", chromium.display()))?;
        let stderr = child.stderr.take().context("chromium's stderr")?;
        if let Some(stdout) = child.stdout.take() {
            std::thread::spawn(move || std::io::copy(&mut { stdout }, &mut std::io::sink()));
        }
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                // Keeps draining after the address, so Chromium never blocks on stderr.
                let _ = tx.send(line);
            }
        });
        let end = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        let ws = loop {
            let line = rx
                .recv_timeout(end.saturating_duration_since(Instant::now()))
                .map_err(|_| {
                    anyhow!("chromium printed no DevTools address within 60 s; stderr: {seen:#?}")
                })?;
            if let Some(at) = line.find("ws://") {
                break line[at..].trim().to_owned();
            }
            seen.push(line);
        };
        let socket = WebSocket::connect(&ws)?;
        Ok(Self {
            _child: child,
            socket,
            next_id: 0,
            _profile: profile,
        })
    }

    /// Sends one DevTools command (to `session`, or the browser) and waits
    /// up to `deadline` for its result.
    fn command(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
        deadline: Duration,
    ) -> anyhow::Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.socket.send(&message.to_string())?;
        let end = Instant::now() + deadline;
        loop {
            let text = self.socket.receive(end)?;
            let reply: Value = serde_json::from_str(&text)?;
            if reply["id"] != json!(id) {
                continue; // an event, or another session's reply
            }
            if let Some(error) = reply.get("error") {
                bail!("{method} failed: {error}");
            }
            return Ok(reply["result"].clone());
        }
    }

    /// Opens `url` in a new tab.
    pub fn open(&mut self, url: &str) -> anyhow::Result<Page<'_>> {
        let t = Duration::from_secs(30);
        let target = self.command(
            None,
            "Target.createTarget",
            json!({ "url": "about:blank" }),
            t,
        )?;
        let target_id = target["targetId"].clone();
        let attached = self.command(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
            t,
        )?;
        let session = attached["sessionId"]
            .as_str()
            .context("no DevTools session")?
            .to_owned();
        self.command(
            Some(&session),
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": VIEWPORT.0, "height": VIEWPORT.1, "deviceScaleFactor": 1, "mobile": false }),
            t,
        )?;
        // Answered once the new document is committed, so evaluations
        // run in it.
        let navigated = self.command(Some(&session), "Page.navigate", json!({ "url": url }), t)?;
        if let Some(error) = navigated.get("errorText") {
            bail!("opening {url}: {error}");
        }
        Ok(Page {
            browser: self,
            session,
        })
    }
}

/// A tab.
pub struct Page<'a> {
    browser: &'a mut Browser,
    session: String,
}

impl Page<'_> {
    /// Evaluates `expression` in the page (awaiting a promise) and returns
    /// its value.
    pub fn eval(&mut self, expression: &str, deadline: Duration) -> anyhow::Result<Value> {
        let result = self.browser.command(
            Some(&self.session),
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            deadline + Duration::from_secs(5),
        )?;
        if let Some(exception) = result.get("exceptionDetails") {
            bail!("`{expression}` threw: {exception}");
        }
        Ok(result["result"]["value"].clone())
    }

    /// Waits up to `deadline` for `expression` to be truthy in the page and
    /// returns its value. The waiting is done by the page (it re-checks on
    /// every DOM change, and on its own timer for state outside the DOM);
    /// past the deadline, fails with `what` and the expression's last value.
    pub fn wait_until(&mut self, what: &str, expression: &str, deadline: Duration) -> Value {
        let script = format!(
            r#"new Promise(resolve => {{
                const check = () => {{ try {{ return ({expression}); }} catch (e) {{ return null; }} }};
                const done = v => {{ observer.disconnect(); clearInterval(timer); clearTimeout(stop); resolve(v); }};
                const poll = () => {{ const v = check(); if (v) done({{ ok: true, value: v }}); }};
                const observer = new MutationObserver(poll);
                observer.observe(document, {{ subtree: true, childList: true, characterData: true, attributes: true }});
                const timer = setInterval(poll, 100);
                const stop = setTimeout(() => done({{ ok: false, value: check(), body: document.body ? document.body.innerText : null }}), {ms});
                poll();
            }})"#,
            ms = deadline.as_millis()
        );
        let end = Instant::now() + deadline;
        let mut result = self.eval(&script, deadline);
        // A document still being replaced (the address's fragment is
        // dropped with `history.replaceState`, which keeps it): evaluate
        // again in the one that replaced it.
        while matches!(&result, Err(e) if e.to_string().contains("context was destroyed"))
            && Instant::now() < end
        {
            result = self.eval(&script, end.saturating_duration_since(Instant::now()));
        }
        match result {
            Ok(v) if v["ok"] == json!(true) => v["value"].clone(),
            Ok(v) => panic!(
                "the dashboard showed no {what} within {deadline:?}: `{expression}` is {}; the page reads:\n{}",
                v["value"],
                v["body"].as_str().unwrap_or("")
            ),
            Err(e) => panic!("waiting for {what}: {e:#}"),
        }
    }

    /// A PNG of the viewport.
    pub fn screenshot(&mut self) -> anyhow::Result<Vec<u8>> {
        let shot = self.browser.command(
            Some(&self.session),
            "Page.captureScreenshot",
            json!({ "format": "png" }),
            Duration::from_secs(30),
        )?;
        base64_decode(shot["data"].as_str().context("no screenshot data")?)
    }
}

/// A WebSocket client for DevTools: text frames, masked as a client must.
struct WebSocket {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl WebSocket {
    fn connect(url: &str) -> anyhow::Result<Self> {
        let rest = url.strip_prefix("ws://").context("not a ws:// URL")?;
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let mut stream = TcpStream::connect(host)?;
        stream.set_nodelay(true)?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: c2FuZGJveC1kYXNoYm9hcmQ=\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut buffer = Vec::new();
        let mut chunk = [0; 4096];
        let end = loop {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                bail!("DevTools closed the connection during the handshake");
            }
            buffer.extend_from_slice(&chunk[..n]);
            if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
        };
        let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
        if !head.starts_with("HTTP/1.1 101") {
            bail!("DevTools refused the WebSocket: {head}");
        }
        buffer.drain(..end);
        Ok(Self { stream, buffer })
    }

    fn send(&mut self, text: &str) -> anyhow::Result<()> {
        let payload = text.as_bytes();
        let mut frame = vec![0x81]; // FIN, text
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [0x5a, 0x17, 0xc3, 0x08];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame)?;
        Ok(())
    }

    /// Reads `n` bytes, by `end`.
    fn take(&mut self, n: usize, end: Instant) -> anyhow::Result<Vec<u8>> {
        let mut chunk = vec![0; 64 * 1024];
        while self.buffer.len() < n {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("DevTools did not answer in time");
            }
            self.stream.set_read_timeout(Some(left))?;
            let got = self.stream.read(&mut chunk)?;
            if got == 0 {
                bail!("DevTools closed the connection");
            }
            self.buffer.extend_from_slice(&chunk[..got]);
        }
        Ok(self.buffer.drain(..n).collect())
    }

    /// The next text message (continuation frames joined), by `end`.
    fn receive(&mut self, end: Instant) -> anyhow::Result<String> {
        let mut message = Vec::new();
        loop {
            let head = self.take(2, end)?;
            let fin = head[0] & 0x80 != 0;
            let opcode = head[0] & 0x0f;
            let masked = head[1] & 0x80 != 0;
            let len = match head[1] & 0x7f {
                126 => u64::from(u16::from_be_bytes(
                    self.take(2, end)?.try_into().unwrap_or_default(),
                )),
                127 => u64::from_be_bytes(self.take(8, end)?.try_into().unwrap_or_default()),
                n => u64::from(n),
            };
            let mask = if masked {
                self.take(4, end)?
            } else {
                Vec::new()
            };
            let mut payload = self.take(usize::try_from(len)?, end)?;
            if masked {
                for (i, b) in payload.iter_mut().enumerate() {
                    *b ^= mask[i % 4];
                }
            }
            match opcode {
                0x8 => bail!("DevTools closed the WebSocket"),
                0x9 | 0xa => continue, // ping, pong: Chromium sends none unasked
                _ => message.extend_from_slice(&payload),
            }
            if fin {
                return Ok(String::from_utf8(message)?);
            }
        }
    }
}

fn base64_decode(text: &str) -> anyhow::Result<Vec<u8>> {
    let value = |c: u8| -> anyhow::Result<u32> {
        Ok(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => bail!("not base64: {:?}", char::from(c)),
        }
        .into())
    };
    let bytes: Vec<u8> = text
        .bytes()
        .filter(|&c| c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c)? << (18 - 6 * i);
        }
        let [_, a, b, c] = n.to_be_bytes();
        out.extend_from_slice(&[a, b, c][..chunk.len() - 1]);
    }
    Ok(out)
}

#[test]
fn base64_round_trips_known_values() {
    assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
    assert_eq!(base64_decode("aGk=").unwrap(), b"hi");
    assert_eq!(base64_decode("YWJj").unwrap(), b"abc");
}
