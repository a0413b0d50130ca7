//! `woodpecker log ...`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;

use anyhow::{Context, bail};
use clap::Subcommand;
use proto::meta::{SegmentMetadata, SegmentState};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::mpsc;
use wal::client::LogHandle;
use wal::message::{LogMessageId, WriteMessage};

use crate::engine::Engine;

/// Appends `log write` keeps in flight before it waits for acknowledgements.
const WRITE_PIPELINE: usize = 1024;

/// The acknowledgement of one append: its id once durable.
type Ack = Pin<Box<dyn Future<Output = wal::client::Result<LogMessageId>> + Send>>;

#[derive(Debug, Subcommand)]
pub(crate) enum LogCommand {
    /// Create a log.
    Create {
        /// The log name.
        name: String,
    },
    /// List the logs, one name per line.
    List,
    /// Append one entry per stdin line; print each entry's id (SEG:ENTRY), in input order,
    /// once it is durable. Empty lines are skipped with a warning (an entry cannot be
    /// empty).
    Write {
        /// The log name.
        name: String,
    },
    /// Print the payloads of a log, one per line.
    Tail {
        /// The log name.
        name: String,
        /// Where to start: `earliest` (after the truncation point), `latest` (only new
        /// entries) or an entry id `SEG:ENTRY`.
        #[arg(
            long,
            default_value = "earliest",
            value_name = "earliest|latest|SEG:ENTRY"
        )]
        from: StartPosition,
        /// Keep waiting for new entries until Ctrl-C or SIGTERM; without it the command
        /// exits after the last entry that was durable when it started.
        #[arg(long)]
        follow: bool,
    },
    /// Move the truncation point of a log to SEG:ENTRY (inclusive).
    Truncate {
        /// The log name.
        name: String,
        /// The last entry to drop, SEG:ENTRY.
        id: LogMessageId,
    },
    /// Delete a log and its data.
    Delete {
        /// The log name.
        name: String,
    },
    /// Show a log's segments (state, entries, blocks, size) and check every block's CRC.
    /// Exits non-zero when a segment is damaged.
    Inspect {
        /// The log name.
        name: String,
    },
}

/// `--from` of `log tail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StartPosition {
    /// The first entry after the truncation point.
    Earliest,
    /// The next entry to be written.
    Latest,
    /// This entry.
    At(LogMessageId),
}

impl FromStr for StartPosition {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "earliest" => Ok(StartPosition::Earliest),
            "latest" => Ok(StartPosition::Latest),
            _ => s.parse().map(StartPosition::At).map_err(|e| {
                format!("{e}; expected `earliest`, `latest` or SEG:ENTRY (for example 0:42)")
            }),
        }
    }
}

impl StartPosition {
    fn id(self) -> LogMessageId {
        match self {
            StartPosition::Earliest => LogMessageId::EARLIEST,
            StartPosition::Latest => LogMessageId::LATEST,
            StartPosition::At(id) => id,
        }
    }
}

pub(crate) async fn run(engine: &Engine, cmd: LogCommand) -> anyhow::Result<()> {
    let client = &engine.client;
    match cmd {
        LogCommand::Create { name } => {
            client.create_log(&name).await?;
            eprintln!("created log `{name}`");
        }
        LogCommand::List => {
            let mut out = BufWriter::new(tokio::io::stdout());
            for name in client.list_logs().await? {
                out.write_all(name.as_bytes()).await?;
                out.write_all(b"\n").await?;
            }
            out.flush().await?;
        }
        LogCommand::Write { name } => write(engine, &name).await?,
        LogCommand::Tail { name, from, follow } => tail(engine, &name, from, follow).await?,
        LogCommand::Truncate { name, id } => {
            client.open_log(&name).await?.truncate(id).await?;
            eprintln!("log `{name}` truncated at {id} (inclusive)");
        }
        LogCommand::Delete { name } => {
            client.delete_log(&name).await?;
            eprintln!("deleted log `{name}`");
        }
        LogCommand::Inspect { name } => inspect(engine, &name).await?,
    }
    Ok(())
}

