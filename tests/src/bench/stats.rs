//! Samples, percentiles and the result table.

use std::fmt::Write as _;
use std::time::Duration;

/// How a value is printed. Values are kept in base units: seconds, bytes, plain numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unit {
    Seconds,
    Bytes,
    PerSecond,
    Count,
}

/// A target on the median, or on the same-run ratio to the reference.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    AtMost(f64),
    AtLeast(f64),
    RatioAtMost(f64),
    RatioAtLeast(f64),
}

/// One line of the table: one value per run, and optionally a reference per run.
#[derive(Debug, Clone)]
pub struct Measure {
    pub scenario: String,
    pub measure: String,
    pub unit: Unit,
    pub samples: Vec<f64>,
    pub reference: Vec<f64>,
    pub target: Option<Target>,
    /// Set when the scenario failed: the message replaces the figures.
    pub error: Option<String>,
}

impl Measure {
    pub fn new(scenario: &str, measure: &str, unit: Unit, target: Option<Target>) -> Measure {
        Measure {
            scenario: scenario.to_string(),
            measure: measure.to_string(),
            unit,
            samples: Vec::new(),
            reference: Vec::new(),
            target,
            error: None,
        }
    }

    pub fn failed(scenario: &str, message: String) -> Measure {
        let mut m = Measure::new(scenario, "(scenario failed)", Unit::Count, None);
        m.error = Some(message);
        m
    }

    pub fn push(&mut self, v: f64) {
        self.samples.push(v);
    }

    pub fn push_with_ref(&mut self, v: f64, r: f64) {
        self.samples.push(v);
        self.reference.push(r);
    }

    pub fn median(&self) -> Option<f64> {
        median(&self.samples)
    }

    /// The median of the per-run ratios value ÷ reference (same-run ratios).
    pub fn ratio(&self) -> Option<f64> {
        if self.reference.is_empty() || self.reference.len() != self.samples.len() {
            return None;
        }
        let ratios: Vec<f64> = self
            .samples
            .iter()
            .zip(&self.reference)
            .map(|(v, r)| v / r)
            .collect();
        median(&ratios)
    }

    /// `Some(true)` if the target holds, `None` without target or figures.
    pub fn pass(&self) -> Option<bool> {
        let target = self.target?;
        Some(match target {
            Target::AtMost(t) => self.median()? <= t,
            Target::AtLeast(t) => self.median()? >= t,
            Target::RatioAtMost(t) => self.ratio()? <= t,
            Target::RatioAtLeast(t) => self.ratio()? >= t,
        })
    }

    pub fn target_text(&self) -> String {
        match self.target {
            None => "—".to_string(),
            Some(Target::AtMost(t)) => format!("≤ {}", fmt_value(self.unit, t)),
            Some(Target::AtLeast(t)) => format!("≥ {}", fmt_value(self.unit, t)),
            Some(Target::RatioAtMost(t)) => format!("ratio ≤ {t}"),
            Some(Target::RatioAtLeast(t)) => format!("ratio ≥ {t}"),
        }
    }
}

pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The median; for an even count, the mean of the two middle values.
pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

/// Nearest-rank percentile of sorted data.
pub fn percentile_sorted(s: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

pub fn fmt_value(unit: Unit, v: f64) -> String {
    match unit {
        Unit::Seconds => {
            if v < 1e-3 {
                format!("{:.1} µs", v * 1e6)
            } else if v < 1.0 {
                format!("{:.2} ms", v * 1e3)
            } else {
                format!("{v:.2} s")
            }
        }
        Unit::Bytes => {
            let a = v.abs();
            if a < 10.0 * 1024.0 {
                format!("{v:.0} B")
            } else if a < 1024.0 * 1024.0 {
                format!("{:.1} KiB", v / 1024.0)
            } else {
                format!("{:.1} MiB", v / (1024.0 * 1024.0))
            }
        }
        Unit::PerSecond => format!("{v:.0}/s"),
        Unit::Count => {
            if v.fract() == 0.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.3}")
            }
        }
    }
}

const HEADERS: [&str; 9] = [
    "scenario",
    "measure",
    "median",
    "min",
    "max",
    "ref median",
    "ratio",
    "target",
    "result",
];

fn cells(m: &Measure) -> [String; 9] {
    if let Some(e) = &m.error {
        let short: String = e.lines().next().unwrap_or("").chars().take(80).collect();
        return [
            m.scenario.clone(),
            m.measure.clone(),
            "—".into(),
            "—".into(),
            "—".into(),
            "—".into(),
            "—".into(),
            short,
            "ERROR".into(),
        ];
    }
    let f = |v: Option<f64>| v.map_or("—".to_string(), |v| fmt_value(m.unit, v));
    let min = m.samples.iter().copied().reduce(f64::min);
    let max = m.samples.iter().copied().reduce(f64::max);
    [
        m.scenario.clone(),
        m.measure.clone(),
        f(m.median()),
        f(min),
        f(max),
        median(&m.reference).map_or("—".into(), |v| fmt_value(m.unit, v)),
        m.ratio().map_or("—".into(), |r| format!("{r:.2}")),
        m.target_text(),
        match m.pass() {
            None => "info".into(),
            Some(true) => "pass".into(),
            Some(false) => "FAIL".into(),
        },
    ]
}

/// An aligned plain-text table.
pub fn table(ms: &[Measure]) -> String {
    let rows: Vec<[String; 9]> = ms.iter().map(cells).collect();
    let mut widths: Vec<usize> = HEADERS.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cols: &[String]| {
        for (i, (c, w)) in cols.iter().zip(&widths).enumerate() {
            let pad = w - c.chars().count();
            // Names left-aligned, figures right-aligned.
            if !(2..7).contains(&i) {
                let _ = write!(out, "{c}{}", " ".repeat(pad));
            } else {
                let _ = write!(out, "{}{c}", " ".repeat(pad));
            }
            out.push_str(if i + 1 < cols.len() { "  " } else { "\n" });
        }
    };
    line(&mut out, &HEADERS.map(String::from));
    let total: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
    out.push_str(&"-".repeat(total));
    out.push('\n');
    for r in &rows {
        line(&mut out, r);
    }
    out
}

/// The same table in Markdown.
pub fn markdown(ms: &[Measure]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| {} |", HEADERS.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(HEADERS.len()));
    for m in ms {
        let c = cells(m);
        let c: Vec<String> = c.iter().map(|s| s.replace('|', "\\|")).collect();
        let _ = writeln!(out, "| {} |", c.join(" | "));
    }
    out
}

/// Latency summary of one run: p50 and p99 of the samples (seconds).
pub struct Latencies {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

pub fn latencies(samples: &[f64]) -> Latencies {
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    Latencies {
        p50: percentile_sorted(&s, 50.0),
        p99: percentile_sorted(&s, 99.0),
        max: *s.last().unwrap_or(&0.0),
    }
}
