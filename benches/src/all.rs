//! `archip-bench all`: every benchmark this host can run, one after the other, with modest
//! durations (the arguments below), and one JSON object with all their figures (nested per
//! benchmark) and a flat `targets` list. A benchmark whose prerequisites are missing is
//! reported as skipped with the reason; one that fails is reported with its error, the
//! others still run, and the command exits non-zero at the end. A missed target is a
//! figure, never a failure.

use std::panic::AssertUnwindSafe;

use serde_json::{json, Value};

use crate::fuse::{self, Store};
use crate::{ipc, memory, provision, space, support, ublk};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Bench {
    Ipc,
    Provision,
    Space,
    Memory,
    Fuse,
    FuseRados,
    Ublk,
}

#[derive(Debug, clap::Args)]
pub struct AllArgs {
    /// Leave this benchmark out (repeatable).
    #[arg(long, value_enum)]
    skip: Vec<Bench>,
}

impl Bench {
    const ALL: [Bench; 7] = [
        Bench::Ipc,
        Bench::Provision,
        Bench::Space,
        Bench::Memory,
        Bench::Fuse,
        Bench::FuseRados,
        Bench::Ublk,
    ];

    /// Its key in the report.
    fn key(self) -> &'static str {
        match self {
            Bench::Ipc => "ipc",
            Bench::Provision => "provision",
            Bench::Space => "space",
            Bench::Memory => "memory",
            Bench::Fuse => "fuse",
            Bench::FuseRados => "fuse_rados",
            Bench::Ublk => "ublk",
        }
    }

    /// The subcommand and arguments `all` runs it with.
    fn argv(self) -> &'static [&'static str] {
        match self {
            Bench::Ipc => &["ipc", "--iterations", "20000", "--duration-ms", "300", "--rounds", "3"],
            Bench::Provision => &["provision", "--rounds", "5"],
            Bench::Space => &["space"],
            Bench::Memory => &["memory", "--volumes", "100", "--size-gib", "1024"],
            Bench::Fuse => &["fuse", "--size-mib", "256", "--runtime-s", "5", "--verify-mib", "32"],
            Bench::FuseRados => &[
                "fuse",
                "--store",
                "rados",
                "--size-mib",
                "256",
                "--rounds",
                "3",
                "--runtime-s",
                "4",
                "--verify-mib",
                "32",
            ],
            Bench::Ublk => &["ublk", "--rounds", "3", "--seconds", "5"],
        }
    }

    /// Why it cannot run on this host, if it cannot.
    fn missing(self) -> Option<String> {
        match self {
            Bench::Provision if !support::have("qemu-img") => Some("qemu-img is missing (qemu-utils)".into()),
            Bench::Fuse => fuse::missing(Store::File),
            Bench::FuseRados => fuse::missing(Store::Rados),
            Bench::Ublk => ublk::missing(),
            _ => None,
        }
    }

    fn run(self) -> anyhow::Result<Value> {
        let argv = &self.argv()[1..];
        match self {
            Bench::Ipc => ipc::run(&parse(argv)?),
            Bench::Provision => provision::run(&parse(argv)?),
            Bench::Space => space::run(&parse(argv)?),
            Bench::Memory => memory::run(&parse(argv)?),
            Bench::Fuse | Bench::FuseRados => fuse::run(&parse(argv)?),
            Bench::Ublk => ublk::run(&parse(argv)?),
        }
    }
}

/// A subcommand's arguments from `argv` (its flags, without the subcommand), with its own
/// defaults and checks.
fn parse<T: clap::Args + clap::FromArgMatches>(argv: &[&str]) -> anyhow::Result<T> {
    let command = T::augment_args(clap::Command::new("archip-bench"));
    let matches =
        command.try_get_matches_from(std::iter::once("archip-bench").chain(argv.iter().copied()))?;
    Ok(T::from_arg_matches(&matches)?)
}

/// A figure for the summary table: whole numbers without decimals, others with at most 3.
fn number(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x.fract() == 0.0 => format!("{x:.0}"),
        Some(x) => format!("{}", (x * 1000.0).round() / 1000.0),
        None => v.to_string(),
    }
}

