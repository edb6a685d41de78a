//! The one parser for the http(s) URLs the operator handles: gateway and login URLs from the
//! spec, InferenceService `status.url`, and the redirects of a Dex login. No URL crate: these
//! URLs are plain, and every rule that matters (no user info, no whitespace, bounded length) is
//! stated here once.

use std::fmt;

/// Longer URLs are refused: nothing the operator talks to needs more, and an unbounded value
/// would end up in Secrets, statuses and log lines.
pub const MAX_URL_LENGTH: usize = 2048;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    /// `http` or `https`, lowercased.
    scheme: String,
    /// `host[:port]` as written, without user info.
    authority: String,
    /// The host alone, lowercased, without brackets for IPv6 literals.
    host: String,
    port: Option<u16>,
    /// Starts with `/`, or is empty.
    path: String,
    /// Without the `?`; `None` when the URL has none.
    query: Option<String>,
    has_userinfo: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("is not an http:// or https:// URL")]
    NotHttp,
    #[error("has no host")]
    NoHost,
    #[error("has an invalid port")]
    InvalidPort,
    #[error("contains whitespace or control characters")]
    Whitespace,
    #[error("is longer than {MAX_URL_LENGTH} characters")]
    TooLong,
}

impl HttpUrl {
    pub fn parse(text: &str) -> Result<Self, UrlError> {
        if text.len() > MAX_URL_LENGTH {
            return Err(UrlError::TooLong);
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(UrlError::Whitespace);
        }
        let (scheme, rest) = text.split_once("://").ok_or(UrlError::NotHttp)?;
        let scheme = scheme.to_ascii_lowercase();
        if !matches!(scheme.as_str(), "http" | "https") {
            return Err(UrlError::NotHttp);
        }
        let rest = rest.split('#').next().unwrap_or_default();
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let (has_userinfo, authority) = match authority.rsplit_once('@') {
            Some((_, host_port)) => (true, host_port),
            None => (false, authority),
        };
        let (host, port) = split_host_port(authority)?;
        if host.is_empty() {
            return Err(UrlError::NoHost);
        }
        let (path, query) = match tail.split_once('?') {
            Some((path, query)) => (path, Some(query.to_owned())),
            None => (tail, None),
        };
        Ok(Self {
            scheme,
            authority: authority.to_owned(),
            host: host.to_ascii_lowercase(),
            port,
            path: path.to_owned(),
            query,
            has_userinfo,
        })
    }

    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// `host[:port]` as written: what a Host header carries.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The lowercased host, without port.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The port requests really go to: the explicit one or the scheme's default.
    pub fn effective_port(&self) -> u16 {
        self.port
            .unwrap_or(if self.scheme == "https" { 443 } else { 80 })
    }

    /// The path as written: empty or starting with `/`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The path, `/` when empty.
    pub fn path_or_root(&self) -> &str {
        if self.path.is_empty() {
            "/"
        } else {
            &self.path
        }
    }

    pub fn has_userinfo(&self) -> bool {
        self.has_userinfo
    }

    /// `scheme://host[:port]`.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }

    /// The URL without query (and without user info): safe to show in messages, since tokens
    /// and login states travel in queries.
    pub fn without_query(&self) -> String {
        format!("{}{}", self.origin(), self.path)
    }

    /// The same URL with another path, query kept.
    pub fn with_path(&self, path: &str) -> Self {
        Self {
            path: path.to_owned(),
            ..self.clone()
        }
    }

    /// A `Location` header (absolute, scheme-relative, absolute-path, query-only or relative)
    /// resolved against this URL, as browsers do.
    pub fn join(&self, location: &str) -> Result<Self, UrlError> {
        if location.contains("://") {
            return Self::parse(location);
        }
        if let Some(rest) = location.strip_prefix("//") {
            return Self::parse(&format!("{}://{rest}", self.scheme));
        }
        let origin = self.origin();
        if location.starts_with('/') {
            return Self::parse(&format!("{origin}{location}"));
        }
        let path = self.path_or_root();
        if location.starts_with('?') {
            return Self::parse(&format!("{origin}{path}{location}"));
        }
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        Self::parse(&format!("{origin}{dir}{location}"))
    }
}

/// The full URL, user info left out.
impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.origin(), self.path)?;
        if let Some(query) = &self.query {
            write!(f, "?{query}")?;
        }
        Ok(())
    }
}

