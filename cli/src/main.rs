//! The `woodpecker` command.
//!
//! Data goes to stdout, progress and errors to stderr. An error is one line,
//! `woodpecker: error: ...`, and exit code 1.
//!
//! Every command takes `--config FILE` and `--data-dir DIR`, before or after the
//! subcommand. Without `--config` the engine runs with the embedded default: segments on
//! local disk under `--data-dir` (default `./data`) and metadata in `<data dir>/meta`.
//!
//! The embedded metadata store is held by one process at a time: while one `woodpecker`
//! command runs on a data directory (for example `log tail --follow`), another one on the
//! same directory fails with an error saying the directory is in use.

mod engine;
mod log;
mod logstore;
mod meta;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::engine::EngineOptions;

/// Woodpecker: a write-ahead log on object storage or local disk.
#[derive(Debug, Parser)]
#[command(name = "woodpecker", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Options every command takes, before or after the subcommand.
#[derive(Debug, Args)]
struct GlobalArgs {
    /// A woodpecker.yaml (the Go project's schema); WOODPECKER_CONFIG__<PATH> environment
    /// variables override its keys. Without it: local disk and embedded metadata.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The data directory (woodpecker.storage.rootPath) [default: ./data, or the config
    /// file's rootPath when --config is given].
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, list, write, read, truncate, delete and inspect logs.
    #[command(subcommand)]
    Log(log::LogCommand),
    /// Inspect the metadata store (where its keys are).
    #[command(subcommand)]
    Meta(meta::MetaCommand),
    /// Run the engine with the Kafka listener and a Prometheus metrics endpoint until SIGTERM
    /// or Ctrl-C.
    Serve(serve::ServeArgs),
    /// Run a service-mode LogStore node (gRPC, gossip, admin HTTP) until SIGTERM or Ctrl-C.
    Logstore(logstore::LogstoreArgs),
}

/// The commands that run on an open engine (metadata, storage, client).
enum EngineCommand {
    Log(log::LogCommand),
    Serve(Box<serve::ServeArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(matches!(
        cli.command,
        Command::Serve(_) | Command::Logstore(_)
    ));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("woodpecker: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // Everything that matters has finished inside `run` (writers closed, segments flushed). A
    // blocking read of stdin may still be parked on a runtime thread; it must not keep the
    // process alive, so the runtime is not waited for.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Errors quote what failed, URLs included: never the credentials in them.
            let text = engine::redact(&format!("{e:#}")).replace('\n', " ");
            eprintln!("woodpecker: error: {text}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr. `RUST_LOG` sets the filter; by default `serve` logs at info level and
/// the other commands only warnings.
fn init_tracing(serving: bool) {
    let default = if serving {
        "info,wal=warn,storage=warn"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut opts = EngineOptions {
        config: cli.global.config,
        data_dir: cli.global.data_dir,
    };
    if opts.config.is_none() && opts.data_dir.is_none() {
        opts.data_dir = Some(PathBuf::from(engine::DEFAULT_DATA_DIR));
    }
    let command = match cli.command {
        // Works without the engine, which may refuse to open for the reason it shows.
        Command::Meta(cmd) => return meta::run(&opts, cmd).await,
        // A LogStore node needs no metadata store and no client: only its settings.
        Command::Logstore(args) => {
            return logstore::run(engine::load_config(&opts)?, args).await;
        }
        Command::Log(cmd) => EngineCommand::Log(cmd),
        Command::Serve(args) => EngineCommand::Serve(Box::new(args)),
    };
    let engine = engine::open(&opts).await?;
    let result = match command {
        EngineCommand::Log(cmd) => log::run(&engine, cmd).await,
        EngineCommand::Serve(args) => serve::run(&engine, *args).await,
    };
    engine.shutdown().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_go_before_or_after_the_subcommand() {
        let before =
            Cli::try_parse_from(["woodpecker", "--data-dir", "/d", "log", "list"]).unwrap();
        let after = Cli::try_parse_from(["woodpecker", "log", "list", "--data-dir", "/d"]).unwrap();
        assert_eq!(before.global.data_dir, after.global.data_dir);
        assert_eq!(after.global.data_dir, Some(PathBuf::from("/d")));
    }

    #[test]
    fn the_default_configuration_is_local_and_embedded() {
        let cfg = engine::load_config(&EngineOptions {
            config: None,
            data_dir: Some(PathBuf::from("/tmp/wp")),
        })
        .unwrap();
        assert_eq!(
            cfg.woodpecker.storage.kind,
            storage::config::StorageType::Local
        );
        assert_eq!(cfg.woodpecker.storage.root_path, "/tmp/wp");
        assert_eq!(cfg.woodpecker.meta.kind, wal::meta::MetaType::Embedded);
        wal::logstore::SyncPolicy::from(&cfg.woodpecker.logstore.segment_sync_policy)
            .validate()
            .unwrap();
    }
}
