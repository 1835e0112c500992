//! The timeline picture: one panel per drill, hand-written SVG (no plotting
//! dependency). Throughput of acknowledged writes and successful reads over
//! time, errors below, the fault as a shaded band, Sentinel events as
//! marked lines, the write blackout as a bracket, and — when the checker
//! found any — the moments lost writes were acknowledged and stale reads
//! were made.

use std::fmt::Write as _;

use crate::report::DrillReport;

const W: f64 = 1100.0;
const PANEL_H: f64 = 400.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 30.0;

const WRITE_COLOR: &str = "#2563eb";
const READ_COLOR: &str = "#16a34a";
const ERROR_COLOR: &str = "#dc2626";
const FAULT_COLOR: &str = "#f59e0b";
const STALE_COLOR: &str = "#9333ea";
/// Durable writes that ran on the master without `WAIT`'s confirmation.
const UNREPLICATED_COLOR: &str = "#7f1d1d";

/// The whole picture for one or more drills, stacked.
pub fn render(reports: &[DrillReport]) -> String {
    let h = PANEL_H * reports.len().max(1) as f64 + 10.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="Helvetica, Arial, sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="#ffffff"/>"##);
    for (i, r) in reports.iter().enumerate() {
        panel(&mut s, r, i as f64 * PANEL_H);
    }
    s.push_str("</svg>\n");
    s
}

