//! The write path: commit tickets, the batcher (a channel into one persister thread) and
//! group commit into the store. No pyo3: Python waits on a [`Ticket`] from the binding layer.
//!
//! A commit is queued as a [`WriteRecord`] plus a [`Ticket`]. The persister takes records
//! off the channel, closes a batch at `batch_max_entries` entries or `batch_max_delay`
//! after the batch's first record (or at a flush marker), and writes the batch in one
//! transaction. Each ticket then completes with its own outcome. Until written, a record
//! stays in the pending overlay so reads see every acknowledged commit (read-your-writes).
//! The engine writes through the [`Store`] trait (`Engine<S: Store = LmdbStore>`): LMDB,
//! Redis, or memory. An inline store ([`Store::inline`], the memory store) has no
//! persister: each commit is written in the committing thread, one record a batch, and its
//! ticket completes with its outcome before `submit` returns (the Python engine's
//! `inline=True`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use smallvec::{smallvec, SmallVec};

use crate::store::layout::{StoredObject, WriteRecord};
use crate::store::lmdb::LmdbStore;
use crate::store::{Store, StoreError};

/// How one commit ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Written,
    /// The version check refused the commit; the message names the object.
    Conflict(String),
    /// The store failed; the message names the store and why.
    Storage(String),
}

#[derive(Default)]
struct TicketInner {
    state: Mutex<Option<Outcome>>,
    cv: Condvar,
}

/// Completion of one submitted commit (or of a flush marker). Cheap to clone.
#[derive(Clone, Default)]
pub struct Ticket(Arc<TicketInner>);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Ticket {
    pub fn new() -> Ticket {
        Ticket::default()
    }

    /// The shared ticket of every commit acknowledged at submit (`durable: false`):
    /// one allocation per process instead of one per commit.
    pub fn written() -> Ticket {
        static WRITTEN: OnceLock<Ticket> = OnceLock::new();
        WRITTEN
            .get_or_init(|| Ticket::completed(Outcome::Written))
            .clone()
    }

    /// A ticket already completed with `outcome`.
    pub fn completed(outcome: Outcome) -> Ticket {
        let t = Ticket::new();
        *lock(&t.0.state) = Some(outcome);
        t
    }

    /// Complete once; later calls are ignored.
    pub fn complete(&self, outcome: Outcome) {
        {
            let mut s = lock(&self.0.state);
            if s.is_some() {
                return;
            }
            *s = Some(outcome);
        }
        self.0.cv.notify_all();
    }

    pub fn outcome(&self) -> Option<Outcome> {
        lock(&self.0.state).clone()
    }

    /// Block the calling thread until done (the binding releases the GIL around this).
    pub fn wait(&self, timeout: Option<Duration>) -> Option<Outcome> {
        let mut s = lock(&self.0.state);
        let deadline = timeout.map(|t| Instant::now() + t);
        while s.is_none() {
            match deadline {
                None => s = self.0.cv.wait(s).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    s = self
                        .0
                        .cv
                        .wait_timeout(s, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
        s.clone()
    }
}

/// Settings of an engine.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// `true`: a ticket completes when its batch is durable; `false`: once queued.
    pub durable: bool,
    pub batch_max_entries: usize,
    pub batch_max_delay: Duration,
    /// Write throttling: a commit submitted while the unwritten bytes of entry values
    /// exceed this waits in [`Engine::throttle`] until they do not (0: no bound).
    pub pending_max_bytes: u64,
}

/// A commit, the ticket a writer waits on (none when acknowledged at submit), its
/// submission time and its completion token (0: none).
type Queued = (Arc<WriteRecord>, Option<Ticket>, Instant, u64);

enum Msg {
    Commit(Queued),
    Flush(Ticket),
    Stop,
}

/// Counters reported by `stats()`.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub commits: u64,
    pub failed_commits: u64,
    pub entries_written: u64,
    pub bytes_written: u64,
    pub batches: u64,
    pub records_in_batches: u64,
    /// Submissions that waited in [`Engine::throttle`].
    pub write_throttles: u64,
    pub latencies_us: VecDeque<f64>,
    pub last_error: Option<String>,
}

const LATENCY_WINDOW: usize = 8192;
/// An inline engine times one write in this many (see `Engine::write_now`).
const INLINE_TIMED: u32 = 16;

/// Failures no caller hears of otherwise, as lines for the `oaas_sdk` logger: a batch whose
/// transaction failed, and commits acknowledged at submit (nobody waits on them) that then
/// failed: the lines the Python engine logs. The binding layer takes them
/// ([`FailureLog::take`]); at most [`FAILURE_LOG_MAX`] wait, later ones are counted.
#[derive(Default)]
pub struct FailureLog {
    state: Mutex<FailureLines>,
    cv: Condvar,
}

#[derive(Default)]
struct FailureLines {
    lines: VecDeque<String>,
    dropped: u64,
    closed: bool,
}

/// Lines a [`FailureLog`] holds before it only counts.
pub const FAILURE_LOG_MAX: usize = 1024;

impl FailureLog {
    fn push(&self, line: String) {
        let mut st = lock(&self.state);
        if st.lines.len() >= FAILURE_LOG_MAX {
            st.dropped += 1;
        } else {
            st.lines.push_back(line);
        }
        drop(st);
        self.cv.notify_all();
    }

    fn close(&self) {
        lock(&self.state).closed = true;
        self.cv.notify_all();
    }

    /// Block until failure lines are there (or `timeout` passes: `Some(vec![])`) and take
    /// them all; `None` once the engine is closed and every line was taken.
    pub fn take(&self, timeout: Option<Duration>) -> Option<Vec<String>> {
        let (mut st, found) = self.until_lines(timeout);
        match found? {
            false => Some(Vec::new()),
            true => {
                let mut out: Vec<String> = st.lines.drain(..).collect();
                if st.dropped > 0 {
                    out.push(format!("{} more failures were not logged", st.dropped));
                    st.dropped = 0;
                }
                Some(out)
            }
        }
    }

