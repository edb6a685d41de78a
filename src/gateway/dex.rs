//! Logging in to Kubeflow's Dex through the gateway: the KServe sample's `get_istio_auth_session`
//! as a library, for both session front ends (oauth2-proxy, cookie `oauth2_proxy_kubeflow`, and
//! the legacy oidc-authservice, cookie `authservice_session`).
//!
//! The walk is the sample's, step for step: `GET url` following redirects (no redirect: the
//! endpoint is not secured); from `/auth` pick the connector (`/auth/local` or `/auth/ldap`);
//! unless already at `/auth/<connector>/login`, `GET` that to reach the login form; `POST
//! login=&password=` following redirects (no redirect: the credentials were refused); the session
//! cookie is then in the jar. Redirects are followed here, not by the HTTP client, so cookies set
//! on the way are kept as a browser (and `requests.Session`) keeps them.

use std::fmt;

use bytes::Bytes;
use http::Method;
use jiff::{SignedDuration, Timestamp};

use crate::core::url::HttpUrl;
use crate::gateway::client::{GatewayClient, Response};

/// Session cookies Kubeflow's front ends set, newest first.
pub const SESSION_COOKIES: [&str; 2] = ["oauth2_proxy_kubeflow", "authservice_session"];

/// A redirect chain longer than this is a loop, not a login.
const MAX_REDIRECTS: usize = 20;

/// The Dex connector that checks the password (the sample's OPTION 1 and OPTION 2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Connector {
    /// Dex `staticPasswords`.
    #[default]
    Local,
    Ldap,
}

impl Connector {
    /// The connector's id in Dex's URLs (`/dex/auth/<id>`).
    pub fn id(self) -> &'static str {
        match self {
            Connector::Local => "local",
            Connector::Ldap => "ldap",
        }
    }
}

/// A logged-in session: send `Cookie: <name>=<value>` with every request to the gateway.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    pub cookie_name: String,
    pub cookie_value: String,
    /// From the cookie's Max-Age (or Expires); `None` for a browser-session cookie.
    pub expires_at: Option<Timestamp>,
}

impl Session {
    /// The cookie as a `Cookie` header value: `name=value`.
    pub fn cookie(&self) -> String {
        format!("{}={}", self.cookie_name, self.cookie_value)
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("cookie_name", &self.cookie_name)
            .field("cookie_value", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Why a login failed. No variant carries the password or a cookie.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error(
        "the login was refused: no redirect after posting the credentials to {login_url}; \
         check the username and password (and the connector: local for Dex staticPasswords, \
         ldap for the LDAP connector)"
    )]
    InvalidCredentials { login_url: String },
    #[error(
        "{url} is not secured by Dex: it answered without redirecting to a login page, so no \
         session cookie is needed (or the URL is not the Kubeflow gateway)"
    )]
    NotSecured { url: String },
    #[error("HTTP status {status} for {url} during the Dex login")]
    Http { status: u16, url: String },
    #[error("cannot reach {url}: {error}")]
    Unreachable { url: String, error: String },
    #[error("{error}")]
    InvalidUrl { error: String },
    #[error("more than {MAX_REDIRECTS} redirects from {url}: a redirect loop")]
    TooManyRedirects { url: String },
    #[error(
        "the login went through but no session cookie ({}) was set; is this a Kubeflow \
         gateway with oauth2-proxy or oidc-authservice?",
        SESSION_COOKIES.join(" or ")
    )]
    NoSessionCookie,
}

/// Logs in as the sample's `get_istio_auth_session` does and returns the session cookie.
pub async fn login(
    client: &GatewayClient,
    url: &str,
    username: &str,
    password: &str,
    connector: Connector,
    now: Timestamp,
) -> Result<Session, LoginError> {
    let start = HttpUrl::parse(url).map_err(|e| LoginError::InvalidUrl {
        error: format!("the login URL {e}"),
    })?;
    let mut browser = Browser::new(client, now);

    // Is the endpoint secured? Only a redirect says so.
    let landing = browser.walk(Method::GET, start.clone(), None).await?;
    expect_ok(&landing)?;
    if landing.redirects == 0 {
        return Err(LoginError::NotSecured {
            url: start.without_query(),
        });
    }

    // From Dex's connector list, pick the connector.
    let mut next = landing.url.clone();
    if next.path().ends_with("/auth") {
        next = next.with_path(&format!("{}/{}", next.path(), connector.id()));
    }
    let login_url = if is_login_form(next.path_or_root()) {
        next
    } else {
        let form = browser.walk(Method::GET, next, None).await?;
        expect_ok(&form)?;
        form.url
    };

    let body: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("login", username)
        .append_pair("password", password)
        .finish();
    let posted = browser
        .walk(Method::POST, login_url.clone(), Some(Bytes::from(body)))
        .await?;
    if posted.redirects == 0 {
        return Err(LoginError::InvalidCredentials {
            login_url: login_url.without_query(),
        });
    }
    browser.session().ok_or(LoginError::NoSessionCookie)
}

