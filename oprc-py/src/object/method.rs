//! A method call on an object in one native awaitable: the object's turn, the undo log,
//! the body, the rollback when it raises and the auto-commit after it (`MethodCall`),
//! and the awaitable of a value known at once (`Ready`, what an async getter returns).
//!
//! `oaas_sdk/model/calls.py` `_call_async` is the reference (and what the pure-Python
//! implementation runs); `oaas_sdk/model/methods.py` makes `method_call(spec, obj, args,
//! kwargs)` the runner of async methods and setters while the native implementation is
//! configured. The steps are the same:
//!
//! 1. A stateless method runs its body and nothing else.
//! 2. Otherwise the call is re-entrant when its call chain holds the object's turn
//!    already (the context variable `_HELD` of calls.py, a frozenset of object ids);
//!    else it takes the turn (`ObjectState.turn`, a `calls.Turn`). A turn held by another
//!    call chain is waited for by the Python definition, to which the whole call is then
//!    handed (the contended case; an uncontended turn costs no event-loop round trip).
//! 3. Arguments are converted (`MethodSpec.convert_args`) unless each positional one has
//!    exactly its parameter's simple type (int, float, str, bool, bytes) or needs none.
//! 4. The undo record: instead of a snapshot of every field, an undo log in
//!    `ObjectState.undo` that the native `__setattr__` writes (field -> value before the
//!    call's first assignment, see [`log_old_value`]); fields live at the start (decoded
//!    and possibly changed in place, not yet committed) are encoded, fields that become
//!    live during the call are dropped from the instance on rollback (the next read decodes
//!    the committed bytes), and the dirty set is copied when not empty.
//! 5. The body runs; the awaitable forwards what it yields and what is sent or thrown in
//!    (the protocol of `await`, `send`, `throw`, `close`). When it raises, every field it
//!    changed is rolled back and nothing is committed.
//! 6. After the body, a call that is not re-entrant commits (`obj.commit_async()`, awaited
//!    in place) when `auto_commit` is on and the object changed; then the turn is released.
//!
//! Retries and timeouts (`retry_count`, `timeout`) are handed to the Python definition too.
//! Both awaitables implement `am_send`, so an `await` of one that finishes without
//! suspending returns its value with no `StopIteration` made.

use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::{PyAttributeError, PyRuntimeError, PyStopIteration, PySystemError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PySet, PyString, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use super::front::set_plain;
use super::state::{class_attr, ObjectState};

/// The marker of the undo log for "the field had no value in the instance" (a mutable
/// field not read since its last commit): rollback deletes the instance attribute.
fn missing(py: Python<'_>) -> &Bound<'_, PyAny> {
    static MISSING: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    MISSING
        .get_or_init(py, || {
            // SAFETY: PyBaseObject_Type is a static type object; calling it makes a new
            // plain `object()` (a new reference, or NULL with an exception set).
            unsafe {
                let o = ffi::PyObject_CallNoArgs((&raw mut ffi::PyBaseObject_Type).cast());
                Bound::from_owned_ptr_or_err(py, o)
                    .map(Bound::unbind)
                    .unwrap_or_else(|_| py.None())
            }
        })
        .bind(py)
}

/// `object.__getattribute__(obj, name)` without the class's descriptors' side effects for
/// a value in the instance (the lazy field descriptor is a non-data descriptor, so an
/// instance value wins).
fn get_plain<'py>(
    obj: &Bound<'py, PyAny>,
    name: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: live GIL-held references; a new reference or NULL with an exception set.
    unsafe {
        Bound::from_owned_ptr_or_err(
            obj.py(),
            ffi::PyObject_GenericGetAttr(obj.as_ptr(), name.as_ptr()),
        )
    }
}

/// `object.__delattr__(obj, name)`, ignoring a missing attribute.
fn del_plain(obj: &Bound<'_, PyAny>, name: &Bound<'_, PyAny>) -> PyResult<()> {
    // SAFETY: live GIL-held references; NULL value means delete; -1 with an exception set.
    let rc =
        unsafe { ffi::PyObject_GenericSetAttr(obj.as_ptr(), name.as_ptr(), std::ptr::null_mut()) };
    if rc == 0 {
        return Ok(());
    }
    let e = PyErr::fetch(obj.py());
    if e.is_instance_of::<PyAttributeError>(obj.py()) {
        Ok(())
    } else {
        Err(e)
    }
}

/// Called by the native `__setattr__` while a native method call runs on `obj` (`undo`,
/// the call's log, is not `None`): record the field's value before the call's first
/// assignment of it. `mutable`: the field's type is mutable, so its value is in the
/// instance only while it is live.
pub(crate) fn log_old_value(
    obj: &Bound<'_, PyAny>,
    state: &ObjectState<'_>,
    undo: &Bound<'_, PyAny>,
    name: &Bound<'_, PyAny>,
    mutable: bool,
) -> PyResult<()> {
    let Ok(log) = undo.cast::<PyDict>() else {
        return Ok(());
    };
    if log.contains(name)? {
        return Ok(());
    }
    let py = obj.py();
    let old = if mutable && !state.live()?.contains(name)? {
        missing(py).clone()
    } else {
        match get_plain(obj, name) {
            Ok(v) => v,
            Err(e) if e.is_instance_of::<PyAttributeError>(py) => missing(py).clone(),
            Err(e) => return Err(e),
        }
    };
    log.set_item(name, old)
}

/// What the call must undo when its body raises (see the module comment, step 4).
struct Undo {
    /// `ObjectState.undo` before the call (the log of a calling method, or `None`).
    prev: Py<PyAny>,
    log: Py<PyDict>,
    /// Copies of the live and dirty sets at the start (`None`: empty).
    live_before: Option<Py<PySet>>,
    dirty_before: Option<Py<PySet>>,
    /// (field name, bytes) of the fields live at the start.
    encoded: Vec<(Py<PyAny>, Py<PyAny>)>,
    /// The committed state at the start (`committed`, `version`, `created_ms`,
    /// `updated_ms`): put back when a `refresh()` in the call replaced it.
    base: [Py<PyAny>; 4],
}

/// A running call's hold on the object.
struct Frame {
    /// Not re-entrant: commits after the body.
    outer: bool,
    /// The context variable `_HELD` and the token of this call's change of it.
    held: Option<(Py<PyAny>, Py<PyAny>)>,
    /// The turn taken (released at the end).
    turn: Option<Py<PyAny>>,
    /// `None` for a stateless method.
    undo: Option<Undo>,
    /// The call converts its result to the declared model (`MethodSpec.convert_result`).
    convert_result: bool,
}

enum Stage {
    New {
        args: Py<PyTuple>,
        kwargs: Option<Py<PyDict>>,
    },
    Body {
        iter: Py<PyAny>,
        frame: Frame,
    },
    Commit {
        iter: Py<PyAny>,
        frame: Frame,
        result: Py<PyAny>,
    },
    /// The call runs as the Python definition (contended turn, retries, timeout).
    Delegate {
        iter: Py<PyAny>,
    },
    Running,
    Done,
}

enum Sent<'py> {
    Value(Bound<'py, PyAny>),
    Throw(PyErr),
}

enum Out<'py> {
    Yield(Bound<'py, PyAny>),
    Return(Bound<'py, PyAny>),
}

/// Send a value or throw an exception into `iter` (a coroutine or an awaitable's
/// iterator), as `await` does.
fn send_into<'py>(iter: &Bound<'py, PyAny>, sent: Sent<'py>) -> PyResult<Out<'py>> {
    let py = iter.py();
    match sent {
        Sent::Value(v) => {
            let mut out: *mut ffi::PyObject = std::ptr::null_mut();
            // SAFETY: live GIL-held references; `out` receives a new reference on
            // PYGEN_NEXT / PYGEN_RETURN, NULL with an exception set on PYGEN_ERROR.
            let r = unsafe { ffi::PyIter_Send(iter.as_ptr(), v.as_ptr(), &mut out) };
            match r {
                ffi::PySendResult::PYGEN_NEXT => {
                    // SAFETY: a new reference (see above).
                    Ok(Out::Yield(unsafe { Bound::from_owned_ptr(py, out) }))
                }
                ffi::PySendResult::PYGEN_RETURN => {
                    // SAFETY: a new reference (see above).
                    Ok(Out::Return(unsafe { Bound::from_owned_ptr(py, out) }))
                }
                ffi::PySendResult::PYGEN_ERROR => Err(PyErr::fetch(py)),
            }
        }
        Sent::Throw(e) => match iter.call_method1(intern!(py, "throw"), (e.into_value(py),)) {
            Ok(v) => Ok(Out::Yield(v)),
            Err(err) if err.is_instance_of::<PyStopIteration>(py) => {
                Ok(Out::Return(err.value(py).getattr(intern!(py, "value"))?))
            }
            Err(err) => Err(err),
        },
    }
}

/// The call's method plan (`MethodSpec._native_plan()`, cached in `spec._nat`):
/// `(fn, stateless, argtypes, is_async, convert_result, Turn, _HELD, _call_async,
/// python_only, _call_sync)`; `python_only`: the Python definitions run every call
/// (retries, timeout).
fn plan_of<'py>(spec: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = spec.py();
    let plan = spec.getattr(intern!(py, "_nat"))?;
    if plan.is_none() {
        return spec.call_method0(intern!(py, "_native_plan"));
    }
    Ok(plan)
}

/// Whether `args` need `MethodSpec.convert_args`: `argtypes` is `None` (always), or a
/// tuple with, per positional parameter, `None` (never), a type (unless the argument has
/// exactly that type) or `...` (always).
fn needs_conversion(
    argtypes: &Bound<'_, PyAny>,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Py<PyDict>>,
) -> PyResult<bool> {
    if kwargs.is_some() {
        return Ok(true);
    }
    let Ok(types) = argtypes.cast::<PyTuple>() else {
        return Ok(true);
    };
    for (t, v) in types.iter().zip(args.iter()) {
        if t.is_none() {
            continue;
        }
        if !v.get_type().is(&t) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `ffi` wrappers of the context variable `_HELD` (a frozenset of object ids).
fn ctx_get<'py>(var: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let mut out: *mut ffi::PyObject = std::ptr::null_mut();
    // SAFETY: `var` is a ContextVar (checked by CPython, -1 otherwise); `out` receives a
    // new reference (the default of the variable when unset in this context).
    let rc = unsafe { ffi::PyContextVar_Get(var.as_ptr(), std::ptr::null_mut(), &mut out) };
    if rc != 0 {
        return Err(PyErr::fetch(var.py()));
    }
    if out.is_null() {
        return Err(PyRuntimeError::new_err("the context variable has no value"));
    }
    // SAFETY: a new reference (see above).
    Ok(unsafe { Bound::from_owned_ptr(var.py(), out) })
}

fn ctx_set<'py>(var: &Bound<'py, PyAny>, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: live references; returns a new reference to a Token or NULL with an error.
    unsafe {
        Bound::from_owned_ptr_or_err(
            var.py(),
            ffi::PyContextVar_Set(var.as_ptr(), value.as_ptr()),
        )
    }
}

fn ctx_reset(var: &Bound<'_, PyAny>, token: &Bound<'_, PyAny>) -> PyResult<()> {
    // SAFETY: live references; -1 with an exception set on failure.
    if unsafe { ffi::PyContextVar_Reset(var.as_ptr(), token.as_ptr()) } == 0 {
        Ok(())
    } else {
        Err(PyErr::fetch(var.py()))
    }
}

/// `held | {oid}` as a new frozenset.
fn with_id<'py>(held: &Bound<'py, PyAny>, oid: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = held.py();
    // SAFETY: PyFrozenSet_New copies an iterable into a new frozenset (new reference or
    // NULL); adding to a brand-new frozenset nobody else holds is allowed (C API docs).
    unsafe {
        let s = Bound::from_owned_ptr_or_err(py, ffi::PyFrozenSet_New(held.as_ptr()))?;
        if ffi::PySet_Add(s.as_ptr(), oid.as_ptr()) != 0 {
            return Err(PyErr::fetch(py));
        }
        Ok(s)
    }
}

