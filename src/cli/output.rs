//! `-o json|yaml` for scripts, human text by default.

use serde::Serialize;

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Output {
    /// Text for people.
    #[default]
    Human,
    /// JSON, for scripts (jq).
    Json,
    /// YAML, for scripts.
    Yaml,
}

impl Output {
    /// The machine formats of `value`; `None` for human output, which each command writes itself.
    pub fn render<T: Serialize>(self, value: &T) -> Result<Option<String>, String> {
        match self {
            Output::Human => Ok(None),
            Output::Json => serde_json::to_string_pretty(value)
                .map(|s| Some(format!("{s}\n")))
                .map_err(|e| format!("cannot format the output as JSON: {e}")),
            Output::Yaml => serde_yaml::to_string(value)
                .map(Some)
                .map_err(|e| format!("cannot format the output as YAML: {e}")),
        }
    }
}

/// "in 45m", "3h ago": how far `at` is from `now`, rounded to what a person reads.
pub fn relative(at: jiff::Timestamp, now: jiff::Timestamp) -> String {
    let seconds = at.as_second() - now.as_second();
    let magnitude = seconds.unsigned_abs();
    let text = match magnitude {
        0..=59 => format!("{magnitude}s"),
        60..=3599 => format!("{}m", magnitude / 60),
        3600..=86_399 => {
            let (h, m) = (magnitude / 3600, magnitude % 3600 / 60);
            if m == 0 {
                format!("{h}h")
            } else {
                format!("{h}h{m}m")
            }
        }
        _ => format!("{}d", magnitude / 86_400),
    };
    if seconds >= 0 {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// How long ago `at` was, as kubectl prints an AGE (its `translateTimestampSince`, apimachinery's
/// `HumanDuration`): a time up to 2 s ahead of this machine's clock is clock skew and reads "0s"
/// (an Event stamped by the API server right after issuance); further ahead, "<invalid>".
pub fn age(at: jiff::Timestamp, now: jiff::Timestamp) -> String {
    let elapsed = now.duration_since(at);
    // Whole seconds, truncated toward zero as Go's int(d.Seconds()).
    let seconds = elapsed.as_secs();
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    let (days, years) = (hours / 24, hours / 24 / 365);
    if hours < 8 {
        match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        match hours % 24 {
            0 => format!("{days}d"),
            h => format!("{days}d{h}h"),
        }
    } else if hours < 24 * 365 * 2 {
        format!("{days}d")
    } else if hours < 24 * 365 * 8 {
        match days % 365 {
            0 => format!("{years}y"),
            d => format!("{years}y{d}d"),
        }
    } else {
        format!("{years}y")
    }
}

/// Left-aligned columns separated by two spaces, as kubectl prints tables.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
                text.push_str(cell);
                text.push_str(&" ".repeat(pad));
            }
        }
        text.trim_end().to_owned()
    };
    let mut out = vec![line(header.to_vec())];
    out.extend(
        rows.iter()
            .map(|r| line(r.iter().map(String::as_str).collect())),
    );
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::ts;

    #[test]
    fn relative_times() {
        let now = ts("2026-11-27T20:00:00Z");
        let cases = [
            ("2026-11-27T20:00:30Z", "in 30s"),
            ("2026-11-27T20:45:00Z", "in 45m"),
            ("2026-11-27T22:00:00Z", "in 2h"),
            ("2026-11-27T22:20:00Z", "in 2h20m"),
            ("2026-11-27T19:00:00Z", "1h ago"),
            ("2026-11-30T20:00:00Z", "in 3d"),
        ];
        for (at, expected) in cases {
            assert_eq!(relative(ts(at), now), expected, "{at}");
        }
    }

    #[test]
    fn ages_read_as_kubectl_prints_them() {
        let now: jiff::Timestamp = "2026-11-27T20:00:00Z".parse().unwrap();
        let ago = |seconds: i64| now - jiff::SignedDuration::from_secs(seconds);
        let cases = [
            // Clock skew: an Event stamped just ahead of this machine's clock.
            (now + jiff::SignedDuration::from_millis(1_900), "0s"),
            (now + jiff::SignedDuration::from_millis(300), "0s"),
            (now + jiff::SignedDuration::from_secs(2), "<invalid>"),
            (now, "0s"),
            (ago(59), "59s"),
            (ago(119), "119s"),
            (ago(120), "2m"),
            (ago(150), "2m30s"),
            (ago(599), "9m59s"),
            (ago(600), "10m"),
            (ago(179 * 60 + 59), "179m"),
            (ago(3 * 3600), "3h"),
            (ago(7 * 3600 + 5 * 60), "7h5m"),
            (ago(8 * 3600 + 5 * 60), "8h"),
            (ago(47 * 3600), "47h"),
            (ago(48 * 3600), "2d"),
            (ago(7 * 86_400 + 23 * 3600), "7d23h"),
            (ago(8 * 86_400), "8d"),
            (ago(729 * 86_400), "729d"),
            (ago(730 * 86_400), "2y"),
            (ago(731 * 86_400), "2y1d"),
            (ago(8 * 365 * 86_400), "8y"),
        ];
        for (at, expected) in cases {
            assert_eq!(age(at, now), expected, "{at}");
        }
    }

    #[test]
    fn tables_align() {
        let text = table(
            &["TYPE", "REASON", "MESSAGE"],
            &[
                vec!["Normal".into(), "Issued".into(), "token issued".into()],
                vec!["Warning".into(), "TokenRequestFailed".into(), "x".into()],
            ],
        );
        assert_eq!(
            text,
            "TYPE     REASON              MESSAGE\n\
             Normal   Issued              token issued\n\
             Warning  TokenRequestFailed  x"
        );
    }

    #[test]
    fn machine_formats() {
        let value = serde_json::json!({"a": [1, 2]});
        assert_eq!(Output::Human.render(&value).unwrap(), None);
        assert_eq!(
            Output::Json.render(&value).unwrap().unwrap(),
            "{\n  \"a\": [\n    1,\n    2\n  ]\n}\n"
        );
        assert_eq!(
            Output::Yaml.render(&value).unwrap().unwrap(),
            "a:\n- 1\n- 2\n"
        );
    }
}
