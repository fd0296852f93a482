//! A small line chart in SVG for BENCHMARKS.md (log-scale x, linear y from 0).

use std::fmt::Write as _;

/// One named line of (x, y) points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

const COLORS: [&str; 4] = ["#2f6fdf", "#d9534f", "#2e9e5b", "#b07cc6"];

/// Draws `series` against a log10 x axis (x > 0) and a linear y axis starting at 0.
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let (w, h) = (700.0, 400.0);
    let (left, right, top, bottom) = (70.0, 220.0, 40.0, 50.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let xs = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .filter(|x| *x > 0.0);
    let (mut x0, mut x1) = (f64::MAX, f64::MIN);
    for x in xs {
        x0 = x0.min(x.log10());
        x1 = x1.max(x.log10());
    }
    if x0 > x1 {
        (x0, x1) = (0.0, 1.0);
    }
    if x1 - x0 < 1e-9 {
        x1 = x0 + 1.0;
    }
    let y_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    let y1 = nice_ceiling(y_max);
    let px = |x: f64| left + (x.max(1e-12).log10() - x0) / (x1 - x0) * pw;
    let py = |y: f64| top + ph - y / y1 * ph;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        left + pw / 2.0,
        escape(title)
    );
    // Axes, ticks and grid.
    let _ = writeln!(
        svg,
        r##"<path d="M{left} {top} V{} H{}" stroke="#333" fill="none"/>"##,
        top + ph,
        left + pw
    );
    for i in 0..=4 {
        let y = y1 * i as f64 / 4.0;
        let (x2, yy, tx, ty, label) = (left + pw, py(y), left - 6.0, py(y) + 4.0, trim(y));
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" x2="{x2}" y1="{yy}" y2="{yy}" stroke="#ddd"/><text x="{tx}" y="{ty}" text-anchor="end">{label}</text>"##
        );
    }
    let mut decade = x0.floor() as i32;
    while f64::from(decade) <= x1 + 1e-9 {
        let x = 10f64.powi(decade);
        if f64::from(decade) >= x0 - 1e-9 {
            let _ = writeln!(
                svg,
                r##"<line x1="{0}" x2="{0}" y1="{top}" y2="{1}" stroke="#eee"/><text x="{0}" y="{2}" text-anchor="middle">{3}</text>"##,
                px(x),
                top + ph,
                top + ph + 18.0,
                trim(x)
            );
        }
        decade += 1;
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        left + pw / 2.0,
        h - 10.0,
        escape(x_label)
    );
    let _ = writeln!(
        svg,
        r#"<text x="16" y="{0}" text-anchor="middle" transform="rotate(-90 16 {0})">{1}</text>"#,
        top + ph / 2.0,
        escape(y_label)
    );
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let d: Vec<String> = s
            .points
            .iter()
            .enumerate()
            .map(|(j, (x, y))| {
                format!(
                    "{}{:.1} {:.1}",
                    if j == 0 { 'M' } else { 'L' },
                    px(*x),
                    py(*y)
                )
            })
            .collect();
        let _ = writeln!(
            svg,
            r#"<path d="{}" stroke="{color}" stroke-width="2" fill="none"/>"#,
            d.join(" ")
        );
        for (x, y) in &s.points {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                px(*x),
                py(*y)
            );
        }
        let ly = top + 10.0 + 20.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{0}" x2="{1}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{2}" y="{3}">{4}</text>"#,
            left + pw + 12.0,
            left + pw + 32.0,
            left + pw + 38.0,
            ly + 4.0,
            escape(&s.name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * p >= v {
            return m * p;
        }
    }
    10.0 * p
}

fn trim(v: f64) -> String {
    if v >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_chart_has_every_series_and_point() {
        let svg = super::line_chart(
            "t <1>",
            "viewers",
            "ms",
            &[
                super::Series {
                    name: "a".into(),
                    points: vec![(100.0, 1.0), (1000.0, 2.0), (10000.0, 4.5)],
                },
                super::Series {
                    name: "b".into(),
                    points: vec![(100.0, 3.0)],
                },
            ],
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<circle").count(), 4);
        assert!(svg.contains("t &lt;1&gt;"));
        assert!(svg.contains(">10000<"), "decade ticks on the log axis");
    }
}
