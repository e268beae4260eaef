//! The timeline plot of a run as a self-contained SVG: sends and reads per second, successes
//! and failures, with the faults as shaded spans.
//!
//! Hand-written rather than drawn with a plotting crate: the picture is two line charts, and
//! plain SVG text keeps this crate free of font and image dependencies.

use std::fmt::Write as _;

use crate::check::Report;
use crate::figures::{summary_line, timeline, Second};
use crate::history::History;

const WIDTH: f64 = 1000.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 24.0;
const PANEL_H: f64 = 170.0;
const PANEL_GAP: f64 = 40.0;
const LABEL_ROW_H: f64 = 15.0;
/// Rough width of one character of 11 px sans-serif text, to keep labels from overlapping.
const CHAR_W: f64 = 6.2;

const OK: &str = "#2e7d32";
const FAILED: &str = "#c62828";
const FAULT: &str = "#ef6c00";
const AXIS: &str = "#444";
const TITLE_COLOR: &str = "#222";
const GRID: &str = "#e6e6e6";
const FONT: &str = "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\"";

/// Renders the timeline of `h` with the faults marked; the verdict in `report` goes in the
/// subtitle.
pub fn timeline_svg(h: &History, report: &Report) -> String {
    let seconds = timeline(h);
    let x_max = seconds.len() as f64;
    let plot_w = WIDTH - LEFT - RIGHT;
    let x = |s: f64| LEFT + s / x_max * plot_w;

    // Fault labels go in rows above the plot, a new row whenever a label would overlap the
    // one before it.
    let run_end = h.run_end();
    let mut rows_end: Vec<f64> = Vec::new();
    let faults: Vec<(f64, f64, usize, String)> = h
        .faults
        .iter()
        .map(|f| {
            let (x0, x1) = (
                x(f.start as f64 / 1000.0),
                x(f.end.unwrap_or(run_end) as f64 / 1000.0),
            );
            let label = format!(
                "{} {}{}",
                f.name,
                f.target,
                if f.end.is_none() { " (not healed)" } else { "" }
            );
            let label_end = x0 + 3.0 + label.len() as f64 * CHAR_W + 8.0;
            let row = match rows_end.iter().position(|&end| end <= x0) {
                Some(row) => row,
                None => {
                    rows_end.push(0.0);
                    rows_end.len() - 1
                }
            };
            rows_end[row] = label_end;
            (x0, x1.max(x0 + 1.0), row, label)
        })
        .collect();

    let labels_top = 66.0;
    let sends_top = labels_top + rows_end.len() as f64 * LABEL_ROW_H + 22.0;
    let reads_top = sends_top + PANEL_H + PANEL_GAP;
    let bottom = reads_top + PANEL_H;
    let height = bottom + 52.0;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" {FONT}>"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);

    // Title, verdict, legend.
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="26" font-size="16" font-weight="bold" fill="{TITLE_COLOR}">bongsu chaos · {} · seed {}</text>"#,
        esc(&h.scenario),
        h.seed
    );
    let verdict_color = if report.is_clean() {
        TITLE_COLOR
    } else {
        FAILED
    };
    let mut verdict = summary_line(h, report);
    if !report.is_clean() {
        let _ = write!(verdict, "  ({} violations)", report.violations.len());
    }
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="46" font-size="11.5" font-family="DejaVu Sans Mono, Menlo, monospace" fill="{verdict_color}">{}</text>"#,
        esc(&verdict)
    );
    legend(&mut svg, WIDTH - RIGHT, 22.0);

    // Fault labels and their dashed edges across both panels.
    for (x0, x1, row, label) in &faults {
        let y = labels_top + *row as f64 * LABEL_ROW_H + 10.0;
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{y:.1}" font-size="11" fill="{FAULT}" font-weight="bold">{}</text>"#,
            x0 + 3.0,
            esc(label)
        );
        let _ = writeln!(
            svg,
            r#"<line x1="{x0:.1}" y1="{:.1}" x2="{x0:.1}" y2="{bottom:.1}" stroke="{FAULT}" stroke-width="1" stroke-dasharray="3 3"/>"#,
            y + 3.0
        );
        let _ = writeln!(
            svg,
            r#"<line x1="{x1:.1}" y1="{sends_top:.1}" x2="{x1:.1}" y2="{bottom:.1}" stroke="{FAULT}" stroke-width="1" stroke-dasharray="3 3" stroke-opacity="0.6"/>"#
        );
    }

    let spans: Vec<(f64, f64)> = faults.iter().map(|(x0, x1, ..)| (*x0, *x1)).collect();
    let panels: [(&str, f64, Pick, bool); 2] = [
        (
            "Sends per second",
            sends_top,
            |s| (s.send_ok, s.send_failed),
            false,
        ),
        (
            "Reads per second",
            reads_top,
            |s| (s.read_ok, s.read_failed),
            true,
        ),
    ];
    for (title, top, pick, x_labels) in panels {
        let ok: Vec<u32> = seconds.iter().map(|s| pick(s).0).collect();
        let failed: Vec<u32> = seconds.iter().map(|s| pick(s).1).collect();
        panel(
            &mut svg,
            Panel {
                title,
                top,
                x_max,
                spans: &spans,
                x_labels,
            },
            &ok,
            &failed,
        );
    }

    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-size="12" fill="{AXIS}" text-anchor="middle">seconds since the run started</text>"#,
        LEFT + plot_w / 2.0,
        bottom + 40.0
    );
    svg.push_str("</svg>\n");
    svg
}

