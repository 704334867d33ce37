//! The CLI's client of the host service's REST API, over its Unix socket (hyper, HTTP/1.1).
//! Error replies carry an [`ApiError`] whose message is shown as is.

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use strata_api::ApiError;

/// The data folder: `$STRATA_HOME`, else `/var/lib/strata`.
pub fn home() -> PathBuf {
    std::env::var_os("STRATA_HOME").map_or_else(|| PathBuf::from("/var/lib/strata"), PathBuf::from)
}

/// A connection target.
pub struct Client {
    socket: PathBuf,
}

impl Client {
    /// The service's socket: `$STRATA_SOCKET`, else `api.sock` in the data folder.
    pub fn new() -> Self {
        let socket = std::env::var_os("STRATA_SOCKET")
            .map_or_else(|| home().join("api.sock"), PathBuf::from);
        Self { socket }
    }

    /// Sends a request; returns the status and body.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, Vec<u8>)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let stream = tokio::net::UnixStream::connect(&self.socket).await.with_context(|| {
                format!(
                    "cannot reach the host service at {} (is `strata serve` running? set STRATA_HOME or STRATA_SOCKET)",
                    self.socket.display()
                )
            })?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let data = body.map(|b| b.to_string()).unwrap_or_default();
            let req = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header("host", "strata")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(data)))?;
            let resp = sender.send_request(req).await?;
            let status = resp.status().as_u16();
            let bytes = resp.into_body().collect().await?.to_bytes();
            Ok((status, bytes.to_vec()))
        })
    }

    /// Sends a request and decodes a successful JSON reply; an error reply becomes an error.
    pub fn json<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T> {
        let (status, bytes) = self.call(method, path, body)?;
        check(status, &bytes)?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("the service sent an unexpected reply to {method} {path}"))
    }

    /// Sends a request whose successful reply is ignored (or is text).
    pub fn text(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<String> {
        let (status, bytes) = self.call(method, path, body)?;
        check(status, &bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

fn check(status: u16, bytes: &[u8]) -> Result<()> {
    if (200..300).contains(&status) {
        return Ok(());
    }
    match serde_json::from_slice::<ApiError>(bytes) {
        Ok(e) => Err(anyhow!("{}", e.error)),
        Err(_) => Err(anyhow!(
            "the service answered {status}: {}",
            String::from_utf8_lossy(bytes)
        )),
    }
}

/// Percent-encodes a path segment or query value.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
