//! Turns raw per-run result files into a summary (medians of every figure per scenario,
//! target and size, with the commands behind them, headline figures and ratios against the
//! peers) and an SVG plot of the latency distributions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{Map, Value, json};

/// One raw run.
struct Run {
    file: PathBuf,
    value: Value,
}

fn load(raw: &Path) -> Result<Vec<Run>> {
    let mut runs = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(raw)
        .with_context(|| format!("read {}", raw.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    entries.sort();
    for file in entries {
        let text = std::fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?;
        match serde_json::from_str::<Value>(&text) {
            Ok(value) if value.get("scenario").is_some() => runs.push(Run { file, value }),
            _ => crate::say(&format!("skipping {} (not a result file)", file.display())),
        }
    }
    Ok(runs)
}

fn s<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn f(v: &Value, path: &[&str]) -> Option<f64> {
    s(v, path).and_then(Value::as_f64)
}

/// The size that tells runs of one scenario apart (clients, senders or channel members).
fn size(v: &Value) -> u64 {
    let p = |k: &str| s(v, &["params", k]).and_then(Value::as_u64).unwrap_or(0);
    match v["scenario"].as_str().unwrap_or_default() {
        "throughput" => p("senders"),
        "fanout" => s(v, &["params", "members"])
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_u64).max().unwrap_or(0))
            .unwrap_or(0),
        _ => p("clients"),
    }
}

fn group_key(v: &Value) -> String {
    format!(
        "{}/{}/{}/{}",
        v["scenario"].as_str().unwrap_or("?"),
        v["target"].as_str().unwrap_or("?"),
        v["backend"].as_str().unwrap_or("?"),
        size(v)
    )
}

/// Every numeric leaf under the measured sections, by path (fan-out phases by size and mode;
/// distributions left out).
fn leaves(v: &Value) -> BTreeMap<String, f64> {
    fn walk(prefix: &str, v: &Value, out: &mut BTreeMap<String, f64>) {
        match v {
            Value::Number(n) => {
                if let Some(x) = n.as_f64() {
                    out.insert(prefix.to_owned(), x);
                }
            }
            Value::Object(m) => {
                for (k, v) in m {
                    if k == "distribution" || k == "errors" {
                        continue;
                    }
                    walk(&format!("{prefix}.{k}"), v, out);
                }
            }
            _ => {}
        }
    }
    let mut out = BTreeMap::new();
    for section in ["seed", "storm", "idle", "direct", "throughput", "resume"] {
        if let Some(x) = v.get(section) {
            walk(section, x, &mut out);
        }
    }
    if let Some(phases) = v.get("fanout").and_then(Value::as_array) {
        for p in phases {
            let name = format!("fanout.{}-{}", p["members"], p["mode"].as_str().unwrap_or("?"));
            walk(&name, p, &mut out);
        }
    }
    if let Some(x) = v.get("load_generator_cpu_s") {
        walk("load_generator_cpu_s", x, &mut out);
    }
    out
}

fn median(mut xs: Vec<f64>) -> Option<f64> {
    xs.retain(|x| x.is_finite());
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    Some(if n % 2 == 1 { xs[n / 2] } else { (xs[n / 2 - 1] + xs[n / 2]) / 2.0 })
}

/// The headline figure of each scenario: `(scenario, name, path, unit, lower_is_better)`.
const HEADLINES: &[(&str, &str, &str, &str, bool)] = &[
    ("storm", "time until all clients are ready", "storm.all_ready_s", "s", true),
    ("storm", "listen-queue overflows", "storm.listen_queue.listen_overflows", "", true),
    ("idle", "server memory per idle connection", "idle.rss_per_connection_bytes", "bytes", true),
    ("direct", "ack latency p99", "direct.ack.p99_ms", "ms", true),
    ("direct", "delivery latency p99", "direct.delivery.p99_ms", "ms", true),
    ("direct", "server CPU per 1,000 messages", "direct.cpu_s_per_1000_msgs", "CPU-s", true),
    ("throughput", "acknowledged messages per second", "throughput.acked_per_s", "msg/s", false),
    ("throughput", "ack latency p99", "throughput.ack.p99_ms", "ms", true),
    ("throughput", "server CPU per 1,000 messages", "throughput.cpu_s_per_1000_msgs", "CPU-s", true),
    ("resume", "time until all clients are current", "resume.all_current_s", "s", true),
];

