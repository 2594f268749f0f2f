//! The extension module `poh_storage._native`: a tokio runtime, the bridge from its
//! futures to Python callbacks, and the `Store` class over [`StorageManager`].
//!
//! Every asynchronous method takes a callback `done(ok: bool, value)` as its last
//! argument and returns at once; the Python package passes
//! `functools.partial(loop.call_soon_threadsafe, resolve, future)`, so `done` only
//! schedules the result on the caller's event loop. Errors travel as plain tuples
//! `(kind, message, path, errno)` and are turned into Python exceptions by the package
//! (`poh_storage._errors`), which keeps every Python-facing policy in Python.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use poh_storage::{Layout, OpenOptions, ProblemKind, StorageError, StorageManager, Tx, TxId};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use tokio::runtime::Runtime;

/// Rows deleted per expiry batch, as `poh-ttl` does.
const EXPIRE_BATCH: usize = 1000;
/// Ids per page when listing.
const LIST_PAGE: usize = 10_000;

// ---------------------------------------------------------------------------------------
// The runtime and the work in flight

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// The one runtime of the process: two workers (the engine does its blocking work on its
/// own writer thread and tokio's blocking pool; the workers only pass messages).
fn runtime() -> PyResult<&'static Runtime> {
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("poh-py")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start the tokio runtime: {e}")))
}

/// Set at interpreter exit: new asynchronous work is refused.
static CLOSING: AtomicBool = AtomicBool::new(false);
static INFLIGHT: Mutex<usize> = Mutex::new(0);
static IDLE: Condvar = Condvar::new();

/// Counts one asynchronous call from its start until its callback has run.
struct Inflight;

impl Inflight {
    fn enter() -> PyResult<Self> {
        if CLOSING.load(Ordering::SeqCst) {
            return Err(PyRuntimeError::new_err(
                "poh_storage is shutting down (interpreter exit); no new work is accepted",
            ));
        }
        *INFLIGHT.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        Ok(Inflight)
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        let mut n = INFLIGHT.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_sub(1);
        if *n == 0 {
            IDLE.notify_all();
        }
    }
}

/// What an operation hands back to Python.
enum Value {
    None,
    Bool(bool),
    Strings(Vec<String>),
    Store(Box<StorageManager>),
    Saved(Vec<Result<(), ErrTuple>>),
    Loaded(Vec<Result<Option<Tx>, StorageError>>),
    Recovered(Vec<String>, String),
}

type Outcome = Result<Value, StorageError>;

/// Runs `fut` on the runtime and calls `done(ok, value)` when it completes.
fn spawn(done: Py<PyAny>, fut: impl Future<Output = Outcome> + Send + 'static) -> PyResult<()> {
    let guard = Inflight::enter()?;
    runtime()?.spawn(async move {
        let out = fut.await;
        deliver(done, out);
        drop(guard);
    });
    Ok(())
}

/// Calls `done` under the GIL — unless the interpreter is finalizing, in which case the
/// result is dropped and `done` leaked: touching Python then is what crashes at exit.
fn deliver(done: Py<PyAny>, out: Outcome) {
    let mut done = Some(done);
    let ran = Python::try_attach(|py| {
        if let Some(done) = done.take() {
            let args = outcome_to_py(py, out);
            // The loop may be closed by now (asyncio.run returned): nobody waits.
            if let Ok(args) = args {
                let _ = done.call1(py, args);
            }
        }
    });
    if ran.is_none()
        && let Some(done) = done
    {
        std::mem::forget(done);
    }
}

/// Blocks on `fut` with the GIL released; returns `(ok, value)` like a callback would get.
fn block(py: Python<'_>, fut: impl Future<Output = Outcome> + Send) -> PyResult<Py<PyAny>> {
    let rt = runtime()?;
    let out = py.detach(|| rt.block_on(fut));
    Ok(outcome_to_py(py, out)?.into_any().unbind())
}

// ---------------------------------------------------------------------------------------
// Conversions

