//! Dex plus the session front end Kubeflow puts before it: oauth2-proxy (Kubeflow ≥ 1.9) or the
//! legacy oidc-authservice. Walks the same URLs, redirects and cookies as the real pair, so the
//! KServe sample's `get_istio_auth_session` works against it unchanged.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};

use crate::http_util::{
    Response, cookie, empty, encode_query, escape_html, html, param, query_pairs, redirect, text,
};

/// The OIDC client Kubeflow registers in Dex (both front ends use it).
pub const CLIENT_ID: &str = "kubeflow-oidc-authservice";
const DEX_AUTH: &str = "/dex/auth";

/// Which session front end stands before Dex.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Flavour {
    /// Kubeflow ≥ 1.9: oauth2-proxy behind Istio's ext_authz.
    #[default]
    OAuth2Proxy,
    /// Kubeflow ≤ 1.8: Arrikto's oidc-authservice.
    AuthService,
}

impl Flavour {
    pub fn session_cookie(self) -> &'static str {
        match self {
            Flavour::OAuth2Proxy => "oauth2_proxy_kubeflow",
            Flavour::AuthService => "authservice_session",
        }
    }

    fn state_cookie(self) -> &'static str {
        match self {
            Flavour::OAuth2Proxy => "oauth2_proxy_kubeflow_csrf",
            Flavour::AuthService => "oidc_state_csrf",
        }
    }

    fn callback_path(self) -> &'static str {
        match self {
            Flavour::OAuth2Proxy => "/oauth2/callback",
            Flavour::AuthService => "/authservice/oidc/callback",
        }
    }

    fn scope(self) -> &'static str {
        match self {
            Flavour::OAuth2Proxy => "profile email groups openid",
            Flavour::AuthService => "openid profile email groups",
        }
    }
}

impl std::str::FromStr for Flavour {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "oauth2-proxy" => Ok(Flavour::OAuth2Proxy),
            "authservice" => Ok(Flavour::AuthService),
            other => Err(format!(
                "unknown flavour {other:?}: oauth2-proxy or authservice"
            )),
        }
    }
}

/// A Dex `staticPasswords` entry.
#[derive(Clone, Debug)]
pub struct StaticUser {
    pub email: String,
    pub password: String,
}

/// An entry of the LDAP directory behind Dex's `ldap` connector.
#[derive(Clone, Debug)]
pub struct LdapUser {
    pub username: String,
    pub password: String,
    pub email: String,
}

#[derive(Clone, Debug)]
pub struct LoginConfig {
    pub flavour: Flavour,
    pub static_users: Vec<StaticUser>,
    pub ldap_users: Vec<LdapUser>,
    /// Session cookie lifetime (oauth2-proxy `cookie_expire`), 24h by default.
    pub session_max_age: Duration,
}

impl Default for LoginConfig {
    /// Kubeflow's default user.
    fn default() -> Self {
        LoginConfig {
            flavour: Flavour::default(),
            static_users: vec![StaticUser {
                email: "user@example.com".into(),
                password: "12341234".into(),
            }],
            ldap_users: Vec::new(),
            session_max_age: Duration::from_secs(24 * 3600),
        }
    }
}

/// The doubles' clock: wall time plus an offset tests advance instead of sleeping.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    offset_seconds: Arc<AtomicI64>,
}

impl Clock {
    pub fn now(&self) -> jiff::Timestamp {
        let offset = jiff::SignedDuration::from_secs(self.offset_seconds.load(Ordering::Relaxed));
        jiff::Timestamp::now()
            .checked_add(offset)
            .unwrap_or_else(|_| jiff::Timestamp::now())
    }

    pub fn advance(&self, by: Duration) {
        let seconds = i64::try_from(by.as_secs()).unwrap_or(i64::MAX);
        self.offset_seconds.fetch_add(seconds, Ordering::Relaxed);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Connector {
    Local,
    Ldap,
}

impl Connector {
    fn id(self) -> &'static str {
        match self {
            Connector::Local => "local",
            Connector::Ldap => "ldap",
        }
    }

    fn from_id(id: &str) -> Option<Connector> {
        match id {
            "local" => Some(Connector::Local),
            "ldap" => Some(Connector::Ldap),
            _ => None,
        }
    }

    /// Dex's prompt for the login field; it also words the wrong-password message.
    fn username_prompt(self) -> &'static str {
        match self {
            Connector::Local => "Email Address",
            Connector::Ldap => "Username",
        }
    }

    fn display_name(self) -> &'static str {
        match self {
            Connector::Local => "Email",
            Connector::Ldap => "LDAP",
        }
    }
}

struct AuthRequest {
    connector: Connector,
    redirect_uri: String,
    client_state: String,
    hmac: String,
    /// Set once the user logged in.
    email: Option<String>,
}

struct Session {
    email: String,
    expires: jiff::Timestamp,
}