fn copy_set<'py>(s: &Bound<'py, PySet>) -> PyResult<Bound<'py, PySet>> {
    // SAFETY: PySet_New copies an iterable into a new set (new reference or NULL).
    unsafe {
        Ok(
            Bound::from_owned_ptr_or_err(s.py(), ffi::PySet_New(s.as_ptr()))?
                .cast_into::<PySet>()?,
        )
    }
}

/// The class's conversion table `{name: (exact types, FieldType, mutable)}`.
fn conv_of<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
    let py = obj.py();
    let cls = obj.get_type();
    let mut conv = cls.getattr(intern!(py, class_attr::CONV))?;
    if conv.is_none() {
        conv = cls.call_method0(intern!(py, class_attr::BUILD_CONV))?;
    }
    Ok(conv.cast_into::<PyDict>()?)
}

fn begin_undo(obj: &Bound<'_, PyAny>, st: &ObjectState<'_>) -> PyResult<Undo> {
    let py = obj.py();
    let prev = st.undo()?;
    let live = st.live()?;
    let mut encoded = Vec::new();
    let live_before = if live.is_empty() {
        None
    } else {
        let conv = conv_of(obj)?;
        for n in live.iter() {
            let Some(c) = conv.get_item(&n)? else {
                continue;
            };
            let ft = c.cast_into::<PyTuple>()?.get_item(1)?;
            let data = ft.call_method1(intern!(py, "encode"), (get_plain(obj, &n)?,))?;
            encoded.push((n.unbind(), data.unbind()));
        }
        Some(copy_set(&live)?.unbind())
    };
    let dirty = st.dirty()?;
    let dirty_before = if dirty.is_empty() {
        None
    } else {
        Some(copy_set(&dirty)?.unbind())
    };
    let base = st.base()?.map(Bound::unbind);
    let log = PyDict::new(py);
    st.set_undo(log.as_any())?;
    Ok(Undo {
        prev: prev.unbind(),
        log: log.unbind(),
        live_before,
        dirty_before,
        encoded,
        base,
    })
}

/// The body finished: hand the log to the calling method's (first value wins), or drop it.
fn end_undo(st: &ObjectState<'_>, undo: &Undo) -> PyResult<()> {
    let py = st.py();
    let prev = undo.prev.bind(py);
    st.set_undo(prev)?;
    if let Ok(outer) = prev.cast::<PyDict>() {
        for (k, v) in undo.log.bind(py).iter() {
            if !outer.contains(&k)? {
                outer.set_item(k, v)?;
            }
        }
    }
    Ok(())
}

