//! The figures as a Markdown table and as an SVG plot (time to Ready and RSS against the
//! number of accesses), both from the JSON the benchmark writes.

use std::fmt::Write;

use serde_json::Value;

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn by_verb(v: &Value) -> String {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(verb, n)| format!("{verb} {:.2}", f(n)))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// create→Ready's steps in order: their key in `createToReadyMs.steps`, and how the table names
/// them.
pub const STEPS: [(&str, &str); 6] = [
    ("toCreated", "the create answered"),
    ("toFirstWrite", "the operator's first write"),
    ("toServiceAccount", "ServiceAccount"),
    ("toTokenRequest", "TokenRequest (KServe's URL before it)"),
    ("toReadyStatus", "Ready status"),
    ("toSeenReady", "seen Ready"),
];

pub fn table(results: &Value) -> String {
    let mut out = String::new();
    out.push_str("| accesses | s to all Ready | create→Ready p50 / p99 (bare client) | requests per access | writes on restart (tokens minted) | /readyz after restart | operator RSS idle → converged | × bare client (in the burst's shape) | × kubectl path |\n");
    out.push_str("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for s in results["sizes"].as_array().into_iter().flatten() {
        let kubectl = if s["kubectl"].is_null() {
            "n/a (no kubectl)".to_owned()
        } else {
            format!("{:.0}×", f(&s["kubectl"]["ratio"]))
        };
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.0} / {:.0} ms ({:.0} / {:.0}) | {:.1}: {} | {} ({}) | {:.2} s | {:.0} → {:.0} MiB | {:.2} ({:.2}) | {} |",
            s["accesses"],
            f(&s["secondsToAllReady"]),
            f(&s["createToReadyMs"]["p50"]),
            f(&s["createToReadyMs"]["p99"]),
            f(&s["bareClient"]["burst"]["createToDoneMs"]["p50"]),
            f(&s["bareClient"]["burst"]["createToDoneMs"]["p99"]),
            f(&s["requestsPerAccessTotal"]),
            by_verb(&s["requestsPerAccess"]),
            s["restart"]["writes"],
            s["restart"]["tokensMinted"],
            f(&s["restart"]["readyzSeconds"]),
            f(&s["rssMiB"]["idle"]),
            f(&s["rssMiB"]["converged"]),
            f(&s["bareClient"]["ratio"]),
            f(&s["bareClient"]["burst"]["ratio"]),
            kubectl,
        );
    }
    for s in results["sizes"].as_array().into_iter().flatten() {
        let at = &s["createToReadyMs"]["steps"];
        if at.is_null() {
            continue;
        }
        let shown: Vec<String> = STEPS
            .iter()
            .map(|(key, name)| {
                format!(
                    "{name} {:.0} / {:.0}",
                    f(&at[key]["p50"]),
                    f(&at[key]["p99"])
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "\ncreate→Ready of {} step by step, p50 / p99 ms: {}.",
            s["accesses"],
            shown.join(", ")
        );
    }
    let c = &results["crowded"];
    if !c.is_null() {
        let _ = writeln!(
            out,
            "\nCrowded cluster ({} accesses): operator RSS {:.1} MiB → {:.1} MiB with {} unrelated 32 KiB Secrets (×{:.3}) → {:.1} MiB with {} unrelated InferenceServices ({:.1} KiB each).",
            c["accesses"],
            f(&c["rssMiB"]["accesses"]),
            f(&c["rssMiB"]["withSecrets"]),
            c["unrelatedSecrets"],
            f(&c["secretsRssRatio"]),
            f(&c["rssMiB"]["withInferenceServices"]),
            c["unrelatedInferenceServices"],
            f(&c["perInferenceServiceKiB"]),
        );
    }
    let s = &results["storm"];
    if !s.is_null() {
        let _ = writeln!(
            out,
            "\nRenewal storm ({} accesses, {} tokens, renewBefore {}): issued in {:.1} s, all renewed {:.1} s after the first create, before expiry: {}; peak {} requests/s.",
            s["accesses"],
            s["tokenDuration"].as_str().unwrap_or_default(),
            s["renewBefore"].as_str().unwrap_or_default(),
            f(&s["issuedInSeconds"]),
            f(&s["allRenewedAfterSeconds"]),
            s["allRenewedBeforeExpiry"],
            s["peakRequestsPerSecond"],
        );
    }
    out
}

/// Two panels side by side, log-scaled x (accesses): seconds to all Ready, and RSS (MiB).
pub fn svg(results: &Value) -> String {
    let points: Vec<(f64, f64, f64)> = results["sizes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                f(&s["accesses"]),
                f(&s["secondsToAllReady"]),
                f(&s["rssMiB"]["converged"]),
            )
        })
        .collect();
    let (w, h) = (360.0, 240.0);
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="sans-serif" font-size="12">"#,
        2.0 * w,
        h
    );
    out.push('\n');
    panel(
        &mut out,
        0.0,
        "seconds to all Ready",
        &points.iter().map(|p| (p.0, p.1)).collect::<Vec<_>>(),
    );
    panel(
        &mut out,
        w,
        "operator RSS (MiB)",
        &points.iter().map(|p| (p.0, p.2)).collect::<Vec<_>>(),
    );
    out.push_str("</svg>\n");
    out
}

