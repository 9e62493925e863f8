//! A log-log line chart written as SVG by hand: enough for `pagoda bench --scaling`,
//! without a plotting dependency (and its font and image stack).
//!
//! ```text
//!   title
//!   +---------------------------+
//!   |        o---o   series 1   |   y: log10 scale, ticks at 1, 2, 5 × 10^k
//!   |   o---o        series 2   |   x: log10 scale, same ticks
//!   +---------------------------+
//!          x label
//! ```

use std::fmt::Write;

/// One line of the chart.
pub struct Series<'a> {
    /// Legend text.
    pub label: &'a str,
    /// An SVG colour, e.g. `"#1f77b4"`.
    pub color: &'a str,
    /// Points `(x, y)`; both must be > 0 (others are skipped).
    pub points: &'a [(f64, f64)],
    /// Dashed and without markers (for reference slopes).
    pub dashed: bool,
}

const W: f64 = 720.0;
const H: f64 = 480.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;

/// The chart as an SVG document. Empty series give an empty frame.
pub fn loglog_svg(title: &str, x_label: &str, y_label: &str, series: &[Series<'_>]) -> String {
    let pts = || series.iter().flat_map(|s| s.points.iter()).filter(|p| p.0 > 0.0 && p.1 > 0.0);
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts() {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (1.0, 10.0, 1.0, 10.0);
    }
    // Pad a little in log space so markers sit inside the frame.
    let (lx0, lx1) = pad(x0.log10(), x1.log10());
    let (ly0, ly1) = pad(y0.log10(), y1.log10());
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let sx = |x: f64| LEFT + (x.log10() - lx0) / (lx1 - lx0) * pw;
    let sy = |y: f64| TOP + ph - (y.log10() - ly0) / (ly1 - ly0) * ph;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
        LEFT + pw / 2.0,
        escape(title)
    );
    for v in ticks(lx0, lx1) {
        let x = sx(v);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + ph,
            TOP + ph + 18.0,
            fmt_tick(v)
        );
    }
    for v in ticks(ly0, ly1) {
        let y = sy(v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            y + 4.0,
            fmt_tick(v)
        );
    }
    let _ = writeln!(
        s,
        r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        LEFT + pw / 2.0,
        H - 16.0,
        escape(x_label)
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(20 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        TOP + ph / 2.0,
        escape(y_label)
    );
    for (i, se) in series.iter().enumerate() {
        let p: Vec<(f64, f64)> =
            se.points.iter().copied().filter(|p| p.0 > 0.0 && p.1 > 0.0).collect();
        let path: Vec<String> =
            p.iter().map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y))).collect();
        let dash = if se.dashed { r#" stroke-dasharray="6 4""# } else { "" };
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{dash}/>"#,
            path.join(" "),
            se.color
        );
        if !se.dashed {
            for &(x, y) in &p {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{}"/>"#,
                    sx(x),
                    sy(y),
                    se.color
                );
            }
        }
        let ly = TOP + 14.0 + 20.0 * i as f64;
        let lx = LEFT + pw + 12.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            lx + 24.0,
            se.color,
            lx + 30.0,
            ly + 4.0,
            escape(se.label)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn pad(lo: f64, hi: f64) -> (f64, f64) {
    let span = (hi - lo).max(0.5);
    (lo - 0.05 * span, hi + 0.05 * span)
}

/// Tick values 1, 2, 5 × 10^k between `10^lo` and `10^hi`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut out = Vec::new();
    for k in (lo.floor() as i32)..=(hi.ceil() as i32) {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(k);
            let l = v.log10();
            if l >= lo && l <= hi {
                out.push(v);
            }
        }
    }
    out
}

fn fmt_tick(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.6}");
        s.trim_end_matches('0').to_string()
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_has_one_marker_per_point_and_a_legend_entry_per_series() {
        let a = [(64.0, 0.5), (128.0, 1.1), (256.0, 2.5)];
        let b = [(64.0, 1.0), (128.0, 8.0)];
        let svg = loglog_svg(
            "t <N>",
            "N",
            "s",
            &[
                Series { label: "paged", color: "#1f77b4", points: &a, dashed: false },
                Series { label: "none", color: "#d62728", points: &b, dashed: false },
                Series { label: "N^2", color: "#999", points: &b, dashed: true },
            ],
        );
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<circle").count(), 5);
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(svg.contains("t &lt;N&gt;"));
    }

    #[test]
    fn ticks_follow_the_1_2_5_pattern() {
        assert_eq!(ticks(0.0, 2.0), vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]);
        assert_eq!(fmt_tick(0.05), "0.05");
        assert_eq!(fmt_tick(200.0), "200");
    }
}
