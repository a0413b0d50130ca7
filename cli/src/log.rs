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
use wal::client::{LogHandle, LogReader};
use wal::logstore::DamagedBlock;
use wal::message::{LogMessage, LogMessageId, WriteMessage};

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
    /// empty). Logs of the Kafka front door (`kafka:<topic>:<partition>`) are refused: their
    /// entries must be Kafka record batches.
    Write {
        /// The log name.
        name: String,
        /// Write to a log of the Kafka front door anyway (its partition then fails on the
        /// entries written here).
        #[arg(long)]
        force: bool,
    },
    /// Print the payloads of a log, one per line. A damaged block stops it with an error
    /// naming the block and the entries it held (exit 1), unless --skip-damaged; entries a
    /// repair marked lost are reported on stderr, not printed.
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
        /// Step over the entries of damaged blocks instead of stopping there, reporting each
        /// skipped range on stderr.
        #[arg(long)]
        skip_damaged: bool,
    },
    /// Move the truncation point of a log to SEG:ENTRY (inclusive). Refused, changing
    /// nothing, below the current truncation point (it never moves back) and past the last
    /// durable entry.
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
    /// Find the damaged blocks of a log (every block is read and checked) and say exactly
    /// which entries each makes unreadable. Nothing changes without --apply (and the command
    /// exits 1 when it found damage); with it, each damaged block of a local segment is
    /// replaced by a block of the same entries marked lost (the damaged file is kept beside
    /// it), so that readers and the Kafka front door go past them. Stop writers first: an
    /// Active segment is fenced and completed before it is repaired.
    Repair {
        /// The log name.
        name: String,
        /// Only this segment.
        #[arg(long, value_name = "SEG")]
        segment: Option<i64>,
        /// Rewrite the damaged segments (without it, only report).
        #[arg(long)]
        apply: bool,
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
        LogCommand::Write { name, force } => {
            refuse_kafka_log(&name, force)?;
            write(engine, &name).await?;
        }
        LogCommand::Tail {
            name,
            from,
            follow,
            skip_damaged,
        } => tail(engine, &name, from, follow, skip_damaged).await?,
        LogCommand::Truncate { name, id } => truncate(engine, &name, id).await?,
        LogCommand::Delete { name } => {
            client.delete_log(&name).await?;
            eprintln!("deleted log `{name}`");
        }
        LogCommand::Inspect { name } => inspect(engine, &name).await?,
        LogCommand::Repair {
            name,
            segment,
            apply,
        } => repair(engine, &name, segment, apply).await?,
    }
    Ok(())
}

/// Refuses a write to a log of the Kafka front door unless `force`: its partition reads every
/// entry as a Kafka record batch, and fails (until the entry is truncated away) on a line
/// written here.
fn refuse_kafka_log(name: &str, force: bool) -> anyhow::Result<()> {
    if !kafka_shim::owns_log(name) {
        return Ok(());
    }
    if force {
        eprintln!(
            "woodpecker: warning: writing to `{name}`, a log of the Kafka front door, because of \
             --force: its partition will fail on these entries (they are not Kafka batches)"
        );
        return Ok(());
    }
    bail!(
        "log `{name}` belongs to the Kafka front door (names starting with `{}`): its entries \
         must be Kafka record batches and a line written here breaks the partition (\"not a \
         Kafka batch\"); produce to the topic with a Kafka client instead, or pass --force to \
         write anyway; nothing was written",
        kafka_shim::LOG_PREFIX
    )
}