/// The body raised: every field it changed gets its value from before the call.
fn rollback(obj: &Bound<'_, PyAny>, st: &ObjectState<'_>, undo: &Undo) -> PyResult<()> {
    let py = obj.py();
    st.set_undo(undo.prev.bind(py))?;
    let missing = missing(py);
    for (name, old) in undo.log.bind(py).iter() {
        if old.is(missing) {
            del_plain(obj, &name)?;
        } else {
            // A mapped field's entry (`MappedUndo`) goes through its descriptor, which
            // copies the bytes back into the mapping.
            set_plain(obj, &name, &old)?;
        }
    }
    let base = undo.base.each_ref().map(|b| b.bind(py).clone());
    if !st.committed()?.is(&base[0]) {
        st.set_base(&base)?; // a refresh() in the call: undone too
    }
    let live = st.live()?;
    let before = undo.live_before.as_ref().map(|s| s.bind(py));
    if !live.is_empty() {
        let added: Vec<Bound<'_, PyAny>> = match before {
            Some(b) => live
                .iter()
                .filter(|n| !b.contains(n).unwrap_or(false))
                .collect(),
            None => live.iter().collect(),
        };
        for n in added {
            del_plain(obj, &n)?; // decoded during the call: the next read decodes again
        }
    }
    live.clear();
    if let Some(b) = before {
        for n in b.iter() {
            live.add(n)?;
        }
    }
    if !undo.encoded.is_empty() {
        let conv = conv_of(obj)?;
        for (n, data) in &undo.encoded {
            let n = n.bind(py);
            if let Some(c) = conv.get_item(n)? {
                let ft = c.cast_into::<PyTuple>()?.get_item(1)?;
                set_plain(
                    obj,
                    n,
                    &ft.call_method1(intern!(py, "decode"), (data.bind(py),))?,
                )?;
            }
        }
    }
    let dirty = st.dirty()?;
    dirty.clear();
    let oid = obj.as_ptr() as usize;
    if before.is_some() {
        // The registries hold the object again when a refresh() or commit in the call
        // took it out (see `Runtime.dirty` / `Runtime.touched`).
        st.rt()?
            .getattr(intern!(py, "touched"))?
            .set_item(oid, obj)?;
    }
    match &undo.dirty_before {
        Some(d) => {
            for n in d.bind(py).iter() {
                dirty.add(n)?;
            }
            st.rt()?.getattr(intern!(py, "dirty"))?.set_item(oid, obj)?;
        }
        None => {
            if st.version()?.is_truthy()? {
                st.rt()?
                    .getattr(intern!(py, "dirty"))?
                    .call_method1(intern!(py, "pop"), (oid, py.None()))?;
            }
        }
    }
    Ok(())
}

/// Release what the call holds: the context token of `_HELD`, then the turn.
/// [`finish`] after the call failed with `e`: `e`, or the error of `finish` itself with `e`
/// as its context (as Python chains an exception raised while handling another).
fn finish_failed(py: Python<'_>, frame: &Frame, e: PyErr) -> PyErr {
    match finish(py, frame) {
        Ok(()) => e,
        Err(fe) => {
            fe.set_context(py, Some(e));
            fe
        }
    }
}

fn finish(py: Python<'_>, frame: &Frame) -> PyResult<()> {
    let reset = match &frame.held {
        Some((var, token)) => ctx_reset(var.bind(py), token.bind(py)),
        None => Ok(()),
    };
    if let Some(turn) = &frame.turn {
        let turn = turn.bind(py);
        let waiters = turn.getattr(intern!(py, "waiters"))?;
        if waiters.len()? == 0 {
            turn.setattr(intern!(py, "locked"), false)?;
        } else {
            turn.call_method0(intern!(py, "release"))?;
        }
    }
    reset
}

type Converted<'py> = (Bound<'py, PyTuple>, Option<Bound<'py, PyDict>>);

/// The call's arguments, converted by `MethodSpec.convert_args` when [`needs_conversion`].
fn convert_args<'py>(
    spec: &Bound<'py, PyAny>,
    obj: &Bound<'py, PyAny>,
    argtypes: &Bound<'py, PyAny>,
    args: Bound<'py, PyTuple>,
    kwargs: Option<Py<PyDict>>,
) -> PyResult<Converted<'py>> {
    let py = spec.py();
    if !needs_conversion(argtypes, &args, kwargs.as_ref())? {
        return Ok((args, None));
    }
    let kw = match kwargs {
        Some(k) => k.into_bound(py),
        None => PyDict::new(py),
    };
    let r = spec
        .call_method1(intern!(py, "convert_args"), (args, kw, obj))?
        .cast_into::<PyTuple>()?;
    let a = r.get_item(0)?.cast_into::<PyTuple>()?;
    let k = r.get_item(1)?.cast_into::<PyDict>()?;
    Ok((a, if k.is_empty() { None } else { Some(k) }))
}

/// `fn(obj, *args, **kwargs)`.
fn call_body<'py>(
    func: &Bound<'py, PyAny>,
    obj: &Bound<'py, PyAny>,
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let mut call_args = Vec::with_capacity(args.len() + 1);
    call_args.push(obj.clone());
    call_args.extend(args.iter());
    func.call(PyTuple::new(func.py(), call_args)?, kwargs)
}

/// Whether the object changed since its last commit (`OaasObject._oaas_needs_commit`) and
/// its runtime commits after calls (`auto_commit`).
fn wants_commit(st: &ObjectState<'_>) -> PyResult<bool> {
    let py = st.py();
    let auto = st
        .rt()?
        .getattr(intern!(py, "config"))?
        .getattr(intern!(py, "auto_commit"))?
        .is_truthy()?;
    Ok(auto && (!st.dirty()?.is_empty() || !st.version()?.is_truthy()? || !st.live()?.is_empty()))
}

/// A sync method call of `spec` on `obj` (`oaas_sdk/model/calls.py` `_call_sync`, the
/// reference): run now in the calling thread, roll back when the body raises, commit
/// (blocking) after it when `auto_commit` is on and state changed; returns the body's
/// result. Taking the turn as `_call_sync` does: in a thread running an event loop, unless
/// re-entrant; a turn held by another call chain, retries and timeouts are handed to the
/// Python definition (which raises `RuntimeError` for the first).
#[pyfunction]
pub fn method_call_sync<'py>(
    py: Python<'py>,
    spec: &Bound<'py, PyAny>,
    obj: &Bound<'py, PyAny>,
    args: Bound<'py, PyTuple>,
    kwargs: Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyAny>> {
    let plan = plan_of(spec)?.cast_into::<PyTuple>()?;
    if plan.get_item(8)?.is_truthy()? {
        return plan.get_item(9)?.call1((spec, obj, args, kwargs));
    }
    let func = plan.get_item(0)?;
    let stateless = plan.get_item(1)?.is_truthy()?;
    let argtypes = plan.get_item(2)?;
    let kw = if kwargs.is_empty() {
        None
    } else {
        Some(kwargs.unbind())
    };
    let (args, kwargs) = convert_args(spec, obj, &argtypes, args, kw)?;
    let held_var = plan.get_item(6)?;
    let held = ctx_get(&held_var)?;
    // SAFETY: a new reference to an int (or NULL with an exception set).
    let oid =
        unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyLong_FromVoidPtr(obj.as_ptr().cast()))? };
    let reentrant = held.contains(&oid)?;
    let mut frame = Frame {
        outer: !reentrant,
        held: None,
        turn: None,
        undo: None,
        convert_result: plan.get_item(4)?.is_truthy()?,
    };
    let st = ObjectState::of(obj)?;
    if !reentrant && !stateless && !super::front::running_loop(py)?.is_none() {
        let mut t = st.turn()?;
        if t.is_none() {
            t = plan.get_item(5)?.call0()?;
            st.set_turn(&t)?;
        }
        if t.getattr(intern!(py, "locked"))?.is_truthy()? {
            let kw = kwargs.unwrap_or_else(|| PyDict::new(py));
            return plan.get_item(9)?.call1((spec, obj, args, kw));
        }
        t.setattr(intern!(py, "locked"), true)?;
        frame.turn = Some(t.unbind());
    }
    if !reentrant {
        match ctx_set(&held_var, &with_id(&held, &oid)?) {
            Ok(token) => frame.held = Some((held_var.unbind(), token.unbind())),
            Err(e) => {
                finish(py, &frame)?;
                return Err(e);
            }
        }
    }
    if !stateless {
        match begin_undo(obj, &st) {
            Ok(u) => frame.undo = Some(u),
            Err(e) => {
                finish(py, &frame)?;
                return Err(e);
            }
        }
    }
    let result = match call_body(&func, obj, &args, kwargs.as_ref()) {
        Ok(r) => r,
        Err(e) => return Err(fail(obj, &frame, e)),
    };
    let committed = (|| -> PyResult<()> {
        if let Some(undo) = &frame.undo {
            end_undo(&st, undo)?;
            if frame.outer && wants_commit(&st)? {
                obj.call_method0(intern!(py, "commit"))?;
            }
        }
        Ok(())
    })();
    let finished = finish(py, &frame);
    committed?;
    finished?;
    if frame.convert_result {
        return spec.call_method1(intern!(py, "convert_result"), (result,));
    }
    Ok(result)
}

