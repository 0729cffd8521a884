//! Compliance reports as documents: the pure part (no I/O). A [`Document`] is what a report
//! says (heading, period, charts, summary tables and its rows); this module turns one into a
//! printable, self-contained HTML page with inline SVG charts, and its rows into RFC 4180 CSV
//! (docs/audit-reports.md). What goes into a document is decided in `reports/build.rs`.
//!
//! The charts are drawn here as SVG rectangles: a bar chart is a few dozen lines, and the
//! chart crates either draw through a backend with font handling and its own dependencies
//! (plotters) or emit JavaScript (charming); a report must print, open offline and run nothing.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

use crate::ServiceError;

/// Most bars of a chart over time: longer periods group days into buckets.
pub const MAX_TIME_BARS: usize = 92;
/// Most bars of a chart by category; the rest are summed into one "others" bar.
pub const MAX_CATEGORY_BARS: usize = 15;

/// A report, ready to render.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    /// "Patient access report".
    pub title: String,
    pub org: String,
    /// What the report is about, when it is about one thing: ("Patient", "pat-42").
    pub subject: Option<(String, String)>,
    pub since: Timestamp,
    /// The end of the period, exclusive.
    pub until: Timestamp,
    pub generated_at: Timestamp,
    /// Who asked for it: a user, the operator's CLI or the schedule.
    pub generated_by: String,
    /// Which records the report shows, in words (its query).
    pub selection: String,
    pub notes: Vec<String>,
    pub charts: Vec<Chart>,
    /// Small tables shown before the rows (per user, per outcome).
    pub summaries: Vec<Table>,
    /// The report's rows: the CSV file is exactly this table.
    pub table: Table,
    /// Further tables shown after the rows, in the HTML page only.
    pub sections: Vec<Table>,
}

/// A table with a heading.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// What an empty table says instead.
    pub empty: String,
}

/// One bar: a label and a count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bar {
    pub label: String,
    pub value: u64,
}

/// A chart, drawn as inline SVG.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Chart {
    /// Counts over the period, one vertical bar per bucket of days (see [`over_time`]).
    OverTime { title: String, bars: Vec<Bar> },
    /// Counts by category, one horizontal bar each, largest first (see [`by_category`]).
    ByCategory { title: String, bars: Vec<Bar> },
}

/// The UTC days of `[since, until)` in buckets of equal length (one day unless the period is
/// longer than [`MAX_TIME_BARS`] days), each labelled with its first day, and how many of
/// `times` fall in each. Times outside the period are not counted.
pub fn over_time(since: Timestamp, until: Timestamp, times: impl IntoIterator<Item = Timestamp>) -> Vec<Bar> {
    let first = day(since);
    let last = day(until.checked_sub(1.microsecond()).unwrap_or(until));
    let days = days_between(first, last).max(0) as usize + 1;
    let bucket = days.div_ceil(MAX_TIME_BARS).max(1);
    let n = days.div_ceil(bucket);
    let mut bars: Vec<Bar> = (0..n)
        .map(|i| {
            let start = first.checked_add(((i * bucket) as i64).days()).unwrap_or(first);
            let label = if bucket == 1 { start.to_string() } else { format!("{start} +{bucket}d") };
            Bar { label, value: 0 }
        })
        .collect();
    for t in times {
        if t < since || t >= until {
            continue;
        }
        let i = days_between(first, day(t)).max(0) as usize / bucket;
        if let Some(b) = bars.get_mut(i) {
            b.value += 1;
        }
    }
    bars
}

/// Counts of each distinct label, largest first (ties by label), the smallest beyond
/// [`MAX_CATEGORY_BARS`] summed into a last bar "others (N)".
pub fn by_category(labels: impl IntoIterator<Item = String>) -> Vec<Bar> {
    let mut counts: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for l in labels {
        *counts.entry(l).or_default() += 1;
    }
    let mut bars: Vec<Bar> = counts.into_iter().map(|(label, value)| Bar { label, value }).collect();
    bars.sort_by(|a, b| b.value.cmp(&a.value).then_with(|| a.label.cmp(&b.label)));
    if bars.len() > MAX_CATEGORY_BARS {
        let rest = bars.split_off(MAX_CATEGORY_BARS - 1);
        let value = rest.iter().map(|b| b.value).sum();
        bars.push(Bar { label: format!("others ({})", rest.len()), value });
    }
    bars
}

/// A time as reports show it: UTC, to the second, RFC 3339 (`2026-03-01T14:05:09Z`).
pub fn time(t: Timestamp) -> String {
    Timestamp::from_second(t.as_second()).unwrap_or(t).to_string()
}

