//! The native front end of `OaasObject.commit_async` for committed objects
//! (oaas_sdk/model/object.py, `_oaas_commit_native`): read the object's bookkeeping and
//! encode its assigned fields and the live mutable fields changed in place ([`prepare`]),
//! queue the record (`Engine::submit`, in `py`), apply and settle it on the object
//! ([`apply`], [`settle`]: live fields parked), and, for durable commits, the future the
//! caller awaits ([`NativeWaiter`]): resolved here, on the event loop's thread, when the
//! persister reports the commit's batch, with the object's undo run first on failure.
//!
//! The Python definitions are the reference: `_oaas_prepare` / `_oaas_apply` /
//! `_oaas_undo_entries` of `OaasObject` and `_settle` of `oaas_sdk/engine/protocol.py`.

use pyo3::exceptions::PyKeyError;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyInt, PyList, PySet, PyString, PyType};
use smallvec::SmallVec;

use super::future::{Callbacks, CommitFuture};
use oprc_core::id::{Identity, ObjectId};
use oprc_core::store::layout::{Entries, WriteRecord};

use super::state::{class_attr, ObjectState, ERROR_FIELD_ATTR};

/// Field names of one commit: held inline up to a few (no allocation per commit).
type Names<'py> = SmallVec<[Bound<'py, PyString>; 4]>;

/// An object's commit, encoded and not yet queued.
pub(crate) struct Prepared<'py> {
    /// Field name and its new bytes, in the record's order.
    encoded: SmallVec<[(Bound<'py, PyString>, Bound<'py, PyBytes>); 4]>,
    /// Whether the object had live mutable fields (read, maybe changed in place): they
    /// are parked by [`apply`] / [`settle`].
    had_live: bool,
    state: ObjectState<'py>,
    committed: Bound<'py, PyDict>,
    dirty: Bound<'py, PySet>,
    version: u64,
    time_ms: i64,
    /// The state's `rt` and `stale` when the caller read them already.
    rt: Option<Bound<'py, PyAny>>,
    stale: Option<Bound<'py, PyAny>>,
}

/// The bookkeeping the native `commit_async` reads to decide on the one-call commit,
/// handed on so that [`prepare`] and [`apply`] do not read it again.
pub(crate) struct Known<'py> {
    pub state: ObjectState<'py>,
    pub version: u64,
    pub dirty: Bound<'py, PySet>,
    pub rt: Bound<'py, PyAny>,
    pub stale: Bound<'py, PyAny>,
}

