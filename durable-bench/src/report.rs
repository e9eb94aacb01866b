//! Measurements, targets, the table and the JSON report.

use serde_json::{json, Value};

/// How a measured value is compared with its target.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Target {
    /// The value must be at least this.
    AtLeast(f64),
    /// The value must be at most this.
    AtMost(f64),
    /// The value must be below this.
    Below(f64),
}

impl Target {
    fn met_by(self, v: f64) -> bool {
        match self {
            Target::AtLeast(t) => v >= t,
            Target::AtMost(t) => v <= t,
            Target::Below(t) => v < t,
        }
    }

    fn describe(self, unit: Unit) -> String {
        let (op, t) = match self {
            Target::AtLeast(t) => (">=", t),
            Target::AtMost(t) => ("<=", t),
            Target::Below(t) => ("<", t),
        };
        format!("{op} {}", unit.format(t))
    }

    fn to_json(self) -> Value {
        let (op, t) = match self {
            Target::AtLeast(t) => (">=", t),
            Target::AtMost(t) => ("<=", t),
            Target::Below(t) => ("<", t),
        };
        json!({ "op": op, "value": t })
    }
}

/// The unit of a measured value, which also decides how it is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unit {
    /// Seconds of wall time.
    Seconds,
    /// Milliseconds.
    Millis,
    /// Something per second.
    PerSecond(&'static str),
    /// Bytes.
    Bytes,
    /// A plain ratio.
    Ratio,
    /// A number of things.
    Count(&'static str),
}

impl Unit {
    fn name(self) -> String {
        match self {
            Unit::Seconds => "s".into(),
            Unit::Millis => "ms".into(),
            Unit::PerSecond(what) => format!("{what}/s"),
            Unit::Bytes => "bytes".into(),
            Unit::Ratio => "ratio".into(),
            Unit::Count(what) => what.into(),
        }
    }

    /// The value with its unit, for people.
    pub(crate) fn format(self, v: f64) -> String {
        match self {
            Unit::Seconds if v < 1.0 => format!("{:.0} ms", v * 1e3),
            Unit::Seconds => format!("{v:.2} s"),
            Unit::Millis if v < 1.0 => format!("{:.0} µs", v * 1e3),
            Unit::Millis => format!("{v:.2} ms"),
            Unit::PerSecond(what) => format!("{} {what}/s", thousands(v)),
            Unit::Bytes if v >= 1024.0 => format!("{:.2} KiB", v / 1024.0),
            Unit::Bytes => format!("{v:.0} B"),
            Unit::Ratio => format!("{v:.2}"),
            Unit::Count(what) => format!("{} {what}", thousands(v)),
        }
    }
}

fn thousands(v: f64) -> String {
    let s = format!("{:.0}", v.round());
    let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

/// How runs of the same measurement are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Combine {
    /// The median run.
    Median,
    /// The first run only (for readings that later runs would distort, such
    /// as resident memory once the heap has grown).
    First,
}

/// One measured quantity of a scenario, over one or more runs.
#[derive(Clone, Debug)]
pub(crate) struct Measurement {
    /// Scenario id, e.g. `S1`.
    pub(crate) scenario: &'static str,
    /// What was measured, e.g. `seq3 throughput`; unique within a scenario.
    pub(crate) name: String,
    /// The sizes it ran with, for people.
    pub(crate) params: String,
    /// Unit of the values.
    pub(crate) unit: Unit,
    /// One value per run.
    pub(crate) runs: Vec<f64>,
    /// How the runs are combined.
    pub(crate) combine: Combine,
    /// The target, if the issue sets one.
    pub(crate) target: Option<Target>,
    /// Set when a run hit its time budget: the value is then a lower bound.
    pub(crate) lower_bound: bool,
    /// Anything a reader should know (e.g. why a run was cut short).
    pub(crate) note: Option<String>,
}

impl Measurement {
    /// A single-run measurement without a target.
    pub(crate) fn new(
        scenario: &'static str,
        name: impl Into<String>,
        params: impl Into<String>,
        unit: Unit,
        value: f64,
    ) -> Self {
        Measurement {
            scenario,
            name: name.into(),
            params: params.into(),
            unit,
            runs: vec![value],
            combine: Combine::Median,
            target: None,
            lower_bound: false,
            note: None,
        }
    }

    /// Adds a target, if the backend has one for this measurement.
    pub(crate) fn target(mut self, t: Option<Target>) -> Self {
        self.target = t;
        self
    }

    /// Combines runs with `c`.
    pub(crate) fn combine(mut self, c: Combine) -> Self {
        self.combine = c;
        self
    }

    /// Adds a note.
    pub(crate) fn note(mut self, n: impl Into<String>) -> Self {
        self.note = Some(n.into());
        self
    }

    /// Marks the value as a lower bound (the run was cut short).
    pub(crate) fn lower_bound(mut self) -> Self {
        self.lower_bound = true;
        self
    }

    /// The reported value.
    pub(crate) fn value(&self) -> f64 {
        match self.combine {
            Combine::First => self.runs[0],
            Combine::Median => {
                let mut v = self.runs.clone();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            }
        }
    }

    /// Whether the target is met (`None`: no target, or a lower bound that
    /// cannot decide it).
    pub(crate) fn passed(&self) -> Option<bool> {
        let t = self.target?;
        let met = t.met_by(self.value());
        match (self.lower_bound, t) {
            (true, Target::AtLeast(_)) if met => Some(true),
            (true, Target::AtMost(_) | Target::Below(_)) if !met => Some(false),
            (true, _) => None,
            (false, _) => Some(met),
        }
    }

    fn shown_value(&self) -> String {
        let v = self.unit.format(self.value());
        if self.lower_bound {
            format!("> {v}")
        } else {
            v
        }
    }

    /// Appends the runs of `other` (the same measurement from another run).
    pub(crate) fn merge(&mut self, other: Measurement) {
        self.runs.extend(other.runs);
        self.lower_bound |= other.lower_bound;
        if self.note.is_none() {
            self.note = other.note;
        }
    }
}

/// A scenario that could not be measured.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    /// Scenario id.
    pub(crate) scenario: &'static str,
    /// What went wrong.
    pub(crate) error: String,
}

