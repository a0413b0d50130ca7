//! `milvus_wal`: append throughput and latency of Milvus-shaped messages natively, through
//! the Milvus WAL service (the Go `woodpeckerrs` walimpls package against `woodpecker
//! serve`) and through the Kafka listener (Milvus's own Kafka walimpls), in one run; prints
//! a Markdown table.
//!
//! ```text
//! cargo build --release -p woodpecker -p woodpecker-benches
//! target/release/milvus_wal [--quick] [--rounds N] [--paths ...] [--json FILE] ...
//! ```
//!
//! See `--help`, and `woodpecker_benches::milvus_wal` for what is measured.

use std::process::ExitCode;

use anyhow::Context as _;
use woodpecker_benches::milvus_wal::{self, Args, USAGE};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("milvus_wal: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse(std::env::args().skip(1))?;
    if args.help {
        print!("{USAGE}");
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let report = runtime.block_on(milvus_wal::run(&args.config))?;
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    print!("{}", report.to_markdown());
    Ok(())
}
