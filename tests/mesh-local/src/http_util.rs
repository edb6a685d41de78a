//! Small response builders shared by the gateway and the login double.

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::Full;

pub type Response = http::Response<Full<Bytes>>;

pub fn response(
    status: StatusCode,
    content_type: Option<&'static str>,
    body: impl Into<Bytes>,
) -> Response {
    let mut response = http::Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Some(content_type) = content_type {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    response
}

pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response {
    response(status, Some("text/plain"), body)
}

pub fn html(status: StatusCode, body: String) -> Response {
    response(status, Some("text/html; charset=utf-8"), body)
}

pub fn empty(status: StatusCode) -> Response {
    response(status, None, Bytes::new())
}

/// A redirect; `location` must already be a valid header value (built from encoded parts).
pub fn redirect(status: StatusCode, location: &str) -> Response {
    let mut response = empty(status);
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Query string → decoded pairs.
pub fn query_pairs(uri: &http::Uri) -> Vec<(String, String)> {
    form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

pub fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Encodes pairs as a query string (`a=1&b=2`).
pub fn encode_query<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// The value of cookie `name` in the request's Cookie headers.
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Escapes text for HTML bodies and attribute values.
pub fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
