//! `poh-storage import`: JSON Lines (one tx per line, blank lines skipped) saved with
//! `save_batch`, one durable commit per batch. Lines before the first bad line are saved
//! (each batch was acknowledged before the next was read); the bad line and everything
//! after it are not, and the error names the line. With `--print-acked`, each id is
//! printed to stdout only after its batch's commit returned, and stdout is flushed after
//! every batch. A line is read with a bound that follows from `--max-payload`, so an
//! over-long line is refused before it is held in memory.

use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use clap::Args;
use poh_storage::StorageManager;
use poh_types::Tx;

use super::{Out, Rt, StoreOpts, json_obj};
use crate::common::{Access, BadInput};

/// Payload bytes above which an import batch is committed early.
const IMPORT_BATCH_BYTES: usize = 64 * 1024 * 1024;

/// Arguments of `import`.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// JSON Lines file, one tx per line; `-` or nothing reads stdin.
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Txs per durable commit.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_size: u32,
    /// Print each tx_id to stdout once its batch is durably saved (flushed per batch).
    #[arg(long)]
    pub print_acked: bool,
}

/// Where `import` reads from, for messages.
enum Source {
    Stdin,
    File(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Stdin => f.write_str("stdin"),
            Source::File(p) => write!(f, "{}", p.display()),
        }
    }
}

pub(crate) fn cmd_import<W: Write>(
    opts: &StoreOpts,
    args: &ImportArgs,
    out: &mut Out<W>,
) -> Result<()> {
    let (source, mut reader, total): (Source, Box<dyn BufRead>, Option<u64>) =
        match args.file.as_deref() {
            None => (Source::Stdin, Box::new(io::stdin().lock()), None),
            Some(p) if p == Path::new("-") => (Source::Stdin, Box::new(io::stdin().lock()), None),
            Some(p) => {
                let f = std::fs::File::open(p)
                    .with_context(|| format!("cannot open {}", p.display()))?;
                let len = f.metadata().ok().map(|m| m.len());
                (
                    Source::File(p.to_path_buf()),
                    Box::new(io::BufReader::with_capacity(1 << 20, f)),
                    len,
                )
            }
        };
    let mut imp = Importer {
        opts,
        args,
        progress: progress_bar(total),
        store: None,
        batch: Vec::with_capacity((args.batch_size as usize).min(4096)),
        batch_bytes: 0,
        saved: 0,
        batches: 0,
        lines: 0,
    };
    let mut res = imp.read_all(&source, &mut *reader, out);
    if let Some((rt, sm)) = imp.store.take() {
        let closed = rt.close(&sm);
        res = res.and(closed);
    }
    imp.progress.finish_and_clear();
    // The summary goes to stderr when stdout carries the acknowledged ids.
    let summary = if opts.json {
        json_obj(&[
            ("imported", imp.saved.into()),
            ("batches", imp.batches.into()),
            ("lines", imp.lines.into()),
            ("source", source.to_string().into()),
        ])
    } else {
        format!(
            "Imported {} tx(s) from {source} in {} batch(es)",
            imp.saved, imp.batches
        )
    };
    match res {
        Ok(()) if args.print_acked => {
            let _ = writeln!(io::stderr().lock(), "{summary}");
            Ok(())
        }
        Ok(()) => out.line(&summary),
        Err(e) => Err(e.context(format!(
            "import from {source} stopped; the {} tx(s) before the error were saved",
            imp.saved
        ))),
    }
}

fn progress_bar(total: Option<u64>) -> indicatif::ProgressBar {
    if !io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = match total {
        Some(n) => {
            let pb = indicatif::ProgressBar::new(n);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{bar:30} {bytes}/{total_bytes} {msg} ({eta})",
            ) {
                pb.set_style(style);
            }
            pb
        }
        None => indicatif::ProgressBar::new_spinner(),
    };
    pb.enable_steady_tick(std::time::Duration::from_millis(200));
    pb
}

/// One import: the pending batch, the store (opened on the first batch, so input that
/// is bad from its first line leaves the store untouched, not even created) and counters.
struct Importer<'a> {
    opts: &'a StoreOpts,
    args: &'a ImportArgs,
    progress: indicatif::ProgressBar,
    store: Option<(Rt, StorageManager)>,
    batch: Vec<Tx>,
    batch_bytes: usize,
    saved: u64,
    batches: u64,
    lines: u64,
}