    /// Block until failure lines are there (`Some(true)`) or `timeout` passes
    /// (`Some(false)`), without taking them; `None` once closed and every line was taken.
    pub fn wait(&self, timeout: Option<Duration>) -> Option<bool> {
        self.until_lines(timeout).1
    }

    /// The state once lines are there (`Some(true)`), `timeout` passed (`Some(false)`) or
    /// the log is closed and empty (`None`).
    fn until_lines(
        &self,
        timeout: Option<Duration>,
    ) -> (MutexGuard<'_, FailureLines>, Option<bool>) {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = lock(&self.state);
        loop {
            if !st.lines.is_empty() || st.dropped > 0 {
                return (st, Some(true));
            }
            if st.closed {
                return (st, None);
            }
            st = match deadline {
                None => self.cv.wait(st).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return (st, Some(false));
                    }
                    self.cv
                        .wait_timeout(st, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }
}

/// Outcomes of token-carrying commits, handed out a batch at a time by
/// `Engine::take_completions`, so that a waiter resolves every commit of a batch in one
/// wake-up instead of one per commit.
#[derive(Default)]
struct Completions {
    items: Vec<(u64, Outcome)>,
    closed: bool,
}

/// How producers wake the persister. It sleeps (`park`) instead of blocking in the
/// channel's `recv`, because a blocked `recv` makes every `send` wake it: one system call
/// and one context switch per commit on the committing thread. Instead it states how many
/// queued messages it waits for (`want`), and a producer unparks it only when its message
/// brings the queue to that count (or is a flush or stop). `queued` and `want` are both
/// SeqCst, so either the persister sees the new message before it parks or the producer
/// sees the new `want` (no lost wake-up); a park after an unpark returns at once.
struct Doorbell {
    /// Messages sent and not yet taken (briefly -1 when the persister takes a message
    /// before its producer counted it).
    queued: AtomicI64,
    /// Queue length at which to wake the persister (`i64::MAX`: do not wake).
    want: AtomicI64,
}

/// Commits not yet written, by object key, in submission order: the read-your-writes
/// overlay. foldhash (hashbrown's default hasher) instead of SipHash: this map is
/// touched twice per commit with the lock held. Neither the key nor a lone commit's list
/// allocates: the key is the first listed commit's own `object_key` ([`PendingKey`]),
/// and one commit fits in the list inline.
type PendingMap = HashMap<PendingKey, SmallVec<[Arc<WriteRecord>; 1]>, foldhash::fast::RandomState>;

/// A pending map key: a commit, compared and hashed by its `object_key` (and looked up
/// by `&[u8]`). It is the first commit of its list; when that one is written while later
/// ones are pending, the entry is re-keyed by the next.
struct PendingKey(Arc<WriteRecord>);

impl PartialEq for PendingKey {
    fn eq(&self, other: &PendingKey) -> bool {
        self.0.object_key == other.0.object_key
    }
}

impl Eq for PendingKey {}

impl std::hash::Hash for PendingKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        // As `[u8]` hashes: lookups by `&[u8]` (Borrow) must find it.
        self.0.object_key.as_slice().hash(h);
    }
}

impl std::borrow::Borrow<[u8]> for PendingKey {
    fn borrow(&self) -> &[u8] {
        &self.0.object_key
    }
}

struct Shared<S> {
    doorbell: Doorbell,
    store: S,
    pending: Mutex<PendingMap>,
    stats: Mutex<Stats>,
    depth: AtomicI64,
    /// Bytes of entry values queued and not yet written (the throttled quantity).
    pending_bytes: AtomicI64,
    /// Held by a throttled submitter from its check to its wait, and by the persister
    /// before it signals `drained_cv`: no wake-up is lost.
    drained: Mutex<()>,
    drained_cv: Condvar,
    completions: Mutex<Completions>,
    completions_cv: Condvar,
    /// Called (from the persister) when completions arrive while `signaled` is false:
    /// wakes an event loop that watches a pipe (see [`Engine::set_notifier`]).
    notifier: OnceLock<Notifier>,
    /// Set when the notifier ran and nobody has taken completions since.
    signaled: AtomicBool,
    failures: Arc<FailureLog>,
}

/// See [`Engine::set_notifier`].
pub type Notifier = Box<dyn Fn() + Send + Sync>;

/// Batches commits from every object and persists them on a background thread, into a
/// [`Store`] (the LMDB store unless said otherwise).
pub struct Engine<S: Store = LmdbStore> {
    cfg: EngineConfig,
    shared: Arc<Shared<S>>,
    tx: Sender<Msg>,
    /// The persister thread, to unpark (`None`: an inline store, written in the caller's
    /// thread).
    persister: Option<std::thread::Thread>,
    /// Whether commits are written in the committing thread ([`Store::inline`]).
    inline: bool,
    thread: Mutex<Option<JoinHandle<()>>>,
    closed: AtomicBool,
    fork_generation: u64,
}

/// Forks this process has gone through, counted in the child by a `pthread_atfork`
/// handler: comparing it is how an engine knows it is in the process that started it,
/// without a `getpid()` system call per commit.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

#[cfg(unix)]
extern "C" fn count_fork_in_child() {
    // Async-signal-safe: one atomic add.
    FORK_GENERATION.fetch_add(1, Ordering::SeqCst);
}

#[cfg(unix)]
extern "C" {
    fn pthread_atfork(
        prepare: Option<extern "C" fn()>,
        parent: Option<extern "C" fn()>,
        child: Option<extern "C" fn()>,
    ) -> std::os::raw::c_int;
}

/// The current fork generation, registering the counting handler on first use. Refuses
/// (the engine then does not start) when the handler cannot be registered (ENOMEM):
/// without it a forked child could not tell that the engine is its parent's.
#[cfg(unix)]
fn fork_generation() -> Result<u64, StoreError> {
    static REGISTERED: OnceLock<std::os::raw::c_int> = OnceLock::new();
    let rc = *REGISTERED.get_or_init(|| {
        // SAFETY: registers a handler that only does an atomic add (async-signal-safe, as
        // POSIX requires of child handlers); the function lives as long as the process.
        unsafe { pthread_atfork(None, None, Some(count_fork_in_child)) }
    });
    if rc != 0 {
        return Err(StoreError(format!(
            "cannot register the fork handler (pthread_atfork: error {rc})"
        )));
    }
    Ok(FORK_GENERATION.load(Ordering::SeqCst))
}

/// Without `fork()` (Windows) an engine always runs in the process that started it.
#[cfg(not(unix))]
fn fork_generation() -> Result<u64, StoreError> {
    Ok(0)
}

impl<S: Store> Engine<S> {
    /// Start an engine over `store`: spawns the persister thread.
    pub fn start(store: S, cfg: EngineConfig) -> Result<Engine<S>, StoreError> {
        let generation = fork_generation()?;
        let shared = Arc::new(Shared {
            doorbell: Doorbell {
                queued: AtomicI64::new(0),
                want: AtomicI64::new(1),
            },
            store,
            pending: Mutex::new(PendingMap::default()),
            stats: Mutex::new(Stats::default()),
            depth: AtomicI64::new(0),
            pending_bytes: AtomicI64::new(0),
            drained: Mutex::new(()),
            drained_cv: Condvar::new(),
            completions: Mutex::new(Completions::default()),
            completions_cv: Condvar::new(),
            notifier: OnceLock::new(),
            signaled: AtomicBool::new(false),
            failures: Arc::default(),
        });
        let (tx, rx) = crossbeam_channel::unbounded();
        let inline = shared.store.inline();
        // An inline store needs no persister: with the receiver dropped, a flush or a
        // stop sent to it completes at once.
        let thread = if inline {
            None
        } else {
            let sh = Arc::clone(&shared);
            let c = cfg.clone();
            let t = std::thread::Builder::new()
                .name("oaas-persister".into())
                .spawn(move || persister(sh, rx, c))
                .map_err(|e| StoreError(format!("cannot start the persister thread: {e}")))?;
            Some(t)
        };
        Ok(Engine {
            cfg,
            shared,
            tx,
            persister: thread.as_ref().map(|t| t.thread().clone()),
            inline,
            thread: Mutex::new(thread),
            closed: AtomicBool::new(false),
            fork_generation: generation,
        })
    }