/// The summary JSON of every run under `raw`.
pub fn summarize(raw: &Path) -> Result<Value> {
    let runs = load(raw)?;
    let mut groups: BTreeMap<String, Vec<&Run>> = BTreeMap::new();
    for r in &runs {
        groups.entry(group_key(&r.value)).or_default().push(r);
    }
    let mut out_groups = Map::new();
    let mut medians: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for (key, members) in &groups {
        let mut paths: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for r in members {
            for (p, x) in leaves(&r.value) {
                paths.entry(p).or_default().push(x);
            }
        }
        let med: BTreeMap<String, f64> = paths.into_iter().filter_map(|(p, xs)| median(xs).map(|m| (p, m))).collect();
        let problems: Vec<Value> =
            members.iter().flat_map(|r| r.value["problems"].as_array().cloned().unwrap_or_default()).collect();
        out_groups.insert(
            key.clone(),
            json!({
                "scenario": members[0].value["scenario"],
                "target": members[0].value["target"],
                "backend": members[0].value["backend"],
                "size": size(&members[0].value),
                "runs": members.len(),
                "files": members.iter().map(|r| r.file.display().to_string()).collect::<Vec<_>>(),
                "commands": members.iter().map(|r| r.value["command"].clone()).collect::<Vec<_>>(),
                "server_commands": members.iter().map(|r| r.value["server"]["command"].clone()).collect::<Vec<_>>(),
                "problems": problems,
                "targets_met_in_runs": members.iter().map(|r| r.value["targets"].clone()).collect::<Vec<_>>(),
                "notes": members[0].value["notes"],
                "median": med,
            }),
        );
        medians.insert(key.clone(), med);
    }
    Ok(json!({
        "tool": format!("medhub-bench {}", env!("CARGO_PKG_VERSION")),
        "raw_dir": raw.display().to_string(),
        "runs": runs.len(),
        "groups": out_groups,
        "headlines": headlines(&groups, &medians),
    }))
}

/// For each headline figure: the median per target and medhub's ratio to each peer.
fn headlines(groups: &BTreeMap<String, Vec<&Run>>, medians: &BTreeMap<String, BTreeMap<String, f64>>) -> Value {
    let mut out = Vec::new();
    let mut lines: Vec<(String, String, String, String, bool)> = HEADLINES
        .iter()
        .map(|(a, b, c, d, e)| (a.to_string(), b.to_string(), c.to_string(), d.to_string(), *e))
        .collect();
    // Fan-out: the largest channel of each run, both modes.
    for (key, med) in medians {
        if key.starts_with("fanout/") {
            for p in med.keys().filter(|p| p.ends_with(".deliveries_per_s") || p.ends_with(".last_recipient.p99_ms")) {
                let name = p.trim_start_matches("fanout.").replace('.', " ");
                let line = ("fanout".to_owned(), name, p.clone(), String::new(), !p.ends_with("deliveries_per_s"));
                if !lines.contains(&line) {
                    lines.push(line);
                }
            }
        }
    }
    for (scenario, name, path, unit, lower) in lines {
        // Per target and backend, the best median over its groups (sizes, sender counts).
        let mut best: BTreeMap<String, (f64, String)> = BTreeMap::new();
        for (key, runs) in groups {
            if runs[0].value["scenario"] != scenario.as_str() {
                continue;
            }
            let Some(x) = medians.get(key).and_then(|m| m.get(&path)).copied() else { continue };
            let who = format!(
                "{}/{}",
                runs[0].value["target"].as_str().unwrap_or("?"),
                runs[0].value["backend"].as_str().unwrap_or("?")
            );
            let better = |old: f64| if lower { x < old } else { x > old };
            match best.get(&who) {
                Some((old, _)) if !better(*old) => {}
                _ => {
                    best.insert(who, (x, key.clone()));
                }
            }
        }
        if best.is_empty() {
            continue;
        }
        let mut ratios = Map::new();
        for (mk, (m, _)) in best.iter().filter(|(k, _)| k.starts_with("medhub/")) {
            for (pk, (p, _)) in best.iter().filter(|(k, _)| !k.starts_with("medhub/")) {
                if *m > 0.0 && *p > 0.0 {
                    // Always "how many times better medhub is" (> 1 means medhub is better).
                    let r = if lower { p / m } else { m / p };
                    ratios.insert(format!("{mk} vs {pk}"), json!(r));
                }
            }
        }
        let values: Map<String, Value> =
            best.into_iter().map(|(k, (x, group))| (k, json!({"median": x, "group": group}))).collect();
        out.push(json!({
            "scenario": scenario, "figure": name, "path": path, "unit": unit,
            "lower_is_better": lower, "best_median": values,
            "medhub_advantage": ratios,
        }));
    }
    Value::Array(out)
}

/// One plotted series: a label and `[percentile, ms]` points.
struct Series {
    label: String,
    points: Vec<[f64; 2]>,
}

