//! The run's figures: the markdown tables, and the load table's rows as CSV.

use std::fmt::Write;
use std::time::Duration;

use crate::client::{RunFigures, quantile_ms};

/// The configuration every other row is compared with.
pub const PASSTHROUGH: &str = "passthrough";

/// The passthrough configuration whose client sends the whole history of a conversation
/// continued from `seeded` messages: what `continued {seeded} · …` costs without the layer.
pub fn sent_whole(seeded: usize) -> String {
    format!("{PASSTHROUGH}, continued {seeded} sent whole")
}

/// The configuration a `continued {seeded} · {backend}` one is also read against.
fn sent_whole_of(configuration: &str) -> Option<String> {
    let seeded = configuration
        .strip_prefix("continued ")?
        .split(' ')
        .next()?;
    Some(sent_whole(seeded.parse().ok()?))
}

/// The memory figures of one proxy process, in bytes of RSS.
pub struct Memory {
    /// `passthrough`, `sqlite` or `postgres`.
    pub proxy: String,
    /// After a few requests, nothing in flight.
    pub idle: u64,
    /// With the held streams open.
    pub during: u64,
}

/// One configuration at one concurrency.
pub struct Row {
    pub configuration: String,
    pub concurrency: usize,
    /// Requests that ended within the measured time: what the CPU is divided by.
    pub completed: usize,
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
    /// The paced mode's rounds: passthrough's CPU per request in the window measured just
    /// before this row's, which this row is read against instead of the passthrough row.
    pub paired_passthrough: Option<f64>,
}

impl Row {
    pub fn new(configuration: &str, concurrency: usize, run: &RunFigures, peak_rss: u64) -> Self {
        Self {
            configuration: configuration.to_owned(),
            concurrency,
            completed: run.completed,
            requests_per_second: run.requests_per_second,
            first_byte_p50: quantile_ms(&run.first_byte, 0.50),
            first_byte_p99: quantile_ms(&run.first_byte, 0.99),
            done_p50: quantile_ms(&run.done, 0.50),
            done_p99: quantile_ms(&run.done, 0.99),
            held_p50: quantile_ms(&run.held, 0.50),
            cpu: run.cpu,
            peak_rss,
            failures: run.failures,
            paired_passthrough: None,
        }
    }

    /// This row's proxy CPU against passthrough's: the window paired with it, else the
    /// passthrough row at the same concurrency; `None` when there is neither.
    fn against_passthrough(&self, rows: &[Row]) -> Option<f64> {
        let base = self.paired_passthrough.or_else(|| {
            rows.iter()
                .find(|r| r.configuration == PASSTHROUGH && r.concurrency == self.concurrency)
                .map(|base| base.cpu[0])
        })?;
        (base > 0.0).then(|| self.cpu[0] / base)
    }
}

/// The load table's columns, for the markdown header and the CSV header alike.
const COLUMNS: [&str; 16] = [
    "configuration",
    "K",
    "req/s",
    "× passthrough",
    "TTFB p50 ms",
    "TTFB p99 ms",
    "added TTFB p50 µs",
    "[DONE] p50 ms",
    "[DONE] p99 ms",
    "added [DONE] p50 µs",
    "[DONE] held p50 µs",
    "CPU µs/req: proxy",
    "database",
    "load generator",
    "peak RSS MiB",
    "failed",
];

/// The whole report: what was run, the load table, and the memory table.
pub fn markdown(
    setup: &str,
    rows: &[Row],
    memory: &[Memory],
    held: usize,
    reply_bytes: usize,
) -> String {
    format!(
        "{setup}\n\n{}\n{}",
        table(rows),
        memory_table(memory, held, reply_bytes)
    )
}

/// The paced mode's report: what was run, and per configuration the requests, the CPU
/// each cost the proxy and that against passthrough's, the database's and the load
/// generator's CPU, the latencies (a reply takes seconds by design), how long `[DONE]`
/// waited for the turn to be stored, and the proxy's peak RSS. Its requests per second are those that ended in the `measure`d time: with
/// replies of seconds, the load table's (requests that began and ended in it) would
/// leave out a reply's length of the measured time.
pub fn paced_markdown(setup: &str, rows: &[Row], measure: Duration) -> String {
    let mut out = format!(
        "{setup}\n\n\
         | configuration | streams | requests | req/s | proxy CPU µs/req | × passthrough | database CPU µs/req | load generator CPU µs/req | TTFB p50 ms | [DONE] p50 ms | [DONE] p99 ms | [DONE] held p50 ms | proxy peak RSS MiB | failed |\n\
         |---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n"
    );
    for row in rows {
        let ratio = row
            .against_passthrough(rows)
            .map_or("–".to_owned(), |ratio| format!("{ratio:.2}"));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.1} | {:.0} | {ratio} | {:.0} | {:.0} | {:.1} | {:.0} | {:.0} | {:.1} | {:.1} | {} |",
            row.configuration,
            row.concurrency,
            row.completed,
            row.completed as f64 / measure.as_secs_f64().max(f64::MIN_POSITIVE),
            row.cpu[0],
            row.cpu[1],
            row.cpu[2],
            row.first_byte_p50,
            row.done_p50,
            row.done_p99,
            row.held_p50,
            row.peak_rss as f64 / (1024.0 * 1024.0),
            row.failures
        );
    }
    out.push_str(&round_medians(rows));
    out
}

