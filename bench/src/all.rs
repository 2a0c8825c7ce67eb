//! `ferry-bench all`: every benchmark in one go, each as its own
//! `ferry-bench` subcommand run (so each figure is reproduced by exactly the
//! command printed beside it), with a progress display, and the outputs
//! appended to bench/RESULTS.md as one dated section naming the machine,
//! the commit and the commands.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

/// One benchmark: a name and the `ferry-bench` arguments that run it.
#[derive(Clone, Debug)]
pub struct Step {
    /// Its name (also the subcommand).
    pub name: &'static str,
    /// Arguments after `ferry-bench`.
    pub args: Vec<String>,
}

/// The default benchmarks, in order: micro, control, live (throughput,
/// latency, scaling), failover.
pub fn default_steps() -> Vec<Step> {
    let s = |name: &'static str, args: &[&str]| Step {
        name,
        args: std::iter::once(name)
            .chain(args.iter().copied())
            .map(String::from)
            .collect(),
    };
    vec![
        s("micro", &["--packets", "1000000", "--rounds", "5"]),
        s("control", &["--tunnels", "25600", "--stations", "1000000"]),
        s("live", &[]),
        s("failover", &[]),
    ]
}

/// The default results file: this crate's RESULTS.md.
pub fn default_results() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("RESULTS.md")
}

fn output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// The machine, as the section's header names it.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cpus} CPUs, Linux {}", output("uname", &["-r"]))
}

/// Runs `steps` with the `ferry-bench` binary `me`, streaming each one's
/// progress (stderr) and appending the section to `results`.
pub fn run(me: &Path, steps: &[Step], results: &Path, progress: &dyn Fn(&str)) -> Result<()> {
    let started = output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let commit = output(
        "git",
        &[
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short",
            "HEAD",
        ],
    );
    let mut section = format!(
        "\n## `ferry-bench all`, {started}\n\nMachine: {}. Commit {commit}. Each block is the output of the command above it.\n",
        machine()
    );
    let mut failed = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let shown = format!("ferry-bench {}", step.args.join(" "));
        progress(&format!("[{}/{}] {shown}", i + 1, steps.len()));
        let t = Instant::now();
        let out = Command::new(me)
            .args(&step.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("running {shown}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        section.push_str(&format!("\n### {}\n\n    $ {shown}\n", step.name));
        for l in text.lines() {
            section.push_str(&format!("    {l}\n"));
        }
        if !out.status.success() {
            section.push_str(&format!("    (failed: {})\n", out.status));
            failed.push(step.name);
        }
        progress(&format!(
            "[{}/{}] {} done in {:.0} s{}",
            i + 1,
            steps.len(),
            step.name,
            t.elapsed().as_secs_f64(),
            if out.status.success() { "" } else { ", FAILED" }
        ));
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(results)
        .with_context(|| format!("opening {}", results.display()))?;
    f.write_all(section.as_bytes())?;
    progress(&format!("appended to {}", results.display()));
    if !failed.is_empty() {
        bail!("failed: {}", failed.join(", "));
    }
    Ok(())
}