/// The report's rows as CSV: RFC 4180 (comma, CRLF, fields quoted when they hold a comma,
/// quote or line break, quotes doubled), a header row, UTF-8 without a byte-order mark.
/// A cell that a spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, a tab
/// or a carriage return) is prefixed with `'`, so opening the file runs nothing.
pub fn csv(table: &Table) -> Result<String, ServiceError> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .quote_style(csv::QuoteStyle::Necessary)
        .from_writer(Vec::new());
    let fail = |e: csv::Error| ServiceError::AuditExport(format!("report CSV: {e}"));
    w.write_record(table.columns.iter().map(|c| neutralize(c).into_owned())).map_err(fail)?;
    for row in &table.rows {
        w.write_record(row.iter().map(|c| neutralize(c).into_owned())).map_err(fail)?;
    }
    let bytes = w.into_inner().map_err(|e| ServiceError::AuditExport(format!("report CSV: {}", e.error())))?;
    String::from_utf8(bytes).map_err(|e| ServiceError::AuditExport(format!("report CSV: {e}")))
}

/// A CSV cell that cannot start a spreadsheet formula (OWASP "CSV injection").
pub fn neutralize(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}").into(),
        _ => cell.into(),
    }
}

/// Text for HTML: `& < > " '` as character references, so no value can become markup.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The report page's style sheet, inline so that the page is one self-contained file.
pub const STYLE: &str = "
body { font: 10pt/1.4 system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; color: #1a1a1a; margin: 2em; }
h1 { font-size: 18pt; margin: 0 0 0.3em; }
h2 { font-size: 13pt; margin: 1.5em 0 0.4em; border-bottom: 1px solid #999; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: 0.15em 1em; margin: 0; }
dl.meta dt { font-weight: 600; }
dl.meta dd { margin: 0; }
p.note { background: #fff6d6; border-left: 4px solid #d9a400; padding: 0.4em 0.8em; }
.charts { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; border: 1px solid #ccc; padding: 0.5em; break-inside: avoid; }
figcaption { font-weight: 600; margin-bottom: 0.3em; }
svg { display: block; max-width: 100%; height: auto; }
svg text { font: 9px sans-serif; fill: #333; }
svg .bar { fill: #2f6db5; }
svg .axis { stroke: #888; stroke-width: 1; }
table { border-collapse: collapse; width: 100%; margin: 0.3em 0 1em; }
th, td { border: 1px solid #bbb; padding: 0.2em 0.4em; text-align: left; vertical-align: top; overflow-wrap: anywhere; }
th { background: #eef1f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #f8f8f8; }
footer { margin-top: 2em; font-size: 8pt; color: #555; }
@media print {
  @page { size: A4 landscape; margin: 12mm; }
  body { margin: 0; font-size: 8pt; }
  thead { display: table-header-group; }
  tr, figure { break-inside: avoid; }
  h2 { break-after: avoid; }
  * { print-color-adjust: exact; -webkit-print-color-adjust: exact; }
}
";

/// The Content-Security-Policy a report page is served with: nothing loads, nothing runs,
/// and the one inline style sheet is allowed by its hash.
pub fn content_security_policy() -> String {
    use base64::Engine;
    use sha2::Digest;
    let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(STYLE.as_bytes()));
    format!(
        "default-src 'none'; style-src 'sha256-{hash}'; img-src 'none'; form-action 'none'; \
         frame-ancestors 'none'; base-uri 'none'"
    )
}

/// The printable page: one file, inline CSS (with print rules) and SVG, no scripts, no
/// external resources, every value escaped. It is also well-formed XML.
pub fn html(doc: &Document) -> String {
    let mut h = String::with_capacity(4096 + doc.table.rows.len() * 200);
    let title = match &doc.subject {
        Some((_, s)) => format!("{}: {s} ({})", doc.title, doc.org),
        None => format!("{} ({})", doc.title, doc.org),
    };
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n");
    h.push_str(&format!("<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<header>\n", escape(&title)));
    h.push_str(&format!("<h1>{}</h1>\n<dl class=\"meta\">\n", escape(&doc.title)));
    let mut meta = vec![("Organization".to_owned(), doc.org.clone())];
    if let Some((what, s)) = &doc.subject {
        meta.push((what.clone(), s.clone()));
    }
    meta.push(("Period".into(), format!("{} to {} (UTC, end excluded)", time(doc.since), time(doc.until))));
    meta.push(("Records".into(), doc.table.rows.len().to_string()));
    meta.push(("Selection".into(), doc.selection.clone()));
    meta.push(("Generated".into(), format!("{} by {}", time(doc.generated_at), doc.generated_by)));
    for (k, v) in &meta {
        h.push_str(&format!("<dt>{}</dt><dd>{}</dd>\n", escape(k), escape(v)));
    }
    h.push_str("</dl>\n");
    for n in &doc.notes {
        h.push_str(&format!("<p class=\"note\">{}</p>\n", escape(n)));
    }
    h.push_str("</header>\n");
    if !doc.charts.is_empty() {
        h.push_str("<section class=\"charts\">\n");
        for c in &doc.charts {
            h.push_str(&chart(c));
        }
        h.push_str("</section>\n");
    }
    for t in &doc.summaries {
        h.push_str(&table(t));
    }
    h.push_str(&table(&doc.table));
    for t in &doc.sections {
        h.push_str(&table(t));
    }
    h.push_str(
        "<footer>Generated by medhub. Times are UTC. Generating this report was itself recorded in the \
         audit log (action audit.report). The seq column is the record's number in the tamper-evident \
         log: an inclusion proof for it can be asked for at /api/v1/audit/proof/inclusion.</footer>\n",
    );
    h.push_str("</body>\n</html>\n");
    h
}

fn table(t: &Table) -> String {
    let mut h = format!("<section>\n<h2>{}</h2>\n", escape(&t.title));
    if t.rows.is_empty() {
        h.push_str(&format!("<p>{}</p>\n</section>\n", escape(&t.empty)));
        return h;
    }
    h.push_str("<table>\n<thead><tr>");
    for c in &t.columns {
        h.push_str(&format!("<th>{}</th>", escape(c)));
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for row in &t.rows {
        h.push_str("<tr>");
        for cell in row {
            let num = !cell.is_empty() && cell.bytes().all(|b| b.is_ascii_digit());
            h.push_str(if num { "<td class=\"num\">" } else { "<td>" });
            h.push_str(&escape(cell));
            h.push_str("</td>");
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table>\n</section>\n");
    h
}

/// One chart as an SVG figure. Every bar is a `rect` of class `bar` with a `title` giving its
/// label and value (a tooltip on screen, and what a screen reader reads).
pub fn chart(c: &Chart) -> String {
    match c {
        Chart::OverTime { title, bars } => vertical(title, bars),
        Chart::ByCategory { title, bars } => horizontal(title, bars),
    }
}

fn vertical(title: &str, bars: &[Bar]) -> String {
    const W: f64 = 720.0;
    const H: f64 = 220.0;
    const LEFT: f64 = 44.0;
    const BOTTOM: f64 = 36.0;
    const TOP: f64 = 12.0;
    let plot_w = W - LEFT - 8.0;
    let plot_h = H - TOP - BOTTOM;
    let max = bars.iter().map(|b| b.value).max().unwrap_or(0).max(1);
    let n = bars.len().max(1);
    let slot = plot_w / n as f64;
    let mut s = figure_start(title, W, H);
    let base = TOP + plot_h;
    s.push_str(&format!(
        "<line class=\"axis\" x1=\"{LEFT}\" y1=\"{base}\" x2=\"{}\" y2=\"{base}\"/>\n\
         <line class=\"axis\" x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{base}\"/>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{max}</text>\n\
         <text x=\"{}\" y=\"{base}\" text-anchor=\"end\">0</text>\n",
        W - 8.0,
        LEFT - 4.0,
        TOP + 8.0,
        LEFT - 4.0
    ));
    // About eight labels along the axis, whatever the number of bars.
    let every = n.div_ceil(8).max(1);
    for (i, b) in bars.iter().enumerate() {
        let height = plot_h * b.value as f64 / max as f64;
        let x = LEFT + slot * i as f64 + slot * 0.1;
        s.push_str(&format!(
            "<rect class=\"bar\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{height:.1}\"><title>{}: {}</title></rect>\n",
            base - height,
            slot * 0.8,
            escape(&b.label),
            b.value
        ));
        if i.is_multiple_of(every) {
            s.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"start\">{}</text>\n",
                LEFT + slot * i as f64,
                base + 14.0,
                escape(&b.label)
            ));
        }
    }
    s.push_str("</svg>\n</figure>\n");
    s
}

fn horizontal(title: &str, bars: &[Bar]) -> String {
    const W: f64 = 560.0;
    const LABEL: f64 = 210.0;
    const ROW: f64 = 18.0;
    let plot_w = W - LABEL - 50.0;
    let h = ROW * bars.len().max(1) as f64 + 8.0;
    let max = bars.iter().map(|b| b.value).max().unwrap_or(0).max(1);
    let mut s = figure_start(title, W, h);
    if bars.is_empty() {
        s.push_str(&format!("<text x=\"4\" y=\"{:.1}\">nothing in this period</text>\n", ROW - 4.0));
    }
    for (i, b) in bars.iter().enumerate() {
        let y = 4.0 + ROW * i as f64;
        let width = plot_w * b.value as f64 / max as f64;
        let label: String = if b.label.chars().count() > 38 {
            b.label.chars().take(37).chain(['…']).collect()
        } else {
            b.label.clone()
        };
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n\
             <rect class=\"bar\" x=\"{LABEL}\" y=\"{:.1}\" width=\"{width:.1}\" height=\"{:.1}\"><title>{}: {}</title></rect>\n\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>\n",
            LABEL - 6.0,
            y + ROW * 0.7,
            escape(&label),
            y + 2.0,
            ROW - 4.0,
            escape(&b.label),
            b.value,
            LABEL + width + 4.0,
            y + ROW * 0.7,
            b.value
        ));
    }
    s.push_str("</svg>\n</figure>\n");
    s
}

fn figure_start(title: &str, w: f64, h: f64) -> String {
    format!(
        "<figure>\n<figcaption>{t}</figcaption>\n<svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" \
         viewBox=\"0 0 {w} {h:.0}\" width=\"{w}\" height=\"{h:.0}\"><title>{t}</title>\n",
        t = escape(title)
    )
}

fn day(t: Timestamp) -> Date {
    t.to_zoned(TimeZone::UTC).date()
}

fn days_between(a: Date, b: Date) -> i64 {
    let secs = |d: Date| d.to_zoned(TimeZone::UTC).map(|z| z.timestamp().as_second()).unwrap_or(0);
    (secs(b) - secs(a)).div_euclid(86_400)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn doc(hostile: &str) -> Document {
        Document {
            title: "Patient access report".into(),
            org: format!("St {hostile}"),
            subject: Some(("Patient".into(), hostile.into())),
            since: ts("2026-03-01T00:00:00Z"),
            until: ts("2026-03-08T00:00:00Z"),
            generated_at: ts("2026-03-08T01:02:03.456Z"),
            generated_by: hostile.into(),
            selection: "every record".into(),
            notes: vec![hostile.into()],
            charts: vec![
                Chart::OverTime {
                    title: hostile.into(),
                    bars: over_time(
                        ts("2026-03-01T00:00:00Z"),
                        ts("2026-03-08T00:00:00Z"),
                        [ts("2026-03-02T10:00:00Z")],
                    ),
                },
                Chart::ByCategory { title: "By user".into(), bars: by_category([hostile.to_owned()]) },
            ],
            summaries: vec![],
            table: Table {
                title: "Records".into(),
                columns: vec!["time".into(), "user".into()],
                rows: vec![vec!["2026-03-02T10:00:00Z".into(), hostile.into()]],
                empty: "none".into(),
            },
            sections: vec![],
        }
    }

    #[test]
    fn days_are_counted_per_utc_day_and_long_periods_are_bucketed() {
        let bars = over_time(
            ts("2026-03-01T00:00:00Z"),
            ts("2026-03-04T00:00:00Z"),
            [
                ts("2026-02-28T23:59:59Z"),
                ts("2026-03-01T00:00:00Z"),
                ts("2026-03-03T23:59:59Z"),
                ts("2026-03-03T12:00:00Z"),
                ts("2026-03-04T00:00:00Z"),
            ],
        );
        let got: Vec<(&str, u64)> = bars.iter().map(|b| (b.label.as_str(), b.value)).collect();
        assert_eq!(got, [("2026-03-01", 1), ("2026-03-02", 0), ("2026-03-03", 2)]);
        // A period that does not start at midnight still has one bar per day it touches.
        assert_eq!(over_time(ts("2026-03-01T12:00:00Z"), ts("2026-03-02T12:00:00Z"), []).len(), 2);
        // Six years: buckets of equal length, at most MAX_TIME_BARS of them, every time counted.
        let since = ts("2020-01-01T00:00:00Z");
        let until = ts("2026-01-01T00:00:00Z");
        let times: Vec<Timestamp> = (0..2191).map(|d| since + jiff::SignedDuration::from_hours(24 * d)).collect();
        let bars = over_time(since, until, times);
        assert!(bars.len() <= MAX_TIME_BARS, "{}", bars.len());
        assert_eq!(bars.iter().map(|b| b.value).sum::<u64>(), 2191);
        assert!(bars[0].label.starts_with("2020-01-01 +"), "{}", bars[0].label);
    }

    #[test]
    fn categories_are_largest_first_and_the_tail_is_summed() {
        let labels = (0..20).flat_map(|i| std::iter::repeat_n(format!("u{i:02}"), i + 1));
        let bars = by_category(labels);
        assert_eq!(bars.len(), MAX_CATEGORY_BARS);
        assert_eq!((bars[0].label.as_str(), bars[0].value), ("u19", 20));
        let last = bars.last().unwrap();
        assert_eq!(last.label, "others (6)");
        assert_eq!(last.value, (1..=6).sum::<u64>());
    }

    #[test]
    fn csv_is_rfc_4180_and_cannot_start_a_formula() {
        let t = Table {
            title: "x".into(),
            columns: vec!["a".into(), "b".into(), "c".into()],
            rows: vec![
                vec!["plain".into(), "with, comma".into(), "say \"hi\"\nthere".into()],
                vec!["=HYPERLINK(\"http://evil\")".into(), "+1".into(), "-2".into()],
                vec!["@SUM(A1)".into(), "\tx".into(), "".into()],
            ],
            empty: String::new(),
        };
        let out = csv(&t).unwrap();
        assert_eq!(
            out,
            "a,b,c\r\nplain,\"with, comma\",\"say \"\"hi\"\"\nthere\"\r\n\
             \"'=HYPERLINK(\"\"http://evil\"\")\",'+1,'-2\r\n'@SUM(A1),'\tx,\r\n"
        );
        let mut r = ::csv::ReaderBuilder::new().from_reader(out.as_bytes());
        let rows: Vec<Vec<String>> = r.records().map(|x| x.unwrap().iter().map(str::to_owned).collect()).collect();
        assert_eq!(rows[0], ["plain", "with, comma", "say \"hi\"\nthere"]);
        assert_eq!(rows[1][0], "'=HYPERLINK(\"http://evil\")");
    }

    #[test]
    fn a_hostile_value_cannot_inject_markup() {
        let hostile = "</td><script>alert(1)</script><img src=x onerror=alert(2)>&\"'";
        let page = html(&doc(hostile));
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains("<img"), "{page}");
        // It parses as XML, and the value comes back as text wherever it was shown.
        let parsed = roxmltree::Document::parse_with_options(
            &page,
            roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() },
        )
        .unwrap();
        let texts: Vec<&str> = parsed.descendants().filter_map(|n| n.text()).collect();
        assert!(texts.iter().filter(|t| t.contains(hostile)).count() >= 5, "{texts:?}");
        let elements: std::collections::BTreeSet<&str> =
            parsed.descendants().filter(|n| n.is_element()).map(|n| n.tag_name().name()).collect();
        assert!(!elements.contains("script") && !elements.contains("img"), "{elements:?}");
        assert!(page.contains("@media print"));
        // Self-contained: nothing refers to another resource.
        for n in parsed.descendants().filter(|n| n.is_element()) {
            for a in ["src", "href", "srcset", "data", "style"] {
                assert!(n.attribute(a).is_none(), "<{}> has {a}", n.tag_name().name());
            }
        }
    }

    #[test]
    fn charts_have_one_bar_per_value_with_its_label() {
        let page = html(&doc("x"));
        let parsed = roxmltree::Document::parse_with_options(
            &page,
            roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() },
        )
        .unwrap();
        let svgs: Vec<_> = parsed.descendants().filter(|n| n.has_tag_name("svg")).collect();
        assert_eq!(svgs.len(), 2);
        let bars = |svg: &roxmltree::Node| -> Vec<String> {
            svg.descendants()
                .filter(|n| n.has_tag_name("rect") && n.attribute("class") == Some("bar"))
                .map(|n| n.descendants().find(|c| c.has_tag_name("title")).and_then(|t| t.text()).unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            bars(&svgs[0]),
            [
                "2026-03-01: 0",
                "2026-03-02: 1",
                "2026-03-03: 0",
                "2026-03-04: 0",
                "2026-03-05: 0",
                "2026-03-06: 0",
                "2026-03-07: 0"
            ]
        );
        assert_eq!(bars(&svgs[1]), ["x: 1"]);
    }

    #[test]
    fn the_style_sheet_is_allowed_by_its_hash_and_nothing_else_loads() {
        let csp = content_security_policy();
        assert!(csp.starts_with("default-src 'none'; style-src 'sha256-"), "{csp}");
        assert!(!csp.contains("script-src"), "scripts fall back to default-src 'none': {csp}");
    }
}