fn expect_ok(page: &Page) -> Result<(), LoginError> {
    if page.response.status == 200 {
        Ok(())
    } else {
        Err(LoginError::Http {
            status: page.response.status,
            url: page.url.without_query(),
        })
    }
}

/// The sample's `re.search(r"/auth/.*/login$", path)`.
fn is_login_form(path: &str) -> bool {
    path.strip_suffix("/login")
        .is_some_and(|head| format!("{head}/").contains("/auth/"))
}

/// The last answer of a redirect chain, where it was, and how many redirects led there.
struct Page {
    response: Response,
    url: HttpUrl,
    redirects: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Cookie {
    host: String,
    name: String,
    value: String,
    expires_at: Option<Timestamp>,
}

/// Just enough of a browser: follows redirects and keeps cookies per host.
struct Browser<'a> {
    client: &'a GatewayClient,
    now: Timestamp,
    jar: Vec<Cookie>,
}

impl<'a> Browser<'a> {
    fn new(client: &'a GatewayClient, now: Timestamp) -> Self {
        Self {
            client,
            now,
            jar: Vec::new(),
        }
    }

    async fn walk(
        &mut self,
        mut method: Method,
        mut url: HttpUrl,
        mut body: Option<Bytes>,
    ) -> Result<Page, LoginError> {
        for redirects in 0..=MAX_REDIRECTS {
            let host = url.host().to_owned();
            let cookie = self.cookie_header(&host);
            let mut headers = vec![("accept", "text/html")];
            if let Some(cookie) = &cookie {
                headers.push(("cookie", cookie));
            }
            if body.is_some() {
                headers.push(("content-type", "application/x-www-form-urlencoded"));
            }
            let response = self
                .client
                .send(method.clone(), &url.to_string(), &headers, body.clone())
                .await
                .map_err(|e| LoginError::Unreachable {
                    url: url.without_query(),
                    error: e.to_string(),
                })?;
            for set_cookie in response.headers.get_all("set-cookie") {
                if let Ok(text) = set_cookie.to_str() {
                    self.store(&host, text);
                }
            }
            let location = response.header("location").map(str::to_owned);
            match (response.status, location) {
                (301..=303 | 307 | 308, Some(location)) => {
                    // As browsers and requests do: 301/302/303 turn a POST into a GET.
                    if matches!(response.status, 301..=303) && method != Method::HEAD {
                        method = Method::GET;
                        body = None;
                    }
                    url = url.join(&location).map_err(|e| LoginError::InvalidUrl {
                        error: format!("the redirect from {} {e}", url.without_query()),
                    })?;
                }
                _ => {
                    return Ok(Page {
                        response,
                        url,
                        redirects,
                    });
                }
            }
        }
        Err(LoginError::TooManyRedirects {
            url: url.without_query(),
        })
    }

    fn cookie_header(&self, host: &str) -> Option<String> {
        let pairs: Vec<String> = self
            .jar
            .iter()
            .filter(|c| c.host == host)
            .map(|c| format!("{}={}", c.name, c.value))
            .collect();
        (!pairs.is_empty()).then(|| pairs.join("; "))
    }

    fn store(&mut self, host: &str, set_cookie: &str) {
        let Some(cookie) = parse_set_cookie(host, set_cookie, self.now) else {
            return;
        };
        self.jar
            .retain(|c| !(c.host == cookie.host && c.name == cookie.name));
        let expired = cookie.expires_at.is_some_and(|at| at <= self.now);
        if !expired && !cookie.value.is_empty() {
            self.jar.push(cookie);
        }
    }

    fn session(&self) -> Option<Session> {
        SESSION_COOKIES.iter().find_map(|name| {
            self.jar.iter().find(|c| c.name == *name).map(|c| Session {
                cookie_name: c.name.clone(),
                cookie_value: c.value.clone(),
                expires_at: c.expires_at,
            })
        })
    }
}

