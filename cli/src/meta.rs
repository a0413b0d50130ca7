//! `woodpecker meta ...`: what the metadata store holds and where, without opening the engine
//! (so it also works when the engine refuses to start because two key roots hold logs).

use anyhow::Context;
use clap::Subcommand;
use wal::clock::SystemClock;
use wal::meta::MetaType;
use wal::meta::config::open_kv;
use wal::meta::prefix::{
    PrefixCandidates, PrefixChoice, PrefixContents, PrefixMode, choose_prefix, name_list,
};

use crate::engine::{EngineOptions, load_config};

#[derive(Debug, Subcommand)]
pub(crate) enum MetaCommand {
    /// Show the metadata store, the root prefix its keys are under and why, and what both
    /// candidate prefixes (`woodpecker`, and `<etcd.rootPath>/<woodpecker.meta.prefix>`)
    /// hold. Exits with status 1 when the configured mode cannot choose (keys under both in
    /// `auto` mode). Reads only.
    Prefix,
}

pub(crate) async fn run(opts: &EngineOptions, cmd: MetaCommand) -> anyhow::Result<()> {
    match cmd {
        MetaCommand::Prefix => prefix(opts).await,
    }
}

async fn prefix(opts: &EngineOptions) -> anyhow::Result<()> {
    let config = load_config(opts)?;
    let meta = &config.woodpecker.meta;
    let data_root = std::path::PathBuf::from(config.woodpecker.storage.root_path.trim());
    let kv = open_kv(meta, &config.etcd, &data_root, SystemClock::shared())
        .await
        .context("cannot open the metadata store")?;
    let store = match meta.kind {
        MetaType::Etcd => format!("etcd at {}", kv.endpoint()),
        MetaType::Embedded => format!("embedded store in {}", kv.endpoint()),
    };
    let candidates = PrefixCandidates::new(&config.etcd.root_path, &meta.prefix);
    println!("store: {store}");
    println!("mode: {} (woodpecker.meta.prefixMode)", meta.prefix_mode);
    match choose_prefix(kv.as_ref(), meta.prefix_mode, &candidates, true).await {
        Ok(choice) => {
            println!("in use: {}/ ({})", choice.prefix, choice.reason);
            print_candidates(&choice);
            if let Some(other) = choice.shadowed() {
                println!(
                    "warning: {}/ also holds keys, which this configuration does not see",
                    other.prefix
                );
            }
            Ok(())
        }
        Err(e @ wal::meta::MetaError::PrefixConflict { .. }) => {
            println!("in use: none");
            // The survey of both, again without choosing, for the listing.
            let survey = choose_prefix(kv.as_ref(), PrefixMode::Legacy, &candidates, true)
                .await
                .context("listing the candidate prefixes")?;
            print_candidates(&survey);
            Err(e.into())
        }
        Err(e) => Err(e).context("surveying the candidate prefixes"),
    }
}

fn print_candidates(choice: &PrefixChoice) {
    let line = |role: &str, c: &PrefixContents| {
        let what = if c.holds_keys {
            name_list(c.logs.as_deref().unwrap_or_default(), 20)
        } else {
            "no Woodpecker keys".to_string()
        };
        println!("{role}: {}/ ({what})", c.prefix);
    };
    line("legacy", &choice.legacy);
    if choice.configured.prefix != choice.legacy.prefix {
        line("configured", &choice.configured);
    }
}

/// One line for a starting server: where the keys are and why.
pub(crate) fn describe(choice: Option<&PrefixChoice>, prefix: &str) -> String {
    match choice {
        Some(c) => format!(
            "metadata keys under {}/ (prefixMode {}: {})",
            c.prefix, c.mode, c.reason
        ),
        None => format!("metadata keys under {prefix}/"),
    }
}