/// The paced mode's rounds, when there were several: each configuration's ratios to the
/// passthrough window before each of its own, and their median, the figure that decides.
fn round_medians(rows: &[Row]) -> String {
    let mut configurations: Vec<(&str, usize, Vec<f64>)> = Vec::new();
    for row in rows.iter().filter(|row| row.paired_passthrough.is_some()) {
        let Some(ratio) = row.against_passthrough(rows) else {
            continue;
        };
        match configurations
            .iter_mut()
            .find(|(name, k, _)| *name == row.configuration && *k == row.concurrency)
        {
            Some((_, _, ratios)) => ratios.push(ratio),
            None => configurations.push((&row.configuration, row.concurrency, vec![ratio])),
        }
    }
    if configurations.is_empty() {
        return String::new();
    }
    let mut out = "\n| configuration | streams | rounds | × passthrough, each round | median |\n\
                   |---|--:|--:|---|--:|\n"
        .to_owned();
    let medians: Vec<(&str, usize, f64)> = configurations
        .into_iter()
        .map(|(name, k, ratios)| {
            let each: Vec<String> = ratios.iter().map(|ratio| format!("{ratio:.2}")).collect();
            let middle = median(ratios.clone());
            let _ = writeln!(
                out,
                "| {name} | {k} | {} | {} | {middle:.2} |",
                ratios.len(),
                each.join(", "),
            );
            (name, k, middle)
        })
        .collect();
    // A continued conversation against its history sent whole through passthrough: the
    // proxy's CPU with the layer against without it, for the same conversation. The
    // rounds of the two were not paired, so this is a ratio of medians.
    let mut against_whole = String::new();
    for &(name, k, middle) in &medians {
        let Some(whole) = sent_whole_of(name) else {
            continue;
        };
        if let Some(&(_, _, whole_middle)) = medians
            .iter()
            .find(|(other, other_k, _)| *other == whole && *other_k == k)
        {
            let _ = writeln!(
                against_whole,
                "| {name} | {k} | {:.2} |",
                middle / whole_middle
            );
        }
    }
    if !against_whole.is_empty() {
        out.push_str(
            "\n| configuration | streams | × its history sent whole through passthrough (medians) |\n\
             |---|--:|--:|\n",
        );
        out.push_str(&against_whole);
    }
    out
}

/// The middle value; the mean of the middle two when their number is even.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[middle],
        _ => (values[middle - 1] + values[middle]) / 2.0,
    }
}