fn panel(out: &mut String, left: f64, title: &str, points: &[(f64, f64)]) {
    let (x0, x1, y0, y1) = (left + 50.0, left + 340.0, 200.0, 30.0);
    let xs: Vec<f64> = points.iter().map(|p| p.0.max(1.0).log10()).collect();
    let (xmin, xmax) = (
        xs.iter().copied().fold(f64::INFINITY, f64::min).floor(),
        xs.iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max)
            .ceil()
            .max(1.0),
    );
    let ymax = nice(
        points
            .iter()
            .map(|p| p.1)
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max),
    );
    let px = |x: f64| x0 + (x - xmin) / (xmax - xmin).max(1e-9) * (x1 - x0);
    let py = |y: f64| y0 - y / ymax * (y0 - y1);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="18" text-anchor="middle" font-weight="bold">{title}</text>"#,
        (x0 + x1) / 2.0
    );
    let _ = writeln!(
        out,
        r#"<path d="M{x0},{y1} V{y0} H{x1}" fill="none" stroke="black"/>"#
    );
    for d in (xmin as i32)..=(xmax as i32) {
        let x = px(f64::from(d));
        let _ = writeln!(
            out,
            r#"<line x1="{x}" y1="{y0}" x2="{x}" y2="{}" stroke="black"/><text x="{x}" y="{}" text-anchor="middle">{}</text>"#,
            y0 + 4.0,
            y0 + 18.0,
            10_f64.powi(d)
        );
    }
    for k in 0..=4 {
        let v = ymax * f64::from(k) / 4.0;
        let y = py(v);
        let _ = writeln!(
            out,
            r##"<line x1="{}" y1="{y}" x2="{x1}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            x0,
            x0 - 4.0,
            y + 4.0,
            trim(v)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">accesses</text>"#,
        (x0 + x1) / 2.0,
        y0 + 34.0
    );
    let path: Vec<String> = points
        .iter()
        .zip(&xs)
        .map(|(p, x)| format!("{:.1},{:.1}", px(*x), py(p.1)))
        .collect();
    if !path.is_empty() {
        let _ = writeln!(
            out,
            r##"<polyline points="{}" fill="none" stroke="#1f77b4" stroke-width="2"/>"##,
            path.join(" ")
        );
    }
    for (p, x) in points.iter().zip(&xs) {
        let _ = writeln!(
            out,
            r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="#1f77b4"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            px(*x),
            py(p.1),
            px(*x),
            py(p.1) - 8.0,
            trim(p.1)
        );
    }
}

/// A round upper bound for an axis.
fn nice(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let magnitude = 10_f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|m| *m >= v)
        .unwrap_or(10.0 * magnitude)
}

fn trim(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}