/// Picks a panel's (ok, failed) counts out of a second.
type Pick = fn(&Second) -> (u32, u32);

struct Panel<'a> {
    title: &'a str,
    top: f64,
    x_max: f64,
    /// Fault spans in pixels.
    spans: &'a [(f64, f64)],
    x_labels: bool,
}

fn panel(svg: &mut String, p: Panel<'_>, ok: &[u32], failed: &[u32]) {
    let plot_w = WIDTH - LEFT - RIGHT;
    let bottom = p.top + PANEL_H;
    let x = |s: f64| LEFT + s / p.x_max * plot_w;
    let data_max = ok.iter().chain(failed).copied().max().unwrap_or(0);
    let (y_step, y_max) = y_scale(data_max);
    let y = |v: f64| bottom - v / y_max * PANEL_H;

    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="{:.1}" font-size="12.5" font-weight="bold" fill="{TITLE_COLOR}">{}</text>"#,
        p.top - 8.0,
        p.title
    );

    for &(x0, x1) in p.spans {
        let _ = writeln!(
            svg,
            r#"<rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="{PANEL_H}" fill="{FAULT}" fill-opacity="0.13"/>"#,
            p.top,
            x1 - x0
        );
    }

    // Horizontal grid with the y ticks.
    let mut v = 0.0;
    while v <= y_max + 1e-9 {
        let yy = y(v);
        if v > 0.0 {
            let _ = writeln!(
                svg,
                r#"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="{GRID}" stroke-width="1"/>"#,
                LEFT + plot_w
            );
        }
        let _ = writeln!(
            svg,
            r#"<line x1="{:.1}" y1="{yy:.1}" x2="{LEFT}" y2="{yy:.1}" stroke="{AXIS}" stroke-width="1"/>"#,
            LEFT - 4.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" fill="{AXIS}" text-anchor="end">{}</text>"#,
            LEFT - 7.0,
            yy + 4.0,
            v as u64
        );
        v += y_step;
    }

    // X ticks every nice number of seconds; labels only under the bottom panel.
    let x_step = nice_step(p.x_max, 12.0).max(1.0);
    let mut s = 0.0;
    while s <= p.x_max + 1e-9 {
        let xx = x(s);
        let _ = writeln!(
            svg,
            r#"<line x1="{xx:.1}" y1="{bottom:.1}" x2="{xx:.1}" y2="{:.1}" stroke="{AXIS}" stroke-width="1"/>"#,
            bottom + 4.0
        );
        if p.x_labels {
            let _ = writeln!(
                svg,
                r#"<text x="{xx:.1}" y="{:.1}" font-size="11" fill="{AXIS}" text-anchor="middle">{}</text>"#,
                bottom + 17.0,
                s as u64
            );
        }
        s += x_step;
    }

    // Axes.
    let _ = writeln!(
        svg,
        r#"<line x1="{LEFT}" y1="{:.1}" x2="{LEFT}" y2="{bottom:.1}" stroke="{AXIS}" stroke-width="1"/>"#,
        p.top
    );
    let _ = writeln!(
        svg,
        r#"<line x1="{LEFT}" y1="{bottom:.1}" x2="{:.1}" y2="{bottom:.1}" stroke="{AXIS}" stroke-width="1"/>"#,
        LEFT + plot_w
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate(20 {:.1}) rotate(-90)" font-size="11.5" fill="{AXIS}" text-anchor="middle">ops / s</text>"#,
        p.top + PANEL_H / 2.0
    );

    // The series: one point per second, at the middle of the second.
    for (values, color) in [(ok, OK), (failed, FAILED)] {
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| format!("{:.1},{:.1}", x(i as f64 + 0.5), y(f64::from(v))))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="1.8" stroke-linejoin="round"/>"#,
            points.join(" ")
        );
        if values.len() <= 30 {
            for (i, &v) in values.iter().enumerate() {
                let _ = writeln!(
                    svg,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{color}"/>"#,
                    x(i as f64 + 0.5),
                    y(f64::from(v))
                );
            }
        }
    }
}

