//! `kafka_shim`: produce and consume throughput and latency through `woodpecker serve` with
//! standard Kafka perf tools (librdkafka's `rdkafka_performance`, Kafka's Java
//! `ProducerPerformance`/`ConsumerPerformance`), against the engine's native path in the same
//! run; prints a Markdown table.
//!
//! ```text
//! cargo build --release -p woodpecker -p woodpecker-benches
//! target/release/kafka_shim [--quick] [--records N] [--no-java] [--rdkafka-perf PATH] [--json FILE] ...
//! ```
//!
//! See `--help`, and `woodpecker_benches::kafka_shim` for what is measured.

use std::process::ExitCode;

use anyhow::Context as _;
use woodpecker_benches::kafka_shim::{self, Args};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kafka_shim: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse(std::env::args().skip(1))?;
    if args.help {
        print!("{}", kafka_shim::USAGE);
        return Ok(());
    }
    let report = kafka_shim::run(&args.config())?;
    print!("{}", report.to_markdown());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
        eprintln!("[kafka_shim] wrote {}", path.display());
    }
    Ok(())
}