/// `log truncate`: refuses, changing nothing, a point below the current truncation point and
/// one past the last durable entry; the same point again is a no-op.
async fn truncate(engine: &Engine, name: &str, id: LogMessageId) -> anyhow::Result<()> {
    let log = engine.client.open_log(name).await?;
    if let Some(current) = log.truncation_point().await? {
        if id < current {
            bail!(
                "cannot truncate log `{name}` at {id}: it is truncated at {current} already and \
                 the truncation point never moves back; nothing changed"
            );
        }
        if id == current {
            eprintln!("log `{name}` is truncated at {id} already; nothing changed");
            return Ok(());
        }
    }
    match last_durable(&log).await? {
        None => {
            bail!("cannot truncate log `{name}` at {id}: the log holds no entries; nothing changed")
        }
        Some(end) if id > end => bail!(
            "cannot truncate log `{name}` at {id}: its last durable entry is {end}; nothing changed"
        ),
        Some(_) => {}
    }
    log.truncate(id).await?;
    eprintln!("log `{name}` truncated at {id} (inclusive)");
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

/// Consecutive entries a repair marked lost, reported as one line when the run ends.
struct LostRun {
    first: LogMessageId,
    last: LogMessageId,
    why: String,
}

/// Reports a run of lost entries on stderr.
fn report_lost(name: &str, run: &mut Option<LostRun>) {
    if let Some(r) = run.take() {
        let which = if r.first == r.last {
            format!("entry {} of log `{name}` was", r.first)
        } else {
            format!("entries {}..={} of log `{name}` were", r.first, r.last)
        };
        eprintln!(
            "woodpecker: warning: {which} lost to a damaged block and repaired as markers: {}",
            r.why
        );
    }
}

/// The next message `log tail` prints: stepping over damaged blocks when `skip_damaged`
/// (each reported on stderr), else failing there with an error that names the damaged block
/// and says how to read on; entries a repair marked lost are passed over and reported on
/// stderr, one line per run.
async fn next_to_print(
    name: &str,
    reader: &mut LogReader,
    skip_damaged: bool,
    lost: &mut Option<LostRun>,
) -> anyhow::Result<LogMessage> {
    loop {
        let msg = match reader.read_next().await {
            Ok(msg) => msg,
            Err(e) if e.code() == wal::logstore::code::CORRUPT => {
                let at = reader.position();
                // Where the damaged entries end: for the hint, or to go on.
                let skipped = reader.skip_damaged().await?;
                match (skip_damaged, skipped) {
                    (true, Some(s)) => {
                        eprintln!(
                            "woodpecker: warning: skipped entries {}..={} of log `{name}`: {}: {}",
                            s.first,
                            s.last,
                            s.block.position(),
                            s.block.detail
                        );
                        continue;
                    }
                    (false, Some(s)) => bail!(
                        "{e}; stopped at {at}: to read on, `woodpecker log tail {name} --from {}` \
                         or --skip-damaged; `woodpecker log repair {name}` reports and repairs \
                         damaged blocks",
                        s.last.next_in_segment()
                    ),
                    (_, None) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        };
        match msg.lost() {
            Some(why) => match lost {
                Some(run) if run.why == why && run.last.next_in_segment() == msg.id => {
                    run.last = msg.id;
                }
                _ => {
                    report_lost(name, lost);
                    *lost = Some(LostRun {
                        first: msg.id,
                        last: msg.id,
                        why: why.to_string(),
                    });
                }
            },
            None => {
                report_lost(name, lost);
                return Ok(msg);
            }
        }
    }
}

/// `log tail`.
async fn tail(
    engine: &Engine,
    name: &str,
    from: StartPosition,
    follow: bool,
    skip_damaged: bool,
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
    let mut lost = None;
    let result = async {
        match end {
            Some(end) => {
                while reader.position() <= end {
                    let msg = next_to_print(name, &mut reader, skip_damaged, &mut lost).await?;
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
                        msg = next_to_print(name, &mut reader, skip_damaged, &mut lost) => {
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
    // What was printed before an error stays printed.
    let _ = out.flush().await;
    report_lost(name, &mut lost);
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
        if matches!(check, Check::Damaged(_)) {
            // Each damaged block, and the entries it makes unreadable.
            if let Some(store) = &engine.logstore
                && let Ok(blocks) = store.damaged_blocks(log_id, segment_id).await
            {
                for d in blocks {
                    out.write_all(
                        format!("{:>10}{}\n", "", describe_damage(segment_id, &d)).as_bytes(),
                    )
                    .await?;
                }
            }
        }
    }
    out.write_all(format!("{} segment(s), {} damaged\n", segments.len(), damaged.len()).as_bytes())
        .await?;
    out.flush().await?;
    if !damaged.is_empty() {
        bail!(
            "log `{name}` is damaged: {}; `woodpecker log repair {name}` says what is lost and repairs it",
            damaged.join("; ")
        );
    }
    Ok(())
}

/// One damaged block, for a line of output: where, what is wrong, which entries it held.
fn describe_damage(segment_id: i64, d: &DamagedBlock) -> String {
    let place = match &d.object {
        Some(_) => d.position(),
        None => format!("{} of data.log", d.position()),
    };
    let entries = if !d.end_known() {
        format!(
            "entries from {segment_id}:{} on cannot be read",
            d.first_entry_id
        )
    } else if d.entry_count() == 0 {
        "it holds no entry".to_string()
    } else {
        format!(
            "entries {segment_id}:{}..={segment_id}:{} ({}) cannot be read",
            d.first_entry_id,
            d.last_entry_id,
            d.entry_count()
        )
    };
    format!("segment {segment_id} {place}: {}; {entries}", d.detail)
}

/// `log repair`: reports every damaged block; with `apply`, fences and completes the Active
/// segments that hold one and rewrites each damaged local segment with lost-entry markers in
/// place of the damaged blocks.
async fn repair(engine: &Engine, name: &str, only: Option<i64>, apply: bool) -> anyhow::Result<()> {
    // Repair reads and rewrites segment files where this process stores them; with
    // `storage.type: service` they are on the LogStore nodes, which this command cannot
    // rewrite.
    let Some(store) = engine.logstore.clone() else {
        bail!(
            "log repair works on this process's own storage; with storage.type: service the \
             segments are on the LogStore nodes: run it with a configuration that names the \
             storage directly; nothing changed"
        );
    };
    let log = engine.client.open_log(name).await?;
    let log_id = log.log_id();
    let segments = log.segments().await?;
    if let Some(seg) = only
        && !segments.contains_key(&seg)
    {
        bail!("log `{name}` has no segment {seg}");
    }
    let mut out = BufWriter::new(tokio::io::stdout());
    let mut found: Vec<(i64, Vec<DamagedBlock>)> = Vec::new();
    let mut checked = 0;
    for (&seg, meta) in &segments {
        if only.is_some_and(|o| o != seg) || meta.state == SegmentState::Truncated as i32 {
            continue;
        }
        checked += 1;
        let damaged = store
            .damaged_blocks(log_id, seg)
            .await
            .with_context(|| format!("cannot check segment {seg} of log `{name}`"))?;
        for d in &damaged {
            out.write_all(format!("{}\n", describe_damage(seg, d)).as_bytes())
                .await?;
        }
        if !damaged.is_empty() {
            found.push((seg, damaged));
        }
    }
    let blocks: usize = found.iter().map(|(_, d)| d.len()).sum();
    let entries: u64 = found
        .iter()
        .flat_map(|(_, d)| d.iter())
        .map(DamagedBlock::entry_count)
        .sum();
    out.write_all(
        format!(
            "{checked} segment(s) checked: {blocks} damaged block(s) in {} segment(s), {entries} entries unreadable\n",
            found.len()
        )
        .as_bytes(),
    )
    .await?;
    out.flush().await?;
    if found.is_empty() {
        return Ok(());
    }
    if !apply {
        bail!(
            "log `{name}` has damaged blocks; nothing changed. `woodpecker log repair {name} \
             --apply` replaces each by a block of the same entries marked lost (property {}), \
             keeping the damaged file beside it, so that readers and Kafka consumers go past \
             them; the entries listed above stay lost",
            wal::message::LOST_PROPERTY
        );
    }
    let active: Vec<i64> = found
        .iter()
        .map(|(seg, _)| *seg)
        .filter(|seg| segments[seg].state == SegmentState::Active as i32)
        .collect();
    if !active.is_empty() {
        // Only a finished segment is rewritten: taking the log over fences and completes its
        // Active segments (keeping their damaged blocks in the footer's index).
        let writer = log.open_writer().await.with_context(|| {
            format!("cannot take log `{name}` over to complete segment(s) {active:?}")
        })?;
        writer.close().await?;
        eprintln!("took log `{name}` over: segment(s) {active:?} fenced and completed");
    }
    for (seg, _) in &found {
        let seg = *seg;
        let repaired = store
            .repair_segment(log_id, seg, move |_, d| {
                let why = format!(
                    "{} of segment {seg} failed a check: {}",
                    d.position(),
                    d.detail
                );
                WriteMessage::lost(why.clone())
                    .encode()
                    .map_or_else(|_| why.into_bytes(), |b| b.to_vec())
            })
            .await
            .with_context(|| format!("cannot repair segment {seg} of log `{name}`"))?;
        match repaired {
            Some(r) => {
                for d in &r.replaced {
                    eprintln!(
                        "segment {seg}: {} replaced; entries {seg}:{}..={seg}:{} are now lost-entry markers",
                        d.position(),
                        d.first_entry_id,
                        d.last_entry_id
                    );
                }
                eprintln!(
                    "segment {seg}: the damaged file is kept as {}",
                    r.kept.display()
                );
            }
            None => eprintln!("segment {seg}: nothing left to repair"),
        }
    }
    eprintln!("repaired log `{name}`: {entries} entries stay lost, marked as such");
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