/// The table: absolute figures, then each row against passthrough at the same K.
fn table(rows: &[Row]) -> String {
    let mut out = format!("| {} |\n|---|", COLUMNS.join(" | "));
    out.push_str(&"--:|".repeat(COLUMNS.len() - 1));
    out.push('\n');
    for row in rows {
        let cells = cells(row, rows).map(|cell| cell.unwrap_or_else(|| "–".to_owned()));
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out
}

/// The load table's rows as CSV, the same columns and figures as the markdown; the
/// columns against passthrough are empty where it was not measured.
pub fn csv(rows: &[Row]) -> String {
    let mut out = COLUMNS.map(csv_field).join(",");
    out.push('\n');
    for row in rows {
        let cells =
            cells(row, rows).map(|cell| cell.as_deref().map_or_else(String::new, csv_field));
        let _ = writeln!(out, "{}", cells.join(","));
    }
    out
}

/// One row's figures, formatted; `None` for those against passthrough when there is
/// no passthrough row at the same K.
fn cells(row: &Row, rows: &[Row]) -> [Option<String>; 16] {
    let base = rows
        .iter()
        .find(|r| r.configuration == PASSTHROUGH && r.concurrency == row.concurrency);
    let against = |figure: fn(&Row, &Row) -> String| base.map(|base| figure(row, base));
    [
        Some(row.configuration.clone()),
        Some(row.concurrency.to_string()),
        Some(format!("{:.0}", row.requests_per_second)),
        against(|row, base| format!("{:.3}", row.requests_per_second / base.requests_per_second)),
        Some(format!("{:.3}", row.first_byte_p50)),
        Some(format!("{:.3}", row.first_byte_p99)),
        against(|row, base| {
            format!(
                "{:+.0}",
                (row.first_byte_p50 - base.first_byte_p50) * 1000.0
            )
        }),
        Some(format!("{:.3}", row.done_p50)),
        Some(format!("{:.3}", row.done_p99)),
        against(|row, base| format!("{:+.0}", (row.done_p50 - base.done_p50) * 1000.0)),
        Some(format!("{:.0}", row.held_p50 * 1000.0)),
        Some(format!("{:.0}", row.cpu[0])),
        Some(format!("{:.0}", row.cpu[1])),
        Some(format!("{:.0}", row.cpu[2])),
        Some(format!("{:.1}", row.peak_rss as f64 / (1024.0 * 1024.0))),
        Some(row.failures.to_string()),
    ]
}

/// A field quoted when it holds a comma, a quote or a line break.
fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

/// Memory per in-flight stream: (RSS during − RSS idle) / the held streams, against
/// passthrough and against the target of twice the reply and 16 KiB.
fn memory_table(memory: &[Memory], held: usize, reply_bytes: usize) -> String {
    let mut out = format!(
        "Memory per in-flight stream: {held} slow streams of {reply_bytes} bytes open at once, (RSS during − RSS idle) / K\n\n\
         | proxy | RSS idle MiB | RSS during MiB | per stream KiB | over passthrough KiB | target KiB (2 × reply + 16) |\n\
         |---|--:|--:|--:|--:|--:|\n"
    );
    let per_stream = |m: &Memory| m.during.saturating_sub(m.idle) as f64 / held as f64 / 1024.0;
    let baseline = memory
        .iter()
        .find(|m| m.proxy == PASSTHROUGH)
        .map(per_stream);
    for m in memory {
        let stream = per_stream(m);
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.1} | {stream:.1} | {} | {:.1} |",
            m.proxy,
            m.idle as f64 / 1048576.0,
            m.during as f64 / 1048576.0,
            baseline.map_or("–".to_owned(), |base| format!("{:+.1}", stream - base)),
            (2 * reply_bytes) as f64 / 1024.0 + 16.0
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(configuration: &str, concurrency: usize, requests_per_second: f64) -> Row {
        Row {
            configuration: configuration.to_owned(),
            concurrency,
            completed: (requests_per_second * 6.0) as usize,
            requests_per_second,
            first_byte_p50: 0.5,
            first_byte_p99: 1.0,
            done_p50: 2.0,
            done_p99: 4.0,
            held_p50: 0.8,
            cpu: [3000.0, 0.0, 1500.0],
            peak_rss: 20 * 1024 * 1024,
            failures: 0,
            paired_passthrough: None,
        }
    }

    #[test]
    fn rows_are_read_against_passthrough_at_the_same_k() {
        let rows = [
            row(PASSTHROUGH, 1, 400.0),
            row("new · sqlite", 1, 200.0),
            row("new · sqlite", 8, 300.0),
        ];
        let table = table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2 + rows.len());
        for line in &lines {
            assert_eq!(line.matches('|').count(), COLUMNS.len() + 1, "{line}");
        }
        assert!(lines[3].starts_with("| new · sqlite | 1 | 200 | 0.500 | "));
        // No passthrough at K = 8: nothing to compare with.
        assert!(lines[4].starts_with("| new · sqlite | 8 | 300 | – | "));

        let csv = csv(&rows);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 1 + rows.len());
        assert!(lines[0].starts_with("configuration,K,req/s,× passthrough,"));
        assert_eq!(
            lines[2],
            "new · sqlite,1,200,0.500,0.500,1.000,+0,2.000,4.000,+0,800,3000,0,1500,20.0,0"
        );
        assert!(lines[3].starts_with("new · sqlite,8,300,,0.500,1.000,,"));
    }

    #[test]
    fn paced_rows_are_read_against_passthroughs_cpu() {
        let mut new = row("new · sqlite", 500, 120.0);
        new.cpu[0] = 3750.0;
        let mut other = row("new · sqlite", 200, 50.0);
        other.cpu[0] = 1000.0;
        let rows = [row(PASSTHROUGH, 500, 125.0), new, other];
        let markdown = paced_markdown("setup", &rows, Duration::from_secs(6));
        let lines: Vec<&str> = markdown.lines().collect();
        assert_eq!(lines.len(), 4 + rows.len(), "{markdown}");
        assert_eq!(lines[0], "setup");
        for line in &lines[2..] {
            assert_eq!(line.matches('|').count(), 15, "{line}");
        }
        assert!(
            lines[4].starts_with("| passthrough | 500 | 750 | 125.0 | 3000 | 1.00 | 0 | 1500 |"),
            "{markdown}"
        );
        assert!(
            lines[5].starts_with("| new · sqlite | 500 | 720 | 120.0 | 3750 | 1.25 | "),
            "{markdown}"
        );
        // Latencies, the end held back for the turn, peak RSS, failures.
        assert!(
            lines[5].ends_with("| 0.5 | 2 | 4 | 0.8 | 20.0 | 0 |"),
            "{markdown}"
        );
        // No passthrough with 200 streams: nothing to compare with.
        assert!(
            lines[6].starts_with("| new · sqlite | 200 | 300 | 50.0 | 1000 | – | "),
            "{markdown}"
        );
    }

    #[test]
    fn paced_rounds_are_read_against_their_own_passthrough_window_and_their_median_decides() {
        let round = |cpu: f64, passthrough: f64| {
            let mut row = row("new · postgres", 500, 125.0);
            row.cpu[0] = cpu;
            row.paired_passthrough = Some(passthrough);
            row
        };
        let rows = [
            row(PASSTHROUGH, 500, 125.0),
            round(1300.0, 1000.0),
            round(1100.0, 1000.0),
            round(2400.0, 2000.0),
        ];
        let markdown = paced_markdown("setup", &rows, Duration::from_secs(6));
        // Each round against the window before it, not the passthrough row's 3,000.
        assert!(markdown.contains("| new · postgres | 500 | 750 | 125.0 | 1300 | 1.30 | "));
        assert!(markdown.contains("| new · postgres | 500 | 750 | 125.0 | 2400 | 1.20 | "));
        assert!(
            markdown.contains("| new · postgres | 500 | 3 | 1.30, 1.10, 1.20 | 1.20 |"),
            "{markdown}"
        );
        // Without rounds, no table of them.
        let single = paced_markdown("setup", &rows[..1], Duration::from_secs(6));
        assert!(!single.contains("median"), "{single}");
    }

    #[test]
    fn a_continued_conversation_is_also_read_against_its_history_sent_whole() {
        let round = |configuration: &str, cpu: f64| {
            let mut row = row(configuration, 500, 125.0);
            row.cpu[0] = cpu;
            row.paired_passthrough = Some(1000.0);
            row
        };
        let whole = sent_whole(20);
        let rows = [
            row(PASSTHROUGH, 500, 125.0),
            round(&whole, 1100.0),
            round(&whole, 1000.0),
            round(&whole, 1200.0),
            round("continued 20 · sqlite", 1300.0),
            round("continued 20 · sqlite", 1400.0),
            round("continued 20 · sqlite", 1500.0),
            round("new · sqlite", 1200.0),
        ];
        let markdown = paced_markdown("setup", &rows, Duration::from_secs(6));
        // 1.40 against passthrough, 1.10 for the history sent whole: 1.40 / 1.10.
        assert!(
            markdown.contains("| continued 20 · sqlite | 500 | 1.27 |"),
            "{markdown}"
        );
        // A new conversation has no history to send.
        assert!(
            !markdown.contains("| new · sqlite | 500 | 1.09 |"),
            "{markdown}"
        );
        assert_eq!(
            sent_whole_of("continued 100 · postgres"),
            Some(sent_whole(100))
        );
        assert_eq!(sent_whole_of("new · postgres"), None);
    }

    #[test]
    fn a_median_is_the_middle_value_or_the_mean_of_the_middle_two() {
        assert_eq!(median(vec![1.3, 1.1, 1.2]), 1.2);
        assert_eq!(median(vec![1.4, 1.0, 1.2, 1.3]), 1.25);
        assert!(median(Vec::new()).is_nan());
    }

    #[test]
    fn csv_fields_are_quoted_only_when_they_must_be() {
        assert_eq!(csv_field("new · sqlite"), "new · sqlite");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }

    #[test]
    fn memory_is_per_held_stream_and_against_passthrough() {
        let memory = [
            Memory {
                proxy: PASSTHROUGH.to_owned(),
                idle: 8 << 20,
                during: (8 << 20) + 256 * 40 * 1024,
            },
            Memory {
                proxy: "sqlite".to_owned(),
                idle: 12 << 20,
                during: (12 << 20) + 256 * 44 * 1024,
            },
        ];
        let table = memory_table(&memory, 256, 34_816);
        assert!(
            table.contains("| passthrough | 8.0 | 18.0 | 40.0 | +0.0 | 84.0 |"),
            "{table}"
        );
        assert!(
            table.contains("| sqlite | 12.0 | 23.0 | 44.0 | +4.0 | 84.0 |"),
            "{table}"
        );
    }
}
