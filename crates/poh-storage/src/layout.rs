//! Which engine a store uses: [`Layout`], chosen when the store is created and recorded in
//! it, so an existing store always opens with its own engine whatever a caller asks.
//!
//! A store of the `segments` layout records it in `<base>/.poh-layout`, written durably
//! before anything else of the store (a temp file, synced, renamed, the base synced):
//! ```text
//! poh-store layout 1
//! layout=segments
//! window_secs=3600
//! ```
//! A store without that file is a flat-file store (the prototype's layout, which has no
//! marker and keeps none, so both stay byte-compatible).

use std::path::Path;
use std::time::Duration;

use crate::error::{Result, StorageError};
use crate::fs::FileSystem;

/// Name of the layout record under the base directory.
pub const LAYOUT_FILE: &str = ".poh-layout";
const LAYOUT_TMP: &str = ".poh-layout.tmp";
const HEADER: &str = "poh-store layout 1";

/// Default width of the time window one segment holds.
pub const DEFAULT_SEGMENT_WINDOW: Duration = Duration::from_secs(3600);

/// How a store keeps its transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// One file per payload (`<base>/<tx_id>.bin`) and a row per tx in SQLite: the
    /// prototype's layout, the default.
    Files,
    /// Append-only segment files, one per time window, of self-describing checksummed
    /// records, with an SQLite index (see docs/design.md, section 7).
    Segments,
    /// A PostgreSQL database (`--db postgres://...`): one table range-partitioned by
    /// time window (see docs/design.md, section 8). Chosen by the database URL, never
    /// recorded in a directory.
    Postgres,
}

impl Layout {
    /// The layout's name, as the command lines and the layout record spell it.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Files => "files",
            Layout::Segments => "segments",
            Layout::Postgres => "postgres",
        }
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Layout {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "files" => Ok(Layout::Files),
            "segments" => Ok(Layout::Segments),
            "postgres" => Ok(Layout::Postgres),
            other => Err(format!(
                "unknown layout {other:?}: expected \"files\", \"segments\" or \"postgres\""
            )),
        }
    }
}

/// What `<base>/.poh-layout` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Recorded {
    pub(crate) layout: Layout,
    /// Width of a segment's time window, in seconds (segments only).
    pub(crate) window_secs: u64,
}

/// Reads the layout record of the store at `base`; `None` when there is none (a
/// flat-file store, or no store).
pub(crate) fn read(fs: &dyn FileSystem, base: &Path) -> Result<Option<Recorded>> {
    let path = base.join(LAYOUT_FILE);
    let data = match fs.read(&path) {
        Ok(d) => d,
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            return Ok(None);
        }
        Err(e) if crate::fs::is_not_regular(&e) => {
            return Err(StorageError::BadStoreEntry {
                path,
                why: "the store's layout record is not a regular file".into(),
            });
        }
        Err(e) => return Err(StorageError::io("read layout record", path, e)),
    };
    parse(&data)
        .map(Some)
        .map_err(|why| StorageError::BadStoreEntry {
            path,
            why: format!("the store's layout record is unreadable ({why})"),
        })
}

fn parse(data: &[u8]) -> std::result::Result<Recorded, String> {
    let text = std::str::from_utf8(data).map_err(|_| "not UTF-8".to_owned())?;
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err(format!("its first line is not {HEADER:?}"));
    }
    let mut layout = None;
    let mut window = None;
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("line {line:?} is not key=value"))?;
        match k {
            "layout" => layout = Some(v.parse::<Layout>()?),
            "window_secs" => {
                window = Some(
                    v.parse::<u64>()
                        .ok()
                        .filter(|w| *w > 0)
                        .ok_or_else(|| format!("window_secs {v:?} is not a positive integer"))?,
                )
            }
            // Keys of later versions are ignored only if they do not change the format:
            // none exist yet, so refuse rather than misread.
            other => return Err(format!("unknown key {other:?}")),
        }
    }
    let layout = layout.ok_or("no layout line")?;
    let window_secs = match layout {
        Layout::Segments => window.ok_or("no window_secs line")?,
        Layout::Files => window.unwrap_or(0),
        Layout::Postgres => return Err("a directory cannot hold a postgres store".into()),
    };
    Ok(Recorded {
        layout,
        window_secs,
    })
}

fn render(rec: Recorded) -> String {
    format!(
        "{HEADER}\nlayout={}\nwindow_secs={}\n",
        rec.layout, rec.window_secs
    )
}

/// Writes the layout record durably: a temp file, synced, renamed into place, and the
/// base synced. A crash leaves either no record or the whole one (and perhaps the temp,
/// which the next creation replaces).
pub(crate) fn write(fs: &dyn FileSystem, base: &Path, rec: Recorded, mode: u32) -> Result<()> {
    let tmp = base.join(LAYOUT_TMP);
    let path = base.join(LAYOUT_FILE);
    match fs.remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StorageError::io("remove old layout temp", tmp, e)),
    }
    fs.write_new_synced(&tmp, render(rec).as_bytes(), mode)
        .map_err(|e| StorageError::io("write layout record", &tmp, e))?;
    fs.rename(&tmp, &path)
        .map_err(|e| StorageError::io("rename layout record into place", &path, e))?;
    fs.sync_dir(base)
        .map_err(|e| StorageError::io("fsync directory", base, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_ones_are_refused() {
        let rec = Recorded {
            layout: Layout::Segments,
            window_secs: 60,
        };
        assert_eq!(parse(render(rec).as_bytes()), Ok(rec));
        for bad in [
            "",
            "poh-store layout 2\nlayout=segments\nwindow_secs=1\n",
            "poh-store layout 1\nlayout=rocks\nwindow_secs=1\n",
            "poh-store layout 1\nlayout=segments\n",
            "poh-store layout 1\nlayout=segments\nwindow_secs=0\n",
            "poh-store layout 1\nlayout=segments\nwindow_secs=1\nfuture=1\n",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert_eq!("segments".parse::<Layout>(), Ok(Layout::Segments));
        assert!("Segments".parse::<Layout>().is_err());
    }
}