/// The distribution of the run whose p99 is the median of its group.
fn median_run_distribution(runs: &[&Run], section: impl Fn(&Value) -> Option<&Value>) -> Option<Vec<[f64; 2]>> {
    let mut with: Vec<(f64, &Value)> =
        runs.iter().filter_map(|r| section(&r.value).map(|s| (f(s, &["p99_ms"]).unwrap_or(f64::NAN), s))).collect();
    with.retain(|(p, s)| p.is_finite() && f(s, &["count"]).unwrap_or(0.0) > 0.0);
    if with.is_empty() {
        return None;
    }
    with.sort_by(|a, b| a.0.total_cmp(&b.0));
    let s = with[with.len() / 2].1;
    s["distribution"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| Some([p.get(0)?.as_f64()?, p.get(1)?.as_f64()?])).collect())
}

fn label(runs: &[&Run]) -> String {
    let v = &runs[0].value;
    let target = v["target"].as_str().unwrap_or("?");
    let backend = v["backend"].as_str().unwrap_or("?");
    let size = size(v);
    match target {
        "medhub" => format!("medhub ({backend}, n={size})"),
        other => format!("{other} (n={size})"),
    }
}

/// Renders the latency-distribution plot (SVG, no dependencies).
pub fn plot(raw: &Path) -> Result<String> {
    let runs = load(raw)?;
    let mut groups: BTreeMap<String, Vec<&Run>> = BTreeMap::new();
    for r in &runs {
        groups.entry(group_key(&r.value)).or_default().push(r);
    }
    let mut panels: Vec<(String, Vec<Series>)> = Vec::new();
    let mut panel = |title: &str, scenario: &str, pick: &dyn Fn(&Value) -> Option<&Value>| {
        let mut series = Vec::new();
        for (key, rs) in &groups {
            if !key.starts_with(&format!("{scenario}/")) {
                continue;
            }
            if let Some(points) = median_run_distribution(rs, pick) {
                series.push(Series { label: label(rs), points });
            }
        }
        panels.push((title.to_owned(), series));
    };
    panel("1:1 messaging: send → ack (medhub: durable)", "direct", &|v| v.get("direct").map(|d| &d["ack"]));
    panel("1:1 messaging: send → partner's delivery", "direct", &|v| v.get("direct").map(|d| &d["delivery"]));
    panel("Fan-out (largest channel, paced): last recipient", "fanout", &|v| {
        v["fanout"]
            .as_array()?
            .iter()
            .filter(|p| p["mode"] == "paced")
            .max_by_key(|p| p["members"].as_u64().unwrap_or(0))
            .map(|p| &p["last_recipient"])
    });
    panel("Max throughput: send → ack (closed loop)", "throughput", &|v| v.get("throughput").map(|t| &t["ack"]));
    Ok(render_svg(&panels))
}

/// One colour per target and backend, the same in every panel.
fn color(label: &str) -> &'static str {
    if label.starts_with("medhub (postgres") {
        "#8f5bd6"
    } else if label.starts_with("medhub") {
        "#1b6ac9"
    } else if label.starts_with("socketio") {
        "#d1495b"
    } else if label.starts_with("synapse") {
        "#2a9d52"
    } else {
        "#555555"
    }
}

fn x_of(p: f64) -> f64 {
    // HDR-style axis: distance to 100 % on a log scale (0 → 0, 90 → 1, 99 → 2, 99.9 → 3, ...).
    let p = p.min(99.999);
    (1.0 / (1.0 - p / 100.0)).log10()
}

