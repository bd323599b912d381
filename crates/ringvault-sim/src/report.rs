//! Experiment reports: every figure, the parameters and the seed as JSON, a CSV per table, an SVG
//! per plot, and a short table for the terminal. Same seed, same bytes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde::Serialize;
use serde_json::Value;

/// A table of figures.
#[derive(Clone, Debug, Serialize)]
pub struct Table {
    /// File-name-safe name; the CSV is `EXPERIMENT-NAME.csv`.
    pub name: String,
    /// Column headers.
    pub columns: Vec<String>,
    /// Rows of cells.
    pub rows: Vec<Vec<Value>>,
}

impl Table {
    /// An empty table.
    pub fn new(name: &str, columns: &[&str]) -> Self {
        Table {
            name: name.into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row.
    pub fn row(&mut self, cells: Vec<Value>) {
        debug_assert_eq!(cells.len(), self.columns.len());
        self.rows.push(cells);
    }

    fn cell(v: &Value) -> String {
        match v {
            Value::Number(n) => match n.as_f64() {
                Some(f) if n.is_f64() => format!("{f:.4}"),
                _ => n.to_string(),
            },
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }

    /// A CSV field: quoted (RFC 4180) when it holds a comma, a quote or a line break.
    fn csv_field(s: String) -> String {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s
        }
    }

    /// The table as CSV.
    pub fn csv(&self) -> String {
        let header: Vec<String> = self.columns.iter().cloned().map(Self::csv_field).collect();
        let mut out = header.join(",");
        out.push('\n');
        for r in &self.rows {
            let cells: Vec<String> = r.iter().map(|c| Self::csv_field(Self::cell(c))).collect();
            out.push_str(&cells.join(","));
            out.push('\n');
        }
        out
    }

    /// The table aligned for a terminal.
    pub fn text(&self) -> String {
        let cells: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| r.iter().map(Self::cell).collect())
            .collect();
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|c| {
                cells
                    .iter()
                    .map(|r| r[c].len())
                    .chain([self.columns[c].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        let line = |out: &mut String, r: &[String]| {
            let parts: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(s, w)| format!("{s:>w$}"))
                .collect();
            let _ = writeln!(out, "  {}", parts.join("  "));
        };
        line(&mut out, &self.columns);
        for r in &cells {
            line(&mut out, r);
        }
        out
    }
}

/// How a plot draws its series.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PlotKind {
    /// Lines through points.
    Line,
    /// Bars at integer x.
    Bar,
}

/// One named series of (x, y) points.
#[derive(Clone, Debug, Serialize)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Points.
    pub points: Vec<(f64, f64)>,
}

/// A plot.
#[derive(Clone, Debug, Serialize)]
pub struct Plot {
    /// File-name-safe name; the SVG is `EXPERIMENT-NAME.svg`.
    pub name: String,
    /// Title.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Lines or bars.
    pub kind: PlotKind,
    /// Logarithmic x axis.
    pub log_x: bool,
    /// The data.
    pub series: Vec<Series>,
}

/// Everything an experiment measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Experiment name.
    pub experiment: String,
    /// The run seed.
    pub seed: u64,
    /// Every parameter.
    pub parameters: Value,
    /// Headline figures.
    pub figures: Value,
    /// Tables.
    pub tables: Vec<Table>,
    /// Plots.
    pub plots: Vec<Plot>,
}

impl Report {
    /// Writes `DIR/EXPERIMENT.json`, `DIR/EXPERIMENT-TABLE.csv` and `DIR/EXPERIMENT-PLOT.svg`;
    /// returns the files written.
    pub fn write(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let mut files = Vec::new();
        let json = dir.join(format!("{}.json", self.experiment));
        let mut text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        text.push('\n');
        std::fs::write(&json, text)?;
        files.push(json);
        for t in &self.tables {
            let p = dir.join(format!("{}-{}.csv", self.experiment, t.name));
            std::fs::write(&p, t.csv())?;
            files.push(p);
        }
        for plot in &self.plots {
            let p = dir.join(format!("{}-{}.svg", self.experiment, plot.name));
            draw(plot, &p).map_err(|e| std::io::Error::other(e.to_string()))?;
            files.push(p);
        }
        Ok(files)
    }

    /// The tables as text for the terminal.
    pub fn text(&self) -> String {
        let mut out = format!("{} (seed {})\n", self.experiment, self.seed);
        for t in &self.tables {
            let _ = writeln!(out, "{}:", t.name);
            out.push_str(&t.text());
        }
        out
    }
}

const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(90, 90, 90),
];

fn draw(plot: &Plot, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (720, 450)).into_drawing_area();
    root.fill(&WHITE)?;
    let pts = plot.series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0f64);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1) = (0.0, 1.0);
    }
    let y1 = if y1 > 0.0 { y1 * 1.15 } else { 1.0 };
    let mut chart = ChartBuilder::on(&root);
    chart
        .caption(&plot.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60);
    match (plot.kind, plot.log_x) {
        (PlotKind::Bar, _) => {
            let mut c = chart.build_cartesian_2d(x0 - 0.6..x1 + 0.6, 0.0..y1)?;
            c.configure_mesh()
                .x_desc(&plot.x_label)
                .y_desc(&plot.y_label)
                .disable_x_mesh()
                .draw()?;
            let n = plot.series.len().max(1) as f64;
            let w = 0.8 / n;
            for (k, s) in plot.series.iter().enumerate() {
                let colour = COLOURS[k % COLOURS.len()];
                let left = -0.4 + w * k as f64;
                c.draw_series(s.points.iter().map(|&(x, y)| {
                    Rectangle::new([(x + left, 0.0), (x + left + w, y)], colour.filled())
                }))?
                .label(&s.label)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled())
                });
            }
            c.configure_series_labels()
                .border_style(BLACK)
                .background_style(WHITE.mix(0.8))
                .draw()?;
        }
        (PlotKind::Line, log_x) => {
            let span = if x1 > x0 { x1 - x0 } else { 1.0 };
            if log_x {
                let mut c = chart.build_cartesian_2d((x0 * 0.8..x1 * 1.25).log_scale(), 0.0..y1)?;
                c.configure_mesh()
                    .x_desc(&plot.x_label)
                    .y_desc(&plot.y_label)
                    .draw()?;
                lines(&mut c, plot)?;
            } else {
                let mut c =
                    chart.build_cartesian_2d(x0 - span * 0.05..x1 + span * 0.05, 0.0..y1)?;
                c.configure_mesh()
                    .x_desc(&plot.x_label)
                    .y_desc(&plot.y_label)
                    .draw()?;
                lines(&mut c, plot)?;
            }
        }
    }
    root.present()?;
    Ok(())
}

fn lines<'a, X>(
    c: &mut ChartContext<
        'a,
        SVGBackend<'a>,
        Cartesian2d<X, plotters::coord::types::RangedCoordf64>,
    >,
    plot: &Plot,
) -> Result<(), String>
where
    X: Ranged<ValueType = f64>,
{
    for (k, s) in plot.series.iter().enumerate() {
        let colour = COLOURS[k % COLOURS.len()];
        c.draw_series(LineSeries::new(
            s.points.iter().copied(),
            colour.stroke_width(2),
        ))
        .map_err(|e| e.to_string())?
        .label(&s.label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour));
        c.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
            .map_err(|e| e.to_string())?;
    }
    c.configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Rounds to 6 significant decimals so reports stay short and stable.
pub(crate) fn r6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}