    pub fn store(&self) -> &S {
        &self.shared.store
    }

    /// The engine's [`FailureLog`]; closed (after its last lines) when the engine closes.
    pub fn failure_log(&self) -> Arc<FailureLog> {
        Arc::clone(&self.shared.failures)
    }

    /// Whether this process is the one that started the engine (false in a forked child,
    /// where the persister thread does not exist).
    pub fn is_owner(&self) -> bool {
        self.fork_generation == FORK_GENERATION.load(Ordering::Relaxed)
    }

    fn check_usable(&self) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError(format!(
                "{}: the engine is closed",
                self.shared.store.name()
            )));
        }
        if !self.is_owner() {
            return Err(StoreError(format!(
                "{}: the engine belongs to the parent process (fork); configure again",
                self.shared.store.name()
            )));
        }
        Ok(())
    }

    /// Send `msg` to the persister; wake it if this completes what it waits for (`urgent`:
    /// always, for flush and stop). `Err` when the persister is gone.
    fn send(&self, msg: Msg, urgent: bool) -> Result<(), ()> {
        self.tx.send(msg).map_err(|_| ())?;
        let bell = &self.shared.doorbell;
        let queued = bell.queued.fetch_add(1, Ordering::SeqCst) + 1;
        if urgent || queued >= bell.want.load(Ordering::SeqCst) {
            if let Some(p) = &self.persister {
                p.unpark();
            }
        }
        Ok(())
    }

    /// Queue one commit; its ticket completes per `durable`. A non-zero `token` also
    /// reports the commit's outcome through [`Engine::take_completions`] once it is written.
    pub fn submit(&self, record: WriteRecord, token: u64) -> Result<Ticket, StoreError> {
        self.queue(record, token, true)
            .map(|t| t.unwrap_or_else(Ticket::written))
    }

    /// Queue one commit whose outcome only its `token` reports (non-zero; see
    /// [`Engine::take_completions`]): no ticket is made or completed.
    pub fn submit_token(&self, record: WriteRecord, token: u64) -> Result<(), StoreError> {
        debug_assert!(token != 0, "a commit without a ticket needs a token");
        self.queue(record, token, false).map(drop)
    }

    /// Submit a commit whose writer takes its outcome at once: in an inline engine the
    /// outcome of its write; otherwise it is queued without a ticket and acknowledged
    /// (`Written`; with `durable: false` a later failure goes to the failure log).
    pub fn submit_acknowledged(&self, record: WriteRecord) -> Result<Outcome, StoreError> {
        if self.inline {
            self.check_usable()?;
            return Ok(self.write_now(&record, 0));
        }
        self.queue(record, 0, false).map(|_| Outcome::Written)
    }

    /// Whether commits are written in the committing thread ([`Store::inline`]): their
    /// tickets are complete when `submit` returns.
    pub fn is_inline(&self) -> bool {
        self.inline
    }

    /// An inline engine's write of one commit, in the calling thread: one batch of one
    /// record, counted in the stats as the persister counts its batches; a non-zero
    /// `token` reports the outcome through [`Engine::take_completions`] as well.
    fn write_now(&self, record: &WriteRecord, token: u64) -> Outcome {
        let sh = &self.shared;
        // The write's latency is sampled, one write in INLINE_TIMED per thread (the first
        // one included): an inline write (a memory store's) takes about as long as the
        // two clock reads that time it, and the stats' percentiles come out the same.
        thread_local! {
            static INLINE_WRITES: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
        }
        let n = INLINE_WRITES.with(|c| {
            let n = c.get();
            c.set(n.wrapping_add(1));
            n
        });
        let at = (n % INLINE_TIMED == 0).then(Instant::now);
        let outcome = match sh.store.write_one(record) {
            Ok(Ok(())) => Outcome::Written,
            Ok(Err(m)) => Outcome::Conflict(m),
            Err(e) => {
                sh.failures
                    .push(format!("batch of 1 commits failed: {}", e.0));
                Outcome::Storage(e.0)
            }
        };
        {
            let mut st = lock(&sh.stats);
            st.batches += 1;
            st.records_in_batches += 1;
            count(&mut st, record, &outcome, at.map(|at| (at, Instant::now())));
        }
        if token != 0 {
            complete_tokens(sh, vec![(token, outcome.clone())]);
        }
        outcome
    }

    /// `submit` / `submit_token`: the ticket (`None` when `ticket` is false).
    fn queue(
        &self,
        record: WriteRecord,
        token: u64,
        ticket: bool,
    ) -> Result<Option<Ticket>, StoreError> {
        self.check_usable()?;
        if self.inline {
            let outcome = self.write_now(&record, token);
            return Ok(ticket.then(|| match outcome {
                Outcome::Written => Ticket::written(),
                other => Ticket::completed(other),
            }));
        }
        let record = Arc::new(record);
        {
            let mut pending = lock(&self.shared.pending);
            match pending.get_mut(record.object_key.as_slice()) {
                Some(list) => list.push(Arc::clone(&record)),
                None => {
                    let list = smallvec![Arc::clone(&record)];
                    pending.insert(PendingKey(Arc::clone(&record)), list);
                }
            }
        }
        self.shared.depth.fetch_add(1, Ordering::Relaxed);
        self.shared
            .pending_bytes
            .fetch_add(record.nbytes() as i64, Ordering::Relaxed);
        let (ack, waited) = if !ticket {
            (None, None)
        } else if self.cfg.durable {
            let t = Ticket::new();
            (Some(t.clone()), Some(t))
        } else {
            (Some(Ticket::written()), None)
        };
        if self
            .send(Msg::Commit((record, waited, Instant::now(), token)), false)
            .is_err()
        {
            return Err(StoreError(format!(
                "{}: the persister stopped",
                self.shared.store.name()
            )));
        }
        Ok(ack)
    }

    /// The object as committed through this engine: store state plus pending commits.
    pub fn read(
        &self,
        object_key: &[u8],
        what: &dyn std::fmt::Display,
    ) -> Result<Option<StoredObject>, StoreError> {
        let mut stored = self.shared.store.read(object_key, what)?;
        if self.inline {
            return Ok(stored); // nothing is ever pending
        }
        let pending: Vec<Arc<WriteRecord>> = lock(&self.shared.pending)
            .get(object_key)
            .map(|list| list.to_vec())
            .unwrap_or_default();
        for r in pending {
            let found = stored.as_ref().map_or(0, |s| s.meta.version);
            if found != r.expected_version {
                continue; // already in `stored`, or bound to conflict
            }
            if r.delete_object {
                stored = None;
            } else if let Some(s) = stored.as_mut() {
                s.apply(&r);
            } else {
                stored = Some(StoredObject {
                    meta: crate::store::layout::Meta {
                        version: 1,
                        created_ms: r.time_ms,
                        updated_ms: r.time_ms,
                    },
                    entries: r.entries.to_vec(),
                });
            }
        }
        Ok(stored)
    }

    /// A ticket that completes once every commit submitted so far is written (or failed).
    pub fn flush_ticket(&self) -> Ticket {
        let t = Ticket::new();
        if !self.is_owner() || self.send(Msg::Flush(t.clone()), true).is_err() {
            t.complete(Outcome::Written);
        }
        t
    }

    /// Write everything queued, then stop the persister. Idempotent.
    pub fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) || !self.is_owner() {
            return;
        }
        let _ = self.send(Msg::Stop, true);
        if let Some(h) = lock(&self.thread).take() {
            let _ = h.join();
        }
        lock(&self.shared.completions).closed = true;
        self.shared.completions_cv.notify_all();
        self.shared.failures.close();
    }

    /// Block until token-carrying commits have completed, and take their outcomes (all
    /// of them, typically one batch). `Some(vec![])` when `timeout` passes first; `None`
    /// once the engine is closed and everything was handed out.
    pub fn take_completions(&self, timeout: Option<Duration>) -> Option<Vec<(u64, Outcome)>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut c = lock(&self.shared.completions);
        loop {
            if !c.items.is_empty() {
                // Re-arm the notifier too: a loop watching it must hear of later batches.
                self.shared.signaled.store(false, Ordering::SeqCst);
                return Some(std::mem::take(&mut c.items));
            }
            if c.closed {
                return None;
            }
            c = match deadline {
                None => self
                    .shared
                    .completions_cv
                    .wait(c)
                    .unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Some(Vec::new());
                    }
                    self.shared
                        .completions_cv
                        .wait_timeout(c, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }

    /// Install `notify`, run by the persister when token-carrying commits complete and
    /// nobody has taken completions since it last ran (at most one call per
    /// [`Engine::take_ready`]): an event loop watching a pipe that `notify` writes to
    /// then takes them with `take_ready` on its own thread, with no thread in between.
    /// Only the first notifier installed is kept; `false` when one was already set.
    pub fn set_notifier(&self, notify: Notifier) -> bool {
        self.shared.notifier.set(notify).is_ok()
    }

    /// The completions available now, without blocking (see [`Engine::set_notifier`]).
    pub fn take_ready(&self) -> Vec<(u64, Outcome)> {
        // Re-arm first: completions pushed after this store will notify again, and those
        // pushed before it are taken below.
        self.shared.signaled.store(false, Ordering::SeqCst);
        std::mem::take(&mut lock(&self.shared.completions).items)
    }

    /// Whether a submission now would be throttled: the unwritten bytes exceed
    /// `pending_max_bytes` (a cheap check before releasing the GIL for [`Engine::throttle`]).
    pub fn over_pending_limit(&self) -> bool {
        let limit = self.cfg.pending_max_bytes;
        limit > 0 && self.shared.pending_bytes.load(Ordering::Relaxed) > limit as i64
    }

    /// Write throttling (the idea of the kernel's dirty-page throttling): a writer that
    /// finds the unwritten bytes over `pending_max_bytes` calls this once, then
    /// [`Engine::wait_drained`] until it returns `true`, so that write-back
    /// (`durability="async"`) cannot queue more than that while the store is slower than
    /// the writers. Counts the wait in `Stats::write_throttles` and closes the open batch
    /// (a flush marker) so that the writer does not wait out `batch_max_delay`.
    pub fn begin_throttle(&self) {
        lock(&self.shared.stats).write_throttles += 1;
        let _nudge = self.flush_ticket();
    }

    /// Block up to `max_wait` until the unwritten bytes are at most `pending_max_bytes`:
    /// `true` once they are, or when the engine is closed, not owned (forked) or its
    /// persister is gone; `false` when `max_wait` passed first (the caller checks for
    /// signals and waits again).
    pub fn wait_drained(&self, max_wait: Duration) -> bool {
        let deadline = Instant::now() + max_wait;
        let mut guard = lock(&self.shared.drained);
        loop {
            let usable = !self.closed.load(Ordering::Acquire)
                && self.is_owner()
                && lock(&self.thread)
                    .as_ref()
                    .is_some_and(|t| !t.is_finished());
            if !self.over_pending_limit() || !usable {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            // Progress is signalled; the timeout bounds the wait for the caller.
            guard = match self.shared.drained_cv.wait_timeout(guard, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// Bytes of entry values queued and not yet written.
    pub fn pending_bytes(&self) -> i64 {
        self.shared.pending_bytes.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> (Stats, i64) {
        (
            lock(&self.shared.stats).clone(),
            self.shared.depth.load(Ordering::Relaxed),
        )
    }
}

impl<S: Store> Drop for Engine<S> {
    fn drop(&mut self) {
        if self.is_owner() {
            self.close();
        }
    }
}

/// What [`next_msg`] found.
enum Next {
    Msg(Msg),
    /// The deadline passed first.
    Timeout,
    /// Every sender is gone.
    Closed,
}

/// The next message if one is queued (`Next::Timeout` when none is).
fn try_msg(bell: &Doorbell, rx: &Receiver<Msg>) -> Next {
    match rx.try_recv() {
        Ok(m) => {
            bell.queued.fetch_sub(1, Ordering::SeqCst);
            Next::Msg(m)
        }
        Err(TryRecvError::Empty) => Next::Timeout,
        Err(TryRecvError::Disconnected) => Next::Closed,
    }
}

/// The next message: at once when one is queued, else park until `want` messages are
/// queued (or a flush or stop arrives) or `deadline` passes. See [`Doorbell`].
fn next_msg(bell: &Doorbell, rx: &Receiver<Msg>, want: usize, deadline: Option<Instant>) -> Next {
    let want = i64::try_from(want.max(1)).unwrap_or(i64::MAX);
    loop {
        match try_msg(bell, rx) {
            Next::Timeout => {}
            taken => return taken,
        }
        bell.want.store(want, Ordering::SeqCst);
        if bell.queued.load(Ordering::SeqCst) >= want {
            continue; // sent, and counted, after try_recv looked
        }
        match deadline {
            None => std::thread::park(),
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return Next::Timeout;
                }
                std::thread::park_timeout(d - now);
            }
        }
        bell.want.store(i64::MAX, Ordering::SeqCst);
    }
}

fn persister<S: Store>(sh: Arc<Shared<S>>, rx: Receiver<Msg>, cfg: EngineConfig) {
    let mut stop = false;
    // Wait `batch_max_delay` for more commits only when the last batch had company, and
    // only until as many commits as it had are in (its committers are back): a lone
    // committer, or a group that has all come back, would otherwise pay the delay on
    // every commit for nothing (the idea of PostgreSQL's commit_delay / commit_siblings).
    // With `durable: false` nobody waits for the batch, so it always collects for
    // `batch_max_delay` (or up to `batch_max_entries`): one wake-up per batch instead of
    // one per commit. What is already queued always joins the batch.
    // The batch's window runs from its first commit's submission, not from when the
    // persister takes it: a commit that queued while the last batch was being written
    // has waited already, and a batch whose window has passed is written at once with
    // what is queued (with hundreds of committers this keeps the event loop's thread
    // busy while a batch is written: measured, docs/engine.md).
    let bell = &sh.doorbell;
    let mut last_batch_len = 0usize;
    while !stop {
        let first = match next_msg(bell, &rx, 1, None) {
            Next::Msg(Msg::Stop) | Next::Closed | Next::Timeout => break,
            Next::Msg(m) => m,
        };
        let mut batch: Vec<Queued> = Vec::new();
        let mut markers: Vec<Ticket> = Vec::new();
        let mut n = 0usize;
        match first {
            Msg::Commit(q) => {
                n += q.0.entries.len();
                let first_submitted = q.2;
                batch.push(q);
                let (target, delay) = if !cfg.durable {
                    (usize::MAX, cfg.batch_max_delay)
                } else if last_batch_len > 1 {
                    (last_batch_len, cfg.batch_max_delay)
                } else {
                    (0, Duration::ZERO)
                };
                let deadline = first_submitted + delay;
                while n < cfg.batch_max_entries {
                    let next = if batch.len() >= target {
                        try_msg(bell, &rx)
                    } else {
                        // Wake when the batch would be full: the commits it waits for, at
                        // most what fits under `batch_max_entries` (in records, >= 1).
                        let want = (target - batch.len()).min(cfg.batch_max_entries - n);
                        next_msg(bell, &rx, want, Some(deadline))
                    };
                    match next {
                        Next::Msg(Msg::Commit(q)) => {
                            n += q.0.entries.len();
                            batch.push(q);
                        }
                        Next::Msg(Msg::Flush(t)) => {
                            markers.push(t);
                            break;
                        }
                        Next::Msg(Msg::Stop) | Next::Closed => {
                            stop = true;
                            break;
                        }
                        Next::Timeout => break,
                    }
                }
            }
            Msg::Flush(t) => markers.push(t),
            Msg::Stop => stop = true,
        }
        last_batch_len = batch.len();
        write_batch(&sh, batch);
        for m in markers {
            m.complete(Outcome::Written);
        }
    }
    // Stop arrives after every earlier message: anything still queued came later.
    while let Ok(m) = rx.try_recv() {
        match m {
            Msg::Commit(q) => write_batch(&sh, vec![q]),
            Msg::Flush(t) => t.complete(Outcome::Written),
            Msg::Stop => {}
        }
    }
}

/// Count one written or refused commit, submitted at `at` and done at `now`, in the stats.
/// `timed`: when it was submitted and when done (`None`: its latency is not sampled).
fn count(st: &mut Stats, r: &WriteRecord, res: &Outcome, timed: Option<(Instant, Instant)>) {
    match res {
        Outcome::Written => {
            st.commits += 1;
            st.entries_written += r.entries.len() as u64;
            st.bytes_written += r.nbytes() as u64;
            if let Some((at, now)) = timed {
                if st.latencies_us.len() == LATENCY_WINDOW {
                    st.latencies_us.pop_front();
                }
                st.latencies_us
                    .push_back(now.duration_since(at).as_secs_f64() * 1e6);
            }
        }
        Outcome::Conflict(m) | Outcome::Storage(m) => {
            st.failed_commits += 1;
            st.last_error = Some(m.clone());
        }
    }
}

/// Hand the outcomes of token-carrying commits to [`Engine::take_completions`] and run
/// the notifier unless it ran and nobody has taken completions since.
fn complete_tokens<S: Store>(sh: &Shared<S>, done: Vec<(u64, Outcome)>) {
    lock(&sh.completions).items.extend(done);
    sh.completions_cv.notify_all();
    if let Some(notify) = sh.notifier.get() {
        if !sh.signaled.swap(true, Ordering::SeqCst) {
            notify();
        }
    }
}

fn write_batch<S: Store>(sh: &Shared<S>, batch: Vec<Queued>) {
    if batch.is_empty() {
        return;
    }
    let records: Vec<&WriteRecord> = batch.iter().map(|(r, _, _, _)| r.as_ref()).collect();
    let results: Vec<Outcome> = match sh.store.write_batch(&records) {
        Ok(rs) => rs
            .into_iter()
            .map(|r| match r {
                Ok(()) => Outcome::Written,
                Err(m) => Outcome::Conflict(m),
            })
            .collect(),
        Err(e) => {
            sh.failures
                .push(format!("batch of {} commits failed: {}", batch.len(), e.0));
            vec![Outcome::Storage(e.0); batch.len()]
        }
    };
    {
        let mut pending = lock(&sh.pending);
        for (r, _, _, _) in &batch {
            let key = r.object_key.as_slice();
            let Some(list) = pending.get_mut(key) else {
                continue;
            };
            if let Some(i) = list.iter().position(|x| Arc::ptr_eq(x, r)) {
                list.remove(i);
            }
            if list.is_empty() {
                pending.remove(key);
            } else if pending
                .get_key_value(key)
                .is_some_and(|(k, _)| Arc::ptr_eq(&k.0, r))
            {
                // The key's own commit is written: re-key by one still pending, so the
                // key does not keep a written commit alive.
                if let Some((old_key, list)) = pending.remove_entry(key) {
                    let next = list.first().map_or(old_key, |f| PendingKey(Arc::clone(f)));
                    pending.insert(next, list);
                }
            }
        }
    }
    sh.depth.fetch_sub(batch.len() as i64, Ordering::Relaxed);
    let written: usize = batch.iter().map(|(r, _, _, _)| r.nbytes()).sum();
    sh.pending_bytes
        .fetch_sub(written as i64, Ordering::Relaxed);
    drop(lock(&sh.drained)); // a throttled submitter is now waiting, or will see the bytes
    sh.drained_cv.notify_all();
    let now = Instant::now();
    {
        let mut st = lock(&sh.stats);
        st.batches += 1;
        st.records_in_batches += batch.len() as u64;
        for ((r, t, at, tok), res) in batch.iter().zip(&results) {
            count(&mut st, r, res, Some((*at, now)));
            if let Outcome::Conflict(m) | Outcome::Storage(m) = res {
                if t.is_none() && *tok == 0 {
                    // Acknowledged at submit (write-back): nobody else learns of it.
                    sh.failures.push(format!(
                        "write-back of {} failed after acknowledgement: {m}",
                        r.identity
                    ));
                }
            }
        }
    }
    // Token outcomes first, then tickets: whoever a ticket wakes can count on the
    // completions (and their notification) of the same batch being there.
    let done: Vec<(u64, Outcome)> = batch
        .iter()
        .zip(&results)
        .filter(|((_, _, _, tok), _)| *tok != 0)
        .map(|((_, _, _, tok), res)| (*tok, res.clone()))
        .collect();
    if !done.is_empty() {
        complete_tokens(sh, done);
    }
    for ((_, t, _, _), res) in batch.into_iter().zip(results) {
        if let Some(t) = t {
            t.complete(res);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{Identity, ObjectId};

    fn rec(oid: u64, expected: u64, v: &[u8]) -> WriteRecord {
        let id = Identity {
            cls_id: "t.C".into(),
            partition_id: 0,
            object_id: ObjectId::Num(oid),
        };
        let mut r = WriteRecord::new(id, expected, 5);
        r.entries.push("x", v);
        r
    }

    fn engine(dir: &std::path::Path, durable: bool) -> Engine {
        let store = LmdbStore::open(dir, 1 << 20, 1 << 24).expect("open");
        let cfg = EngineConfig {
            durable,
            batch_max_entries: 64,
            batch_max_delay: Duration::from_millis(2),
            pending_max_bytes: 0,
        };
        Engine::start(store, cfg).expect("start")
    }

    #[test]
    fn concurrent_commits_share_batches_and_conflicts_stay_per_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = Arc::new(engine(dir.path(), true));
        let handles: Vec<_> = (0..8u64)
            .map(|i| {
                let e = Arc::clone(&e);
                std::thread::spawn(move || {
                    for v in 0..20u64 {
                        let t = e.submit(rec(i, v, &v.to_be_bytes()), 0).expect("submit");
                        assert_eq!(t.wait(None), Some(Outcome::Written));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("join");
        }
        let stale = e.submit(rec(0, 3, b"stale"), 0).expect("submit");
        assert!(matches!(stale.wait(None), Some(Outcome::Conflict(m)) if m.contains("t.C/0/0")));
        let (st, depth) = e.stats();
        assert_eq!((st.commits, st.failed_commits, depth), (160, 1, 0));
        let got = e
            .read(&rec(3, 0, b"").object_key, &"o")
            .expect("read")
            .expect("present");
        assert_eq!(got.meta.version, 20);
    }

    #[test]
    fn failures_nobody_waits_for_reach_the_failure_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let durable = engine(dir.path(), true);
        let log = durable.failure_log();
        let t = durable.submit(rec(1, 5, b"x"), 0).expect("submit");
        assert!(matches!(t.wait(None), Some(Outcome::Conflict(_))));
        // The writer was told: nothing to log.
        assert_eq!(log.take(Some(Duration::ZERO)), Some(Vec::new()));
        durable.close();
        assert_eq!(log.take(None), None);

        let e = engine(dir.path(), false);
        let log = e.failure_log();
        let t = e.submit(rec(2, 7, b"x"), 0).expect("submit");
        assert_eq!(t.outcome(), Some(Outcome::Written)); // acknowledged at submit
        e.flush_ticket().wait(None);
        assert_eq!(log.wait(Some(Duration::ZERO)), Some(true));
        let lines = log.take(Some(Duration::ZERO)).expect("open");
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].starts_with("write-back of t.C/0/2 failed after acknowledgement:"));
        assert_eq!(log.wait(Some(Duration::ZERO)), Some(false));
        e.close();
        assert_eq!(log.wait(None), None);
        assert_eq!(log.take(None), None);
    }

    #[test]
    fn write_back_reads_its_own_writes_and_close_flushes() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let e = engine(dir.path(), false);
            for v in 0..50u64 {
                let t = e.submit(rec(1, v, &v.to_be_bytes()), 0).expect("submit");
                assert_eq!(t.outcome(), Some(Outcome::Written));
                let seen = e
                    .read(&rec(1, 0, b"").object_key, &"o")
                    .expect("read")
                    .expect("present");
                assert_eq!(seen.meta.version, v + 1);
            }
            e.close();
        }
        let e = engine(dir.path(), true);
        let got = e
            .read(&rec(1, 0, b"").object_key, &"o")
            .expect("read")
            .expect("present");
        assert_eq!(got.entries[0].1, 49u64.to_be_bytes().to_vec());
    }

    #[test]
    fn completions_report_token_outcomes_per_batch_and_end_at_close() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = engine(dir.path(), true);
        let tickets: Vec<Ticket> = (1..=20u64)
            .map(|i| e.submit(rec(i, 0, b"v"), i).expect("submit"))
            .collect();
        let stale = e.submit(rec(1, 0, b"again"), 99).expect("submit");
        let mut seen = Vec::new();
        while seen.len() < 21 {
            let got = e
                .take_completions(Some(Duration::from_secs(10)))
                .expect("engine open");
            assert!(!got.is_empty(), "timed out waiting for completions");
            seen.extend(got);
        }
        seen.sort_by_key(|(t, _)| *t);
        assert!(seen[..20].iter().all(|(_, o)| *o == Outcome::Written));
        assert!(matches!(seen[20], (99, Outcome::Conflict(_))));
        // Tickets complete right after their batch's completions are queued.
        let limit = Some(Duration::from_secs(10));
        assert!(tickets
            .iter()
            .all(|t| t.wait(limit) == Some(Outcome::Written)));
        assert!(matches!(stale.wait(limit), Some(Outcome::Conflict(_))));
        e.close();
        assert_eq!(e.take_completions(None), None);
    }

    fn engine_with(dir: &std::path::Path, durable: bool, delay: Duration) -> Engine {
        let store = LmdbStore::open(dir, 1 << 20, 1 << 24).expect("open");
        let cfg = EngineConfig {
            durable,
            batch_max_entries: 4096,
            batch_max_delay: delay,
            pending_max_bytes: 0,
        };
        Engine::start(store, cfg).expect("start")
    }

    #[test]
    fn write_back_collects_a_whole_window_per_batch() {
        // durability "async": producers never wake the persister before the window ends,
        // so commits queued within it share one batch (a flush closes it early).
        let dir = tempfile::tempdir().expect("tempdir");
        let e = engine_with(dir.path(), false, Duration::from_secs(30));
        for i in 0..200u64 {
            e.submit(rec(i, 0, b"v"), 0).expect("submit");
        }
        assert!(
            e.flush_ticket()
                .wait(Some(Duration::from_secs(20)))
                .is_some(),
            "flush must close the window early"
        );
        let (st, depth) = e.stats();
        assert_eq!((st.commits, depth), (200, 0));
        assert_eq!(st.batches, 1, "one batch for the whole window");
        e.close();
    }

    #[test]
    fn the_overlay_keeps_later_commits_when_the_first_is_written() {
        // durability "async", a 30 s window: v0 is written by the flush's batch while v1
        // and v2 of the same object stay pending (the pending entry is re-keyed by v1).
        let dir = tempfile::tempdir().expect("tempdir");
        let e = engine_with(dir.path(), false, Duration::from_secs(30));
        e.submit(rec(1, 0, b"v0"), 0).expect("submit");
        let flushed = e.flush_ticket();
        e.submit(rec(1, 1, b"v1"), 0).expect("submit");
        e.submit(rec(1, 2, b"v2"), 0).expect("submit");
        assert!(flushed.wait(Some(Duration::from_secs(20))).is_some());
        let key = rec(1, 0, b"").object_key;
        {
            let pending = lock(&e.shared.pending);
            let (k, list) = pending
                .get_key_value(key.as_slice())
                .expect("still pending");
            let versions: Vec<u64> = list.iter().map(|r| r.expected_version).collect();
            assert_eq!(versions, vec![1, 2]);
            assert!(Arc::ptr_eq(&k.0, &list[0]), "keyed by a pending commit");
        }
        let got = e.read(&key, &"o").expect("read").expect("present");
        assert_eq!(
            (got.meta.version, got.entries[0].1.as_slice()),
            (3, &b"v2"[..])
        );
        e.close();
        assert!(lock(&e.shared.pending).is_empty());
        let stored = engine(dir.path(), true).read(&key, &"o").expect("read");
        assert_eq!(stored.expect("present").meta.version, 3);
    }

    #[test]
    fn a_lone_durable_committer_does_not_wait_for_the_window() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = engine_with(dir.path(), true, Duration::from_secs(60));
        for v in 0..5u64 {
            let t = e.submit(rec(1, v, b"v"), 0).expect("submit");
            // far below the 60 s window: a lone commit is written at once
            assert_eq!(
                t.wait(Some(Duration::from_secs(20))),
                Some(Outcome::Written)
            );
        }
        e.close();
    }

    #[test]
    fn an_inline_store_is_written_in_the_committing_thread() {
        use crate::store::memory::MemoryStore;
        let cfg = EngineConfig {
            durable: true,
            batch_max_entries: 64,
            batch_max_delay: Duration::from_secs(60),
            pending_max_bytes: 1,
        };
        let e = Engine::start(MemoryStore::new(), cfg).expect("start");
        assert!(e.is_inline());
        assert!(lock(&e.thread).is_none(), "no persister thread");
        for v in 0..3u64 {
            // Complete when submit returns, far below the 60 s window.
            let t = e.submit(rec(1, v, &v.to_be_bytes()), 0).expect("submit");
            assert_eq!(t.outcome(), Some(Outcome::Written));
        }
        let stale = e.submit(rec(1, 1, b"stale"), 0).expect("submit");
        assert!(matches!(stale.outcome(), Some(Outcome::Conflict(m)) if m.contains("t.C/0/1")));
        assert!(matches!(
            e.submit_acknowledged(rec(1, 0, b"again")),
            Ok(Outcome::Conflict(_))
        ));
        assert_eq!(e.submit_acknowledged(rec(2, 0, b"x")), Ok(Outcome::Written));
        e.submit_token(rec(3, 0, b"x"), 7).expect("submit");
        assert_eq!(e.take_ready(), vec![(7, Outcome::Written)]);
        // Nothing is pending, nothing throttled, a flush has nothing to wait for.
        assert!(!e.over_pending_limit() && e.pending_bytes() == 0);
        assert_eq!(
            e.flush_ticket().wait(Some(Duration::from_secs(5))),
            Some(Outcome::Written)
        );
        let got = e
            .read(&rec(1, 0, b"").object_key, &"o")
            .expect("read")
            .expect("present");
        assert_eq!(
            (got.meta.version, got.entries[0].1.as_slice()),
            (3, &2u64.to_be_bytes()[..])
        );
        let (st, depth) = e.stats();
        assert_eq!(
            (st.commits, st.failed_commits, st.batches, depth),
            (5, 2, 7, 0)
        );
        // Refusals were told to their writers: nothing for the failure log.
        let log = e.failure_log();
        e.close();
        assert_eq!(log.take(None), None);
        assert!(e.submit(rec(4, 0, b"x"), 0).is_err(), "closed");
        assert_eq!(e.take_completions(None), None);
    }

    #[test]
    fn the_notifier_runs_once_until_completions_are_taken() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = engine(dir.path(), true);
        let calls = Arc::new(AtomicU64::new(0));
        let c = Arc::clone(&calls);
        assert!(e.set_notifier(Box::new(move || {
            c.fetch_add(1, Ordering::SeqCst);
        })));
        assert!(
            !e.set_notifier(Box::new(|| {})),
            "only the first notifier is kept"
        );
        for v in 0..3u64 {
            // three batches, nobody takes: one notification
            e.submit(rec(1, v, b"v"), 1 + v).expect("submit").wait(None);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let got = e.take_ready();
        assert_eq!(got.len(), 3);
        e.submit(rec(1, 3, b"v"), 9).expect("submit").wait(None);
        assert_eq!(calls.load(Ordering::SeqCst), 2, "re-armed by take_ready");
        assert_eq!(e.take_ready(), vec![(9, Outcome::Written)]);
        assert!(e.take_ready().is_empty());
        e.close();
    }
}