fn render_svg(panels: &[(String, Vec<Series>)]) -> String {
    let (pw, ph) = (560.0, 340.0);
    let (ml, mr, mt, mb) = (64.0, 16.0, 36.0, 96.0);
    let cols = 2.0;
    let rows = (panels.len() as f64 / cols).ceil().max(1.0);
    let (w, h) = (pw * cols, ph * rows + 40.0);
    let mut o = String::new();
    o.push_str(&format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    ));
    o.push_str(&format!(
        "<text x=\"{}\" y=\"24\" font-size=\"15\" text-anchor=\"middle\">medhub-bench latency distributions \
         (median run of each group; log scales)</text>\n",
        w / 2.0
    ));
    for (i, (title, series)) in panels.iter().enumerate() {
        let ox = (i as f64 % cols) * pw;
        let oy = 40.0 + (i as f64 / cols).floor() * ph;
        let (x0, y0, x1, y1) = (ox + ml, oy + mt, ox + pw - mr, oy + ph - mb);
        o.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" font-size=\"13\" text-anchor=\"middle\">{}</text>\n",
            (x0 + x1) / 2.0,
            oy + 20.0,
            esc(title)
        ));
        o.push_str(&format!(
            "<rect x=\"{x0}\" y=\"{y0}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#999\"/>\n",
            x1 - x0,
            y1 - y0
        ));
        let all: Vec<f64> = series.iter().flat_map(|s| s.points.iter().map(|p| p[1])).filter(|v| *v > 0.0).collect();
        if all.is_empty() {
            o.push_str(&format!(
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#999\">no data</text>\n",
                (x0 + x1) / 2.0,
                (y0 + y1) / 2.0
            ));
            continue;
        }
        let lo = all.iter().copied().fold(f64::INFINITY, f64::min).max(0.001).log10().floor();
        let hi = all.iter().copied().fold(0.0, f64::max).max(0.01).log10().ceil().max(lo + 1.0);
        let xmax = 5.0;
        let px = |p: f64| x0 + (x1 - x0) * (x_of(p) / xmax);
        let py = |ms: f64| y1 - (y1 - y0) * ((ms.max(10f64.powf(lo)).log10() - lo) / (hi - lo));
        for (p, name) in
            [(0.0, "0%"), (90.0, "90%"), (99.0, "99%"), (99.9, "99.9%"), (99.99, "99.99%"), (99.999, "max")]
        {
            let x = px(p);
            o.push_str(&format!("<line x1=\"{x}\" y1=\"{y0}\" x2=\"{x}\" y2=\"{y1}\" stroke=\"#eee\"/>\n"));
            o.push_str(&format!("<text x=\"{x}\" y=\"{}\" text-anchor=\"middle\">{name}</text>\n", y1 + 14.0));
        }
        let mut e = lo;
        while e <= hi {
            let y = py(10f64.powf(e));
            o.push_str(&format!("<line x1=\"{x0}\" y1=\"{y}\" x2=\"{x1}\" y2=\"{y}\" stroke=\"#eee\"/>\n"));
            o.push_str(&format!(
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n",
                x0 - 4.0,
                y + 4.0,
                fmt_ms(10f64.powf(e))
            ));
            e += 1.0;
        }
        o.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 {} {})\">ms</text>\n",
            ox + 14.0,
            (y0 + y1) / 2.0,
            ox + 14.0,
            (y0 + y1) / 2.0
        ));
        o.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">percentile</text>\n",
            (x0 + x1) / 2.0,
            y1 + 28.0
        ));
        for (k, s) in series.iter().enumerate() {
            let color = color(&s.label);
            let pts: Vec<String> = s.points.iter().map(|p| format!("{:.1},{:.1}", px(p[0]), py(p[1]))).collect();
            o.push_str(&format!(
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\n",
                pts.join(" ")
            ));
            let ly = y1 + 44.0 + 14.0 * k as f64;
            o.push_str(&format!(
                "<line x1=\"{x0}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{color}\" stroke-width=\"3\"/>\n",
                ly - 4.0,
                x0 + 18.0,
                ly - 4.0
            ));
            o.push_str(&format!("<text x=\"{}\" y=\"{ly}\">{}</text>\n", x0 + 24.0, esc(&s.label)));
        }
    }
    o.push_str("</svg>\n");
    o
}

fn fmt_ms(v: f64) -> String {
    if v >= 1.0 { format!("{v:.0}") } else { format!("{v}") }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![f64::NAN]), None);
    }

    #[test]
    fn summaries_and_plots_come_from_raw_files() {
        let dir = std::env::temp_dir().join(format!("medhub-bench-summarize-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (i, p99) in [1.0, 3.0, 2.0].iter().enumerate() {
            for target in ["medhub", "socketio"] {
                let v = json!({
                    "scenario": "direct", "target": target, "backend": "x", "command": format!("run {i}"),
                    "params": {"clients": 10}, "server": {"command": "s"}, "problems": [], "targets": [], "notes": [],
                    "direct": {"ack": {"count": 5, "p99_ms": p99 * if target == "medhub" { 1.0 } else { 4.0 },
                               "distribution": [[0.0, 0.5], [99.0, *p99], [100.0, 9.0]]},
                               "delivery": {"count": 5, "p99_ms": 1.0, "distribution": [[0.0, 0.5], [100.0, 2.0]]}}
                });
                std::fs::write(dir.join(format!("{target}-{i}.json")), v.to_string()).unwrap();
            }
        }
        let summary = summarize(&dir).unwrap();
        assert_eq!(summary["groups"]["direct/medhub/x/10"]["median"]["direct.ack.p99_ms"], json!(2.0));
        let headline =
            summary["headlines"].as_array().unwrap().iter().find(|h| h["path"] == "direct.ack.p99_ms").unwrap();
        assert_eq!(headline["medhub_advantage"]["medhub/x vs socketio/x"], json!(4.0));
        assert_eq!(headline["best_median"]["medhub/x"]["median"], json!(2.0));
        let svg = plot(&dir).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("polyline"), "{svg}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
