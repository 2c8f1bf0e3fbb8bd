//! A small client of the service's API over plain HTTP/1.1 (hyper), for
//! tests, tools and the command line: one connection per request, JSON in
//! and out, and the event stream read event by event.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use sandbox_serve::client::Client;
//!
//! let client = Client::new("127.0.0.1:7878".parse().unwrap(), Some("secret".into()));
//! let answer = client.post_json("/v1/sandboxes/c/modules/counter/call", &serde_json::json!({"add": 1})).await?;
//! assert_eq!(answer.status, 200);
//! println!("{}", answer.json()["value"]);
//! # Ok(()) }
//! ```

use std::io;
use std::net::SocketAddr;

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::task::JoinHandle;

/// A client of one service.
#[derive(Debug, Clone)]
pub struct Client {
    addr: SocketAddr,
    token: Option<String>,
}

/// An answer: status, headers and the whole body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON (`Value::Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// A response's whole body.
async fn body_of(response: hyper::Response<Incoming>) -> io::Result<Bytes> {
    Ok(response
        .into_body()
        .collect()
        .await
        .map_err(other)?
        .to_bytes())
}

impl Client {
    /// A client of the service at `addr`, sending `token` as a bearer
    /// token when there is one.
    pub fn new(addr: SocketAddr, token: Option<String>) -> Self {
        Self { addr, token }
    }

    /// The same client with another token (or none).
    pub fn with_token(&self, token: Option<String>) -> Self {
        Self {
            addr: self.addr,
            token,
        }
    }

    async fn open(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> io::Result<(hyper::Response<Incoming>, JoinHandle<()>)> {
        let stream = tokio::net::TcpStream::connect(self.addr).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(other)?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.addr.to_string());
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(other)?;
        let response = sender.send_request(request).await.map_err(other)?;
        Ok((response, driver))
    }

    /// Sends a request (`body` as it is) and reads the whole answer.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> io::Result<Answer> {
        let (response, driver) = self.open(method, path, body).await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = body_of(response).await?;
        driver.abort();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> io::Result<Answer> {
        self.send("GET", path, None).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> io::Result<Answer> {
        self.send("DELETE", path, None).await
    }

    /// `POST path` with `body` as JSON.
    pub async fn post_json(&self, path: &str, body: &Value) -> io::Result<Answer> {
        self.send("POST", path, Some(body.to_string().into_bytes()))
            .await
    }

    /// `GET path` as an event stream (`/v1/events…`); fails with the
    /// answer's status and body when it is not 200.
    pub async fn events(&self, path: &str) -> io::Result<Events> {
        let (response, driver) = self.open("GET", path, None).await?;
        if response.status() != 200 {
            let status = response.status();
            let body = body_of(response).await?;
            driver.abort();
            return Err(other(format!(
                "{path}: {status} {}",
                String::from_utf8_lossy(&body)
            )));
        }
        Ok(Events {
            body: response.into_body(),
            buf: Vec::new(),
            driver,
        })
    }
}

/// A Server-Sent Events stream: one JSON value per event.
#[derive(Debug)]
pub struct Events {
    body: Incoming,
    buf: Vec<u8>,
    driver: JoinHandle<()>,
}

impl Events {
    /// The next event's `data` as JSON; `None` when the stream ended.
    /// Comments (keep-alives) are skipped.
    pub async fn next(&mut self) -> io::Result<Option<Value>> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&block);
                let data: Vec<&str> = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(|d| d.strip_prefix(' ').unwrap_or(d))
                    .collect();
                if data.is_empty() {
                    continue;
                }
                let value = serde_json::from_str(&data.join("\n")).map_err(other)?;
                return Ok(Some(value));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Err(other(e)),
                None => return Ok(None),
            }
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.driver.abort();
    }
}
