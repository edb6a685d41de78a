//! Lists: selectors through the indexes, `limit`/`continue` paging, `remainingItemCount`.

use std::sync::Arc;

use base64::Engine as _;
use serde_json::{Value, json};

use super::{Obj, State};
use crate::error::ApiError;
use crate::resources::ResourceType;
use crate::selectors::Filter;

/// Result of a list call. Items are as stored: present them (outside the lock) with
/// [`super::present_json`].
#[derive(Debug, Clone)]
pub struct ListResult {
    pub items: Vec<Arc<Obj>>,
    pub resource_version: u64,
    pub continue_token: Option<String>,
    pub remaining: Option<usize>,
}

fn continue_token(rv: u64, ns: &str, name: &str) -> String {
    let raw = json!({"rv": rv, "ns": ns, "name": name}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn parse_continue(token: &str) -> Result<(u64, (String, String)), ApiError> {
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rv = v["rv"].as_u64().ok_or_else(bad)?;
    Ok((
        rv,
        (
            v["ns"].as_str().unwrap_or_default().to_string(),
            v["name"].as_str().unwrap_or_default().to_string(),
        ),
    ))
}

impl State {
    pub fn list(
        &self,
        rt: &ResourceType,
        filter: &Filter,
        limit: Option<usize>,
        cont: Option<&str>,
    ) -> Result<ListResult, ApiError> {
        let key = rt.storage_key();
        let (list_rv, start) = match cont {
            Some(token) if !token.is_empty() => {
                let (rv, after) = parse_continue(token)?;
                if rv < self.history.oldest(&key) {
                    return Err(ApiError::gone(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                    ));
                }
                (rv, Some(after))
            }
            _ => (self.rv, None),
        };
        let limit = limit.filter(|l| *l > 0);
        let mut items = Vec::new();
        let mut last = None;
        let mut remaining = 0;
        for (ns, name, obj) in self.objects.select(&key, filter, start.as_ref()) {
            if limit.is_some_and(|l| items.len() >= l) {
                remaining += 1;
                continue;
            }
            items.push(obj.clone());
            last = Some((ns, name));
        }
        let continue_token = (remaining > 0)
            .then(|| last.map(|(ns, name)| continue_token(list_rv, ns, name)))
            .flatten();
        Ok(ListResult {
            items,
            resource_version: list_rv.max(self.rv),
            continue_token,
            remaining: (remaining > 0).then_some(remaining),
        })
    }
}