fn split_host_port(authority: &str) -> Result<(&str, Option<u16>), UrlError> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        // An IPv6 literal: `[::1]:8080`.
        let (host, after) = rest.split_once(']').ok_or(UrlError::NoHost)?;
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err(UrlError::InvalidPort),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        None | Some("") => None,
        Some(digits) => Some(digits.parse::<u16>().map_err(|_| UrlError::InvalidPort)?),
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_shapes_the_operator_meets() {
        // (url, authority, host, port, path, display)
        let cases = [
            (
                "http://sklearn-iris.ns.example.com",
                "sklearn-iris.ns.example.com",
                "sklearn-iris.ns.example.com",
                None,
                "",
                "http://sklearn-iris.ns.example.com",
            ),
            (
                "HTTPS://Models.Example.com:8443/serving/ns/m/?x=1#frag",
                "Models.Example.com:8443",
                "models.example.com",
                Some(8443),
                "/serving/ns/m/",
                "https://Models.Example.com:8443/serving/ns/m/?x=1",
            ),
            (
                "http://User:pw@LocalHost:8080/x?y",
                "LocalHost:8080",
                "localhost",
                Some(8080),
                "/x",
                "http://LocalHost:8080/x?y",
            ),
            (
                "http://[::1]:9000/p",
                "[::1]:9000",
                "::1",
                Some(9000),
                "/p",
                "http://[::1]:9000/p",
            ),
            ("http://gw:1?x", "gw:1", "gw", Some(1), "", "http://gw:1?x"),
        ];
        for (text, authority, host, port, path, display) in cases {
            let url = HttpUrl::parse(text).unwrap();
            assert_eq!(
                (url.authority(), url.host(), url.port(), url.path()),
                (authority, host, port, path),
                "{text}"
            );
            assert_eq!(url.to_string(), display, "{text}");
        }
        assert!(HttpUrl::parse("http://u@h").unwrap().has_userinfo());
        assert!(!HttpUrl::parse("http://h/a@b").unwrap().has_userinfo());
        assert_eq!(HttpUrl::parse("http://h").unwrap().effective_port(), 80);
        assert_eq!(HttpUrl::parse("https://h").unwrap().effective_port(), 443);
    }

    #[test]
    fn refuses_what_is_not_a_plain_http_url() {
        let long = format!("http://h/{}", "a".repeat(MAX_URL_LENGTH));
        let cases = [
            ("sklearn-iris.ns.example.com", UrlError::NotHttp),
            ("ftp://h/", UrlError::NotHttp),
            ("localhost:8080", UrlError::NotHttp),
            ("http://", UrlError::NoHost),
            ("http:///path", UrlError::NoHost),
            ("http://u@:80/", UrlError::NoHost),
            ("http://h:port/", UrlError::InvalidPort),
            ("http://h:99999/", UrlError::InvalidPort),
            ("http://[::1]x/", UrlError::InvalidPort),
            ("http://h/a b", UrlError::Whitespace),
            ("http://h/\n", UrlError::Whitespace),
            (long.as_str(), UrlError::TooLong),
        ];
        for (text, expected) in cases {
            assert_eq!(HttpUrl::parse(text), Err(expected), "{text}");
        }
    }

    #[test]
    fn redirect_locations_resolve_like_a_browser() {
        let base =
            HttpUrl::parse("http://127.0.0.1:8080/dex/auth/local?client_id=x&state=s").unwrap();
        let cases = [
            (
                "/dex/auth/local/login?back=&state=abc",
                "http://127.0.0.1:8080/dex/auth/local/login?back=&state=abc",
            ),
            (
                "login?back=&state=abc",
                "http://127.0.0.1:8080/dex/auth/login?back=&state=abc",
            ),
            ("?req=1", "http://127.0.0.1:8080/dex/auth/local?req=1"),
            (
                "https://dex.example.com/auth",
                "https://dex.example.com/auth",
            ),
            ("//other:9/x", "http://other:9/x"),
        ];
        for (location, expected) in cases {
            assert_eq!(
                base.join(location).unwrap().to_string(),
                expected,
                "{location}"
            );
        }
        let root = HttpUrl::parse("http://gw").unwrap();
        assert_eq!(
            root.join("/dex/auth").unwrap().to_string(),
            "http://gw/dex/auth"
        );
        assert_eq!(root.path_or_root(), "/");
    }

    #[test]
    fn with_path_keeps_the_query_and_without_query_drops_it() {
        let url = HttpUrl::parse("http://gw:1/dex/auth?client_id=a&state=b").unwrap();
        assert_eq!(
            url.with_path("/dex/auth/ldap").to_string(),
            "http://gw:1/dex/auth/ldap?client_id=a&state=b"
        );
        assert_eq!(url.without_query(), "http://gw:1/dex/auth");
    }
}
