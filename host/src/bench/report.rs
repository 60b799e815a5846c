//! The report: figures, their targets, the table and the JSON Lines.

use std::fmt::Write as _;
use std::path::PathBuf;

use super::replay::Checksum;
use crate::log::Durability;

/// What a figure should be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// At least this value.
    AtLeast(f64),
    /// Strictly below this value.
    Below(f64),
    /// Exactly this value.
    Exactly(f64),
    /// At most `factor` times another figure.
    AtMostTimes {
        /// The other figure's name.
        figure: &'static str,
        /// The factor.
        factor: f64,
    },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::AtLeast(value) => write!(f, ">= {}", compact(*value)),
            Target::Below(value) => write!(f, "< {}", compact(*value)),
            Target::Exactly(value) => write!(f, "= {}", compact(*value)),
            Target::AtMostTimes { figure, factor } => write!(f, "<= {factor} x {figure}"),
        }
    }
}

/// A figure's value, or why there is none.
#[derive(Debug, Clone, PartialEq)]
pub enum Measurement {
    /// Measured: the median and every repetition's value.
    Measured {
        /// The median over repetitions.
        median: f64,
        /// Each repetition's value, in the order measured.
        reps: Vec<f64>,
    },
    /// Not measured, and why (for example what it waits for).
    NotMeasured(String),
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// The name, as the issue lists it (`replay_ratio`, `live_p99_ms`, ...).
    pub name: &'static str,
    /// The unit.
    pub unit: &'static str,
    /// Decimals shown in the table.
    pub decimals: usize,
    /// The value.
    pub measurement: Measurement,
    /// The target, if the figure has one.
    pub target: Option<Target>,
    /// What was measured, when the figure is measured for several things (the label of
    /// a `--component`).
    pub subject: Option<String>,
}

impl Figure {
    pub(super) fn measured(
        name: &'static str,
        unit: &'static str,
        decimals: usize,
        reps: Vec<f64>,
    ) -> Self {
        Self {
            name,
            unit,
            decimals,
            measurement: Measurement::Measured {
                median: median(&reps),
                reps,
            },
            target: target(name),
            subject: None,
        }
    }

    /// The same figure, about `subject`.
    pub(super) fn about(mut self, subject: &str) -> Self {
        self.subject = Some(subject.to_owned());
        self
    }

    /// The name, with the subject when there is one: `component_replay_eps[balances-ts]`.
    pub fn label(&self) -> String {
        match &self.subject {
            Some(subject) => format!("{}[{subject}]", self.name),
            None => self.name.to_owned(),
        }
    }

    pub(super) fn not_measured(
        name: &'static str,
        unit: &'static str,
        why: impl Into<String>,
    ) -> Self {
        Self {
            name,
            unit,
            decimals: 0,
            measurement: Measurement::NotMeasured(why.into()),
            target: target(name),
            subject: None,
        }
    }

    /// The median, if measured.
    pub fn value(&self) -> Option<f64> {
        match &self.measurement {
            Measurement::Measured { median, .. } => Some(*median),
            Measurement::NotMeasured(_) => None,
        }
    }
}