/// Read `obj`'s state ([`ObjectState`]) and encode its dirty fields, and its live mutable
/// fields whose bytes differ from the committed ones (every field of `encoders` when the
/// object is new: version 0), into the commit's record with `encoders[name]` (the field's `FieldType`; its native `encode` is called
/// directly). Nothing on the object changes. `known`: the version, dirty set, runtime and stale mark
/// when the caller read them already (else they are read here). Errors: an encoding error
/// unchanged, with the field's name as its `_oaas_field` attribute; `TypeError` /
/// `AttributeError` when the object lacks its state; `ValueError` when a dirty field has
/// no encoder.
pub(crate) fn prepare<'py>(
    obj: &Bound<'py, PyAny>,
    encoders: &Bound<'py, PyDict>,
    known: Option<Known<'py>>,
) -> PyResult<(WriteRecord, Prepared<'py>)> {
    let py = obj.py();
    let (state, version, dirty, rt, stale) = match known {
        Some(k) => (k.state, k.version, k.dirty, Some(k.rt), Some(k.stale)),
        None => {
            let state = ObjectState::of(obj)?;
            let version = state.version()?.extract()?;
            let dirty = state.dirty()?;
            (state, version, dirty, None, None)
        }
    };
    let meta = state.meta()?;
    let committed = state.committed()?;
    let identity = identity_of(&meta)?;
    // Live mutable fields (read since the last commit, maybe changed in place) are
    // encoded too and kept only when their bytes differ from the committed ones, as
    // `_oaas_encode_changed` does.
    let live = state.live()?;
    let had_live = !live.is_empty();
    // A new object (never committed) writes every field, as `_oaas_encode_changed` does.
    let new = version == 0;
    // Names first: encoding may run Python code (a hint's conversion, the lazy descriptor
    // of a parked field) that must not find the set being iterated. Collected into a
    // vector: no set (`dirty | live`) nor tuple is made, so a commit allocates no object
    // the cyclic garbage collector tracks (in `commit_all` such allocations, with the
    // commits' futures alive, set off collections).
    // `names[assigned..]`: fields read, not assigned (a new object: none).
    let (names, assigned) = if new {
        let mut names = Names::with_capacity(encoders.len());
        for (name, _) in encoders.iter() {
            names.push(name.cast_into::<PyString>()?);
        }
        let all = names.len();
        (names, all)
    } else {
        let mut names = Names::with_capacity(dirty.len() + live.len());
        set_names(&dirty, &mut names)?;
        let assigned = names.len();
        if had_live {
            // Read but not assigned (an assigned field is encoded once).
            let mut read = Names::with_capacity(live.len());
            set_names(&live, &mut read)?;
            for name in read {
                if !dirty.contains(&name)? {
                    names.push(name);
                }
            }
        }
        (names, assigned)
    };
    let mut encoded = SmallVec::with_capacity(names.len());
    for (i, name) in names.into_iter().enumerate() {
        let data = encoders
            .get_item(&name)?
            .ok_or_else(|| {
                pyo3::exceptions::PyValueError::new_err(format!("no encoder for field {name}"))
            })
            .and_then(|enc| {
                let value = obj.getattr(&name)?;
                // `FieldType.encode`: a native method, called here directly.
                let data = match crate::codec::encode_field(&enc, &value) {
                    Some(r) => r?,
                    None => enc.call_method1(intern!(py, "encode"), (value,))?,
                };
                Ok(data.cast_into::<PyBytes>()?)
            });
        let data = match data {
            Ok(d) => d,
            Err(e) => {
                // Best effort: the caller words the message with the field's name.
                let _ = e.value(py).setattr(intern!(py, ERROR_FIELD_ATTR), &name);
                return Err(e);
            }
        };
        if i >= assigned {
            // Read but not assigned: written only when changed in place.
            if let Some(old) = committed.get_item(&name)? {
                if let Ok(old) = old.cast::<PyBytes>() {
                    if old.as_bytes() == data.as_bytes() {
                        continue;
                    }
                }
            }
        }
        encoded.push((name, data));
    }
    let entries = entries_of(&encoded)?;
    let time_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let mut record = WriteRecord::new(identity, version, time_ms);
    record.entries = entries;
    let prepared = Prepared {
        encoded,
        had_live,
        state,
        committed,
        dirty,
        version,
        time_ms,
        rt,
        stale,
    };
    Ok((record, prepared))
}

extern "C" {
    /// CPython's walk over a set's table (`Objects/setobject.c`, exported by CPython
    /// 3.x): 1 and a borrowed key while entries remain, 0 at the end; -1 with
    /// `SystemError` set when `set` is not a set. Not in `pyo3-ffi` (a private name).
    fn _PySet_NextEntry(
        set: *mut ffi::PyObject,
        pos: *mut ffi::Py_ssize_t,
        key: *mut *mut ffi::PyObject,
        hash: *mut ffi::Py_hash_t,
    ) -> std::ffi::c_int;
}

/// Append the names in `set` (a set of field names) to `out`, walking its table directly
/// (no iterator object per commit). `TypeError` when an element is not a str.
fn set_names<'py>(set: &Bound<'py, PySet>, out: &mut Names<'py>) -> PyResult<()> {
    let py = set.py();
    let mut pos: ffi::Py_ssize_t = 0;
    let mut key: *mut ffi::PyObject = std::ptr::null_mut();
    let mut hash: ffi::Py_hash_t = 0;
    loop {
        // SAFETY: `set` is a live set (typed `PySet`); the GIL is held and no Python code
        // runs during the walk (the keys are only borrowed, then made owned at once), so
        // the table does not change under it.
        let rc = unsafe { _PySet_NextEntry(set.as_ptr(), &mut pos, &mut key, &mut hash) };
        match rc {
            0 => return Ok(()),
            // SAFETY: `key` is a live element of the set (a borrowed reference).
            1 => out.push(unsafe { Bound::from_borrowed_ptr(py, key) }.cast_into::<PyString>()?),
            _ => return Err(PyErr::fetch(py)),
        }
    }
}