enum Started<'py> {
    Delegate(Bound<'py, PyAny>),
    Body(Bound<'py, PyAny>, Frame),
    Returned(Bound<'py, PyAny>, Frame),
}

fn start<'py>(
    spec: &Bound<'py, PyAny>,
    obj: &Bound<'py, PyAny>,
    args: Bound<'py, PyTuple>,
    kwargs: Option<Py<PyDict>>,
) -> PyResult<Started<'py>> {
    let py = spec.py();
    let plan = plan_of(spec)?;
    let plan = plan.cast_into::<PyTuple>()?;
    let delegate = |args: &Bound<'py, PyTuple>, kwargs: Option<&Py<PyDict>>| {
        let kw = match kwargs {
            Some(k) => k.bind(py).clone(),
            None => PyDict::new(py),
        };
        plan.get_item(7)?
            .call1((spec, obj, args, kw))
            .map(Started::Delegate)
    };
    if plan.get_item(8)?.is_truthy()? {
        return delegate(&args, kwargs.as_ref());
    }
    let func = plan.get_item(0)?;
    let stateless = plan.get_item(1)?.is_truthy()?;
    let argtypes = plan.get_item(2)?;
    let is_async = plan.get_item(3)?.is_truthy()?;
    let convert_result = plan.get_item(4)?.is_truthy()?;
    let convert = |args: Bound<'py, PyTuple>, kwargs: Option<Py<PyDict>>| {
        convert_args(spec, obj, &argtypes, args, kwargs)
    };
    let mut frame = Frame {
        outer: false,
        held: None,
        turn: None,
        undo: None,
        convert_result,
    };
    let (args, kwargs) = if stateless {
        convert(args, kwargs)?
    } else {
        let held_var = plan.get_item(6)?;
        let held = ctx_get(&held_var)?;
        // SAFETY: a new reference to an int (or NULL with an exception set).
        let oid = unsafe {
            Bound::from_owned_ptr_or_err(py, ffi::PyLong_FromVoidPtr(obj.as_ptr().cast()))?
        };
        let reentrant = held.contains(&oid)?;
        let st = ObjectState::of(obj)?;
        let mut turn = None;
        if !reentrant {
            let mut t = st.turn()?;
            if t.is_none() {
                t = plan.get_item(5)?.call0()?;
                st.set_turn(&t)?;
            }
            if t.getattr(intern!(py, "locked"))?.is_truthy()? {
                return delegate(&args, kwargs.as_ref());
            }
            turn = Some(t);
        }
        let converted = convert(args, kwargs)?;
        if let Some(t) = turn {
            t.setattr(intern!(py, "locked"), true)?;
            let token = match ctx_set(&held_var, &with_id(&held, &oid)?) {
                Ok(token) => token,
                Err(e) => {
                    t.setattr(intern!(py, "locked"), false)?;
                    return Err(e);
                }
            };
            frame.turn = Some(t.unbind());
            frame.held = Some((held_var.unbind(), token.unbind()));
            frame.outer = true;
        }
        match begin_undo(obj, &st) {
            Ok(u) => frame.undo = Some(u),
            Err(e) => {
                finish(py, &frame)?;
                return Err(e);
            }
        }
        converted
    };
    let called = call_body(&func, obj, &args, kwargs.as_ref());
    match called {
        Ok(v) if is_async => Ok(Started::Body(v, frame)),
        Ok(v) => Ok(Started::Returned(v, frame)),
        Err(e) => Err(fail(obj, &frame, e)),
    }
}

/// The body raised `e`: roll back, release, and the error to raise (a failing rollback's
/// error, with `e` as its context).
fn fail(obj: &Bound<'_, PyAny>, frame: &Frame, e: PyErr) -> PyErr {
    let py = obj.py();
    let mut err = e;
    if let Some(undo) = &frame.undo {
        let rolled = ObjectState::of(obj).and_then(|st| rollback(obj, &st, undo));
        if let Err(re) = rolled {
            re.set_context(py, Some(err));
            err = re;
        }
    }
    finish_failed(py, frame, err)
}

fn done<'py>(
    spec: &Bound<'py, PyAny>,
    frame: &Frame,
    result: Bound<'py, PyAny>,
) -> (Stage, PyResult<Out<'py>>) {
    let py = spec.py();
    if let Err(e) = finish(py, frame) {
        return (Stage::Done, Err(e));
    }
    if !frame.convert_result {
        return (Stage::Done, Ok(Out::Return(result)));
    }
    (
        Stage::Done,
        spec.call_method1(intern!(py, "convert_result"), (result,))
            .map(Out::Return),
    )
}

fn after_body<'py>(
    spec: &Bound<'py, PyAny>,
    obj: &Bound<'py, PyAny>,
    frame: Frame,
    result: Bound<'py, PyAny>,
) -> (Stage, PyResult<Out<'py>>) {
    let py = spec.py();
    let Some(undo) = &frame.undo else {
        return done(spec, &frame, result); // stateless
    };
    let commit = (|| -> PyResult<Option<Bound<'py, PyAny>>> {
        let st = ObjectState::of(obj)?;
        end_undo(&st, undo)?;
        if !frame.outer {
            return Ok(None);
        }
        if !wants_commit(&st)? {
            return Ok(None);
        }
        let aw = obj.call_method0(intern!(py, "commit_async"))?;
        if aw.is(&obj.get_type().getattr(intern!(py, class_attr::DONE))?) {
            return Ok(None);
        }
        aw.call_method0(intern!(py, "__await__")).map(Some)
    })();
    match commit {
        Ok(None) => done(spec, &frame, result),
        Ok(Some(iter)) => drive_commit(
            spec,
            iter,
            frame,
            result,
            Sent::Value(py.None().into_bound(py)),
        ),
        Err(e) => (Stage::Done, Err(finish_failed(py, &frame, e))),
    }
}

fn drive_commit<'py>(
    spec: &Bound<'py, PyAny>,
    iter: Bound<'py, PyAny>,
    frame: Frame,
    result: Bound<'py, PyAny>,
    sent: Sent<'py>,
) -> (Stage, PyResult<Out<'py>>) {
    let py = spec.py();
    match send_into(&iter, sent) {
        Ok(Out::Yield(v)) => (
            Stage::Commit {
                iter: iter.unbind(),
                frame,
                result: result.unbind(),
            },
            Ok(Out::Yield(v)),
        ),
        Ok(Out::Return(_)) => done(spec, &frame, result),
        Err(e) => (Stage::Done, Err(finish_failed(py, &frame, e))),
    }
}

