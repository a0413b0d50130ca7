//! `compare`: this engine (natively and through the Kafka shim) against Apache Kafka, Apache
//! Pulsar, Go Woodpecker and Tansu, each started locally; writes `report.md`, `report.json`
//! and SVG plots. `scripts/bench-compare` starts MinIO and etcd and runs it.
//!
//! See `--help`, and `woodpecker_benches::compare` for what is measured.

use std::process::ExitCode;

use anyhow::Context as _;
use woodpecker_benches::compare::{self, Args};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("compare: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse(std::env::args().skip(1))?;
    if args.help {
        print!("{}", compare::USAGE);
        return Ok(());
    }
    let report = compare::run(&args.settings, &args.tools)?;
    let out = &args.settings.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let md = report.to_markdown();
    std::fs::write(out.join("report.md"), &md)?;
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    let (throughput, latency) = report.plots();
    std::fs::write(out.join("throughput.svg"), throughput)?;
    std::fs::write(out.join("latency.svg"), latency)?;
    print!("{md}");
    eprintln!(
        "[compare] wrote {}/report.md, report.json, throughput.svg, latency.svg",
        out.display()
    );
    Ok(())
}