/// The slots of `ObjectMeta` (oaas_sdk/model/registry.py, a frozen dataclass with
/// `__slots__`), in the order read by [`identity_of`].
const META_SLOTS: [&str; 3] = ["cls_id", "partition_id", "object_id"];

/// Where the slots of the first `ObjectMeta` type seen live in its instances: the type
/// (compared by pointer before every direct read) and each slot's byte offset, from its
/// member descriptor; `None` when they are not plain object members (every read goes
/// through `getattr` then).
static META_LAYOUT: PyOnceLock<Option<(Py<PyType>, [ffi::Py_ssize_t; 3])>> = PyOnceLock::new();

fn meta_layout(ty: &Bound<'_, PyType>) -> PyResult<Option<(Py<PyType>, [ffi::Py_ssize_t; 3])>> {
    let mut offsets = [0; 3];
    for (i, name) in META_SLOTS.iter().enumerate() {
        let Some(d) = ty.getattr_opt(*name)? else {
            return Ok(None);
        };
        // SAFETY: `d` is a live object; only the address of the static type is taken.
        let is_member = unsafe { ffi::Py_TYPE(d.as_ptr()) == &raw mut ffi::PyMemberDescr_Type };
        if !is_member {
            return Ok(None);
        }
        // SAFETY: `d` is a member descriptor (checked above): a `PyMemberDescrObject`,
        // whose `d_member` points to its type's `PyMemberDef`, alive as long as the type
        // (held with the offsets).
        let def = unsafe { &*(*d.as_ptr().cast::<ffi::PyMemberDescrObject>()).d_member };
        if def.type_code != ffi::Py_T_OBJECT_EX {
            return Ok(None);
        }
        offsets[i] = def.offset;
    }
    Ok(Some((ty.clone().unbind(), offsets)))
}

/// The identity of an object from its `ObjectMeta`: its three slots read at their offsets
/// (no attribute lookup; `getattr` for another type or an unset slot). Errors: `TypeError`
/// for a cls_id that is not a str, a partition id that is not a u32, an object id that is
/// neither a u64 nor a str; `AttributeError` when `meta` lacks a field.
fn identity_of(meta: &Bound<'_, PyAny>) -> PyResult<Identity> {
    let py = meta.py();
    let mut slots: [Option<Bound<'_, PyAny>>; 3] = [None, None, None];
    #[cfg(not(Py_GIL_DISABLED))]
    {
        let layout = META_LAYOUT.get_or_try_init(py, || meta_layout(&meta.get_type()))?;
        if let Some((ty, offsets)) = layout {
            // SAFETY: reading the type pointer of a live object.
            if unsafe { ffi::Py_TYPE(meta.as_ptr()) } == ty.as_ptr().cast() {
                for (slot, off) in slots.iter_mut().zip(offsets) {
                    // SAFETY: `meta` is an instance of exactly the type the offsets were
                    // read from, so at each offset it holds that slot: a `PyObject*` it
                    // owns, or NULL when unset; with the GIL held nothing changes it
                    // during this read, and the new reference is taken at once.
                    let p = unsafe {
                        *meta
                            .as_ptr()
                            .cast::<u8>()
                            .offset(*off)
                            .cast::<*mut ffi::PyObject>()
                    };
                    if !p.is_null() {
                        // SAFETY: `p` is a live object (held by the slot).
                        *slot = Some(unsafe { Bound::from_borrowed_ptr(py, p) });
                    }
                }
            }
        }
    }
    let mut read = |i: usize| -> PyResult<Bound<'_, PyAny>> {
        match slots[i].take() {
            Some(v) => Ok(v),
            None => meta.getattr(META_SLOTS[i]),
        }
    };
    let cls_id = read(0)?;
    let partition_id = read(1)?;
    let object_id = read(2)?;
    Ok(Identity {
        cls_id: cls_id.cast::<PyString>()?.to_str()?.to_owned(),
        partition_id: partition_id.extract()?,
        object_id: match object_id.extract::<u64>() {
            Ok(n) => ObjectId::Num(n),
            Err(_) => ObjectId::Str(object_id.extract()?),
        },
    })
}