/// `name=value; Path=/; Max-Age=86400; Expires=...`. Max-Age wins over Expires (RFC 6265 5.3).
fn parse_set_cookie(host: &str, text: &str, now: Timestamp) -> Option<Cookie> {
    let mut parts = text.split(';');
    let (name, value) = parts.next()?.split_once('=')?;
    let name = name.trim();
    if name.is_empty() {
        return None;
    }
    let mut max_age = None;
    let mut expires = None;
    for attribute in parts {
        let (key, val) = attribute.split_once('=').unwrap_or((attribute, ""));
        match key.trim().to_ascii_lowercase().as_str() {
            "max-age" => max_age = val.trim().parse::<i64>().ok(),
            "expires" => expires = parse_http_date(val.trim()),
            _ => {}
        }
    }
    let expires_at = match max_age {
        Some(seconds) => now.checked_add(SignedDuration::from_secs(seconds)).ok(),
        None => expires,
    };
    Some(Cookie {
        host: host.to_owned(),
        name: name.to_owned(),
        value: value.trim().to_owned(),
        expires_at,
    })
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`, and the `06-Nov-1994` form older servers send.
fn parse_http_date(text: &str) -> Option<Timestamp> {
    let parser = jiff::fmt::rfc2822::DateTimeParser::new();
    parser
        .parse_timestamp(text)
        .or_else(|_| parser.parse_timestamp(text.replace('-', " ")))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::ts;

    fn now() -> Timestamp {
        ts("2026-11-27T20:00:00Z")
    }

    #[test]
    fn login_form_paths_are_the_samples() {
        for (path, expected) in [
            ("/dex/auth/local/login", true),
            ("/dex/auth/ldap/login", true),
            ("/auth//login", true),
            ("/dex/auth/local", false),
            ("/dex/auth", false),
            ("/login", false),
            ("/dex/authx/local/login", false),
        ] {
            assert_eq!(is_login_form(path), expected, "{path}");
        }
    }

    #[test]
    fn set_cookie_expiry_from_max_age_or_expires() {
        let c = parse_set_cookie(
            "gw",
            "oauth2_proxy_kubeflow=abc==; Path=/; HttpOnly; SameSite=Lax; Max-Age=86400; Expires=Sat, 28 Nov 2026 21:00:00 GMT",
            now(),
        )
        .unwrap();
        assert_eq!(
            (c.name.as_str(), c.value.as_str()),
            ("oauth2_proxy_kubeflow", "abc==")
        );
        assert_eq!(
            c.expires_at,
            Some(ts("2026-11-28T20:00:00Z")),
            "Max-Age wins"
        );
        let c = parse_set_cookie(
            "gw",
            "authservice_session=x; expires=Sat, 28 Nov 2026 21:00:00 GMT",
            now(),
        )
        .unwrap();
        assert_eq!(c.expires_at, Some(ts("2026-11-28T21:00:00Z")));
        let c =
            parse_set_cookie("gw", "a=b; Expires=Sat, 28-Nov-2026 21:00:00 GMT", now()).unwrap();
        assert_eq!(c.expires_at, Some(ts("2026-11-28T21:00:00Z")));
        let c = parse_set_cookie("gw", "a=b; Path=/", now()).unwrap();
        assert_eq!(c.expires_at, None);
        assert!(parse_set_cookie("gw", "garbage", now()).is_none());
        assert!(parse_set_cookie("gw", "=v", now()).is_none());
    }

    #[test]
    fn the_jar_drops_cleared_cookies_and_scopes_by_host() {
        let client = GatewayClient::new().unwrap();
        let mut browser = Browser::new(&client, now());
        browser.store("gw", "oauth2_proxy_kubeflow_csrf=s1; Path=/");
        browser.store("gw", "authservice_session=v; Max-Age=60");
        browser.store("other", "x=y");
        assert_eq!(
            browser.cookie_header("gw").as_deref(),
            Some("oauth2_proxy_kubeflow_csrf=s1; authservice_session=v")
        );
        browser.store("gw", "oauth2_proxy_kubeflow_csrf=; Max-Age=-1");
        assert_eq!(
            browser.cookie_header("gw").as_deref(),
            Some("authservice_session=v")
        );
        assert_eq!(browser.cookie_header("nowhere"), None);
        let session = browser.session().unwrap();
        assert_eq!(session.cookie(), "authservice_session=v");
        assert_eq!(session.expires_at, Some(ts("2026-11-27T20:01:00Z")));
        let shown = format!("{session:?}");
        assert!(
            shown.contains("authservice_session") && !shown.contains("\"v\""),
            "{shown}"
        );
        // oauth2-proxy's cookie wins when both are present (Kubeflow >= 1.9).
        browser.store("gw", "oauth2_proxy_kubeflow=new");
        assert_eq!(
            browser.session().unwrap().cookie_name,
            "oauth2_proxy_kubeflow"
        );
    }

    /// Answers every connection with `response` (and closes it), until aborted.
    async fn canned(response: &'static str) -> (String, tokio::task::JoinHandle<()>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut request = [0_u8; 4096];
                let _ = stream.read(&mut request).await;
                let _ = stream.write_all(response.as_bytes()).await;
            }
        });
        (url, task)
    }

    /// A canned HTTP answer and the error it must produce.
    type Case = (&'static str, fn(&LoginError) -> bool);

    #[tokio::test]
    async fn what_is_not_a_dex_login_is_reported_as_such() {
        let client = GatewayClient::new().unwrap();
        let cases: [Case; 3] = [
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                |e| matches!(e, LoginError::NotSecured { .. }),
            ),
            (
                "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                |e| matches!(e, LoginError::Http { status: 503, .. }),
            ),
            (
                "HTTP/1.1 302 Found\r\nlocation: /again\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                |e| matches!(e, LoginError::TooManyRedirects { .. }),
            ),
        ];
        for (response, expected) in cases {
            let (url, server) = canned(response).await;
            let err = login(&client, &url, "u", "pw-4711", Connector::Local, now())
                .await
                .unwrap_err();
            assert!(expected(&err), "{response:?}: {err:?}");
            assert!(!err.to_string().contains("pw-4711"));
            server.abort();
        }
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", listener.local_addr().unwrap())
        };
        let err = login(&client, &closed, "u", "p", Connector::Ldap, now())
            .await
            .unwrap_err();
        assert!(matches!(err, LoginError::Unreachable { .. }), "{err:?}");
    }
}