/// `log write`: stdin lines become entries; ids are printed in input order as they become
/// durable, through a bounded pipeline of [`WRITE_PIPELINE`] appends.
async fn write(engine: &Engine, name: &str) -> anyhow::Result<()> {
    let log = engine.client.open_log(name).await?;
    let writer = log.open_writer().await?;
    // As in Go Woodpecker, the process holding a writer also runs the log's auditor
    // (compaction, truncation marking, retention), every `client.auditor.maxInterval`.
    let auditor = log.start_auditor();
    let (tx, mut rx) = mpsc::channel::<(u64, Ack)>(WRITE_PIPELINE);

    let printer = tokio::spawn(async move {
        let mut out = tokio::io::stdout();
        let mut written = 0u64;
        while let Some((line_no, ack)) = rx.recv().await {
            let id: LogMessageId = ack
                .await
                .with_context(|| format!("write of input line {line_no} failed"))?;
            out.write_all(format!("{id}\n").as_bytes()).await?;
            out.flush().await?;
            written += 1;
        }
        anyhow::Ok(written)
    });

    let feed = async {
        let mut input = BufReader::new(tokio::io::stdin());
        let mut line = Vec::new();
        let mut line_no = 0u64;
        loop {
            line.clear();
            // Stop reading as soon as the printer stops (an append failed, for example because
            // another writer took the log over): the error must not wait for more input.
            let read = tokio::select! {
                read = input.read_until(b'\n', &mut line) => read.context("cannot read stdin")?,
                () = tx.closed() => return anyhow::Ok(()),
            };
            if read == 0 {
                return anyhow::Ok(());
            }
            line_no += 1;
            let payload = strip_newline(&line);
            if payload.is_empty() {
                eprintln!("woodpecker: warning: input line {line_no} is empty; skipped");
                continue;
            }
            let ack: Ack = Box::pin(writer.write_async(WriteMessage::new(payload.to_vec())));
            if tx.send((line_no, ack)).await.is_err() {
                // The printer stopped on an error; it reports it.
                return Ok(());
            }
        }
    };
    let fed = feed.await;
    drop(tx);
    let printed = printer.await.context("the output task failed")?;
    auditor.stop().await;
    let closed = writer.close().await;
    let written = printed?;
    fed?;
    closed.with_context(|| format!("cannot close the writer of log `{name}`"))?;
    eprintln!("wrote {written} entries to log `{name}`");
    Ok(())
}

fn strip_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The id of the last entry durable now, `None` when the log holds none. Finished segments
/// use their metadata `lastEntryId`; for an Active segment (left by a writer that did not
/// close) its replicas are asked.
async fn last_durable(log: &LogHandle) -> anyhow::Result<Option<LogMessageId>> {
    for (&segment_id, meta) in log.segments().await?.iter().rev() {
        let last = if meta.state == SegmentState::Active as i32 {
            log.segment_last_entry_id(segment_id).await?
        } else {
            meta.last_entry_id
        };
        if last >= 0 {
            return Ok(Some(LogMessageId::new(segment_id, last)));
        }
    }
    Ok(None)
}

/// `log tail`.
async fn tail(
    engine: &Engine,
    name: &str,
    from: StartPosition,
    follow: bool,
) -> anyhow::Result<()> {
    let log = engine.client.open_log(name).await?;
    let end = if follow {
        None
    } else {
        match last_durable(&log).await? {
            Some(end) => Some(end),
            None => return Ok(()),
        }
    };
    let mut reader = log.open_reader(from.id(), Some("cli")).await?;
    let mut out = BufWriter::new(tokio::io::stdout());
    let result = async {
        match end {
            Some(end) => {
                while reader.position() <= end {
                    let msg = reader.read_next().await?;
                    if msg.id > end {
                        break;
                    }
                    out.write_all(&msg.payload).await?;
                    out.write_all(b"\n").await?;
                }
            }
            None => {
                let stop = shutdown_signal();
                tokio::pin!(stop);
                loop {
                    tokio::select! {
                        signal = &mut stop => {
                            signal?;
                            break;
                        }
                        msg = reader.read_next() => {
                            let msg = msg?;
                            out.write_all(&msg.payload).await?;
                            out.write_all(b"\n").await?;
                            out.flush().await?;
                        }
                    }
                }
            }
        }
        out.flush().await?;
        anyhow::Ok(())
    }
    .await;
    let closed = reader.close().await;
    result?;
    closed.context("cannot close the reader")?;
    Ok(())
}

/// Resolves on Ctrl-C or (on Unix) SIGTERM.
async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("cannot watch Ctrl-C")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("cannot watch Ctrl-C")?;
    Ok(())
}

/// What the block check found in one segment.
enum Check {
    Ok { entries: i64 },
    Skipped(&'static str),
    Damaged(String),
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Check::Ok { entries } => write!(f, "ok ({entries} entries read)"),
            Check::Skipped(why) => write!(f, "skipped ({why})"),
            Check::Damaged(what) => write!(f, "DAMAGED: {what}"),
        }
    }
}

fn state_name(state: i32) -> &'static str {
    match SegmentState::try_from(state) {
        Ok(SegmentState::Active) => "Active",
        Ok(SegmentState::Completed) => "Completed",
        Ok(SegmentState::Sealed) => "Sealed",
        Ok(SegmentState::Truncated) => "Truncated",
        Err(_) => "Unknown",
    }
}

