//! A scoped parallel map for blocking I/O: fsyncs, unlinks and payload verification spread
//! over a few threads, so the device queue and the CPU cores are used at once.

/// The cores this process may use, found once: `std::thread::available_parallelism`
/// reads the cgroup files under `/proc` at every call (measured on the save path: a
/// visible share of a 1,000-tx group's encoding).
pub fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Applies `f` to every item on up to `max_threads` threads (contiguous chunks: the first
/// on the calling thread, the others on scoped threads), returning the results in order.
/// Runs inline when one thread is enough.
pub(crate) fn par_map<T: Sync, R: Send>(
    items: &[T],
    max_threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let threads = items.len().min(max_threads);
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    let (first, rest) = items.split_at(chunk.min(items.len()));
    std::thread::scope(|s| {
        let handles: Vec<_> = rest
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(f).collect::<Vec<R>>()))
            .collect();
        let mut out: Vec<R> = Vec::with_capacity(items.len());
        out.extend(first.iter().map(f));
        for h in handles {
            out.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::par_map;

    #[test]
    fn keeps_order_whatever_the_thread_count() {
        let items: Vec<u32> = (0..1000).collect();
        for threads in [1, 2, 3, 16, 5000] {
            let out = par_map(&items, threads, |x| x * 2);
            assert_eq!(out, items.iter().map(|x| x * 2).collect::<Vec<_>>());
        }
        assert!(par_map(&[] as &[u32], 4, |x| *x).is_empty());
    }
}