fn drive_body<'py>(
    spec: &Bound<'py, PyAny>,
    obj: &Bound<'py, PyAny>,
    iter: Bound<'py, PyAny>,
    frame: Frame,
    sent: Sent<'py>,
) -> (Stage, PyResult<Out<'py>>) {
    match send_into(&iter, sent) {
        Ok(Out::Yield(v)) => (
            Stage::Body {
                iter: iter.unbind(),
                frame,
            },
            Ok(Out::Yield(v)),
        ),
        Ok(Out::Return(v)) => after_body(spec, obj, frame, v),
        Err(e) => (Stage::Done, Err(fail(obj, &frame, e))),
    }
}

fn advance<'py>(
    spec: &Bound<'py, PyAny>,
    obj: &Bound<'py, PyAny>,
    stage: Stage,
    sent: Sent<'py>,
) -> (Stage, PyResult<Out<'py>>) {
    let py = spec.py();
    match stage {
        Stage::New { args, kwargs } => {
            if let Sent::Throw(e) = sent {
                return (Stage::Done, Err(e));
            }
            match start(spec, obj, args.into_bound(py), kwargs) {
                Err(e) => (Stage::Done, Err(e)),
                Ok(Started::Delegate(iter)) => {
                    drive_delegate(iter, Sent::Value(py.None().into_bound(py)))
                }
                Ok(Started::Body(iter, frame)) => drive_body(
                    spec,
                    obj,
                    iter,
                    frame,
                    Sent::Value(py.None().into_bound(py)),
                ),
                Ok(Started::Returned(v, frame)) => after_body(spec, obj, frame, v),
            }
        }
        Stage::Body { iter, frame } => drive_body(spec, obj, iter.into_bound(py), frame, sent),
        Stage::Commit {
            iter,
            frame,
            result,
        } => drive_commit(
            spec,
            iter.into_bound(py),
            frame,
            result.into_bound(py),
            sent,
        ),
        Stage::Delegate { iter } => drive_delegate(iter.into_bound(py), sent),
        Stage::Running => (
            Stage::Running,
            Err(PyRuntimeError::new_err("method call already running")),
        ),
        Stage::Done => (
            Stage::Done,
            Err(PyRuntimeError::new_err(
                "cannot reuse already awaited method call",
            )),
        ),
    }
}

fn drive_delegate<'py>(iter: Bound<'py, PyAny>, sent: Sent<'py>) -> (Stage, PyResult<Out<'py>>) {
    match send_into(&iter, sent) {
        Ok(Out::Yield(v)) => (
            Stage::Delegate {
                iter: iter.unbind(),
            },
            Ok(Out::Yield(v)),
        ),
        Ok(Out::Return(v)) => (Stage::Done, Ok(Out::Return(v))),
        Err(e) => (Stage::Done, Err(e)),
    }
}

/// The awaitable of one method call (see the module comment); made by [`method_call`].
/// It is also a coroutine (`send`, `throw`, `close`), so `asyncio.create_task` and
/// `asyncio.run` take it as they take the coroutine of an `async def`.
#[pyclass(module = "oaas_sdk._native", name = "MethodCall")]
pub struct MethodCall {
    spec: Py<PyAny>,
    obj: Py<PyAny>,
    stage: Stage,
}

impl MethodCall {
    fn step<'py>(slf: &Bound<'py, MethodCall>, sent: Sent<'py>) -> PyResult<Out<'py>> {
        let py = slf.py();
        let (spec, obj, stage) = {
            let mut me = slf.borrow_mut();
            let stage = std::mem::replace(&mut me.stage, Stage::Running);
            (me.spec.clone_ref(py), me.obj.clone_ref(py), stage)
        };
        let (stage, out) = advance(spec.bind(py), obj.bind(py), stage, sent);
        slf.borrow_mut().stage = stage;
        out
    }

    /// `__next__` / `send`: a return becomes `StopIteration(value)`.
    fn step_iter(slf: &Bound<'_, MethodCall>, sent: Sent<'_>) -> PyResult<Py<PyAny>> {
        match MethodCall::step(slf, sent)? {
            Out::Yield(v) => Ok(v.unbind()),
            Out::Return(v) => Err(stop_iteration(v)),
        }
    }
}

fn stop_iteration(v: Bound<'_, PyAny>) -> PyErr {
    let py = v.py();
    match PyStopIteration::type_object(py).call1((v,)) {
        Ok(e) => PyErr::from_value(e),
        Err(e) => e,
    }
}

use pyo3::type_object::PyTypeInfo;

fn thrown(typ: &Bound<'_, PyAny>, val: Option<&Bound<'_, PyAny>>) -> PyErr {
    if typ.is_instance_of::<pyo3::exceptions::PyBaseException>() {
        return PyErr::from_value(typ.clone());
    }
    let made = match val {
        Some(v) if !v.is_none() => {
            if v.is_instance_of::<pyo3::exceptions::PyBaseException>() {
                return PyErr::from_value(v.clone());
            }
            typ.call1((v,))
        }
        _ => typ.call0(),
    };
    match made {
        Ok(e) => PyErr::from_value(e),
        Err(e) => e,
    }
}

#[pymethods]
impl MethodCall {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        MethodCall::step_iter(slf, Sent::Value(py.None().into_bound(py)))
    }

    /// Coroutine protocol: resume with `value`.
    fn send(slf: &Bound<'_, Self>, value: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        MethodCall::step_iter(slf, Sent::Value(value.clone()))
    }

    /// Coroutine protocol: raise the exception in the body (rolled back when the body
    /// does not handle it).
    #[pyo3(signature = (typ, val=None, _tb=None))]
    fn throw(
        slf: &Bound<'_, Self>,
        typ: &Bound<'_, PyAny>,
        val: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        MethodCall::step_iter(slf, Sent::Throw(thrown(typ, val)))
    }

    /// Coroutine protocol: stop the call (`GeneratorExit` into the body; its changes are
    /// rolled back and the turn released, as for a coroutine closed at an `await`).
    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let started = !matches!(slf.borrow().stage, Stage::New { .. } | Stage::Done);
        if !started {
            slf.borrow_mut().stage = Stage::Done;
            return Ok(());
        }
        let exit = pyo3::exceptions::PyGeneratorExit::new_err(());
        match MethodCall::step(slf, Sent::Throw(exit)) {
            Ok(Out::Yield(_)) => Err(PyRuntimeError::new_err("method call ignored GeneratorExit")),
            Ok(Out::Return(_)) => Ok(()),
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyGeneratorExit>(py) => Ok(()),
            Err(e) if e.is_instance_of::<PyStopIteration>(py) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn __repr__(&self) -> &'static str {
        match self.stage {
            Stage::New { .. } => "<MethodCall not started>",
            Stage::Done => "<MethodCall done>",
            _ => "<MethodCall running>",
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.spec)?;
        visit.call(&self.obj)?;
        let frame = match &self.stage {
            Stage::New { args, kwargs } => {
                visit.call(args)?;
                if let Some(k) = kwargs {
                    visit.call(k)?;
                }
                None
            }
            Stage::Body { iter, frame } => {
                visit.call(iter)?;
                Some(frame)
            }
            Stage::Commit {
                iter,
                frame,
                result,
            } => {
                visit.call(iter)?;
                visit.call(result)?;
                Some(frame)
            }
            Stage::Delegate { iter } => {
                visit.call(iter)?;
                None
            }
            Stage::Running | Stage::Done => None,
        };
        if let Some(f) = frame {
            if let Some(t) = &f.turn {
                visit.call(t)?;
            }
            if let Some((v, k)) = &f.held {
                visit.call(v)?;
                visit.call(k)?;
            }
            if let Some(u) = &f.undo {
                visit.call(&u.prev)?;
                visit.call(&u.log)?;
                if let Some(s) = &u.live_before {
                    visit.call(s)?;
                }
                if let Some(s) = &u.dirty_before {
                    visit.call(s)?;
                }
                for (n, d) in &u.encoded {
                    visit.call(n)?;
                    visit.call(d)?;
                }
                for b in &u.base {
                    visit.call(b)?;
                }
            }
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        if matches!(self.stage, Stage::New { .. } | Stage::Done) {
            self.stage = Stage::Done;
        }
    }
}