/// A record's entries from `(field name, value bytes)` pairs, in their order, sized
/// for all of them up front (one buffer, see [`Entries`]). Fails only on a name that is
/// not valid UTF-8 (a lone surrogate).
pub(crate) fn entries_of(pairs: &[(Bound<'_, PyString>, Bound<'_, PyBytes>)]) -> PyResult<Entries> {
    let mut size = 0;
    let mut strs: SmallVec<[(&str, &[u8]); 4]> = SmallVec::with_capacity(pairs.len());
    for (name, data) in pairs {
        let (name, data) = (name.to_str()?, data.as_bytes());
        size += name.len() + data.len();
        strs.push((name, data));
    }
    let mut entries = Entries::with_capacity(pairs.len(), size);
    for (name, data) in strs {
        entries.push(name, data);
    }
    Ok(entries)
}

impl<'py> Prepared<'py> {
    /// Whether nothing changed (a committed object with no assignment and its live fields
    /// equal to their committed bytes): nothing is queued, the object is only settled
    /// ([`settle`]). A new object always writes its record.
    pub fn is_empty(&self) -> bool {
        self.encoded.is_empty() && self.version != 0
    }

    /// What [`Undo::run`] needs to restore `obj` if this commit fails: the committed
    /// bytes its fields had before (read now, before [`apply`] replaces them).
    pub fn undo(&self, obj: &Bound<'py, PyAny>) -> PyResult<Undo> {
        let mut old = Vec::with_capacity(self.encoded.len());
        for (name, _) in &self.encoded {
            let bytes = self.committed.get_item(name)?.map(Bound::unbind);
            old.push((name.clone().unbind(), bytes));
        }
        Ok(Undo {
            obj: obj.clone().unbind(),
            version: self.version,
            old,
        })
    }
}

/// Apply a queued commit to `obj`, as `OaasObject._oaas_apply` does, on its state: the
/// new bytes go into `committed`, `version` and `updated_ms` (ms since the Unix epoch) are
/// set, `dirty` is emptied, the object leaves its runtime's dirty registry (`rt.dirty`,
/// keyed by `id(obj)`), and `stale[1]` takes the new version when it is a list. Nothing
/// here fails on a well-formed object.
pub(crate) fn apply<'py>(obj: &Bound<'py, PyAny>, p: Prepared<'py>) -> PyResult<()> {
    let py = obj.py();
    for (name, data) in p.encoded {
        p.committed.set_item(name, data)?;
    }
    p.state.set_version(p.version + 1)?;
    // Commits in the same millisecond keep the int already there (no new one per commit).
    let same_ms = p
        .state
        .updated_ms()?
        .cast::<PyInt>()
        .is_ok_and(|v| v.extract::<i64>().is_ok_and(|v| v == p.time_ms));
    if !same_ms {
        p.state.set_updated_ms(p.time_ms)?;
    }
    p.dirty.clear();
    let rt = match p.rt {
        Some(rt) => rt,
        None => p.state.rt()?,
    };
    let registry = rt.getattr(intern!(py, "dirty"))?.cast_into::<PyDict>()?;
    // Present: an object with dirty fields is in the registry (one lookup, not two).
    if let Err(e) = registry.del_item(obj.as_ptr() as usize) {
        if !e.is_instance_of::<PyKeyError>(py) {
            return Err(e);
        }
    }
    let stale = match p.stale {
        Some(stale) => stale,
        None => p.state.stale()?,
    };
    if let Ok(mark) = stale.cast_into::<PyList>() {
        // The int just stored (not a second one made).
        mark.set_item(1, p.state.version()?)?;
    }
    if p.had_live {
        park(obj, &p.state, &rt)?;
    }
    Ok(())
}