/// The message of a panic payload.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panicked".into())
}

pub fn run(args: &AllArgs, json_output: bool) -> anyhow::Result<Value> {
    let mut benchmarks = serde_json::Map::new();
    let (mut skipped, mut failed, mut all_targets) = (Vec::new(), Vec::new(), Vec::new());
    for bench in Bench::ALL {
        let key = bench.key();
        let reason = if args.skip.contains(&bench) { Some("--skip".to_string()) } else { bench.missing() };
        if let Some(reason) = reason {
            println!("== {key}: skipped ({reason})");
            skipped.push(json!({ "benchmark": key, "reason": reason }));
            benchmarks.insert(key.into(), json!({ "skipped": reason }));
            continue;
        }
        println!("== {key}: archip-bench {}", bench.argv().join(" "));
        // A stack that cannot start panics in the testkit: that benchmark failed, not `all`.
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| bench.run()))
            .unwrap_or_else(|panic| Err(anyhow::anyhow!("{}", panic_message(panic.as_ref()))));
        match result {
            Ok(report) => {
                for row in report["targets"].as_array().into_iter().flatten() {
                    let mut row = row.clone();
                    row["benchmark"] = key.into();
                    all_targets.push(row);
                }
                benchmarks.insert(key.into(), report);
            }
            Err(e) => {
                let error = format!("{e:#}");
                println!("== {key}: FAILED: {error}");
                failed.push(json!({ "benchmark": key, "error": error }));
                benchmarks.insert(key.into(), json!({ "error": error }));
            }
        }
    }
    let met = all_targets.iter().filter(|t| t["met"] == true).count();
    println!("== summary: {met} of {} targets met", all_targets.len());
    println!(
        "{:<11} {:<68} {:>12} {:>12} {:>7} {:>10}  met",
        "benchmark", "figure", "ours", "anchor", "ratio", "target"
    );
    for t in &all_targets {
        println!(
            "{:<11} {:<68} {:>12} {:>12} {:>7} {:>10}  {}",
            t["benchmark"].as_str().unwrap_or(""),
            t["figure"].as_str().unwrap_or(""),
            number(&t["ours"]),
            number(&t["anchor"]),
            number(&t["ratio"]),
            t["target"].as_str().unwrap_or(""),
            if t["met"] == true { "yes" } else { "no" }
        );
    }
    for s in &skipped {
        println!("skipped {}: {}", s["benchmark"].as_str().unwrap_or(""), s["reason"].as_str().unwrap_or(""));
    }
    let report = json!({
        "benchmark": "all",
        "benchmarks": benchmarks,
        "targets": all_targets,
        "targets_met": met,
        "skipped": skipped,
        "failed": failed,
    });
    if !failed.is_empty() {
        // The figures of the others still count: print them before failing.
        if json_output {
            println!("{report}");
        }
        let names: Vec<_> = failed.iter().filter_map(|f| f["benchmark"].as_str()).collect();
        anyhow::bail!("{} benchmark(s) failed: {}", failed.len(), names.join(", "));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_arguments_of_every_benchmark_parse() {
        for bench in Bench::ALL {
            let argv = &bench.argv()[1..];
            let ok = match bench {
                Bench::Ipc => parse::<ipc::IpcArgs>(argv).is_ok(),
                Bench::Provision => parse::<provision::ProvisionArgs>(argv).is_ok(),
                Bench::Space => parse::<space::SpaceArgs>(argv).is_ok(),
                Bench::Memory => parse::<memory::MemoryArgs>(argv).is_ok(),
                Bench::Fuse | Bench::FuseRados => parse::<fuse::FuseArgs>(argv).is_ok(),
                Bench::Ublk => parse::<ublk::UblkArgs>(argv).is_ok(),
            };
            assert!(ok, "{bench:?}: {argv:?}");
        }
        let rados: fuse::FuseArgs = parse(&Bench::FuseRados.argv()[1..]).unwrap();
        assert_eq!(rados.store, Store::Rados);
        assert!(parse::<fuse::FuseArgs>(&["--store", "tape"]).is_err());
    }
}
