//! `ceilings`: measures this machine's raw backend ceilings (local disk with and without
//! fdatasync, parallel PUTs to an S3-compatible server) and prints a Markdown table.
//!
//! ```text
//! cargo run --release -p woodpecker-benches --bin ceilings -- [--quick] [--json FILE] ...
//! ```
//!
//! See `--help`, and `woodpecker_benches::ceilings` for what is measured.

use std::process::ExitCode;

use anyhow::Context as _;
use woodpecker_benches::ceilings::{self, Args};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ceilings: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse(std::env::args().skip(1))?;
    if args.help {
        print!("{}", ceilings::USAGE);
        return Ok(());
    }
    let cfg = args.config();
    let s3 = args.s3_settings()?;
    let report = ceilings::run(&cfg, s3)?;
    print!("{}", report.to_markdown());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
        eprintln!("[ceilings] wrote {}", path.display());
    }
    Ok(())
}
