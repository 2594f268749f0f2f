//! What a handle serves on top of an index that lags its segments.
//!
//! The writer of this process acknowledges a small save group once its records are
//! synced, before its index commit (docs/design.md §7.3c), and shows its rows here
//! ([`Acked`]) until that commit lands, so that a save this process was answered for is
//! never "not found" here. Other processes see it once the commit lands.
//!
//! A save group's index commit is not flushed on its own (docs/design.md §7.3): after a
//! power loss the index may miss the last acknowledged saves, whose records are synced in
//! the segment tails. A writer replays them at its first hold; a read-only handle writes
//! nothing, so it finds them at open ([`super::replay::pending_rows`], under the shared
//! lock) and serves them from memory: an acknowledged save is never "not found", even
//! before a writer has opened the store again.
//!
//! The overlay holds while the index's generation is the one seen at open. Any writer
//! replays the tails before its first commit, and every commit bumps the generation, so
//! once it moved the index itself has these rows (or newer ones) and the overlay is
//! dropped.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use super::index::{Index, Row};
use crate::engine::Stats;
use crate::error::Result;

/// The writer's acknowledged rows awaiting their index commit, shared with the readers
/// of the same handle: the overlay over the generation the commit will bump, or `None`.
pub(crate) type Acked = Arc<Mutex<Option<Arc<Overlay>>>>;

/// Rows found in the segment tails, or acknowledged before their commit, by id (the last
/// written wins).
#[derive(Debug)]
pub(crate) struct Overlay {
    generation: u64,
    rows: BTreeMap<String, Row>,
}

impl Overlay {
    /// The overlay of `rows` (in write order) over an index at `generation`; `None` when
    /// there are none.
    pub(crate) fn new(generation: u64, rows: Vec<Row>) -> Option<Self> {
        if rows.is_empty() {
            return None;
        }
        let rows = rows.into_iter().map(|r| (r.tx_id.clone(), r)).collect();
        Some(Self { generation, rows })
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    pub(crate) fn get(&self, tx_id: &str) -> Option<&Row> {
        self.rows.get(tx_id)
    }

    /// `limit` rows with `tx_id > after` in id order: the index's `page` merged with the
    /// overlay (whose row wins for an id in both).
    pub(crate) fn page(&self, from_index: Vec<Row>, after: Option<&str>, limit: usize) -> Vec<Row> {
        let mut merged: BTreeMap<String, Row> = from_index
            .into_iter()
            .map(|r| (r.tx_id.clone(), r))
            .collect();
        let range = match after {
            Some(a) => self
                .rows
                .range::<str, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
            None => self.rows.range::<str, _>(..),
        };
        for (id, r) in range.take(limit) {
            merged.insert(id.clone(), r.clone());
        }
        merged.into_values().take(limit).collect()
    }

    /// `limit` expired rows after `after` in `(timestamp, tx_id)` order: the index's
    /// (fetched with `limit + len()`, see [`Self::len`]) without the ids the overlay
    /// replaces, merged with the overlay's expired rows.
    pub(crate) fn expired(
        &self,
        from_index: Vec<Row>,
        now: f64,
        ttl: f64,
        after: Option<(f64, &str)>,
        limit: usize,
    ) -> Vec<Row> {
        let key_after = |r: &Row| match after {
            None => true,
            Some((ts, id)) => (r.timestamp, r.tx_id.as_str()) > (ts, id),
        };
        let mut out: Vec<Row> = from_index
            .into_iter()
            .filter(|r| !self.rows.contains_key(&r.tx_id))
            .chain(
                self.rows
                    .values()
                    .filter(|r| now - r.timestamp > ttl && key_after(r))
                    .cloned(),
            )
            .collect();
        out.sort_by(Row::time_order);
        out.truncate(limit);
        out
    }

    /// The index's stats with the overlay applied.
    pub(crate) fn stats(&self, index: &Index) -> Result<Stats> {
        let mut st = index.stats()?;
        let mut replaced = HashSet::new();
        for r in self.rows.values() {
            match index.get(&r.tx_id)? {
                Some(old) => {
                    st.bytes = st.bytes.saturating_sub(old.size);
                    replaced.insert(old.tx_id);
                }
                None => st.count += 1,
            }
            st.bytes += r.size;
        }
        // The oldest and newest rows the overlay leaves in place.
        let (oldest, newest) = index.time_range_without(&replaced)?;
        let ts = self.rows.values().map(|r| r.timestamp);
        st.oldest = ts.clone().chain(oldest).reduce(f64::min);
        st.newest = ts.chain(newest).reduce(f64::max);
        Ok(st)
    }
}
