//! `CommitFuture`: the awaitable of a durable one-call commit (`commit_async` on the
//! native engine), resolved by the engine on its event loop's thread.
//!
//! It speaks asyncio's future protocol, as `asyncio.Future` defines it (Lib/asyncio/
//! futures.py): `_asyncio_future_blocking`, `get_loop`, `done`, `cancelled`, `result`,
//! `exception`, `cancel`, `add_done_callback(fn, *, context=None)`,
//! `remove_done_callback`, and `__await__`; so `await`, `asyncio.gather`, `wait_for`,
//! `shield` and `ensure_future` take it as they take a future. It also speaks the
//! coroutine protocol (`send`, `throw`, `close`), as every awaitable `commit_async`
//! returns does: `asyncio.run` and `asyncio.create_task(obj.commit_async())` work, as they
//! do where `commit_async` is an `async def` (oaas-sdk2-py); and, as for a coroutine,
//! `asyncio.wait` wants tasks of it.
//!
//! The difference from `asyncio.Future` is what resolution costs. asyncio schedules each
//! done-callback with `loop.call_soon` (a Python `Handle` per callback, run by the next
//! loop iteration); the engine resolves a whole batch from a callback of the loop itself
//! (`take_ready`, the reader of its completion socket, where no task is running), so it
//! calls the callbacks (the awaiting tasks' wake-ups) there and then, in their contexts.
//! Everywhere else (a `cancel`, a callback added to a done future, a batch resolved while
//! a task is running) callbacks go through `call_soon` as asyncio's do.

use pyo3::exceptions::{PyBaseException, PyException, PyStopIteration};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyType};
use pyo3::{PyTraverseError, PyVisit};

enum State {
    Pending,
    /// Resolved: `None` for success, else the exception it fails with.
    Done(Option<Py<PyAny>>),
    /// Cancelled, with `cancel`'s message.
    Cancelled(Option<Py<PyAny>>),
}

/// The future of one durable commit (see the module comment). Made by the engine; not
/// constructible from Python.
#[pyclass(module = "oaas_sdk._native", name = "CommitFuture")]
pub struct CommitFuture {
    event_loop: Py<PyAny>,
    state: State,
    callbacks: Callbacks,
    blocking: bool,
}

/// Done-callbacks and their `contextvars.Context` (None: the current one).
pub(crate) type Callbacks = Vec<(Py<PyAny>, Option<Py<PyAny>>)>;

/// `asyncio.CancelledError` / `asyncio.InvalidStateError`.
fn asyncio_error<'py>(py: Python<'py>, name: &'static str) -> PyResult<Bound<'py, PyType>> {
    static CANCELLED: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    static INVALID: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    let cell = if name == "CancelledError" {
        &CANCELLED
    } else {
        &INVALID
    };
    cell.import(py, "asyncio.exceptions", name).cloned()
}

/// The error a cancelled future raises: `CancelledError(msg)` (no argument without one).
fn cancelled_err(py: Python<'_>, msg: Option<&Py<PyAny>>) -> PyErr {
    match asyncio_error(py, "CancelledError") {
        Ok(t) => {
            let made = match msg {
                Some(m) => t.call1((m,)),
                None => t.call0(),
            };
            match made {
                Ok(e) => PyErr::from_value(e),
                Err(e) => e,
            }
        }
        Err(e) => e,
    }
}

/// Raises the error it holds when called: re-raises, from a `call_soon` handle (whose
/// `_run` lets `KeyboardInterrupt` / `SystemExit` through), an exception of that kind that
/// a callback run directly by [`CommitFuture::resolve`] raised.
#[pyclass(module = "oaas_sdk._native", frozen)]
struct Reraise {
    err: std::sync::Mutex<Option<PyErr>>,
}

