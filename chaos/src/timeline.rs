//! Samples over a run (replication lag of each mirror region from `/metrics`, operations
//! completed) and the hand-written SVG timeline drawn from them, fault windows shaded.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;

use crate::cluster::Endpoints;
use crate::faults::FaultRecord;
use crate::history::History;
use crate::observe::scrape;

#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub t_ms: u64,
    /// Operations completed so far.
    pub ops: usize,
    /// Per region that is a mirror at that moment: (region, lag entries, lag seconds).
    pub lag: Vec<(String, f64, f64)>,
}

/// Samples every `every` until `stop`.
pub async fn sample(
    endpoints: Arc<Endpoints>,
    history: History,
    stop: Arc<AtomicBool>,
    every: Duration,
    out: Arc<Mutex<Vec<Sample>>>,
) {
    let http = reqwest::Client::new();
    while !stop.load(Ordering::Relaxed) {
        let mut lag = Vec::new();
        for index in endpoints.mirrors() {
            let region = &endpoints.regions[index];
            for (_, url) in &region.nodes {
                let entries = scrape(&http, url, "arca_replication_lag_entries", "").await;
                let seconds = scrape(&http, url, "arca_replication_lag_seconds", "").await;
                if let (Some(entries), Some(seconds)) = (entries, seconds) {
                    lag.push((region.name.clone(), entries, seconds));
                    break;
                }
            }
        }
        out.lock().push(Sample {
            t_ms: history.now_ms(),
            ops: history.len(),
            lag,
        });
        tokio::time::sleep(every).await;
    }
}

const WIDTH: f64 = 1000.0;
const PANEL: f64 = 180.0;
const LEFT: f64 = 70.0;
const TOP: f64 = 40.0;
const GAP: f64 = 50.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One panel: a set of named series over time, fault windows shaded.
fn panel(
    svg: &mut String,
    top: f64,
    title: &str,
    end_ms: u64,
    series: &[(String, Vec<(u64, f64)>)],
    faults: &[FaultRecord],
) {
    let plot_width = WIDTH - LEFT - 20.0;
    let x = |t: u64| LEFT + plot_width * t as f64 / end_ms.max(1) as f64;
    let max = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|(_, v)| *v))
        .fold(0.0f64, f64::max)
        .max(1.0);
    let y = |v: f64| top + PANEL - PANEL * v / max;
    for fault in faults {
        let _ = writeln!(
            svg,
            r##"<rect x="{:.1}" y="{top:.1}" width="{:.1}" height="{PANEL}" fill="#f4a6a6" fill-opacity="0.35"><title>{}</title></rect>"##,
            x(fault.start_ms),
            (x(fault.end_ms.max(fault.start_ms + 100)) - x(fault.start_ms)).max(1.0),
            escape(&fault.description)
        );
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{top:.1}" width="{plot_width:.1}" height="{PANEL}" fill="none" stroke="#444"/>"##
    );
    let _ = writeln!(
        svg,
        r##"<text x="{LEFT}" y="{:.1}" font-size="13" font-weight="bold">{}</text>"##,
        top - 6.0,
        escape(title)
    );
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{max:.1}</text><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">0</text>"##,
        LEFT - 4.0,
        top + 10.0,
        LEFT - 4.0,
        top + PANEL
    );
    for (index, (name, points)) in series.iter().enumerate() {
        let color = COLORS[index % COLORS.len()];
        let mut path = String::new();
        for (t, v) in points {
            let _ = write!(
                path,
                "{}{:.1},{:.1} ",
                if path.is_empty() { "M" } else { "L" },
                x(*t),
                y(*v)
            );
        }
        let _ = writeln!(
            svg,
            r##"<path d="{path}" fill="none" stroke="{color}" stroke-width="1.5"/>"##
        );
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="{color}">{}</text>"##,
            LEFT + 8.0 + 140.0 * index as f64,
            top + 14.0,
            escape(name)
        );
    }
}

/// The timeline: ops/s, mirror lag in entries, mirror lag in seconds.
pub fn svg(title: &str, samples: &[Sample], faults: &[FaultRecord], end_ms: u64) -> String {
    let height = TOP + 3.0 * (PANEL + GAP) + 20.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif">"##
    );
    let _ = writeln!(
        svg,
        r##"<rect width="100%" height="100%" fill="white"/><text x="{LEFT}" y="20" font-size="15">{}</text>"##,
        escape(title)
    );
    let mut rate = Vec::new();
    for pair in samples.windows(2) {
        let dt = pair[1].t_ms.saturating_sub(pair[0].t_ms).max(1) as f64 / 1000.0;
        let done = pair[1].ops.saturating_sub(pair[0].ops) as f64;
        rate.push((pair[1].t_ms, done / dt));
    }
    let mut entries: Vec<(String, Vec<(u64, f64)>)> = Vec::new();
    let mut seconds: Vec<(String, Vec<(u64, f64)>)> = Vec::new();
    for sample in samples {
        for (region, lag_entries, lag_seconds) in &sample.lag {
            let slot = match entries.iter().position(|(name, _)| name == region) {
                Some(slot) => slot,
                None => {
                    entries.push((region.clone(), Vec::new()));
                    seconds.push((region.clone(), Vec::new()));
                    entries.len() - 1
                }
            };
            entries[slot].1.push((sample.t_ms, *lag_entries));
            seconds[slot].1.push((sample.t_ms, *lag_seconds));
        }
    }
    panel(
        &mut svg,
        TOP + 10.0,
        "operations per second (all clients)",
        end_ms,
        &[("ops/s".to_string(), rate)],
        faults,
    );
    panel(
        &mut svg,
        TOP + 10.0 + PANEL + GAP,
        "mirror lag, entries (arca_replication_lag_entries)",
        end_ms,
        &entries,
        faults,
    );
    panel(
        &mut svg,
        TOP + 10.0 + 2.0 * (PANEL + GAP),
        "mirror lag, seconds (arca_replication_lag_seconds)",
        end_ms,
        &seconds,
        faults,
    );
    let _ = writeln!(
        svg,
        r##"<text x="{LEFT}" y="{:.1}" font-size="11">shaded: fault windows (hover for the fault); x axis: 0..{} s</text>"##,
        height - 6.0,
        end_ms / 1000
    );
    svg.push_str("</svg>\n");
    svg
}