fn esc(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn panel(s: &mut String, r: &DrillReport, y0: f64) {
    let a = &r.analysis;
    let end_ms = r.window.end_us as f64 / 1000.0;
    // The axis runs past the workload's end to show the Sentinels settling
    // the topology (+convert-to-slave often comes seconds later).
    let last_event = r
        .events
        .iter()
        .filter(|e| {
            matches!(
                e.event.as_str(),
                "+convert-to-slave" | "+switch-master" | "+failover" | "+rejoined"
            )
        })
        .map(|e| e.t_ms)
        .fold(0.0, f64::max);
    let total_ms = end_ms.max(last_event + 1000.0).max(1.0);
    let plot_w = W - LEFT - RIGHT;
    let x = |ms: f64| LEFT + (ms / total_ms).clamp(0.0, 1.0) * plot_w;
    // Areas: title 0-50, event labels 50-95, throughput 95-285, errors 295-345, axis below.
    let (tp_top, tp_bot) = (y0 + 100.0, y0 + 285.0);
    let (er_top, er_bot) = (y0 + 298.0, y0 + 343.0);
    let bucket_s = a.bucket_ms / 1000.0;

    // Title and verdict.
    let color = if r.passed { "#15803d" } else { "#b91c1c" };
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="{}" font-size="16" font-weight="bold">drill {} via {}</text>"#,
        y0 + 22.0,
        r.drill.name(),
        esc(&r.target)
    );
    // The verdict, on two lines when it is long.
    let (l1, l2) = split_line(&r.verdict, 115);
    for (i, line) in [l1, l2].iter().enumerate() {
        if !line.is_empty() {
            let _ = writeln!(
                s,
                r#"<text x="{LEFT}" y="{}" font-size="12.5" fill="{color}" font-weight="bold">{}</text>"#,
                y0 + 42.0 + 15.0 * i as f64,
                esc(line)
            );
        }
    }

    // Fault band.
    let f0 = r.fault.injected_ms;
    let f1 = r.fault.healed_ms.unwrap_or(f0);
    let band_w = (x(f1) - x(f0)).max(2.0);
    let _ = writeln!(
        s,
        r#"<rect x="{:.1}" y="{:.1}" width="{band_w:.1}" height="{:.1}" fill="{FAULT_COLOR}" fill-opacity="0.18"/>"#,
        x(f0),
        tp_top - 8.0,
        er_bot - tp_top + 8.0
    );
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" fill="#b45309" font-size="11">{} {}</text>"##,
        x(f0) + 3.0,
        tp_top - 12.0,
        r.drill.name(),
        esc(&r.fault.master)
    );

    // Axes and grid.
    let max_rate = a
        .timeline
        .iter()
        .map(|b| (b.writes_ok.max(b.reads_ok)) as f64 / bucket_s)
        .fold(1.0, f64::max);
    let max_rate = nice_ceiling(max_rate);
    let ty = |rate: f64| tp_bot - (rate / max_rate).clamp(0.0, 1.0) * (tp_bot - tp_top);
    for i in 0..=4 {
        let v = max_rate * i as f64 / 4.0;
        let yy = ty(v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}" stroke="#e5e7eb"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#6b7280" font-size="10">{:.0}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            yy + 3.5,
            v
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="14" y="{:.1}" transform="rotate(-90 14 {:.1})" text-anchor="middle" fill="#374151" font-size="11">ops/s</text>"##,
        (tp_top + tp_bot) / 2.0,
        (tp_top + tp_bot) / 2.0
    );

    // Throughput: writes as a filled area, reads as a line.
    let pts = |f: &dyn Fn(&crate::checker::Bucket) -> f64| -> String {
        a.timeline
            .iter()
            .map(|b| {
                format!(
                    "{:.1},{:.1}",
                    x(b.t_ms + a.bucket_ms / 2.0),
                    ty(f(b) / bucket_s)
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let writes = pts(&|b| b.writes_ok as f64);
    let first_x = x(a.bucket_ms / 2.0);
    let last_x = x(a.timeline.len() as f64 * a.bucket_ms - a.bucket_ms / 2.0);
    let _ = writeln!(
        s,
        r#"<polygon points="{first_x:.1},{tp_bot:.1} {writes} {last_x:.1},{tp_bot:.1}" fill="{WRITE_COLOR}" fill-opacity="0.25" stroke="none"/>"#
    );
    let _ = writeln!(
        s,
        r#"<polyline points="{writes}" fill="none" stroke="{WRITE_COLOR}" stroke-width="1.6"/>"#
    );
    let _ = writeln!(
        s,
        r#"<polyline points="{}" fill="none" stroke="{READ_COLOR}" stroke-width="1.6"/>"#,
        pts(&|b| b.reads_ok as f64)
    );

    // The workload's end.
    if total_ms > end_ms + 1.0 {
        let _ = writeln!(
            s,
            r##"<rect x="{:.1}" y="{tp_top:.1}" width="{:.1}" height="{:.1}" fill="#f3f4f6"/><text x="{:.1}" y="{:.1}" fill="#6b7280" font-size="10.5">workload stopped; waiting for the topology to settle</text>"##,
            x(end_ms),
            x(total_ms) - x(end_ms),
            tp_bot - tp_top,
            x(end_ms) + 4.0,
            tp_bot - 6.0
        );
    }

    // Write blackout bracket.
    let wb = &a.write_blackout;
    if wb.longest_ms > 0.0 {
        let (bx0, bx1) = (x(wb.from_ms), x(wb.to_ms));
        let by = tp_top + 14.0;
        let _ = writeln!(
            s,
            r##"<path d="M{bx0:.1},{:.1} V{by:.1} H{bx1:.1} V{:.1}" fill="none" stroke="#111827" stroke-width="1.2"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11" fill="#111827">write blackout {:.2} s</text>"##,
            by + 6.0,
            by + 6.0,
            (bx0 + bx1) / 2.0,
            by - 4.0,
            wb.longest_ms / 1000.0
        );
    }

    // Errors strip.
    let max_err = a
        .timeline
        .iter()
        .map(|b| (b.write_errors + b.read_errors) as f64 / bucket_s)
        .fold(1.0, f64::max);
    let max_err = nice_ceiling(max_err);
    let bw = (plot_w * a.bucket_ms / total_ms).max(1.0);
    for b in &a.timeline {
        let n = (b.write_errors + b.read_errors) as f64 / bucket_s;
        if n > 0.0 {
            let hgt = (n / max_err) * (er_bot - er_top);
            let _ = writeln!(
                s,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{hgt:.1}" fill="{ERROR_COLOR}" fill-opacity="0.8"/>"#,
                x(b.t_ms),
                er_bot - hgt,
                (bw - 0.5).max(0.8)
            );
        }
        // Durable writes' unconfirmed ones, at the bottom of the bar.
        let u = b.unreplicated as f64 / bucket_s;
        if u > 0.0 {
            let hgt = (u / max_err) * (er_bot - er_top);
            let _ = writeln!(
                s,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{hgt:.1}" fill="{UNREPLICATED_COLOR}"/>"#,
                x(b.t_ms),
                er_bot - hgt,
                (bw - 0.5).max(0.8)
            );
        }
    }
    let _ = writeln!(
        s,
        r##"<line x1="{LEFT}" x2="{:.1}" y1="{er_bot:.1}" y2="{er_bot:.1}" stroke="#9ca3af"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="{ERROR_COLOR}" font-size="10">errors/s</text><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#6b7280" font-size="10">{:.0}</text>"##,
        W - RIGHT,
        LEFT - 6.0,
        er_bot - 2.0,
        LEFT - 6.0,
        er_top + 8.0,
        max_err
    );

    // Lost writes and stale reads: ticks just under the error strip.
    let mark_y = er_bot + 4.0;
    for t in a
        .lost
        .acked_at_ms
        .iter()
        .step_by((a.lost.acked_at_ms.len() / 400).max(1))
    {
        let _ = writeln!(
            s,
            r#"<line x1="{0:.1}" x2="{0:.1}" y1="{mark_y:.1}" y2="{1:.1}" stroke="{ERROR_COLOR}" stroke-width="1.4"/>"#,
            x(*t),
            mark_y + 8.0
        );
    }
    for t in &a.staleness.at_ms {
        let _ = writeln!(
            s,
            r#"<line x1="{0:.1}" x2="{0:.1}" y1="{1:.1}" y2="{2:.1}" stroke="{STALE_COLOR}" stroke-width="1.4"/>"#,
            x(*t),
            mark_y + 8.0,
            mark_y + 16.0
        );
    }

    // Time axis.
    let axis_y = mark_y + 18.0;
    let step = tick_step(total_ms / 1000.0);
    let mut t = 0.0;
    while t <= total_ms / 1000.0 + 1e-9 {
        let xx = x(t * 1000.0);
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{:.1}" y2="{:.1}" stroke="#9ca3af"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle" fill="#374151" font-size="10">{t:.0} s</text>"##,
            axis_y,
            axis_y + 4.0,
            axis_y + 15.0
        );
        t += step;
    }

    // Sentinel events: first sighting of each key event on each master,
    // dashed lines with labels staggered over three rows.
    let mut shown: Vec<(String, f64)> = Vec::new();
    for e in &r.events {
        if ![
            "+sdown",
            "+odown",
            "+switch-master",
            "+convert-to-slave",
            "-sdown",
            // A cluster's (`cluster::watch`).
            "+fail",
            "+failover",
            "+rejoined",
        ]
        .contains(&e.event.as_str())
        {
            continue;
        }
        // +sdown of a replica or sentinel is noise here; keep the master's.
        if (e.event == "+sdown" || e.event == "-sdown") && !e.detail.starts_with("master") {
            continue;
        }
        if shown
            .iter()
            .any(|(ev, t)| *ev == e.event && (e.t_ms - t).abs() < 3000.0)
        {
            continue;
        }
        shown.push((e.event.clone(), e.t_ms));
    }
    for (i, (event, t)) in shown.iter().enumerate() {
        let xx = x(*t);
        let row = (i % 3) as f64;
        let ly = y0 + 70.0 + row * 12.0;
        let c = match event.as_str() {
            "+switch-master" | "+failover" => "#7c3aed",
            "+convert-to-slave" | "+rejoined" => "#0f766e",
            _ => "#6b7280",
        };
        // Labels near the right edge run leftwards.
        let (tx, anchor) = if xx > W - RIGHT - 140.0 {
            (xx - 3.0, "end")
        } else {
            (xx + 3.0, "start")
        };
        let _ = writeln!(
            s,
            r#"<line x1="{xx:.1}" x2="{xx:.1}" y1="{:.1}" y2="{er_bot:.1}" stroke="{c}" stroke-dasharray="4,3" stroke-width="1.1"/><text x="{tx:.1}" y="{ly:.1}" text-anchor="{anchor}" fill="{c}" font-size="10.5">{} {:.2} s</text>"#,
            ly + 3.0,
            esc(event),
            t / 1000.0
        );
    }

    // Legend.
    let ly = axis_y + 32.0;
    let mut items: Vec<(&str, &str, bool)> = vec![
        (
            WRITE_COLOR,
            if r.durable_writes.is_some() {
                "acked writes/s, WAIT-confirmed"
            } else {
                "acknowledged writes/s"
            },
            true,
        ),
        (READ_COLOR, "successful reads/s", true),
        (ERROR_COLOR, "errors/s", true),
    ];
    if r.durable_writes.is_some() {
        items.push((UNREPLICATED_COLOR, "UNREPLICATED/s", true));
    }
    items.extend([
        (FAULT_COLOR, "fault in force", true),
        (
            ERROR_COLOR,
            if r.durable_writes.is_some() {
                "| acked, later lost"
            } else {
                "| acknowledged, later lost"
            },
            false,
        ),
        (STALE_COLOR, "| stale read", false),
    ]);
    let mut lx = LEFT;
    for (c, label, swatch) in items {
        if swatch {
            let _ = writeln!(
                s,
                r#"<rect x="{lx:.1}" y="{:.1}" width="12" height="10" fill="{c}" fill-opacity="0.7"/>"#,
                ly - 9.0
            );
            lx += 16.0;
        }
        let _ = writeln!(
            s,
            r#"<text x="{lx:.1}" y="{ly:.1}" fill="{}" font-size="11">{}</text>"#,
            if swatch { "#374151" } else { c },
            esc(label)
        );
        lx += 7.0 * label.len() as f64 + 18.0;
    }
    if y0 > 0.0 {
        let _ = writeln!(
            s,
            r##"<line x1="0" x2="{W}" y1="{y0:.1}" y2="{y0:.1}" stroke="#d1d5db"/>"##
        );
    }
}

/// Splits `text` at the last ", " before `width` characters.
fn split_line(text: &str, width: usize) -> (String, String) {
    if text.chars().count() <= width {
        return (text.to_string(), String::new());
    }
    let cut: String = text.chars().take(width).collect();
    match cut.rfind(", ") {
        Some(i) => (text[..i + 1].to_string(), text[i + 2..].to_string()),
        None => (text.to_string(), String::new()),
    }
}

fn nice_ceiling(v: f64) -> f64 {
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

fn tick_step(total_s: f64) -> f64 {
    match total_s {
        t if t <= 12.0 => 1.0,
        t if t <= 30.0 => 2.0,
        t if t <= 75.0 => 5.0,
        _ => 10.0,
    }
}