impl Importer<'_> {
    fn read_all<W: Write>(
        &mut self,
        source: &Source,
        reader: &mut dyn BufRead,
        out: &mut Out<W>,
    ) -> Result<()> {
        let limits = self.opts.limits();
        let max_line = max_import_line(self.opts.max_payload);
        let batch_size = self.args.batch_size as usize;
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = read_line_bounded(reader, &mut buf, max_line)
                .with_context(|| format!("cannot read {source} at line {}", self.lines + 1))?;
            if n == 0 {
                break;
            }
            self.lines += 1;
            self.progress.inc(n as u64);
            if line_too_long(&buf, max_line) {
                // Reading stopped at the limit: the rest of the line is never held.
                let line = self.lines;
                self.flush(out)?;
                return Err(anyhow::Error::new(BadInput(format!(
                    "line is longer than {max_line} bytes, the longest a tx can be when the \
                     payload limit is {} bytes (--max-payload); reading stopped there",
                    self.opts.max_payload
                )))
                .context(format!("{source} line {line}")));
            }
            let parsed = std::str::from_utf8(&buf)
                .map_err(|e| anyhow::Error::new(BadInput(format!("not UTF-8: {e}"))))
                .and_then(|text| {
                    if text.trim().is_empty() {
                        Ok(None)
                    } else {
                        Tx::from_json(text, &limits)
                            .map(Some)
                            .map_err(anyhow::Error::new)
                    }
                });
            let tx = match parsed {
                Ok(Some(tx)) => tx,
                Ok(None) => continue,
                Err(e) => {
                    // Everything before the bad line is valid: save it, then stop.
                    let line = self.lines;
                    self.flush(out)?;
                    return Err(e.context(format!("{source} line {line}")));
                }
            };
            self.batch_bytes += tx.payload.len();
            self.batch.push(tx);
            if self.batch.len() >= batch_size || self.batch_bytes >= IMPORT_BATCH_BYTES {
                self.flush(out)?;
                self.progress.set_message(format!("{} txs", self.saved));
            }
        }
        self.flush(out)
    }

    /// Saves the pending batch in one durable commit; then, with `--print-acked`, prints
    /// its ids and flushes stdout.
    fn flush<W: Write>(&mut self, out: &mut Out<W>) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        if self.store.is_none() {
            let rt = Rt::new()?;
            let sm = rt.open(self.opts, Access::Create)?;
            self.store = Some((rt, sm));
        }
        let Some((rt, sm)) = self.store.as_ref() else {
            return Err(anyhow!("store not open"));
        };
        let txs = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        let ids: Vec<String> = if self.args.print_acked {
            txs.iter().map(|t| t.tx_id.to_string()).collect()
        } else {
            Vec::new()
        };
        let n = txs.len() as u64;
        let last_line = self.lines;
        rt.call(sm.save_batch(txs))
            .with_context(|| format!("cannot save the batch ending at line {last_line}"))?;
        self.saved += n;
        self.batches += 1;
        if self.args.print_acked {
            // A reader that went away is a failure here: the ids are the point.
            let ack = |e: anyhow::Error| {
                anyhow!("cannot print acknowledged ids: {e:#} (their batch was saved)")
            };
            for id in &ids {
                out.line(id).map_err(ack)?;
            }
            out.flush().map_err(ack)?;
        }
        Ok(())
    }
}

/// Bytes an `import` line may hold besides the base64 of its payload (ids, timestamp,
/// field names, spacing).
const IMPORT_LINE_SLACK: usize = 64 * 1024;

/// The longest `import` line (without its newline) for a payload limit of `max_payload`
/// bytes: the payload's base64 (4 characters per 3 bytes) plus [`IMPORT_LINE_SLACK`].
pub fn max_import_line(max_payload: usize) -> usize {
    max_payload
        .div_ceil(3)
        .saturating_mul(4)
        .saturating_add(IMPORT_LINE_SLACK)
}

/// Appends the next line of `reader` (with its `\n`, if any) to `buf`, reading at most
/// `max_line + 1` bytes, and returns the number of bytes read (0 at the end of input).
/// A line longer than `max_line` is cut there and the rest left unread: see
/// [`line_too_long`].
fn read_line_bounded(
    reader: &mut dyn BufRead,
    buf: &mut Vec<u8>,
    max_line: usize,
) -> io::Result<usize> {
    let cap = u64::try_from(max_line)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    reader.take(cap).read_until(b'\n', buf)
}

/// True if `line`, as [`read_line_bounded`] returned it, was cut: more than `max_line`
/// bytes and no newline yet.
fn line_too_long(line: &[u8], max_line: usize) -> bool {
    line.len() > max_line && line.last() != Some(&b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_lines_are_read_up_to_the_limit_and_no_further() {
        assert_eq!(max_import_line(16), 24 + 64 * 1024);
        assert_eq!(max_import_line(0), 64 * 1024);
        assert_eq!(max_import_line(64 << 20), 89_544_024); // as the README says
        assert_eq!(max_import_line(usize::MAX), usize::MAX);
        let mut input: &[u8] = b"abc\nabcd\nabcde\nxy";
        let mut buf = Vec::new();
        let mut lines = Vec::new();
        loop {
            buf.clear();
            let n = read_line_bounded(&mut input, &mut buf, 4).unwrap();
            if n == 0 {
                break;
            }
            lines.push((
                String::from_utf8(buf.clone()).unwrap(),
                line_too_long(&buf, 4),
            ));
        }
        // "abcde" is cut after 5 bytes; what follows is read as the next "line".
        let want = [
            ("abc\n", false),
            ("abcd\n", false),
            ("abcde", true),
            ("\n", false),
            ("xy", false),
        ];
        let want: Vec<(String, bool)> = want.iter().map(|(l, t)| ((*l).to_owned(), *t)).collect();
        assert_eq!(lines, want);
    }
}