/// The machine the numbers come from.
#[derive(Clone, Debug)]
pub(crate) struct Machine {
    cpus: usize,
    cpu_model: String,
    memory: String,
    date: String,
}

impl Machine {
    /// Reads it from the system.
    pub(crate) fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_string(), |(_, m)| m.trim().to_string());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or_else(
                || "unknown".to_string(),
                |kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0),
            );
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            memory,
            date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} CPUs ({}), {} RAM, {}",
            self.cpus, self.cpu_model, self.memory, self.date
        )
    }
}

/// Everything one invocation measured.
#[derive(Clone, Debug)]
pub(crate) struct Report {
    /// Backend name.
    pub(crate) backend: &'static str,
    /// The backend with where it is (e.g. a sidecar's endpoint).
    pub(crate) backend_detail: String,
    /// Runs per scenario.
    pub(crate) repeat: usize,
    /// The machine.
    pub(crate) machine: Machine,
    /// Measurements, in the order they were first taken.
    pub(crate) measurements: Vec<Measurement>,
    /// Scenarios that failed.
    pub(crate) failures: Vec<Failure>,
}

impl Report {
    /// Adds measurements from one run, merging repeats of the same one.
    pub(crate) fn add(&mut self, ms: Vec<Measurement>) {
        for m in ms {
            match self
                .measurements
                .iter_mut()
                .find(|x| x.scenario == m.scenario && x.name == m.name)
            {
                Some(x) => x.merge(m),
                None => self.measurements.push(m),
            }
        }
    }

    /// Whether every target that could be decided was met and nothing failed.
    pub(crate) fn all_passed(&self) -> bool {
        self.failures.is_empty() && self.measurements.iter().all(|m| m.passed() != Some(false))
    }

