//! `login`: the sample's get_istio_auth_session as a command.

use std::io::BufRead as _;

use serde::Serialize;

use super::Output;
use crate::gateway::client::GatewayClient;
use crate::gateway::dex::{self, Connector, Session};

#[derive(clap::Args)]
pub struct Args {
    /// The Kubeflow gateway URL, including the scheme (e.g. http://localhost:8080).
    #[arg(long)]
    pub url: String,
    /// Dex staticPasswords email or LDAP username.
    #[arg(long)]
    pub username: String,
    /// Read the password from the first line of stdin (never from a flag: flags are visible in
    /// the process list).
    #[arg(long, required = true)]
    pub password_stdin: bool,
    /// The Dex connector that checks the password.
    #[arg(long, value_enum, default_value_t = ConnectorArg::Local)]
    pub connector: ConnectorArg,
    /// Output format: human text, or json/yaml for scripts.
    #[arg(short, long, value_enum, default_value_t = Output::Human)]
    pub output: Output,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ConnectorArg {
    /// Dex staticPasswords.
    Local,
    Ldap,
}

impl From<ConnectorArg> for Connector {
    fn from(value: ConnectorArg) -> Self {
        match value {
            ConnectorArg::Local => Connector::Local,
            ConnectorArg::Ldap => Connector::Ldap,
        }
    }
}

pub async fn run(args: Args) -> Result<(), String> {
    let mut password = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut password)
        .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
    let password = password.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err("no password on stdin: pipe it in, e.g. `printenv DEX_PASSWORD | inference-access login ... --password-stdin`".into());
    }
    let client = GatewayClient::new().map_err(|e| e.to_string())?;
    let session = dex::login(
        &client,
        &args.url,
        &args.username,
        password,
        args.connector.into(),
        jiff::Timestamp::now(),
    )
    .await
    .map_err(|e| e.to_string())?;
    print!("{}", format_session(&session, args.output)?);
    Ok(())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionView<'a> {
    cookie_name: &'a str,
    /// `name=value`, ready for a Cookie header.
    cookie: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
}

pub fn format_session(session: &Session, output: Output) -> Result<String, String> {
    let view = SessionView {
        cookie_name: &session.cookie_name,
        cookie: session.cookie(),
        expires_at: session.expires_at.map(|t| t.to_string()),
    };
    Ok(match output.render(&view)? {
        Some(text) => text,
        None => format!("{}\n", view.cookie),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::ts;

    #[test]
    fn the_cookie_for_people_and_scripts() {
        let session = Session {
            cookie_name: "oauth2_proxy_kubeflow".into(),
            cookie_value: "abc".into(),
            expires_at: Some(ts("2026-11-28T20:00:00Z")),
        };
        assert_eq!(
            format_session(&session, Output::Human).unwrap(),
            "oauth2_proxy_kubeflow=abc\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&format_session(&session, Output::Json).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"cookieName": "oauth2_proxy_kubeflow", "cookie": "oauth2_proxy_kubeflow=abc", "expiresAt": "2026-11-28T20:00:00Z"})
        );
    }
}
