//! Measurements and where they go: one JSON object per line in
//! `<results dir>/<scenario>.json`, plus a one-line human summary on stdout.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;

/// The machine a run happened on, so figures from different machines are not compared.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Machine {
    hostname: String,
    cpus: usize,
    cpu_model: String,
    memory_kib: u64,
    os: String,
}

impl Machine {
    pub(crate) fn detect() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let meminfo = read("/proc/meminfo");
        Self {
            hostname: read("/proc/sys/kernel/hostname").trim().to_owned(),
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            cpu_model: field(&cpuinfo, "model name").unwrap_or_default(),
            memory_kib: field(&meminfo, "MemTotal")
                .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
                .unwrap_or(0),
            os: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        }
    }
}

fn field(text: &str, name: &str) -> Option<String> {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}

/// The commit the bench was built from (with `-dirty` if the tree had changes).
pub(crate) fn commit() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match (git(&["rev-parse", "--short=12", "HEAD"]), git(&["status", "--porcelain"])) {
        (Some(rev), Some(status)) if !status.is_empty() => format!("{rev}-dirty"),
        (Some(rev), _) => rev,
        _ => "unknown".into(),
    }
}

/// One measurement: our figure, the baseline taken in the same run, and their ratio.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Measurement {
    pub(crate) scenario: &'static str,
    pub(crate) name: String,
    pub(crate) unit: &'static str,
    pub(crate) ours: f64,
    pub(crate) baseline_name: String,
    pub(crate) baseline: f64,
    /// ours / baseline.
    pub(crate) ratio: f64,
    /// The ratio the issue aims for (ours / baseline ≥ aim), when there is one.
    pub(crate) aim: Option<f64>,
    pub(crate) params: Value,
    /// Every run's figures, for the spread.
    pub(crate) runs: Value,
}

/// Where results go and what is stamped on them.
#[derive(Debug)]
pub(crate) struct Reporter {
    dir: PathBuf,
    machine: Machine,
    commit: String,
    smoke: bool,
}

impl Reporter {
    pub(crate) fn new(dir: &Path, smoke: bool) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating results dir {}", dir.display()))?;
        Ok(Self { dir: dir.to_owned(), machine: Machine::detect(), commit: commit(), smoke })
    }

    /// Where results (and plots) go.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Prints the summary line and appends the JSON object.
    pub(crate) fn record(&self, m: &Measurement) -> anyhow::Result<()> {
        let verdict = match m.aim {
            Some(aim) if m.ratio >= aim => format!(" (aim ≥ {aim:.2}: met)"),
            Some(aim) => format!(" (aim ≥ {aim:.2}: NOT met)"),
            None => String::new(),
        };
        println!(
            "{:<10} {:<38} ours {:>12} {}  {} {:>12}  ratio {:.3}{verdict}",
            m.scenario,
            m.name,
            figure(m.ours),
            m.unit,
            m.baseline_name,
            figure(m.baseline),
            m.ratio
        );
        let mut object = serde_json::to_value(m)?;
        let extra = serde_json::json!({
            "time_unix_ms": cairn_inventory::now_ms(),
            "machine": self.machine,
            "commit": self.commit,
            "smoke": self.smoke,
        });
        if let (Value::Object(o), Value::Object(e)) = (&mut object, extra) {
            o.extend(e);
        }
        let path = self.dir.join(format!("{}.json", m.scenario));
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        writeln!(file, "{}", serde_json::to_string(&object)?)?;
        Ok(())
    }
}

/// A figure with as many decimals as it needs to be read.
fn figure(x: f64) -> String {
    if x.abs() >= 100.0 { format!("{x:.0}") } else { format!("{x:.2}") }
}

/// The median of some figures (the mean of the middle two for an even count).
pub(crate) fn median(figures: &[f64]) -> f64 {
    let mut sorted = figures.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