    /// The table, for people.
    pub(crate) fn table(&self) -> String {
        let header = [
            "scenario",
            "measurement",
            "parameters",
            "result",
            "target",
            "status",
        ];
        let mut rows: Vec<[String; 6]> = Vec::new();
        for m in &self.measurements {
            let status = match m.passed() {
                Some(true) => "pass",
                Some(false) => "FAIL",
                None if m.target.is_some() => "undecided",
                None => "-",
            };
            rows.push([
                m.scenario.to_string(),
                m.name.clone(),
                m.params.clone(),
                m.shown_value(),
                m.target.map_or("-".into(), |t| t.describe(m.unit)),
                status.to_string(),
            ]);
        }
        for f in &self.failures {
            rows.push([
                f.scenario.to_string(),
                "(error)".into(),
                String::new(),
                f.error.clone(),
                String::new(),
                "ERROR".into(),
            ]);
        }
        let mut widths = header.map(|h| h.chars().count());
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::from("|");
            for (c, w) in cells.iter().zip(widths) {
                s.push_str(&format!(" {c}{} |", " ".repeat(w - c.chars().count())));
            }
            s.push('\n');
            s
        };
        let mut out = format!(
            "durable bench: backend {}, {} run(s) per scenario (median shown)\nmachine: {}\n\n",
            self.backend_detail,
            self.repeat,
            self.machine.describe()
        );
        out.push_str(&line(&header.map(String::from)));
        let sep: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        out.push_str(&line(&sep));
        for r in &rows {
            out.push_str(&line(r));
        }
        let notes: Vec<String> = self
            .measurements
            .iter()
            .filter_map(|m| {
                m.note
                    .as_ref()
                    .map(|n| format!("- {} {}: {n}", m.scenario, m.name))
            })
            .collect();
        if !notes.is_empty() {
            out.push_str("\nnotes:\n");
            for n in notes {
                out.push_str(&n);
                out.push('\n');
            }
        }
        out
    }

    /// The machine-readable report.
    pub(crate) fn json(&self) -> Value {
        let results: Vec<Value> = self
            .measurements
            .iter()
            .map(|m| {
                json!({
                    "scenario": m.scenario,
                    "measurement": m.name,
                    "parameters": m.params,
                    "unit": m.unit.name(),
                    "value": m.value(),
                    "lower_bound": m.lower_bound,
                    "runs": m.runs,
                    "combine": match m.combine { Combine::Median => "median", Combine::First => "first" },
                    "target": m.target.map(Target::to_json),
                    "passed": m.passed(),
                    "note": m.note,
                })
            })
            .collect();
        let failures: Vec<Value> = self
            .failures
            .iter()
            .map(|f| json!({ "scenario": f.scenario, "error": f.error }))
            .collect();
        json!({
            "backend": self.backend,
            "backend_detail": self.backend_detail,
            "repeat": self.repeat,
            "machine": {
                "cpus": self.machine.cpus,
                "cpu_model": self.machine.cpu_model,
                "memory": self.machine.memory,
                "date": self.machine.date,
            },
            "results": results,
            "failures": failures,
            "all_passed": self.all_passed(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_decides() {
        assert_eq!(thousands(1234567.0), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(Unit::Seconds.format(0.25), "250 ms");
        assert_eq!(Unit::Millis.format(0.5), "500 µs");
        let mut m =
            Measurement::new("S1", "x", "", Unit::Ratio, 3.0).target(Some(Target::AtMost(2.0)));
        m.merge(Measurement::new("S1", "x", "", Unit::Ratio, 1.0));
        m.merge(Measurement::new("S1", "x", "", Unit::Ratio, 2.0));
        assert_eq!(m.value(), 2.0);
        assert_eq!(m.passed(), Some(true));
        let lb = Measurement::new("S3", "y", "", Unit::Seconds, 60.0)
            .target(Some(Target::Below(1.0)))
            .lower_bound();
        assert_eq!(lb.passed(), Some(false));
    }
}
