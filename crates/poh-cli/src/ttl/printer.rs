//! Output of `poh-ttl scan`, written as batches arrive so a pass that expires millions of
//! txs never holds their ids: the prototype's `Expired: ['a', 'b']` line (a Python list
//! literal) or one JSON object.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::time::Duration;

use crate::pyfmt::py_repr;

/// How `scan` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// `Expired: ['a', 'b']` (`Would expire: [...]` for a dry run), as the prototype printed.
    Text,
    /// `{"expired":["a","b"],"count":2,"dry_run":false,"elapsed_ms":1.5}`.
    Json,
}

/// Streams the expired ids of one pass to `out`.
#[derive(Debug)]
pub struct ExpiredPrinter<W: Write> {
    out: W,
    format: OutputFormat,
    dry_run: bool,
    count: u64,
}

impl<W: Write> ExpiredPrinter<W> {
    /// Writes the opening of the list.
    pub fn begin(mut out: W, format: OutputFormat, dry_run: bool) -> io::Result<Self> {
        match format {
            OutputFormat::Text if dry_run => out.write_all(b"Would expire: [")?,
            OutputFormat::Text => out.write_all(b"Expired: [")?,
            OutputFormat::Json => out.write_all(b"{\"expired\":[")?,
        }
        Ok(Self {
            out,
            format,
            dry_run,
            count: 0,
        })
    }

    /// Writes one batch of ids.
    pub fn batch(&mut self, ids: &[String]) -> io::Result<()> {
        let mut buf = String::new();
        for id in ids {
            if self.count > 0 {
                buf.push_str(match self.format {
                    OutputFormat::Text => ", ",
                    OutputFormat::Json => ",",
                });
            }
            match self.format {
                OutputFormat::Text => buf.push_str(&py_repr(id)),
                OutputFormat::Json => buf.push_str(&json_string(id)),
            }
            self.count += 1;
        }
        self.out.write_all(buf.as_bytes())
    }

    /// Ids written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Closes the list (and, for JSON, adds count, dry_run, elapsed_ms and the error if
    /// the pass failed), flushes and returns the writer.
    pub fn finish(mut self, elapsed: Duration, error: Option<&str>) -> io::Result<W> {
        match self.format {
            OutputFormat::Text => self.out.write_all(b"]\n")?,
            OutputFormat::Json => {
                let mut tail = format!(
                    "],\"count\":{},\"dry_run\":{},\"elapsed_ms\":{}",
                    self.count,
                    self.dry_run,
                    json_number(elapsed.as_secs_f64() * 1000.0)
                );
                if let Some(e) = error {
                    let _ = write!(tail, ",\"error\":{}", json_string(e));
                }
                tail.push_str("}\n");
                self.out.write_all(tail.as_bytes())?;
            }
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

fn json_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

fn json_number(x: f64) -> String {
    // Milliseconds to the microsecond; always finite here.
    let rounded = (x * 1000.0).round() / 1000.0;
    serde_json::Number::from_f64(rounded)
        .map(|n| n.to_string())
        .unwrap_or_else(|| "0".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(batches: &[&[&str]], dry_run: bool) -> String {
        let mut p = ExpiredPrinter::begin(Vec::new(), OutputFormat::Text, dry_run).unwrap();
        for b in batches {
            let b: Vec<String> = b.iter().map(|s| s.to_string()).collect();
            p.batch(&b).unwrap();
        }
        String::from_utf8(p.finish(Duration::ZERO, None).unwrap()).unwrap()
    }

    #[test]
    fn text_matches_python_list_repr() {
        assert_eq!(text(&[], false), "Expired: []\n");
        assert_eq!(text(&[&["a"]], false), "Expired: ['a']\n");
        assert_eq!(
            text(&[&["a", "b"], &["c"]], false),
            "Expired: ['a', 'b', 'c']\n"
        );
        assert_eq!(text(&[&["a"]], true), "Would expire: ['a']\n");
    }

    #[test]
    fn json_is_one_object() {
        let mut p = ExpiredPrinter::begin(Vec::new(), OutputFormat::Json, true).unwrap();
        p.batch(&["a".into(), "b\"".into()]).unwrap();
        let out = p.finish(Duration::from_micros(1500), None).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"expired": ["a", "b\""], "count": 2, "dry_run": true, "elapsed_ms": 1.5})
        );
    }

    #[test]
    fn json_reports_an_error_with_what_was_done() {
        let mut p = ExpiredPrinter::begin(Vec::new(), OutputFormat::Json, false).unwrap();
        p.batch(&["a".into()]).unwrap();
        let out = p.finish(Duration::ZERO, Some("disk on fire")).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["expired"], serde_json::json!(["a"]));
        assert_eq!(v["error"], "disk on fire");
    }
}