/// A commit with nothing to write ([`Prepared::is_empty`]): settle `obj` as
/// `OaasObject._oaas_settle` does (its live fields parked, out of the dirty registry).
pub(crate) fn settle<'py>(obj: &Bound<'py, PyAny>, p: Prepared<'py>) -> PyResult<()> {
    let py = obj.py();
    let rt = match p.rt {
        Some(rt) => rt,
        None => p.state.rt()?,
    };
    if p.had_live {
        park(obj, &p.state, &rt)?;
    }
    let registry = rt.getattr(intern!(py, "dirty"))?.cast_into::<PyDict>()?;
    if let Err(e) = registry.del_item(obj.as_ptr() as usize) {
        if !e.is_instance_of::<PyKeyError>(py) {
            return Err(e);
        }
    }
    Ok(())
}

/// Park `obj`'s live mutable fields (the second half of `OaasObject._oaas_settle`): each
/// value moves from the instance into `parked`, so the next read (the class's lazy
/// descriptor) marks the object again; `live` is emptied and the object leaves
/// `rt.touched` (a `WeakValueDictionary` keyed by `id(obj)`).
fn park<'py>(
    obj: &Bound<'py, PyAny>,
    state: &ObjectState<'py>,
    rt: &Bound<'py, PyAny>,
) -> PyResult<()> {
    let py = obj.py();
    let live = state.live()?;
    if live.is_empty() {
        return Ok(());
    }
    let parked = state.parked()?;
    for name in live.iter() {
        // SAFETY: live, GIL-held references; PyObject_GenericGetAttr returns a new
        // reference or NULL with an exception set (the instance attribute: a live field
        // is in the instance, which wins over the class's non-data descriptor).
        let value = unsafe {
            Bound::from_owned_ptr_or_err(
                py,
                ffi::PyObject_GenericGetAttr(obj.as_ptr(), name.as_ptr()),
            )
        }?;
        parked.set_item(&name, value)?;
        // SAFETY: as above; a NULL value deletes the instance attribute
        // (`object.__delattr__`, which keeps CPython's inline values); -1 with an
        // exception set on failure.
        let rc = unsafe {
            ffi::PyObject_GenericSetAttr(obj.as_ptr(), name.as_ptr(), std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(PyErr::fetch(py));
        }
    }
    live.clear();
    let touched = rt.getattr(intern!(py, "touched"))?;
    // `WeakValueDictionary.pop` is Python code: its plain dict of weak references is
    // popped instead (a dead reference left behind is removed by its own callback).
    match touched.getattr_opt(intern!(py, "data"))? {
        Some(data) if data.is_instance_of::<PyDict>() => {
            let data = data.cast_into::<PyDict>()?;
            if let Err(e) = data.del_item(obj.as_ptr() as usize) {
                if !e.is_instance_of::<PyKeyError>(py) {
                    return Err(e);
                }
            }
        }
        _ => {
            touched.call_method1(intern!(py, "pop"), (obj.as_ptr() as usize, py.None()))?;
        }
    }
    Ok(())
}

/// What a failed commit restores on its object: the version it had, and the committed
/// bytes of the fields it wrote (`None`: the field had none); the fields become dirty
/// again. Runs `obj._oaas_undo_entries` (the Python reference).
pub(crate) struct Undo {
    obj: Py<PyAny>,
    version: u64,
    /// Each written field and its committed bytes before the commit.
    old: Vec<(Py<PyString>, Option<Py<PyAny>>)>,
}

impl Undo {
    /// Restore the object (`_oaas_undo_entries`).
    pub(crate) fn run(&self, py: Python<'_>) -> PyResult<()> {
        let obj = self.obj.bind(py);
        let key = obj.call_method0(intern!(py, class_attr::KEY))?;
        let old = PyDict::new(py);
        for (name, bytes) in &self.old {
            if let Some(b) = bytes {
                old.set_item(name, b)?;
            }
        }
        let names = PyList::new(py, self.old.iter().map(|(name, _)| name))?;
        let undo = (self.version, old, PySet::empty(py)?);
        obj.call_method1(
            intern!(py, class_attr::UNDO_ENTRIES),
            (key, self.version + 1, names, undo),
        )?;
        Ok(())
    }
}

/// A durable commit's future (of `event_loop`), registered under the commit's token
/// until the persister reports its outcome.
pub(crate) struct NativeWaiter {
    pub event_loop: Py<PyAny>,
    pub future: Py<CommitFuture>,
    pub undo: Undo,
}

impl NativeWaiter {
    /// Resolve the future with the commit's outcome, on the thread of its event loop
    /// (`direct`: from a callback of that loop with no task running, see
    /// [`CommitFuture::resolve`]). A future already done (cancelled) is left alone, but a
    /// failure is still undone: the object must know (as `_settle` in
    /// oaas_sdk/engine/protocol.py). Errors of the undo go to `sys.unraisablehook`: the other
    /// commits of the batch must still resolve.
    pub fn settle(self, py: Python<'_>, error: Option<PyErr>, direct: bool) {
        let (future, done) = self.set_done(py, error);
        if let Some(done) = done {
            CommitFuture::run_callbacks(future.bind(py), done, direct);
        }
    }

    /// The first half of [`Self::settle`]: the object undone on failure, the future done
    /// (when still pending); its callbacks, to be run by `CommitFuture::run_callbacks`
    /// once every future of the batch is done.
    pub fn set_done(
        self,
        py: Python<'_>,
        error: Option<PyErr>,
    ) -> (Py<CommitFuture>, Option<(Callbacks, Py<PyAny>)>) {
        let NativeWaiter { future, undo, .. } = self;
        let error = error.map(|e| {
            if let Err(u) = undo.run(py) {
                u.write_unraisable(py, Some(undo.obj.bind(py)));
            }
            e.into_value(py).into_any()
        });
        // Released before the callbacks run: they may run the awaiting task, whose next
        // steps must not find the object still referenced from here.
        drop(undo);
        let done = CommitFuture::set_done(future.bind(py), error);
        (future, done)
    }

    /// Resolve the future from a thread that is not its loop's: through the loop's
    /// `call_soon_threadsafe`. When the loop is closed nobody awaits the future; a
    /// failure is still undone, here.
    pub fn settle_threadsafe(self, py: Python<'_>, error: Option<PyErr>) {
        let event_loop = self.event_loop.clone_ref(py);
        let call = match Bound::new(py, Settle::new(self, error)) {
            Ok(c) => c,
            Err(e) => return e.write_unraisable(py, None),
        };
        let scheduled = event_loop.call_method1(py, intern!(py, "call_soon_threadsafe"), (&call,));
        if scheduled.is_err() {
            // The loop is closed (RuntimeError): nobody awaits the future.
            if let Some((w, Some(_))) = call.get().take() {
                if let Err(u) = w.undo.run(py) {
                    u.write_unraisable(py, Some(w.undo.obj.bind(py)));
                }
            }
        }
    }
}

/// The callable `settle_threadsafe` schedules on another loop: settles its waiter once.
#[pyclass(module = "oaas_sdk._native", frozen)]
pub(crate) struct Settle {
    waiter: std::sync::Mutex<Option<(NativeWaiter, Option<PyErr>)>>,
}

impl Settle {
    fn new(waiter: NativeWaiter, error: Option<PyErr>) -> Settle {
        Settle {
            waiter: std::sync::Mutex::new(Some((waiter, error))),
        }
    }

    fn take(&self) -> Option<(NativeWaiter, Option<PyErr>)> {
        self.waiter.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

#[pymethods]
impl Settle {
    fn __call__(&self, py: Python<'_>) {
        // Run by a `call_soon_threadsafe` handle: a loop callback, no task running.
        if let Some((w, error)) = self.take() {
            w.settle(py, error, true);
        }
    }
}