/// The legend, right-aligned so that it ends at `right`.
fn legend(svg: &mut String, right: f64, y: f64) {
    let items = [
        ("ok", OK, false),
        ("failed or timed out", FAILED, false),
        ("fault", FAULT, true),
    ];
    let width: f64 = items
        .iter()
        .map(|(label, ..)| 26.0 + label.len() as f64 * CHAR_W + 14.0)
        .sum();
    let mut x = right - width;
    for (label, color, span) in items {
        if span {
            let _ = writeln!(
                svg,
                r#"<rect x="{x:.1}" y="{:.1}" width="20" height="10" fill="{color}" fill-opacity="0.18" stroke="{color}" stroke-dasharray="3 3"/>"#,
                y - 9.0
            );
        } else {
            let _ = writeln!(
                svg,
                r#"<line x1="{x:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="2.5"/>"#,
                y - 4.0,
                x + 20.0,
                y - 4.0
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{y:.1}" font-size="11" fill="{AXIS}">{label}</text>"#,
            x + 26.0
        );
        x += 26.0 + label.len() as f64 * CHAR_W + 14.0;
    }
}

/// A tick step of 1, 2 or 5 times a power of ten that cuts `range` into about `target` parts.
fn nice_step(range: f64, target: f64) -> f64 {
    if range <= 0.0 {
        return 1.0;
    }
    let raw = range / target;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = match raw / magnitude {
        n if n <= 1.0 => 1.0,
        n if n <= 2.0 => 2.0,
        n if n <= 5.0 => 5.0,
        _ => 10.0,
    };
    step * magnitude
}

/// The y tick step and the top of the y axis for counts up to `max`.
fn y_scale(max: u32) -> (f64, f64) {
    let step = nice_step(f64::from(max), 5.0).max(1.0);
    let top = (f64::from(max) / step).ceil().max(1.0) * step;
    (step, top)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_steps() {
        for (range, target, want) in [
            (0.0, 5.0, 1.0),
            (7.0, 5.0, 2.0),
            (100.0, 5.0, 20.0),
            (1234.0, 5.0, 500.0),
            (60.0, 12.0, 5.0),
            (300.0, 12.0, 50.0),
        ] {
            assert_eq!(
                nice_step(range, target),
                want,
                "nice_step({range}, {target})"
            );
        }
        assert_eq!(y_scale(0), (1.0, 1.0));
        assert_eq!(y_scale(437), (100.0, 500.0));
    }

    #[test]
    fn escapes_names() {
        let mut h = bongsu_testkit::testing::clean_history();
        h.scenario = "a<b>&\"c\"".into();
        let svg = timeline_svg(&h, &crate::check::check_all(&h));
        assert!(svg.contains("a&lt;b&gt;&amp;&quot;c&quot;"));
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    }
}