impl Drop for MethodCall {
    /// A call dropped while its body or commit is suspended (never resumed, as a coroutine
    /// closed by its finalizer): throw `GeneratorExit` into it, so its changes are rolled
    /// back and the turn is released, as `close()` does.
    fn drop(&mut self) {
        if !matches!(self.stage, Stage::Body { .. } | Stage::Commit { .. }) {
            return;
        }
        let stage = std::mem::replace(&mut self.stage, Stage::Done);
        Python::attach(|py| {
            let exit = pyo3::exceptions::PyGeneratorExit::new_err(());
            let (_, out) = advance(
                self.spec.bind(py),
                self.obj.bind(py),
                stage,
                Sent::Throw(exit),
            );
            if let Err(e) = out {
                if !e.is_instance_of::<pyo3::exceptions::PyGeneratorExit>(py)
                    && !e.is_instance_of::<PyStopIteration>(py)
                {
                    e.write_unraisable(py, Some(self.obj.bind(py)));
                }
            }
        });
    }
}

/// `am_send` of `MethodCall`: one step with no `StopIteration` for a return.
unsafe extern "C" fn method_call_send(
    iter: *mut ffi::PyObject,
    arg: *mut ffi::PyObject,
    result: *mut *mut ffi::PyObject,
) -> ffi::PySendResult {
    // SAFETY: CPython calls am_send with the GIL held, on an instance of the type the slot
    // was installed on (MethodCall), with a borrowed `arg` (or NULL: None) and a valid
    // `result` pointer.
    // `attach_unchecked` tells pyo3 that the thread is attached (it holds the GIL, so
    // PyGILState_Ensure only counts): the references a step drops are released at once
    // rather than deferred to pyo3's pool (a mutex and a later drain each).
    let body = |py: Python<'_>| {
        let r = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: `iter` is the live instance CPython called the slot on, borrowed for
            // the call.
            let slf = unsafe { pyo3::Borrowed::from_ptr(py, iter) };
            let slf = slf.cast::<MethodCall>().map_err(PyErr::from)?;
            let sent = if arg.is_null() {
                py.None().into_bound(py)
            } else {
                // SAFETY: a live borrowed reference for the call.
                unsafe { pyo3::Borrowed::from_ptr(py, arg) }.to_owned()
            };
            MethodCall::step(&slf, Sent::Value(sent)).map(|o| match o {
                Out::Yield(v) => (ffi::PySendResult::PYGEN_NEXT, v.into_ptr()),
                Out::Return(v) => (ffi::PySendResult::PYGEN_RETURN, v.into_ptr()),
            })
        }))
        .unwrap_or_else(|_| {
            Err(PySystemError::new_err(
                "internal error in the native method call",
            ))
        });
        send_result(py, r, result)
    };
    // SAFETY: see above; the interpreter is initialized (it is calling us).
    unsafe { Python::attach_unchecked(body) }
}

fn send_result(
    py: Python<'_>,
    r: PyResult<(ffi::PySendResult, *mut ffi::PyObject)>,
    result: *mut *mut ffi::PyObject,
) -> ffi::PySendResult {
    match r {
        Ok((status, v)) => {
            // SAFETY: `result` is a valid out pointer (see the callers).
            unsafe { *result = v };
            status
        }
        Err(e) => {
            e.restore(py);
            // SAFETY: as above.
            unsafe { *result = std::ptr::null_mut() };
            ffi::PySendResult::PYGEN_ERROR
        }
    }
}

/// The awaitable of a method call of `spec` (a `MethodSpec`) on `obj`; nothing runs until
/// it is awaited (or sent into).
#[pyfunction]
pub fn method_call(
    py: Python<'_>,
    spec: Py<PyAny>,
    obj: Py<PyAny>,
    args: Py<PyTuple>,
    kwargs: Bound<'_, PyDict>,
) -> PyResult<Py<MethodCall>> {
    let kwargs = if kwargs.is_empty() {
        None
    } else {
        Some(kwargs.unbind())
    };
    Py::new(
        py,
        MethodCall {
            spec,
            obj,
            stage: Stage::New { args, kwargs },
        },
    )
}

/// An awaitable resolved at once with a value (what an async getter returns); a
/// coroutine too, as `MethodCall`. Short-lived and holding one value, it is not tracked
/// by the cyclic garbage collector (its allocation does not count towards a collection;
/// measured faster so than with a pyo3 free list).
#[pyclass(module = "oaas_sdk._native", name = "Ready")]
pub struct Ready {
    value: Option<Py<PyAny>>,
}

impl Ready {
    fn take(&mut self) -> PyResult<Py<PyAny>> {
        self.value
            .take()
            .ok_or_else(|| PyRuntimeError::new_err("cannot reuse already awaited value"))
    }
}

#[pymethods]
impl Ready {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Err(stop_iteration(self.take()?.into_bound(py)))
    }

    /// Coroutine protocol: finish with the value.
    fn send(&mut self, py: Python<'_>, _value: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.__next__(py)
    }

    /// Coroutine protocol: raise the exception thrown in.
    #[pyo3(signature = (typ, val=None, _tb=None))]
    fn throw(
        &mut self,
        typ: &Bound<'_, PyAny>,
        val: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.value = None;
        Err(thrown(typ, val))
    }

    fn close(&mut self) {
        self.value = None;
    }
}

unsafe extern "C" fn ready_send(
    iter: *mut ffi::PyObject,
    _arg: *mut ffi::PyObject,
    result: *mut *mut ffi::PyObject,
) -> ffi::PySendResult {
    // SAFETY: as for `method_call_send`, on a `Ready`.
    let py = unsafe { Python::assume_attached() };
    let r = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `iter` is the live instance CPython called the slot on, borrowed for
        // the call.
        let slf = unsafe { pyo3::Borrowed::from_ptr(py, iter) };
        let slf = slf.cast::<Ready>().map_err(PyErr::from)?;
        let v = slf.borrow_mut().take()?;
        Ok((ffi::PySendResult::PYGEN_RETURN, v.into_ptr()))
    }))
    .unwrap_or_else(|_| {
        Err(PySystemError::new_err(
            "internal error in the native awaitable",
        ))
    });
    send_result(py, r, result)
}

/// `am_await` of `Ready`: the object itself (what `__await__` returns), without the
/// method trampoline.
unsafe extern "C" fn ready_await(o: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: CPython calls am_await with the GIL held on a live instance of the type the
    // slot was installed on; the new reference returned is the caller's.
    unsafe { ffi::Py_IncRef(o) };
    o
}

/// An awaitable whose `await` gives `value` at once.
#[pyfunction]
pub fn ready(py: Python<'_>, value: Py<PyAny>) -> PyResult<Py<Ready>> {
    new_ready(py, value)
}

/// An awaitable whose `await` gives `obj.<name>` read now (an async getter of a field of
/// an immutable type: one call instead of a read and a call).
#[pyfunction]
pub fn ready_attr(obj: &Bound<'_, PyAny>, name: &Bound<'_, PyString>) -> PyResult<Py<Ready>> {
    ready_of(obj, name)
}

