//! The run's figures as one markdown table, and the latency plot as a hand-written SVG.

use std::fmt::Write;

use crate::client::{RunFigures, quantile_ms};

/// The configuration every other row is compared with.
pub const PASSTHROUGH: &str = "passthrough";

/// One configuration at one concurrency.
pub struct Row {
    pub configuration: String,
    pub concurrency: usize,
    pub requests_per_second: f64,
    pub first_byte_p50: f64,
    pub first_byte_p99: f64,
    pub done_p50: f64,
    pub done_p99: f64,
    /// How long `[DONE]` was held back, p50, in milliseconds.
    pub held_p50: f64,
    /// CPU microseconds per request: proxy, database server, load generator.
    pub cpu: [f64; 3],
    pub peak_rss: u64,
    pub failures: usize,
}

impl Row {
    pub fn new(configuration: &str, concurrency: usize, run: &RunFigures, peak_rss: u64) -> Self {
        Self {
            configuration: configuration.to_owned(),
            concurrency,
            requests_per_second: run.requests_per_second,
            first_byte_p50: quantile_ms(&run.first_byte, 0.50),
            first_byte_p99: quantile_ms(&run.first_byte, 0.99),
            done_p50: quantile_ms(&run.done, 0.50),
            done_p99: quantile_ms(&run.done, 0.99),
            held_p50: quantile_ms(&run.held, 0.50),
            cpu: run.cpu,
            peak_rss,
            failures: run.failures,
        }
    }
}

/// The table: absolute figures, then each row against passthrough at the same K.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| configuration | K | req/s | × passthrough | TTFB p50 ms | TTFB p99 ms | added TTFB p50 µs | [DONE] p50 ms | [DONE] p99 ms | added [DONE] p50 µs | [DONE] held p50 µs | CPU µs/req: proxy | database | load generator | peak RSS MiB | failed |\n\
         |---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for row in rows {
        let base = rows
            .iter()
            .find(|r| r.configuration == PASSTHROUGH && r.concurrency == row.concurrency);
        let (ratio, added_first, added_done) = match base {
            Some(base) => (
                format!("{:.3}", row.requests_per_second / base.requests_per_second),
                format!(
                    "{:+.0}",
                    (row.first_byte_p50 - base.first_byte_p50) * 1000.0
                ),
                format!("{:+.0}", (row.done_p50 - base.done_p50) * 1000.0),
            ),
            None => ("–".into(), "–".into(), "–".into()),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {} | {:.3} | {:.3} | {} | {:.3} | {:.3} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {} |",
            row.configuration,
            row.concurrency,
            row.requests_per_second,
            ratio,
            row.first_byte_p50,
            row.first_byte_p99,
            added_first,
            row.done_p50,
            row.done_p99,
            added_done,
            row.held_p50 * 1000.0,
            row.cpu[0],
            row.cpu[1],
            row.cpu[2],
            row.peak_rss as f64 / (1024.0 * 1024.0),
            row.failures,
        );
    }
    out
}

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 460.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 250.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 10] = [
    "#000000", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
    "#7f7f7f", "#17becf",
];

/// Time to `[DONE]` p50 against concurrency, one line per configuration; both axes
/// logarithmic, since the figures span orders of magnitude.
pub fn latency_svg(rows: &[Row], title: &str) -> String {
    let mut configurations: Vec<&str> = Vec::new();
    for row in rows {
        if !configurations.contains(&row.configuration.as_str()) {
            configurations.push(&row.configuration);
        }
    }
    let mut levels: Vec<usize> = rows.iter().map(|r| r.concurrency).collect();
    levels.sort_unstable();
    levels.dedup();
    let values = rows
        .iter()
        .map(|r| r.done_p50)
        .filter(|v| v.is_finite() && *v > 0.0);
    let low = values.clone().fold(f64::INFINITY, f64::min);
    let high = values.fold(0.0, f64::max);
    let (low, high) = if low.is_finite() {
        (low, high)
    } else {
        (0.1, 1.0)
    };
    let y_min = 10f64.powf(low.log10().floor());
    let y_max = 10f64.powf(high.log10().ceil()).max(y_min * 10.0);
    let k_min = *levels.first().unwrap_or(&1) as f64;
    let k_max = (*levels.last().unwrap_or(&2) as f64).max(k_min * 2.0);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |k: f64| LEFT + (k.log2() - k_min.log2()) / (k_max.log2() - k_min.log2()) * plot_w;
    let y = |ms: f64| TOP + (y_max.log10() - ms.log10()) / (y_max.log10() - y_min.log10()) * plot_h;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
        LEFT + plot_w / 2.0,
        escape(title)
    );
    // Horizontal grid at 1, 2 and 5 of each decade.
    let mut decade = y_min;
    while decade < y_max * 1.001 {
        for step in [1.0, 2.0, 5.0] {
            let value = decade * step;
            if value > y_max * 1.001 {
                break;
            }
            let py = y(value);
            let stroke = if step == 1.0 { "#bbbbbb" } else { "#e5e5e5" };
            let _ = writeln!(
                svg,
                r#"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="{stroke}"/>"#,
                LEFT + plot_w
            );
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                LEFT - 6.0,
                py + 4.0,
                trim_number(value)
            );
        }
        decade *= 10.0;
    }
    for &k in &levels {
        let px = x(k as f64);
        let _ = writeln!(
            svg,
            r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="#e5e5e5"/>"##,
            TOP + plot_h
        );
        let _ = writeln!(
            svg,
            r#"<text x="{px:.1}" y="{:.1}" text-anchor="middle">{k}</text>"#,
            TOP + plot_h + 18.0
        );
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#444444"/>"##
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">concurrent streams (K)</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 18.0
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">time to [DONE], p50 (ms)</text>"#,
        TOP + plot_h / 2.0
    );
    for (index, configuration) in configurations.iter().enumerate() {
        let color = COLORS[index % COLORS.len()];
        let points: Vec<String> = rows
            .iter()
            .filter(|r| r.configuration == *configuration && r.done_p50 > 0.0)
            .map(|r| format!("{:.1},{:.1}", x(r.concurrency as f64), y(r.done_p50)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
            points.join(" ")
        );
        for point in &points {
            let (px, py) = point.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(svg, r#"<circle cx="{px}" cy="{py}" r="3" fill="{color}"/>"#);
        }
        let ly = TOP + 10.0 + index as f64 * 20.0;
        let lx = LEFT + plot_w + 16.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"/>"#,
            lx + 22.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}">{}</text>"#,
            lx + 28.0,
            ly + 4.0,
            escape(configuration)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn trim_number(value: f64) -> String {
    if value >= 1.0 {
        format!("{value:.0}")
    } else {
        let text = format!("{value:.3}");
        text.trim_end_matches('0').to_owned()
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
