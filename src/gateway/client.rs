//! The one HTTP client that talks to the ingress gateway (and the Dex login behind it): the CLI's
//! `predict`/`login` and the operator's endpoint probe share it.
//!
//! It sends exactly the headers it is given (a `Host` header overrides the URL's authority, as
//! `curl -H "Host: ..."` does in the KServe sample), never follows redirects by itself (the Dex
//! login walks them step by step), and bounds every exchange with a timeout. Errors never carry
//! header values, so a credential cannot leak through them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// How long one request may take when the caller sets nothing else.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{url:?} is not an http(s) URL")]
    InvalidUrl { url: String },
    #[error("header {name} has a value that cannot be sent")]
    InvalidHeader { name: String },
    #[error("no answer from {url} within {}s", timeout.as_secs())]
    Timeout { url: String, timeout: Duration },
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("TLS is not available: {0}")]
    Tls(String),
}

/// A response read whole (gateway and model answers are small JSON documents or HTML forms).
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[derive(Clone, Debug)]
pub struct GatewayClient {
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
    /// Whether the system's CA certificates were found.
    tls_roots: bool,
}

impl GatewayClient {
    /// A client for http and https gateways (TLS verified against the system's roots). A host
    /// without CA certificates (a scratch image) still gets a client: http works, and https
    /// fails per request with a message that says why.
    pub fn new() -> Result<Self, ClientError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (builder, tls_roots) = match hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider.clone())
        {
            Ok(builder) => (builder, true),
            Err(_) => {
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| ClientError::Tls(e.to_string()))?
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                (
                    hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config),
                    false,
                )
            }
        };
        let connector = builder.https_or_http().enable_http1().build();
        Ok(Self {
            inner: Client::builder(TokioExecutor::new()).build(connector),
            timeout: DEFAULT_TIMEOUT,
            tls_roots,
        })
    }

    /// The same client with another per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends one request (no redirect following) and reads the whole answer.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<Bytes>,
    ) -> Result<Response, ClientError> {
        let uri: Uri = url
            .parse()
            .ok()
            .filter(|u: &Uri| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some()
            })
            .ok_or_else(|| ClientError::InvalidUrl {
                url: url.to_owned(),
            })?;
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|_| ClientError::InvalidUrl {
                url: url.to_owned(),
            })?;
        for (name, value) in headers {
            let invalid = || ClientError::InvalidHeader {
                name: (*name).to_owned(),
            };
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
            let value = HeaderValue::from_str(value).map_err(|_| invalid())?;
            request.headers_mut().insert(name, value);
        }
        let exchange = async {
            let response = self.inner.request(request).await.map_err(|e| {
                let mut reason = error_chain(&e);
                if !self.tls_roots && url.starts_with("https://") {
                    reason.push_str(" (no CA certificates were found on this system)");
                }
                ClientError::Unreachable {
                    url: url.to_owned(),
                    reason,
                }
            })?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| ClientError::Unreachable {
                    url: url.to_owned(),
                    reason: format!("reading the answer: {}", error_chain(&e)),
                })?
                .to_bytes();
            Ok(Response {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout {
                url: url.to_owned(),
                timeout: self.timeout,
            })?
    }

    pub async fn get(&self, url: &str, headers: &[(&str, &str)]) -> Result<Response, ClientError> {
        self.send(Method::GET, url, headers, None).await
    }
}

/// "connection refused" rather than hyper-util's bare "client error (Connect)".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_what_is_not_an_http_url() {
        let client = GatewayClient::new().unwrap();
        for url in ["localhost:8080", "ftp://x/", "/v1/models/m", ""] {
            let err = client.get(url, &[]).await.unwrap_err();
            assert!(
                matches!(err, ClientError::InvalidUrl { .. }),
                "{url}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_and_the_error_names_no_header() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/models/m", listener.local_addr().unwrap());
        drop(listener);
        let client = GatewayClient::new().unwrap();
        let err = client
            .get(&url, &[("authorization", "Bearer secret-token")])
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ClientError::Unreachable { .. }), "{text}");
        assert!(text.contains("refused"), "{text}");
        assert!(!text.contains("secret-token"), "{text}");
    }

    #[tokio::test]
    async fn https_goes_through_tls() {
        // A plain-HTTP server behind an https URL: the TLS handshake fails, and says so.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}/", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt as _;
            let (mut stream, _) = listener.accept().await.unwrap();
            let _ = stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
        });
        let client = GatewayClient::new().unwrap();
        let err = client.get(&url, &[]).await.unwrap_err();
        assert!(matches!(err, ClientError::Unreachable { .. }), "{err}");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        // Accepts and never answers, as a blackholed gateway does.
        let held = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            std::future::pending::<()>().await;
            drop(stream);
        });
        let client = GatewayClient::new()
            .unwrap()
            .with_timeout(Duration::from_millis(200));
        let err = client.get(&url, &[]).await.unwrap_err();
        assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
        held.abort();
    }
}