/// The async getter of a field of an immutable type, installed as the class attribute
/// of `@oaas.getter` while the native implementation is configured
/// (`oaas_sdk/model/methods.py` `_make_getter`): `obj.get_x()` gives a [`Ready`] of
/// `obj.x` read now, in one native call with no Python frame. It is a method descriptor
/// (`Py_TPFLAGS_METHOD_DESCRIPTOR`, vectorcall): `obj.get_x()` calls it with `obj` and
/// makes no bound method; `obj.get_x` is a bound method (`types.MethodType`), `Cls.get_x`
/// the getter itself. Attributes set on it (`functools.update_wrapper`: `__name__`,
/// `__wrapped__`, `_oaas_spec`, ...) live in its `__dict__`.
#[pyclass(module = "oaas_sdk._native", name = "AsyncGetter", frozen, dict)]
pub struct AsyncGetter {
    /// The vectorcall entry; read by CPython at `tp_vectorcall_offset`.
    vectorcall: ffi::vectorcallfunc,
    /// The field read.
    field: Py<PyString>,
}

extern "C" {
    /// `types.MethodType(func, self)` (CPython API, not declared by pyo3-ffi).
    fn PyMethod_New(func: *mut ffi::PyObject, slf: *mut ffi::PyObject) -> *mut ffi::PyObject;
}

/// A [`Ready`] of `obj.<field>`.
fn ready_of(obj: &Bound<'_, PyAny>, field: &Bound<'_, PyString>) -> PyResult<Py<Ready>> {
    let value = obj.getattr(field)?;
    new_ready(obj.py(), value.unbind())
}

/// A `Ready` the module keeps (a strong reference, or NULL before the first): reused by
/// [`new_ready`] while nobody else holds it, which is the common case of
/// `await obj.get_x()` (the awaitable is dropped when the await returns), so a getter call
/// allocates and frees nothing.
#[cfg(not(Py_GIL_DISABLED))]
static SPARE: std::sync::atomic::AtomicPtr<ffi::PyObject> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

/// A `Ready` of `value`: the spare one when free, else a new one (kept as the spare when
/// there is none yet).
fn new_ready(py: Python<'_>, value: Py<PyAny>) -> PyResult<Py<Ready>> {
    #[cfg(not(Py_GIL_DISABLED))]
    {
        use std::sync::atomic::Ordering::Relaxed;
        let spare = SPARE.load(Relaxed);
        if spare.is_null() {
            let r = Py::new(py, Ready { value: Some(value) })?;
            SPARE.store(r.clone_ref(py).into_ptr(), Relaxed);
            return Ok(r);
        }
        // SAFETY: `spare` is a live `Ready` the module holds a reference to (stored above,
        // never released). With the GIL held (no free-threaded build here) nobody else can
        // take a reference meanwhile, and a reference count of 1 means the module's is the
        // only one: no awaiter, no borrow, so its value may be replaced.
        unsafe {
            if ffi::Py_REFCNT(spare) == 1 {
                let r = Bound::from_borrowed_ptr(py, spare).cast_into_unchecked::<Ready>();
                let old = r.borrow_mut().value.replace(value);
                drop(old.map(|o| o.into_bound(py))); // released now, not deferred
                return Ok(r.unbind());
            }
        }
    }
    Py::new(py, Ready { value: Some(value) })
}

/// The vectorcall of `AsyncGetter`: `getter(obj)`.
unsafe extern "C" fn getter_vectorcall(
    callable: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: usize,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls a vectorcall with the GIL held.
    let py = unsafe { Python::assume_attached() };
    let r = catch_unwind(AssertUnwindSafe(|| -> PyResult<Py<Ready>> {
        // SAFETY: `nargsf` as passed by CPython; `kwnames` is NULL or a tuple.
        let nargs = unsafe { ffi::PyVectorcall_NARGS(nargsf) };
        let nkw = if kwnames.is_null() {
            0
        } else {
            // SAFETY: a live tuple (see above).
            unsafe { ffi::PyTuple_GET_SIZE(kwnames) }
        };
        if nargs != 1 || nkw != 0 {
            return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                "an async getter takes no arguments ({} given)",
                nargs + nkw - 1
            )));
        }
        // SAFETY: `callable` is the live instance CPython calls (an AsyncGetter: the
        // vectorcall is installed on that type only) and `args[0]` a live borrowed
        // reference, both for the duration of the call.
        let (slf, obj) = unsafe {
            (
                pyo3::Borrowed::from_ptr(py, callable),
                pyo3::Borrowed::from_ptr(py, *args),
            )
        };
        let slf = slf.cast::<AsyncGetter>().map_err(PyErr::from)?;
        ready_of(&obj, slf.get().field.bind(py))
    }))
    .unwrap_or_else(|_| {
        Err(PySystemError::new_err(
            "internal error in the native getter",
        ))
    });
    match r {
        Ok(v) => v.into_ptr(),
        Err(e) => {
            e.restore(py);
            std::ptr::null_mut()
        }
    }
}

#[pymethods]
impl AsyncGetter {
    /// `AsyncGetter(field)`: the getter of field `field`.
    #[new]
    fn new(field: Bound<'_, PyString>) -> Self {
        AsyncGetter {
            vectorcall: getter_vectorcall,
            field: field.unbind(),
        }
    }

    /// The field it reads.
    #[getter]
    fn field(&self, py: Python<'_>) -> Py<PyString> {
        self.field.clone_ref(py)
    }

    fn __call__(&self, obj: &Bound<'_, PyAny>) -> PyResult<Py<Ready>> {
        ready_of(obj, self.field.bind(obj.py()))
    }

    fn __get__(
        slf: &Bound<'_, Self>,
        obj: Option<&Bound<'_, PyAny>>,
        _owner: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        bind(slf.as_any(), obj)
    }
}

/// The wrapper of an async method or setter, installed as its class attribute while the
/// native implementation is configured (`oaas_sdk/model/methods.py`): `obj.m(*args,
/// **kwargs)` is `method_call(spec, obj, args, kwargs)` in one native call, with no
/// Python frame and no argument tuple or dict made for a wrapper. A method descriptor as
/// [`AsyncGetter`] is (vectorcall; `obj.m` a bound method, `Cls.m` the wrapper itself;
/// attributes in its `__dict__`).
#[pyclass(module = "oaas_sdk._native", name = "AsyncMethod", frozen, dict)]
pub struct AsyncMethod {
    /// The vectorcall entry; read by CPython at `tp_vectorcall_offset`.
    vectorcall: ffi::vectorcallfunc,
    /// The `MethodSpec` run.
    spec: Py<PyAny>,
}