/// The targets of the issue; reported, never asserted.
fn target(name: &str) -> Option<Target> {
    Some(match name {
        "replay_ratio" => Target::AtLeast(0.95),
        "replay_vs_plain_native" => Target::AtLeast(1.0),
        "replay_wasm_eps" => Target::AtLeast(1_000_000.0),
        "append_batch_eps" => Target::AtLeast(400_000.0),
        "append_single_eps" => Target::AtLeast(60_000.0),
        "append_http_eps" => Target::AtLeast(30_000.0),
        "live_p99_ms" => Target::Below(2.0),
        "swap_failed_reads" => Target::Exactly(0.0),
        "rss_1m_mb" => Target::AtMostTimes {
            figure: "rss_100k_mb",
            factor: 1.2,
        },
        "cold_start_cached_ms" => Target::Below(20.0),
        _ => return None,
    })
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct Report {
    /// Every figure, measured or not.
    pub figures: Vec<Figure>,
    /// The checksum both read models agreed on.
    pub checksum: Checksum,
    /// Events in the replayed log.
    pub events: usize,
    /// Repetitions.
    pub reps: usize,
    /// The workload seed.
    pub seed: u64,
    /// The log's durability.
    pub durability: Durability,
    /// Events per batch in replays.
    pub batch_events: usize,
    /// The component measured.
    pub plugin: PathBuf,
}

impl Report {
    /// A figure by name.
    pub fn figure(&self, name: &str) -> Option<&Figure> {
        self.figures.iter().find(|figure| figure.name == name)
    }

    /// Whether a figure meets its target: `None` when it has no target or no value.
    pub fn met(&self, figure: &Figure) -> Option<bool> {
        let value = figure.value()?;
        Some(match figure.target? {
            Target::AtLeast(target) => value >= target,
            Target::Below(target) => value < target,
            Target::Exactly(target) => value == target,
            Target::AtMostTimes { figure, factor } => {
                value <= factor * self.figure(figure)?.value()?
            }
        })
    }

    /// One JSON object per measured figure, one per line: `{"name", "value", "unit"}`.
    pub fn json_lines(&self) -> String {
        let mut out = String::new();
        for figure in &self.figures {
            if let Some(value) = figure.value() {
                /// One line, fields in the issue's order.
                #[derive(serde::Serialize)]
                struct Line<'a> {
                    name: &'a str,
                    value: f64,
                    unit: &'a str,
                    #[serde(skip_serializing_if = "Option::is_none")]
                    component: Option<&'a str>,
                }
                let line = Line {
                    name: figure.name,
                    value,
                    unit: figure.unit,
                    component: figure.subject.as_deref(),
                };
                // Serialising three plain fields cannot fail.
                out.push_str(&serde_json::to_string(&line).unwrap_or_default());
                out.push('\n');
            }
        }
        out
    }

    /// The readable table: figure, median, unit, target, whether it is met, and the
    /// spread over repetitions.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "refract bench: {} events (seed {}), {} rep(s), medians; log durability {:?}; {} events per replay batch",
            self.events, self.seed, self.reps, self.durability, self.batch_events
        );
        let _ = writeln!(out, "component: {}", self.plugin.display());
        if cfg!(debug_assertions) {
            let _ = writeln!(
                out,
                "warning: this `refract` is a debug build; only a release build (`cargo run --release`) gives representative figures"
            );
        }
        let _ = writeln!(
            out,
            "WASM and native read models identical: {}",
            self.checksum
        );
        let _ = writeln!(out);
        let rows: Vec<[String; 6]> = self
            .figures
            .iter()
            .map(|figure| {
                let target = figure.target.map(|t| t.to_string()).unwrap_or_default();
                match &figure.measurement {
                    Measurement::Measured { median, reps } => {
                        let met = match self.met(figure) {
                            Some(true) => "yes",
                            Some(false) => "NO",
                            None => "",
                        };
                        let spread = if reps.len() > 1 {
                            let min = reps.iter().copied().fold(f64::INFINITY, f64::min);
                            let max = reps.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                            format!(
                                "{} .. {}",
                                number(min, figure.decimals),
                                number(max, figure.decimals)
                            )
                        } else {
                            String::new()
                        };
                        [
                            figure.label(),
                            number(*median, figure.decimals),
                            figure.unit.to_owned(),
                            target,
                            met.to_owned(),
                            spread,
                        ]
                    }
                    Measurement::NotMeasured(why) => [
                        figure.label(),
                        "-".to_owned(),
                        figure.unit.to_owned(),
                        target,
                        String::new(),
                        format!("not measured yet ({why})"),
                    ],
                }
            })
            .collect();
        let header = [
            "figure",
            "value",
            "unit",
            "target",
            "met",
            "reps (min .. max)",
        ]
        .map(str::to_owned);
        let mut widths = header.clone().map(|h| h.len());
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.len());
            }
        }
        for row in std::iter::once(&header).chain(&rows) {
            let line = format!(
                "{:<w0$}  {:>w1$}  {:<w2$}  {:<w3$}  {:<w4$}  {}",
                row[0],
                row[1],
                row[2],
                row[3],
                row[4],
                row[5],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3],
                w4 = widths[4],
            );
            let _ = writeln!(out, "{}", line.trim_end());
        }
        out
    }
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The `q` quantile (0 to 1) of `values`, nearest rank.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A number with `decimals` decimals and thousands separators.
fn number(value: f64, decimals: usize) -> String {
    let text = format!("{value:.decimals$}");
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let (sign, digits) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    if frac.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{frac}")
    }
}

/// A target value without needless decimals.
fn compact(value: f64) -> String {
    if value.fract() == 0.0 {
        number(value, 0)
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(figures: Vec<Figure>) -> Report {
        Report {
            figures,
            checksum: Checksum {
                rows: 1,
                sha256: "00".into(),
                checkpoint: 1,
            },
            events: 1,
            reps: 1,
            seed: 1,
            durability: Durability::Full,
            batch_events: 1,
            plugin: PathBuf::from("balances.wasm"),
        }
    }

    #[test]
    fn medians_and_quantiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&hundred, 0.5), 50.0);
        assert_eq!(quantile(&hundred, 0.99), 99.0);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
    }

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(number(1_234_567.0, 0), "1,234,567");
        assert_eq!(number(999.0, 0), "999");
        assert_eq!(number(-12_345.678, 2), "-12,345.68");
        assert_eq!(compact(500_000.0), "500,000");
        assert_eq!(compact(0.85), "0.85");
    }

    #[test]
    fn targets_are_judged_and_unmeasured_figures_stay_out_of_the_json() {
        let report = report(vec![
            Figure::measured("replay_ratio", "ratio", 3, vec![0.96, 0.8, 0.97]),
            Figure::measured("rss_100k_mb", "MiB", 1, vec![20.0]),
            Figure::measured("rss_1m_mb", "MiB", 1, vec![25.0]),
            Figure::not_measured("swap_ms", "ms", "needs hot swap"),
        ]);
        let met = |name| report.figure(name).and_then(|figure| report.met(figure));
        assert_eq!(met("replay_ratio"), Some(true));
        assert_eq!(met("rss_1m_mb"), Some(false), "25 > 1.2 x 20");
        assert_eq!(met("rss_100k_mb"), None, "no target");
        assert_eq!(met("swap_ms"), None, "not measured");
        let json = report.json_lines();
        let lines: Vec<&str> = json.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[0],
            r#"{"name":"replay_ratio","value":0.96,"unit":"ratio"}"#
        );
        let table = report.table();
        assert!(
            table.contains("not measured yet (needs hot swap)"),
            "{table}"
        );
        assert!(table.contains("0.800 .. 0.970"), "{table}");
    }
}