#[derive(Default)]
struct State {
    auth_requests: HashMap<String, AuthRequest>,
    codes: HashMap<String, String>,
    sessions: HashMap<String, Session>,
    /// authservice keeps the original URL server-side, keyed by its state.
    authservice_targets: HashMap<String, String>,
}

pub(crate) struct Login {
    config: LoginConfig,
    clock: Clock,
    state: Mutex<State>,
    /// Session ids, codes and states are HMACs of a counter under a key drawn once at start, so
    /// minting one cannot fail mid-request.
    token_key: ring::hmac::Key,
    tokens_minted: AtomicU64,
}

impl Login {
    pub(crate) fn new(
        config: LoginConfig,
        clock: Clock,
    ) -> Result<Login, ring::error::Unspecified> {
        let token_key =
            ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())?;
        Ok(Login {
            config,
            clock,
            state: Mutex::new(State::default()),
            token_key,
            tokens_minted: AtomicU64::new(0),
        })
    }

    /// 192 unpredictable bits, URL-safe.
    fn random_token(&self) -> String {
        let n = self.tokens_minted.fetch_add(1, Ordering::Relaxed);
        let tag = ring::hmac::sign(&self.token_key, &n.to_be_bytes());
        URL_SAFE_NO_PAD.encode(&tag.as_ref()[..24])
    }

    /// True for paths the login doubles own; Kubeflow exempts them from authentication.
    pub(crate) fn owns(path: &str) -> bool {
        ["/dex/", "/oauth2/", "/authservice/"]
            .iter()
            .any(|prefix| path.starts_with(prefix))
    }

    /// The user of a live session cookie, if any.
    pub(crate) fn session_user(&self, headers: &HeaderMap) -> Option<String> {
        let value = cookie(headers, self.config.flavour.session_cookie())?;
        let now = self.clock.now();
        let mut state = self.lock();
        match state.sessions.get(value) {
            Some(session) if session.expires > now => Some(session.email.clone()),
            Some(_) => {
                state.sessions.remove(value);
                None
            }
            None => None,
        }
    }

    /// What the front end answers a request with no credential.
    pub(crate) fn unauthenticated(&self, headers: &HeaderMap, original: &Uri) -> Response {
        let target = original
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned();
        match self.config.flavour {
            Flavour::OAuth2Proxy => {
                // oauth2-proxy answers XHR/JSON clients 401 instead of redirecting (isAjax).
                let ajax = headers
                    .get(header::ACCEPT)
                    .is_some_and(|v| v.as_bytes() == b"application/json");
                if ajax {
                    return empty(StatusCode::UNAUTHORIZED);
                }
                self.oauth2_start(&target)
            }
            Flavour::AuthService => {
                let state = self.random_token();
                self.lock()
                    .authservice_targets
                    .insert(state.clone(), target);
                self.to_dex(&state, &state)
            }
        }
    }

    /// Serves the login paths (`owns(path)` must hold).
    pub(crate) fn handle(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Response {
        let path = uri.path();
        let query = query_pairs(uri);
        let flavour = self.config.flavour;
        if path == DEX_AUTH {
            return self.dex_auth(&query);
        }
        if let Some(rest) = path.strip_prefix("/dex/auth/") {
            let (connector, login) = match rest.split_once('/') {
                Some((id, "login")) => (Connector::from_id(id), true),
                Some(_) => (None, false),
                None => (Connector::from_id(rest), false),
            };
            return match (connector.filter(|c| self.enabled(*c)), login) {
                (Some(c), false) => self.dex_connector(c, &query),
                (Some(c), true) if method == Method::POST => self.dex_login_post(c, &query, body),
                (Some(c), true) => self.dex_login_form(c, &query, false),
                (None, _) => text(
                    StatusCode::NOT_FOUND,
                    "Connector ID does not match a valid Connector",
                ),
            };
        }
        if path == "/dex/approval" {
            return self.dex_approval(&query);
        }
        if flavour == Flavour::OAuth2Proxy && path == "/oauth2/start" {
            let rd = param(&query, "rd").unwrap_or("/").to_owned();
            return self.oauth2_start(&rd);
        }
        if path == flavour.callback_path() {
            return self.callback(headers, &query);
        }
        empty(StatusCode::NOT_FOUND)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain maps behind: still consistent enough.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn enabled(&self, connector: Connector) -> bool {
        match connector {
            Connector::Local => !self.config.static_users.is_empty(),
            Connector::Ldap => !self.config.ldap_users.is_empty(),
        }
    }

    fn connectors(&self) -> Vec<Connector> {
        [Connector::Local, Connector::Ldap]
            .into_iter()
            .filter(|c| self.enabled(*c))
            .collect()
    }

    /// oauth2-proxy's OAuthStart (skip_provider_button = true): CSRF cookie, then Dex.
    fn oauth2_start(&self, rd: &str) -> Response {
        let nonce = self.random_token();
        let state = format!("{nonce}:{}", safe_redirect(rd));
        self.to_dex(&nonce, &state)
    }

    /// 302 to Dex's authorization endpoint, with the front end's state cookie set.
    fn to_dex(&self, cookie_value: &str, state: &str) -> Response {
        let flavour = self.config.flavour;
        let query = encode_query([
            ("client_id", CLIENT_ID),
            ("redirect_uri", flavour.callback_path()),
            ("response_type", "code"),
            ("scope", flavour.scope()),
            ("state", state),
        ]);
        let mut response = redirect(StatusCode::FOUND, &format!("{DEX_AUTH}?{query}"));
        set_cookie(
            &mut response,
            flavour.state_cookie(),
            cookie_value,
            Some(15 * 60),
            self.clock.now(),
        );
        response
    }

    /// Dex's complaint about an authorization request, if any.
    fn client_error(&self, query: &[(String, String)]) -> Option<&'static str> {
        if param(query, "client_id") != Some(CLIENT_ID) {
            Some("Invalid client_id.")
        } else if param(query, "redirect_uri") != Some(self.config.flavour.callback_path()) {
            Some("Unregistered redirect_uri.")
        } else if param(query, "response_type") != Some("code") {
            Some("Unsupported response type.")
        } else {
            None
        }
    }

    /// GET /dex/auth: one connector → straight to it; several → Dex's connector list.
    fn dex_auth(&self, query: &[(String, String)]) -> Response {
        if let Some(error) = self.client_error(query) {
            return text(StatusCode::BAD_REQUEST, error);
        }
        let encoded = encode_query(query.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        match self.connectors().as_slice() {
            [only] => redirect(
                StatusCode::FOUND,
                &format!("{DEX_AUTH}/{}?{encoded}", only.id()),
            ),
            connectors => {
                let items: String = connectors
                    .iter()
                    .map(|c| {
                        format!(
                            "<li><a href=\"{DEX_AUTH}/{}?{}\">Log in with {}</a></li>",
                            c.id(),
                            escape_html(&encoded),
                            c.display_name()
                        )
                    })
                    .collect();
                html(
                    StatusCode::OK,
                    page("Log in to dex", &format!("<ul>{items}</ul>")),
                )
            }
        }
    }

    /// GET /dex/auth/<connector>?...: opens an auth request, then the connector's login page.
    fn dex_connector(&self, connector: Connector, query: &[(String, String)]) -> Response {
        if let Some(error) = self.client_error(query) {
            return text(StatusCode::BAD_REQUEST, error);
        }
        let id = self.random_token();
        let request = AuthRequest {
            connector,
            redirect_uri: param(query, "redirect_uri").unwrap_or_default().to_owned(),
            client_state: param(query, "state").unwrap_or_default().to_owned(),
            hmac: self.random_token(),
            email: None,
        };
        self.lock().auth_requests.insert(id.clone(), request);
        let login_query = encode_query([("back", ""), ("state", id.as_str())]);
        redirect(
            StatusCode::FOUND,
            &format!("{DEX_AUTH}/{}/login?{login_query}", connector.id()),
        )
    }

    fn dex_login_form(
        &self,
        connector: Connector,
        query: &[(String, String)],
        invalid: bool,
    ) -> Response {
        let known =
            param(query, "state").is_some_and(|id| self.lock().auth_requests.contains_key(id));
        if !known {
            return text(
                StatusCode::BAD_REQUEST,
                "Invalid request: login session expired or unknown.",
            );
        }
        let prompt = connector.username_prompt();
        let error = if invalid {
            format!("<div id=\"login-error\">Invalid {prompt} and password.</div>")
        } else {
            String::new()
        };
        let action = format!(
            "{DEX_AUTH}/{}/login?{}",
            connector.id(),
            encode_query(query.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        );
        let body = format!(
            "<form method=\"post\" action=\"{}\">\
             <label for=\"login\">{prompt}</label><input id=\"login\" name=\"login\" required>\
             <label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" required>\
             {error}<button type=\"submit\" id=\"submit-login\">Login</button></form>",
            escape_html(&action)
        );
        html(StatusCode::OK, page("Log in to Your Account", &body))
    }

    /// POST login: right password → 303 to approval; wrong → the form again, 200, no redirect.
    fn dex_login_post(
        &self,
        connector: Connector,
        query: &[(String, String)],
        body: &[u8],
    ) -> Response {
        let form: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
        let login = param(&form, "login").unwrap_or_default();
        let password = param(&form, "password").unwrap_or_default();
        let email = match connector {
            Connector::Local => self
                .config
                .static_users
                .iter()
                .find(|u| u.email.eq_ignore_ascii_case(login) && u.password == password)
                .map(|u| u.email.clone()),
            Connector::Ldap => self
                .config
                .ldap_users
                .iter()
                .find(|u| u.username == login && u.password == password)
                .map(|u| u.email.clone()),
        };
        let Some(id) = param(query, "state") else {
            return text(StatusCode::BAD_REQUEST, "Invalid request: no state.");
        };
        let Some(email) = email else {
            return self.dex_login_form(connector, query, true);
        };
        let mut state = self.lock();
        let Some(request) = state
            .auth_requests
            .get_mut(id)
            .filter(|r| r.connector == connector)
        else {
            return text(
                StatusCode::BAD_REQUEST,
                "Invalid request: login session expired or unknown.",
            );
        };
        request.email = Some(email);
        let approval = encode_query([("req", id), ("hmac", request.hmac.as_str())]);
        redirect(StatusCode::SEE_OTHER, &format!("/dex/approval?{approval}"))
    }

    /// GET /dex/approval (skipApprovalScreen: true): issue the code, 303 to the client.
    fn dex_approval(&self, query: &[(String, String)]) -> Response {
        let mut state = self.lock();
        let id = param(query, "req").unwrap_or_default();
        let approved = state
            .auth_requests
            .get(id)
            .is_some_and(|r| r.email.is_some() && Some(r.hmac.as_str()) == param(query, "hmac"));
        if !approved {
            return text(
                StatusCode::BAD_REQUEST,
                "Invalid request: login session expired or unknown.",
            );
        }
        let Some(request) = state.auth_requests.remove(id) else {
            return text(StatusCode::BAD_REQUEST, "Invalid request.");
        };
        let code = self.random_token();
        state
            .codes
            .insert(code.clone(), request.email.unwrap_or_default());
        let callback = encode_query([
            ("code", code.as_str()),
            ("state", request.client_state.as_str()),
        ]);
        redirect(
            StatusCode::SEE_OTHER,
            &format!("{}?{callback}", request.redirect_uri),
        )
    }

    /// The front end's OIDC callback: checks its state cookie, redeems the code, sets the session.
    fn callback(&self, headers: &HeaderMap, query: &[(String, String)]) -> Response {
        let flavour = self.config.flavour;
        let state_param = param(query, "state").unwrap_or_default();
        let expected = cookie(headers, flavour.state_cookie());
        let (nonce, target) = match flavour {
            Flavour::OAuth2Proxy => match state_param.split_once(':') {
                Some((nonce, rd)) => (nonce.to_owned(), safe_redirect(rd).to_owned()),
                None => (state_param.to_owned(), "/".to_owned()),
            },
            Flavour::AuthService => {
                let target = self.lock().authservice_targets.remove(state_param);
                (
                    state_param.to_owned(),
                    target.unwrap_or_else(|| "/".to_owned()),
                )
            }
        };
        if expected != Some(nonce.as_str()) {
            return text(
                StatusCode::FORBIDDEN,
                "Login Failed: Unable to find a valid CSRF token. Please try again.",
            );
        }
        let email = param(query, "code").and_then(|code| self.lock().codes.remove(code));
        let Some(email) = email else {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Error: code redemption failed",
            );
        };
        let now = self.clock.now();
        let max_age = self.config.session_max_age.as_secs();
        let expires = now
            .checked_add(jiff::SignedDuration::from_secs(
                i64::try_from(max_age).unwrap_or(i64::MAX),
            ))
            .unwrap_or(now);
        let session = self.random_token();
        self.lock()
            .sessions
            .insert(session.clone(), Session { email, expires });
        let mut response = redirect(StatusCode::FOUND, &target);
        set_cookie(&mut response, flavour.state_cookie(), "", Some(0), now);
        set_cookie(
            &mut response,
            flavour.session_cookie(),
            &session,
            Some(max_age),
            now,
        );
        response
    }
}

/// Only same-site paths: oauth2-proxy refuses open redirects.
fn safe_redirect(rd: &str) -> &str {
    if rd.starts_with('/') && !rd.starts_with("//") && !rd.starts_with("/\\") {
        rd
    } else {
        "/"
    }
}

fn set_cookie(
    response: &mut Response,
    name: &str,
    value: &str,
    max_age: Option<u64>,
    now: jiff::Timestamp,
) {
    let mut cookie = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
    if let Some(max_age) = max_age {
        let expires = now
            .checked_add(jiff::SignedDuration::from_secs(
                i64::try_from(max_age).unwrap_or(i64::MAX),
            ))
            .unwrap_or(now);
        cookie.push_str(&format!(
            "; Max-Age={max_age}; Expires={}",
            expires.strftime("%a, %d %b %Y %H:%M:%S GMT")
        ));
    }
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html><html><head><title>dex</title></head><body><h2>{}</h2>{body}</body></html>",
        escape_html(title)
    )
}