/// The vectorcall of `AsyncMethod`: `wrapper(obj, *args, **kwargs)`.
unsafe extern "C" fn async_method_vectorcall(
    callable: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: usize,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls a vectorcall with the GIL held.
    let py = unsafe { Python::assume_attached() };
    let r = catch_unwind(AssertUnwindSafe(|| -> PyResult<Py<MethodCall>> {
        // SAFETY: `nargsf` as passed by CPython.
        let nargs = unsafe { ffi::PyVectorcall_NARGS(nargsf) };
        if nargs < 1 {
            return Err(pyo3::exceptions::PyTypeError::new_err(
                "a method needs the object it is called on",
            ));
        }
        // SAFETY: `callable` is the live instance CPython calls (an AsyncMethod: the
        // vectorcall is installed on that type only); `args` holds `nargs` live borrowed
        // references, then one per name of `kwnames` (NULL or a tuple of str), for the
        // duration of the call. PyTuple_New gives a new tuple (or NULL with an error) whose
        // items PyTuple_SET_ITEM fills, stealing a new reference each.
        let (slf, obj, rest, kwargs) = unsafe {
            let slf = pyo3::Borrowed::from_ptr(py, callable);
            let obj = pyo3::Borrowed::from_ptr(py, *args).to_owned();
            let rest = Bound::from_owned_ptr_or_err(py, ffi::PyTuple_New(nargs - 1))?
                .cast_into_unchecked::<PyTuple>();
            for i in 1..nargs {
                let a = *args.offset(i);
                ffi::Py_IncRef(a);
                ffi::PyTuple_SET_ITEM(rest.as_ptr(), i - 1, a);
            }
            let kwargs = if kwnames.is_null() || ffi::PyTuple_GET_SIZE(kwnames) == 0 {
                None
            } else {
                let names = pyo3::Borrowed::from_ptr(py, kwnames).cast_unchecked::<PyTuple>();
                let d = PyDict::new(py);
                for (j, name) in names.iter().enumerate() {
                    let v = pyo3::Borrowed::from_ptr(py, *args.offset(nargs + j as isize));
                    d.set_item(name, v)?;
                }
                Some(d.unbind())
            };
            (slf, obj, rest, kwargs)
        };
        let slf = slf.cast::<AsyncMethod>().map_err(PyErr::from)?;
        Py::new(
            py,
            MethodCall {
                spec: slf.get().spec.clone_ref(py),
                obj: obj.unbind(),
                stage: Stage::New {
                    args: rest.unbind(),
                    kwargs,
                },
            },
        )
    }))
    .unwrap_or_else(|_| {
        Err(PySystemError::new_err(
            "internal error in the native method",
        ))
    });
    match r {
        Ok(v) => v.into_ptr(),
        Err(e) => {
            e.restore(py);
            std::ptr::null_mut()
        }
    }
}

#[pymethods]
impl AsyncMethod {
    /// `AsyncMethod(spec)`: the wrapper running `spec` (a `MethodSpec`).
    #[new]
    fn new(spec: Py<PyAny>) -> Self {
        AsyncMethod {
            vectorcall: async_method_vectorcall,
            spec,
        }
    }

    /// The `MethodSpec` it runs.
    #[getter]
    fn spec(&self, py: Python<'_>) -> Py<PyAny> {
        self.spec.clone_ref(py)
    }

    #[pyo3(signature = (obj, *args, **kwargs))]
    fn __call__(
        &self,
        py: Python<'_>,
        obj: Py<PyAny>,
        args: Py<PyTuple>,
        kwargs: Option<Bound<'_, PyDict>>,
    ) -> PyResult<Py<MethodCall>> {
        method_call(
            py,
            self.spec.clone_ref(py),
            obj,
            args,
            kwargs.unwrap_or_else(|| PyDict::new(py)),
        )
    }

    fn __get__(
        slf: &Bound<'_, Self>,
        obj: Option<&Bound<'_, PyAny>>,
        _owner: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        bind(slf.as_any(), obj)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.spec)
    }
}

/// `__get__` of a method descriptor: a bound method of `obj`, or the descriptor itself
/// when read from the class.
fn bind(slf: &Bound<'_, PyAny>, obj: Option<&Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
    match obj {
        Some(o) if !o.is_none() => {
            // SAFETY: live references; PyMethod_New returns a new reference or NULL with
            // an exception set.
            unsafe {
                Bound::from_owned_ptr_or_err(o.py(), PyMethod_New(slf.as_ptr(), o.as_ptr()))
                    .map(Bound::unbind)
            }
        }
        _ => Ok(slf.clone().unbind()),
    }
}

/// Make `T` a vectorcall method descriptor (pyo3 sets neither flag): the type was made by
/// pyo3 and is not yet used; its instances hold the vectorcall entry at `offset`
/// (measured on one of them by the caller).
///
/// # Safety
/// Every instance of `T` must hold a valid, always-set `vectorcallfunc` at `offset`, and
/// calling it with `obj` first must do what `T.__get__(obj)` then a call does (the
/// contract of Py_TPFLAGS_METHOD_DESCRIPTOR).
unsafe fn install_vectorcall<T: PyTypeInfo>(py: Python<'_>, offset: ffi::Py_ssize_t) {
    let tp = T::type_object(py);
    // SAFETY: `tp` is the heap type pyo3 made for T, alive for the module's life; the
    // caller guarantees the instances' layout. PyType_Modified invalidates caches of the
    // type.
    unsafe {
        let t = tp.as_ptr().cast::<ffi::PyTypeObject>();
        (*t).tp_vectorcall_offset = offset;
        (*t).tp_flags |= ffi::Py_TPFLAGS_HAVE_VECTORCALL | ffi::Py_TPFLAGS_METHOD_DESCRIPTOR;
        ffi::PyType_Modified(t);
    }
}

/// Install the vectorcalls of `AsyncGetter` and `AsyncMethod`.
fn install_vectorcalls(py: Python<'_>) -> PyResult<()> {
    let probe = Py::new(py, AsyncGetter::new(PyString::new(py, "probe")))?;
    let offset = std::ptr::addr_of!(probe.get().vectorcall) as isize - probe.as_ptr() as isize;
    // SAFETY: every AsyncGetter holds `getter_vectorcall` in `vectorcall` (the layout of a
    // pyclass is fixed per type, so at the offset measured on `probe`), which runs what
    // `__get__(obj)` then a call runs.
    unsafe { install_vectorcall::<AsyncGetter>(py, offset) };
    let probe = Py::new(py, AsyncMethod::new(py.None()))?;
    let offset = std::ptr::addr_of!(probe.get().vectorcall) as isize - probe.as_ptr() as isize;
    // SAFETY: as above, for AsyncMethod and `async_method_vectorcall`.
    unsafe { install_vectorcall::<AsyncMethod>(py, offset) };
    Ok(())
}

/// Give the type of `T` the `am_send` slot `send` (pyo3 defines no such slot; the heap
/// type's async methods live in the type object, which pyo3 made with `__await__`), and
/// the `am_await` slot `wait` when given (replacing pyo3's, which returns the same).
fn install_am_send<T: PyTypeInfo>(
    py: Python<'_>,
    send: ffi::sendfunc,
    wait: Option<ffi::unaryfunc>,
) -> PyResult<()> {
    let tp = T::type_object(py);
    // SAFETY: `tp` is a heap type made by pyo3 with an `__await__`, so `tp_as_async`
    // points to the `as_async` member of its `PyHeapTypeObject` (writable, alive as long
    // as the type); `am_send` exists from CPython 3.10 (this crate requires 3.11).
    // PyType_Modified invalidates caches of the type's slots.
    unsafe {
        let t = tp.as_ptr().cast::<ffi::PyTypeObject>();
        let am = (*t).tp_as_async;
        if am.is_null() {
            return Err(PySystemError::new_err("awaitable type without tp_as_async"));
        }
        (*am).am_send = Some(send);
        if wait.is_some() {
            (*am).am_await = wait;
        }
        ffi::PyType_Modified(t);
    }
    Ok(())
}

/// Register `MethodCall`, `Ready`, `method_call` and `ready` with the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<MethodCall>()?;
    m.add_class::<Ready>()?;
    m.add_class::<AsyncGetter>()?;
    m.add_class::<AsyncMethod>()?;
    install_vectorcalls(py)?;
    install_am_send::<MethodCall>(py, method_call_send, None)?;
    install_am_send::<Ready>(py, ready_send, Some(ready_await))?;
    m.add_function(wrap_pyfunction!(method_call, m)?)?;
    m.add_function(wrap_pyfunction!(method_call_sync, m)?)?;
    m.add_function(wrap_pyfunction!(ready, m)?)?;
    m.add_function(wrap_pyfunction!(ready_attr, m)?)
}