/// Reads every entry of a segment through the LogStore read path, which checks each
/// block's CRC; `last` is the last entry the segment should hold.
async fn check_segment(log: &LogHandle, segment_id: i64, last: i64) -> Check {
    const BATCH_ENTRIES: usize = 10_000;
    const BATCH_BYTES: usize = 8 << 20;
    let mut next = 0i64;
    loop {
        let batch = match log
            .read_segment(segment_id, next, BATCH_ENTRIES, BATCH_BYTES)
            .await
        {
            Ok(b) => b,
            Err(e) => return Check::Damaged(format!("reading entry {next}: {e}")),
        };
        for (id, _) in &batch.entries {
            if *id != next {
                return Check::Damaged(format!("entry {next} is missing (found {id})"));
            }
            next += 1;
        }
        match batch.end {
            wal::logstore::ReadEnd::More => continue,
            _ if batch.entries.is_empty() || next > last => break,
            _ => continue,
        }
    }
    if next <= last {
        return Check::Damaged(format!(
            "the data ends at entry {} but the segment should hold entries up to {last}",
            next - 1
        ));
    }
    Check::Ok { entries: next }
}

/// `log inspect`.
async fn inspect(engine: &Engine, name: &str) -> anyhow::Result<()> {
    let log = engine.client.open_log(name).await?;
    let log_id = log.log_id();
    let mut out = BufWriter::new(tokio::io::stdout());
    let truncated = match log.truncation_point().await? {
        Some(id) => format!("truncated at {id}"),
        None => "not truncated".to_string(),
    };
    out.write_all(format!("log `{name}` (id {log_id}), {truncated}\n").as_bytes())
        .await?;
    out.write_all(
        format!(
            "{:>8}  {:<9}  {:>15}  {:>6}  {:>12}  CHECK\n",
            "SEGMENT", "STATE", "ENTRIES", "BLOCKS", "SIZE"
        )
        .as_bytes(),
    )
    .await?;
    let mut damaged = Vec::new();
    let segments = log.segments().await?;
    for (&segment_id, meta) in &segments {
        let (last, check) = segment_row(&log, segment_id, meta).await;
        let blocks = match log.segment_block_count(segment_id).await {
            Ok(n) => n.to_string(),
            Err(e) => {
                damaged.push(format!("segment {segment_id}: {e}"));
                "?".to_string()
            }
        };
        let entries = if last >= 0 {
            format!("0..{last}")
        } else {
            "empty".to_string()
        };
        if let Check::Damaged(what) = &check {
            damaged.push(format!("segment {segment_id}: {what}"));
        }
        out.write_all(
            format!(
                "{segment_id:>8}  {:<9}  {entries:>15}  {blocks:>6}  {:>12}  {check}\n",
                state_name(meta.state),
                meta.size
            )
            .as_bytes(),
        )
        .await?;
    }
    out.write_all(format!("{} segment(s), {} damaged\n", segments.len(), damaged.len()).as_bytes())
        .await?;
    out.flush().await?;
    if !damaged.is_empty() {
        bail!("log `{name}` is damaged: {}", damaged.join("; "));
    }
    Ok(())
}

/// The last entry a segment should hold, and its check.
async fn segment_row(log: &LogHandle, segment_id: i64, meta: &SegmentMetadata) -> (i64, Check) {
    if meta.state == SegmentState::Truncated as i32 {
        return (meta.last_entry_id, Check::Skipped("truncated"));
    }
    let last = if meta.state == SegmentState::Active as i32 {
        match log.segment_last_entry_id(segment_id).await {
            Ok(last) => last,
            Err(e) => return (-1, Check::Damaged(e.to_string())),
        }
    } else {
        meta.last_entry_id
    };
    if last < 0 {
        return (last, Check::Ok { entries: 0 });
    }
    (last, check_segment(log, segment_id, last).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_positions_parse() {
        assert_eq!("earliest".parse(), Ok(StartPosition::Earliest));
        assert_eq!("LATEST".parse(), Ok(StartPosition::Latest));
        assert_eq!(
            "3:7".parse(),
            Ok(StartPosition::At(LogMessageId::new(3, 7)))
        );
        let err = "soon".parse::<StartPosition>().unwrap_err();
        assert!(err.contains("SEG:ENTRY"), "{err}");
    }

    #[test]
    fn newlines_are_stripped() {
        assert_eq!(strip_newline(b"a\r\n"), b"a");
        assert_eq!(strip_newline(b"a\n"), b"a");
        assert_eq!(strip_newline(b"a"), b"a");
        assert_eq!(strip_newline(b"\n"), b"");
    }
}