#[pymethods]
impl Reraise {
    fn __call__(&self) -> PyResult<()> {
        match self.err.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl CommitFuture {
    /// A pending future of `event_loop`.
    pub fn new(event_loop: Py<PyAny>) -> CommitFuture {
        CommitFuture {
            event_loop,
            state: State::Pending,
            callbacks: Vec::new(),
            blocking: false,
        }
    }

    pub fn is_pending(&self) -> bool {
        matches!(self.state, State::Pending)
    }

    /// Resolve a pending future (a done one is left alone): with success, or failed with
    /// `error` (an exception instance). `direct`: run the done-callbacks now, each in its
    /// context; only from a callback of the future's loop on its thread with no task
    /// running (they are tasks' wake-ups, which run the task). An `Exception` a callback
    /// raises goes to the loop's exception handler, as `Handle._run` does; any other
    /// (`KeyboardInterrupt`, `SystemExit`) is raised again from a `call_soon` handle once
    /// every callback has run. Not `direct`: each callback through `loop.call_soon`.
    pub fn resolve(slf: &Bound<'_, CommitFuture>, error: Option<Py<PyAny>>, direct: bool) {
        if let Some(done) = CommitFuture::set_done(slf, error) {
            CommitFuture::run_callbacks(slf, done, direct);
        }
    }

    /// The first half of [`Self::resolve`]: the future is done (with success, or failed
    /// with `error`) and its done-callbacks and loop are returned, to be run by
    /// [`Self::run_callbacks`]; `None` when it was done already. A batch's futures are
    /// all set done before any of their callbacks runs, as asyncio's `call_soon` would
    /// order it: a task awaiting several of them in turn (`commit_all_async`) then finds
    /// the next one done instead of suspending once per future.
    pub fn set_done(
        slf: &Bound<'_, CommitFuture>,
        error: Option<Py<PyAny>>,
    ) -> Option<(Callbacks, Py<PyAny>)> {
        CommitFuture::finish(slf, State::Done(error))
    }

    /// The second half of [`Self::resolve`]: run (`direct`) or schedule the callbacks
    /// [`Self::set_done`] returned.
    pub fn run_callbacks(
        slf: &Bound<'_, CommitFuture>,
        (callbacks, event_loop): (Callbacks, Py<PyAny>),
        direct: bool,
    ) {
        let py = slf.py();
        let event_loop = event_loop.bind(py);
        if !direct {
            for (cb, ctx) in callbacks {
                if let Err(e) = call_soon(event_loop, &cb, slf.as_any(), ctx.as_ref()) {
                    e.write_unraisable(py, Some(slf.as_any()));
                }
            }
            return;
        }
        let mut fatal: Option<PyErr> = None;
        for (cb, ctx) in callbacks {
            let ran = match &ctx {
                Some(c) => c.bind(py).call_method1(intern!(py, "run"), (&cb, slf)),
                None => cb.bind(py).call1((slf,)),
            };
            let Err(e) = ran else { continue };
            if e.is_instance_of::<PyException>(py) {
                let report = PyDict::new(py);
                let reported = report
                    .set_item("message", "Exception in a commit future's callback")
                    .and_then(|()| report.set_item("exception", e.value(py)))
                    .and_then(|()| report.set_item("future", slf))
                    .and_then(|()| {
                        event_loop.call_method1(intern!(py, "call_exception_handler"), (report,))
                    });
                if let Err(u) = reported {
                    u.write_unraisable(py, Some(slf.as_any()));
                }
            } else if fatal.is_none() {
                fatal = Some(e);
            }
        }
        if let Some(e) = fatal {
            let again = Reraise {
                err: std::sync::Mutex::new(Some(e)),
            };
            let scheduled = Bound::new(py, again)
                .and_then(|r| event_loop.call_method1(intern!(py, "call_soon"), (r,)));
            if let Err(u) = scheduled {
                u.write_unraisable(py, Some(slf.as_any()));
            }
        }
    }

    /// Leave the pending state for `state`: the callbacks to run and the loop, or `None`
    /// when the future is done already.
    fn finish(slf: &Bound<'_, CommitFuture>, state: State) -> Option<(Callbacks, Py<PyAny>)> {
        let mut me = slf.borrow_mut();
        if !me.is_pending() {
            return None;
        }
        me.state = state;
        Some((
            std::mem::take(&mut me.callbacks),
            me.event_loop.clone_ref(slf.py()),
        ))
    }

    /// One step of `await` / `send`: the future itself while pending (the awaiting task
    /// then waits on it), else its outcome raised (`StopIteration` for success).
    fn step(slf: &Bound<'_, CommitFuture>) -> PyResult<Py<PyAny>> {
        let mut me = slf.borrow_mut();
        if me.is_pending() {
            me.blocking = true;
            return Ok(slf.clone().into_any().unbind());
        }
        me.result(slf.py())?;
        Err(PyStopIteration::new_err(()))
    }
}

/// `loop.call_soon(cb, fut, context=ctx)`.
fn call_soon(
    event_loop: &Bound<'_, PyAny>,
    cb: &Py<PyAny>,
    fut: &Bound<'_, PyAny>,
    ctx: Option<&Py<PyAny>>,
) -> PyResult<()> {
    let py = event_loop.py();
    let kw = PyDict::new(py);
    if let Some(c) = ctx {
        kw.set_item(intern!(py, "context"), c)?;
    }
    event_loop
        .getattr(intern!(py, "call_soon"))?
        .call((cb, fut), Some(&kw))
        .map(drop)
}

#[pymethods]
impl CommitFuture {
    /// asyncio's marker of future-like objects (`asyncio.isfuture`); a task that awaits
    /// this future sets it back to False.
    #[getter(_asyncio_future_blocking)]
    fn get_blocking(&self) -> bool {
        self.blocking
    }

    #[setter(_asyncio_future_blocking)]
    fn set_blocking(&mut self, value: bool) {
        self.blocking = value;
    }

    /// The event loop this future belongs to.
    fn get_loop(&self, py: Python<'_>) -> Py<PyAny> {
        self.event_loop.clone_ref(py)
    }

    /// Whether the commit has resolved (written or failed) or the future was cancelled.
    fn done(&self) -> bool {
        !self.is_pending()
    }

    fn cancelled(&self) -> bool {
        matches!(self.state, State::Cancelled(_))
    }

    /// `None` once the commit is written; raises its `ConflictError` / `StorageError`
    /// when it failed, `CancelledError` when cancelled, `InvalidStateError` while pending.
    fn result(&self, py: Python<'_>) -> PyResult<()> {
        match &self.state {
            State::Pending => Err(PyErr::from_type(
                asyncio_error(py, "InvalidStateError")?,
                "Result is not set.",
            )),
            State::Done(None) => Ok(()),
            State::Done(Some(e)) => Err(PyErr::from_value(e.bind(py).clone())),
            State::Cancelled(msg) => Err(cancelled_err(py, msg.as_ref())),
        }
    }

    /// The commit's error, or `None` when it was written; raises `CancelledError` when
    /// cancelled, `InvalidStateError` while pending.
    fn exception(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match &self.state {
            State::Pending => Err(PyErr::from_type(
                asyncio_error(py, "InvalidStateError")?,
                "Exception is not set.",
            )),
            State::Done(e) => Ok(e.as_ref().map(|e| e.clone_ref(py))),
            State::Cancelled(msg) => Err(cancelled_err(py, msg.as_ref())),
        }
    }

    /// Cancel the wait (the commit itself stays queued: it is written, or fails and is
    /// undone on the object, as if awaited). Schedules the callbacks; `False` when done.
    #[pyo3(signature = (msg=None))]
    fn cancel(slf: &Bound<'_, Self>, msg: Option<Py<PyAny>>) -> PyResult<bool> {
        let py = slf.py();
        let Some((callbacks, event_loop)) = CommitFuture::finish(slf, State::Cancelled(msg)) else {
            return Ok(false);
        };
        for (cb, ctx) in callbacks {
            call_soon(event_loop.bind(py), &cb, slf.as_any(), ctx.as_ref())?;
        }
        Ok(true)
    }

    /// Call `fn(future)` (in `context`, default the current one) once done; when already
    /// done it is scheduled with `loop.call_soon`.
    #[pyo3(signature = (r#fn, *, context=None))]
    fn add_done_callback(
        slf: &Bound<'_, Self>,
        r#fn: Py<PyAny>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let event_loop = {
            let mut me = slf.borrow_mut();
            if me.is_pending() {
                me.callbacks.push((r#fn, context));
                return Ok(());
            }
            me.event_loop.clone_ref(py)
        };
        call_soon(event_loop.bind(py), &r#fn, slf.as_any(), context.as_ref())
    }

    /// Remove every registration of `fn` (compared with `==`); returns how many.
    fn remove_done_callback(slf: &Bound<'_, Self>, r#fn: &Bound<'_, PyAny>) -> PyResult<usize> {
        let callbacks = std::mem::take(&mut slf.borrow_mut().callbacks);
        let mut kept = Vec::with_capacity(callbacks.len());
        let mut removed = 0;
        let mut failed = None;
        for (cb, ctx) in callbacks {
            match cb.bind(slf.py()).eq(r#fn) {
                Ok(true) => removed += 1,
                Ok(false) => kept.push((cb, ctx)),
                Err(e) => {
                    failed.get_or_insert(e);
                    kept.push((cb, ctx));
                }
            }
        }
        // Callbacks added meanwhile (by an `__eq__`) stay, after the kept ones.
        let mut me = slf.borrow_mut();
        kept.append(&mut me.callbacks);
        me.callbacks = kept;
        match failed {
            Some(e) => Err(e),
            None => Ok(removed),
        }
    }

    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        CommitFuture::step(slf)
    }

    /// Coroutine protocol, as `__next__` (the value sent is ignored): a task made by
    /// `asyncio.create_task(obj.commit_async())` drives the future itself.
    #[pyo3(signature = (_value=None))]
    fn send(slf: &Bound<'_, Self>, _value: Option<&Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
        CommitFuture::step(slf)
    }

    /// Coroutine protocol: raise the exception thrown in (an instance, or a type made
    /// with `val`), as an `await` of a future does.
    #[pyo3(signature = (typ, val=None, _tb=None))]
    fn throw(
        &self,
        typ: &Bound<'_, PyAny>,
        val: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        if typ.is_instance_of::<PyBaseException>() {
            return Err(PyErr::from_value(typ.clone()));
        }
        let made = match val {
            Some(v) if !v.is_none() => typ.call1((v,))?,
            _ => typ.call0()?,
        };
        Err(PyErr::from_value(made))
    }

    /// Coroutine protocol: nothing to close (the commit is already queued).
    fn close(&self) {}

    fn __repr__(&self) -> &'static str {
        match self.state {
            State::Pending => "<CommitFuture pending>",
            State::Done(None) => "<CommitFuture finished>",
            State::Done(Some(_)) => "<CommitFuture failed>",
            State::Cancelled(_) => "<CommitFuture cancelled>",
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.event_loop)?;
        for (cb, ctx) in &self.callbacks {
            visit.call(cb)?;
            visit.call(ctx)?;
        }
        match &self.state {
            State::Done(Some(o)) | State::Cancelled(Some(o)) => visit.call(o),
            _ => Ok(()),
        }
    }

    fn __clear__(&mut self) {
        self.callbacks.clear();
    }
}

/// Register the classes with the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<CommitFuture>()?;
    m.add_class::<Reraise>()
}