fn outcome_to_py(py: Python<'_>, out: Outcome) -> PyResult<Bound<'_, PyTuple>> {
    match out {
        Ok(v) => PyTuple::new(
            py,
            [
                true.into_pyobject(py)?.to_owned().into_any(),
                value_to_py(py, v)?,
            ],
        ),
        Err(e) => PyTuple::new(
            py,
            [
                false.into_pyobject(py)?.to_owned().into_any(),
                error_to_py(py, &e)?,
            ],
        ),
    }
}

fn value_to_py(py: Python<'_>, v: Value) -> PyResult<Bound<'_, PyAny>> {
    Ok(match v {
        Value::None => py.None().into_bound(py),
        Value::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        Value::Strings(s) => s.into_pyobject(py)?.into_any(),
        Value::Store(sm) => Bound::new(py, Store { sm: *sm })?.into_any(),
        Value::Saved(rs) => {
            let list = PyList::empty(py);
            for r in rs {
                match r {
                    Ok(()) => list.append(py.None())?,
                    Err(e) => list.append(e.into_pyobject(py)?)?,
                }
            }
            list.into_any()
        }
        Value::Loaded(rs) => {
            let list = PyList::empty(py);
            for r in rs {
                let item = match r {
                    Ok(Some(tx)) => PyTuple::new(
                        py,
                        [
                            true.into_pyobject(py)?.to_owned().into_any(),
                            tx_to_py(py, tx)?,
                        ],
                    )?,
                    Ok(None) => PyTuple::new(
                        py,
                        [
                            true.into_pyobject(py)?.to_owned().into_any(),
                            py.None().into_bound(py),
                        ],
                    )?,
                    Err(e) => PyTuple::new(
                        py,
                        [
                            false.into_pyobject(py)?.to_owned().into_any(),
                            error_to_py(py, &e)?,
                        ],
                    )?,
                };
                list.append(item)?;
            }
            list.into_any()
        }
        Value::Recovered(valid, report) => (valid, report).into_pyobject(py)?.into_any(),
    })
}

fn tx_to_py(py: Python<'_>, tx: Tx) -> PyResult<Bound<'_, PyAny>> {
    let payload = PyBytes::new(py, &tx.payload);
    Ok(
        (tx.tx_id.into_string(), tx.holder_id, tx.timestamp, payload)
            .into_pyobject(py)?
            .into_any(),
    )
}

/// An error as Python gets it: `(kind, message, path, errno)`; the package maps `kind` to
/// an exception class.
type ErrTuple = (&'static str, String, Option<String>, Option<i32>);

fn err_tuple(e: &StorageError) -> ErrTuple {
    let (kind, path, errno) = classify(e);
    (kind, e.to_string(), path, errno)
}

fn error_to_py<'py>(py: Python<'py>, e: &StorageError) -> PyResult<Bound<'py, PyAny>> {
    Ok(err_tuple(e).into_pyobject(py)?.into_any())
}

fn classify(e: &StorageError) -> (&'static str, Option<String>, Option<i32>) {
    let shown = |p: &std::path::Path| Some(p.display().to_string());
    match e {
        StorageError::Invalid(_) => ("invalid", None, None),
        StorageError::Integrity { .. } => ("integrity", None, None),
        StorageError::PayloadMissing { path, .. } => ("payload_missing", shown(path), None),
        StorageError::NotFound { path, .. } => ("no_store", shown(path), None),
        StorageError::BadPath { path, .. } => ("bad_path", shown(path), None),
        StorageError::Io { path, source, .. } => ("io", shown(path), source.raw_os_error()),
        StorageError::Closed => ("closed", None, None),
        StorageError::Unfinished { .. } => ("unfinished", None, None),
        StorageError::LockTimeout { path, .. } => ("lock_timeout", shown(path), None),
        StorageError::LayoutMismatch { path, .. } => ("layout_mismatch", shown(path), None),
        _ => ("storage", None, None),
    }
}

fn invalid(e: impl std::fmt::Display) -> StorageError {
    StorageError::Meta {
        what: "invalid argument".into(),
        path: Default::default(),
        source: e.to_string().into(),
    }
}

/// A tx from `(tx_id, holder_id, timestamp, payload)`; a bad item is this item's error.
fn tx_from_py(item: &Bound<'_, PyAny>) -> Result<Tx, StorageError> {
    let (id, holder, ts, payload): (String, String, f64, Bound<'_, PyBytes>) =
        item.extract().map_err(invalid)?;
    Ok(Tx::new(id, holder, ts, payload.as_bytes().to_vec())?)
}

fn id_from_str(id: &str) -> Result<TxId, StorageError> {
    TxId::new(id).map_err(|e| StorageError::Invalid(e.into()))
}

// ---------------------------------------------------------------------------------------
// Operations (shared by the asynchronous and the blocking form)

/// Options for opening a store: `layout` (`files`, `segments` or `postgres`) or `None`
/// for whatever the store records; `window_secs` the time window of a new segments (or
/// PostgreSQL) store. The package has checked both already; a bad one is still a
/// ValueError here.
fn open_options(
    create: bool,
    layout: Option<&str>,
    window_secs: Option<u64>,
) -> PyResult<OpenOptions> {
    let layout = layout
        .map(str::parse::<Layout>)
        .transpose()
        .map_err(PyValueError::new_err)?;
    let segment_window = match window_secs {
        None => None,
        Some(0) => {
            return Err(PyValueError::new_err(
                "segment_window must be a whole number of seconds, at least 1 (got 0)",
            ));
        }
        Some(s) => Some(Duration::from_secs(s)),
    };
    Ok(OpenOptions {
        create,
        layout,
        segment_window,
        // A lone save commits on the runtime's worker (its tasks never run in a LocalSet),
        // two thread hand-offs fewer than going through the writer thread.
        inline_saves: true,
        ..OpenOptions::default()
    })
}

async fn open(base: String, db: String, opts: OpenOptions) -> Outcome {
    let sm = StorageManager::open_with(base, db, opts).await?;
    Ok(Value::Store(Box::new(sm)))
}

/// Saves each tx with its own result. Invalid txs are answered at once; the valid ones go
/// to the writer as one batch (one durable commit). A failure of the batch itself (I/O,
/// database) is every member's answer, as it is for a commit group.
async fn save_each(sm: StorageManager, txs: Vec<Result<Tx, StorageError>>) -> Outcome {
    let limits = *sm.limits();
    let mut out: Vec<Result<(), ErrTuple>> = Vec::with_capacity(txs.len());
    let mut slots = Vec::new();
    let mut batch = Vec::new();
    for (i, tx) in txs.into_iter().enumerate() {
        match tx.and_then(|tx| tx.validate(&limits).map(|()| tx).map_err(Into::into)) {
            Err(e) => out.push(Err(err_tuple(&e))),
            Ok(tx) => {
                out.push(Ok(()));
                slots.push(i);
                batch.push(tx);
            }
        }
    }
    if let Err(e) = sm.save_batch(batch).await {
        let e = err_tuple(&e);
        for i in slots {
            out[i] = Err(e.clone());
        }
    }
    Ok(Value::Saved(out))
}

async fn load_many(sm: StorageManager, ids: Vec<String>) -> Outcome {
    let mut valid = Vec::with_capacity(ids.len());
    let mut bad: Vec<(usize, StorageError)> = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        match id_from_str(id) {
            Ok(id) => valid.push(id),
            Err(e) => bad.push((i, e)),
        }
    }
    let mut loaded = load_parallel(&sm, valid).await?.into_iter();
    let mut bad = bad.into_iter().peekable();
    let mut out = Vec::with_capacity(ids.len());
    for i in 0..ids.len() {
        if bad.peek().is_some_and(|(at, _)| *at == i) {
            if let Some((_, e)) = bad.next() {
                out.push(Err(e));
            }
        } else if let Some(r) = loaded.next() {
            out.push(r);
        }
    }
    Ok(Value::Loaded(out))
}

/// `load_many` split over the CPU cores (each part is one hand-off to the blocking pool),
/// results in order.
async fn load_parallel(
    sm: &StorageManager,
    ids: Vec<TxId>,
) -> Result<Vec<Result<Option<Tx>, StorageError>>, StorageError> {
    const MIN_PART: usize = 64;
    let cores = poh_storage::cores();
    let parts = (ids.len() / MIN_PART).clamp(1, cores);
    if parts == 1 {
        return sm.load_many(ids).await;
    }
    let size = ids.len().div_ceil(parts);
    let mut rest = ids;
    let mut handles = Vec::with_capacity(parts);
    while !rest.is_empty() {
        let tail = rest.split_off(size.min(rest.len()));
        let part = std::mem::replace(&mut rest, tail);
        let sm = sm.clone();
        handles.push(tokio::spawn(async move { sm.load_many(part).await }));
    }
    let mut out = Vec::new();
    for h in handles {
        out.extend(h.await.map_err(invalid)??);
    }
    Ok(out)
}

async fn delete(sm: StorageManager, id: String) -> Outcome {
    Ok(Value::Bool(sm.delete(&id_from_str(&id)?).await?))
}

async fn list_ids(sm: StorageManager) -> Outcome {
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let page = sm.list_ids_page(after, LIST_PAGE).await?;
        ids.extend(page.ids);
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    Ok(Value::Strings(ids))
}

/// Repairs, then returns the ids that are valid afterwards (every row left, less those a
/// finding left in doubt) and the report as JSON.
async fn recover(sm: StorageManager) -> Outcome {
    let report = sm.recover(false).await?;
    let doubtful: std::collections::HashSet<&str> = report
        .findings
        .iter()
        .filter(|f| {
            matches!(
                f.kind,
                ProblemKind::Transient
                    | ProblemKind::UnsafeId
                    | ProblemKind::Corrupt
                    | ProblemKind::MissingPayload
            )
        })
        .map(|f| f.tx_id.as_str())
        .collect();
    let Value::Strings(all) = list_ids(sm.clone()).await? else {
        return Err(invalid("list returned no ids"));
    };
    let valid = all
        .into_iter()
        .filter(|id| !doubtful.contains(id.as_str()))
        .collect();
    let json = serde_json::to_string(&report).map_err(invalid)?;
    Ok(Value::Recovered(valid, json))
}

/// One TTL pass: deletes every tx with `now - timestamp > ttl` in batches through the
/// timestamp index (the same store call `poh-ttl` makes), returning their ids.
async fn expire(sm: StorageManager, now: f64, ttl: f64) -> Outcome {
    if !now.is_finite() || !ttl.is_finite() {
        return Err(invalid(format!("now {now} and ttl {ttl} must be finite")));
    }
    let mut ids = Vec::new();
    loop {
        let batch = sm.delete_expired(now, ttl, EXPIRE_BATCH).await?;
        let n = batch.len();
        ids.extend(batch);
        if n < EXPIRE_BATCH {
            break;
        }
    }
    Ok(Value::Strings(ids))
}

/// Makes every save answered so far visible to other processes now (a segments store
/// commits small saves' index rows a moment after answering them).
async fn flush(sm: StorageManager) -> Outcome {
    sm.flush().await?;
    Ok(Value::None)
}

async fn close(sm: StorageManager) -> Outcome {
    match sm.close().await {
        Ok(()) | Err(StorageError::Closed) => Ok(Value::None),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------------------------------
// The Python class

/// An open store. Methods without `_sync` take a callback `done(ok, value)` and return at
/// once; `_sync` methods block with the GIL released and return `(ok, value)`.
#[pyclass(module = "poh_storage._native", frozen)]
struct Store {
    sm: StorageManager,
}

fn txs_from_list(items: &Bound<'_, PyList>) -> Vec<Result<Tx, StorageError>> {
    items.iter().map(|item| tx_from_py(&item)).collect()
}

#[pymethods]
impl Store {
    /// The base directory.
    #[getter]
    fn base(&self) -> String {
        self.sm.base().display().to_string()
    }

    /// The store's layout: `files`, `segments` or `postgres`.
    #[getter]
    fn layout(&self) -> &'static str {
        self.sm.layout().name()
    }

    fn save_each(&self, txs: &Bound<'_, PyList>, done: Py<PyAny>) -> PyResult<()> {
        let txs = txs_from_list(txs);
        spawn(done, save_each(self.sm.clone(), txs))
    }

    fn save_each_sync(&self, py: Python<'_>, txs: &Bound<'_, PyList>) -> PyResult<Py<PyAny>> {
        let txs = txs_from_list(txs);
        block(py, save_each(self.sm.clone(), txs))
    }

    fn load_many(&self, ids: Vec<String>, done: Py<PyAny>) -> PyResult<()> {
        spawn(done, load_many(self.sm.clone(), ids))
    }

    /// Loads `id` on the calling thread, GIL released, if that needs no waiting: the tx
    /// tuple, or None when there is no such tx (an invalid id included); False when the
    /// caller must go through `load_many` (a payload over `max_bytes` or of unknown size,
    /// or any problem, whose precise error `load_many` gives). See
    /// `StorageManager::load_small_now`.
    fn load_now(&self, py: Python<'_>, id: &str, max_bytes: u64) -> PyResult<Py<PyAny>> {
        let Ok(id) = TxId::new(id) else {
            return Ok(py.None());
        };
        let sm = &self.sm;
        Ok(match py.detach(|| sm.load_small_now(&id, max_bytes)) {
            Some(Some(tx)) => tx_to_py(py, tx)?.unbind(),
            Some(None) => py.None(),
            None => false.into_pyobject(py)?.to_owned().into_any().unbind(),
        })
    }

    fn load_many_sync(&self, py: Python<'_>, ids: Vec<String>) -> PyResult<Py<PyAny>> {
        block(py, load_many(self.sm.clone(), ids))
    }

    fn delete(&self, id: String, done: Py<PyAny>) -> PyResult<()> {
        spawn(done, delete(self.sm.clone(), id))
    }

    fn delete_sync(&self, py: Python<'_>, id: String) -> PyResult<Py<PyAny>> {
        block(py, delete(self.sm.clone(), id))
    }

    fn list_ids(&self, done: Py<PyAny>) -> PyResult<()> {
        spawn(done, list_ids(self.sm.clone()))
    }

    fn list_ids_sync(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        block(py, list_ids(self.sm.clone()))
    }

    fn recover(&self, done: Py<PyAny>) -> PyResult<()> {
        spawn(done, recover(self.sm.clone()))
    }

    fn recover_sync(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        block(py, recover(self.sm.clone()))
    }

    fn expire(&self, now: f64, ttl: f64, done: Py<PyAny>) -> PyResult<()> {
        spawn(done, expire(self.sm.clone(), now, ttl))
    }

    fn expire_sync(&self, py: Python<'_>, now: f64, ttl: f64) -> PyResult<Py<PyAny>> {
        block(py, expire(self.sm.clone(), now, ttl))
    }

    fn flush(&self, done: Py<PyAny>) -> PyResult<()> {
        spawn(done, flush(self.sm.clone()))
    }

    fn flush_sync(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        block(py, flush(self.sm.clone()))
    }

    fn close(&self, done: Py<PyAny>) -> PyResult<()> {
        spawn(done, close(self.sm.clone()))
    }

    fn close_sync(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        block(py, close(self.sm.clone()))
    }
}

// ---------------------------------------------------------------------------------------
// Module functions

/// Opens (creating if `create`, with `layout` and `window_secs` if given) the store;
/// `done(ok, Store | error)`. ValueError at once for a bad layout or window.
#[pyfunction]
#[pyo3(signature = (base, db, create, layout, window_secs, done))]
fn open_store(
    base: String,
    db: String,
    create: bool,
    layout: Option<&str>,
    window_secs: Option<u64>,
    done: Py<PyAny>,
) -> PyResult<()> {
    let opts = open_options(create, layout, window_secs)?;
    spawn(done, open(base, db, opts))
}

/// The blocking form of [`open_store`]: `(ok, Store | error)`.
#[pyfunction]
#[pyo3(signature = (base, db, create, layout, window_secs))]
fn open_store_sync(
    py: Python<'_>,
    base: String,
    db: String,
    create: bool,
    layout: Option<&str>,
    window_secs: Option<u64>,
) -> PyResult<Py<PyAny>> {
    let opts = open_options(create, layout, window_secs)?;
    block(py, open(base, db, opts))
}

/// `text` as a duration in seconds, as the command lines read one (`90`, `1.5`, `10m`,
/// `1h`); ValueError if it is not a positive duration.
#[pyfunction]
fn parse_duration(text: &str) -> PyResult<f64> {
    poh_ttl::duration::parse_duration(text)
        .map(|d| d.as_secs_f64())
        .map_err(|e| PyValueError::new_err(e.to_string()))
}

/// The payload file stem of `tx_id` (`<stem>.bin`); ValueError for an invalid id.
#[pyfunction]
fn file_stem(tx_id: &str) -> PyResult<String> {
    let id = TxId::new(tx_id).map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(id.file_stem().into_owned())
}

/// The id whose file stem is exactly `stem`, or None.
#[pyfunction]
fn from_file_stem(stem: &str) -> Option<String> {
    TxId::from_file_stem(stem).map(TxId::into_string)
}

/// The stem the prototype gave `tx_id`'s payload (`<stem>.bin`) when the store still reads
/// it there (its own name missing), else None; ValueError for an invalid id.
#[pyfunction]
fn prototype_file_stem(tx_id: &str) -> PyResult<Option<String>> {
    let id = TxId::new(tx_id).map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(id.prototype_file_stem().map(str::to_owned))
}

/// True if `tx_id` is a valid id.
#[pyfunction]
fn is_valid_id(tx_id: &str) -> bool {
    TxId::new(tx_id).is_ok()
}

/// Lowercase hex SHA-256 of `data`, with the GIL released for large inputs.
#[pyfunction]
fn sha256_hex(py: Python<'_>, data: &Bound<'_, PyBytes>) -> String {
    let bytes = data.as_bytes();
    use sha2::Digest as _;
    if bytes.len() < 64 * 1024 {
        hex::encode(sha2::Sha256::digest(bytes))
    } else {
        let owned = bytes.to_vec();
        py.detach(move || hex::encode(sha2::Sha256::digest(&owned)))
    }
}

/// Called at interpreter exit: refuses new asynchronous work and waits up to `timeout`
/// seconds (GIL released) for the work in flight to deliver its results. Returns how
/// many calls were still in flight when it gave up (0 when all finished).
#[pyfunction]
fn shutdown(py: Python<'_>, timeout: f64) -> usize {
    CLOSING.store(true, Ordering::SeqCst);
    let limit = Duration::from_secs_f64(timeout.clamp(0.0, 3600.0));
    py.detach(|| {
        let start = Instant::now();
        let mut n = INFLIGHT.lock().unwrap_or_else(|p| p.into_inner());
        while *n > 0 {
            let left = limit.saturating_sub(start.elapsed());
            if left.is_zero() {
                break;
            }
            n = IDLE
                .wait_timeout(n, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *n
    })
}

/// Calls in flight now (for tests).
#[pyfunction]
fn inflight() -> usize {
    *INFLIGHT.lock().unwrap_or_else(|p| p.into_inner())
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // The engine's log events (tracing, through `log`) go to Python's logging, under
    // loggers named after the Rust modules (`poh_storage.writer`, ...).
    // Levels are looked up in Python at each event (events are rare: opens, repairs,
    // failures), so `logging` configured after import is honoured.
    let _ = pyo3_log::Logger::new(m.py(), pyo3_log::Caching::Loggers)?
        .filter(log::LevelFilter::Info)
        .install();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("MAX_TX_ID_LEN", poh_types::MAX_TX_ID_LEN)?;
    m.add_class::<Store>()?;
    m.add_function(wrap_pyfunction!(open_store, m)?)?;
    m.add_function(wrap_pyfunction!(open_store_sync, m)?)?;
    m.add_function(wrap_pyfunction!(parse_duration, m)?)?;
    m.add_function(wrap_pyfunction!(file_stem, m)?)?;
    m.add_function(wrap_pyfunction!(from_file_stem, m)?)?;
    m.add_function(wrap_pyfunction!(prototype_file_stem, m)?)?;
    m.add_function(wrap_pyfunction!(is_valid_id, m)?)?;
    m.add_function(wrap_pyfunction!(sha256_hex, m)?)?;
    m.add_function(wrap_pyfunction!(shutdown, m)?)?;
    m.add_function(wrap_pyfunction!(inflight, m)?)?;
    Ok(())
}
