//! The pyo3 layer of the state codec: walks Python values into MessagePack bytes and builds
//! Python values from bytes (docs/format.md, "State codec"). Byte layouts live in
//! `msgpack` and `ext`; hint-driven checks and rebuilding of models, dataclasses and enums
//! stay in `oaas_sdk/codec.py`, which calls [`Codec`] for the bytes.

use std::cell::Cell;
use std::os::raw::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicPtr, Ordering};
use std::sync::{Mutex, OnceLock};

use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{
    PyByteArray, PyBytes, PyDict, PyFrozenSet, PyList, PySet, PyString, PyTuple, PyType,
};

use crate::ffi as py_fast;
use oprc_core::codec::ext::{self, Clock, Delta, ObjectId, MAX_DEPTH};
use oprc_core::codec::msgpack::{self as mp, DecodeError, Reader, Token};

/// Byte values at least this long are not copied into the encoder's scratch buffer: they
/// are copied once, straight from the Python buffer into the result.
const PIECE_MIN: usize = 2048;
/// Interrupt checks (`PyErr_CheckSignals`) every this many container elements.
const SIGNAL_EVERY: u32 = 1 << 16;
/// Initial capacity of the encoder's scratch buffer, and the largest one kept for reuse.
const SCRATCH_MIN: usize = 256;
const SCRATCH_KEEP: usize = 1 << 16;

thread_local! {
    /// The encoder's scratch buffer, reused across calls on one thread so that encoding a
    /// small value allocates only its result. An encode that starts while another runs
    /// (a fallback's Python code encoding) finds it empty and grows its own.
    static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

struct Piece<'py> {
    at: usize,
    ptr: *const u8,
    len: usize,
    _keep: Keep<'py>,
}

#[allow(dead_code)] // held only to keep the memory alive
enum Keep<'py> {
    Obj(Bound<'py, PyAny>),
    Buf(PyUntypedBuffer),
}

/// Encoder output: a scratch buffer plus large borrowed byte ranges spliced in at offsets.
struct Out<'py> {
    buf: Vec<u8>,
    pieces: Vec<Piece<'py>>,
    borrowed: usize,
    ticks: u32,
}

#[derive(Clone, Copy)]
struct Mark {
    buf: usize,
    pieces: usize,
    borrowed: usize,
}

impl<'py> Out<'py> {
    fn new() -> Self {
        let mut buf = SCRATCH.try_with(Cell::take).unwrap_or_default();
        buf.clear();
        buf.reserve(SCRATCH_MIN);
        Out {
            buf,
            pieces: Vec::new(),
            borrowed: 0,
            ticks: 0,
        }
    }

    fn mark(&self) -> Mark {
        Mark {
            buf: self.buf.len(),
            pieces: self.pieces.len(),
            borrowed: self.borrowed,
        }
    }

    fn len_since(&self, m: Mark) -> usize {
        self.buf.len() - m.buf + self.borrowed - m.borrowed
    }

    fn reset(&mut self, m: Mark) {
        self.buf.truncate(m.buf);
        self.pieces.truncate(m.pieces);
        self.borrowed = m.borrowed;
    }

    /// Appends `len` bytes at `ptr`, borrowing them when large. The caller guarantees that
    /// `keep` keeps the memory alive and unmoved.
    fn bytes(&mut self, ptr: *const u8, len: usize, keep: Keep<'py>) {
        if len >= PIECE_MIN {
            self.pieces.push(Piece {
                at: self.buf.len(),
                ptr,
                len,
                _keep: keep,
            });
            self.borrowed += len;
        } else if len > 0 {
            // SAFETY: `ptr` points at `len` readable bytes kept alive by `keep` (a bytes
            // object or an exported buffer), which lives until the end of this call.
            self.buf
                .extend_from_slice(unsafe { std::slice::from_raw_parts(ptr, len) });
        }
    }

    fn flatten(mut self) -> Vec<u8> {
        if self.pieces.is_empty() {
            return std::mem::take(&mut self.buf);
        }
        let mut v = Vec::with_capacity(self.buf.len() + self.borrowed);
        let mut from = 0;
        for p in &self.pieces {
            v.extend_from_slice(&self.buf[from..p.at]);
            // SAFETY: see `bytes`: the piece's memory is alive while `self` is.
            v.extend_from_slice(unsafe { std::slice::from_raw_parts(p.ptr, p.len) });
            from = p.at;
        }
        v.extend_from_slice(&self.buf[from..]);
        v
    }

    fn into_pybytes(self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        if self.pieces.is_empty() {
            return Ok(PyBytes::new(py, &self.buf));
        }
        let total = self.buf.len() + self.borrowed;
        let len = ffi::Py_ssize_t::try_from(total)
            .map_err(|_| PyValueError::new_err("result too large"))?;
        // SAFETY: PyBytes_FromStringAndSize(NULL, n) returns a new bytes object with n
        // uninitialised bytes (or NULL with an exception set, which from_owned_ptr_or_err
        // turns into Err). Nothing else can see the object before we return it, and the
        // loop below writes every one of its `total` bytes exactly once: the scratch
        // segments between pieces and each piece, whose memory is kept alive by `self`.
        // Skipping PyBytes::new_with avoids zero-filling a buffer we overwrite entirely.
        unsafe {
            let obj = Bound::from_owned_ptr_or_err(
                py,
                ffi::PyBytes_FromStringAndSize(std::ptr::null(), len),
            )?;
            let dst = ffi::PyBytes_AsString(obj.as_ptr()).cast::<u8>();
            let mut w = 0usize;
            let mut from = 0usize;
            for p in &self.pieces {
                let seg = &self.buf[from..p.at];
                std::ptr::copy_nonoverlapping(seg.as_ptr(), dst.add(w), seg.len());
                w += seg.len();
                std::ptr::copy_nonoverlapping(p.ptr, dst.add(w), p.len);
                w += p.len;
                from = p.at;
            }
            let seg = &self.buf[from..];
            std::ptr::copy_nonoverlapping(seg.as_ptr(), dst.add(w), seg.len());
            debug_assert_eq!(w + seg.len(), total);
            Ok(obj.cast_into_unchecked())
        }
    }
}

impl Drop for Out<'_> {
    fn drop(&mut self) {
        if self.buf.capacity() <= SCRATCH_KEEP {
            let buf = std::mem::take(&mut self.buf);
            let _ = SCRATCH.try_with(|c| c.set(buf));
        }
    }
}

// ----------------------------------------------------------------------------- context

/// A compiled encode plan (see `codec._plan_desc`): which exact types each node of a hint
/// passes through unchanged, so that the native encoder checks them itself and calls the
/// node's Python `_prep` only for values that need converting or refusing.
enum PlanNode {
    Any,
    Exact {
        types: Vec<Py<PyType>>,
        prep: Py<PyAny>,
    },
    List {
        elem: Box<PlanNode>,
        prep: Py<PyAny>,
    },
    Dict {
        keys: Vec<Py<PyType>>,
        val: Box<PlanNode>,
        prep: Py<PyAny>,
    },
    Record {
        cls: Py<PyType>,
        /// Name, its encoding (None: not valid UTF-8, `enc_str` refuses it) and node.
        fields: Vec<RecordField>,
        /// Read field values from the instance `__dict__` (pydantic models, whose
        /// `__getattr__` hook makes each attribute read slow), else by `getattr`.
        by_dict: bool,
        prep: Py<PyAny>,
    },
    Python {
        prep: Py<PyAny>,
    },
}

/// Whether `k` is the str `name` (the same object, or an exact str with the same text).
///
/// # Safety
/// Both must be valid references; `name` an exact str.
#[inline(always)]
unsafe fn same_str(k: *mut ffi::PyObject, name: *mut ffi::PyObject) -> bool {
    if k == name {
        return true;
    }
    // SAFETY: valid references (caller); str_utf8 only on exact strs. A failure (lone
    // surrogates) sets an exception, cleared: the strings are then not taken as equal.
    unsafe {
        if ffi::Py_TYPE(k) != std::ptr::addr_of_mut!(ffi::PyUnicode_Type) {
            return false;
        }
        match (py_fast::str_utf8(k), py_fast::str_utf8(name)) {
            (Some(a), Some(b)) => short_eq(a, b),
            _ => {
                ffi::PyErr_Clear();
                false
            }
        }
    }
}

/// A field of a [`PlanNode::Record`]: name, its encoding (None when `enc_str` refuses
/// it) and node.
type RecordField = (Py<PyString>, Option<Box<[u8]>>, PlanNode);

/// Item `i` of a plan description tuple: an iterable of types.
fn desc_types(t: &Bound<'_, PyTuple>, i: usize) -> PyResult<Vec<Py<PyType>>> {
    t.get_item(i)?
        .try_iter()?
        .map(|x| Ok(x?.cast_into::<PyType>()?.unbind()))
        .collect()
}

/// The last item of a plan description tuple: its Python fallback callable.
fn desc_last(t: &Bound<'_, PyTuple>) -> PyResult<Py<PyAny>> {
    Ok(t.get_item(t.len() - 1)?.unbind())
}

impl PlanNode {
    fn compile(desc: &Bound<'_, PyAny>) -> PyResult<PlanNode> {
        let t = desc.cast::<PyTuple>()?;
        let kind: String = t.get_item(0)?.extract()?;
        let types = |i: usize| desc_types(t, i);
        let last = || desc_last(t);
        Ok(match kind.as_str() {
            "any" => PlanNode::Any,
            "exact" => PlanNode::Exact {
                types: types(1)?,
                prep: last()?,
            },
            "list" => PlanNode::List {
                elem: Box::new(Self::compile(&t.get_item(1)?)?),
                prep: last()?,
            },
            "dict" => PlanNode::Dict {
                keys: types(1)?,
                val: Box::new(Self::compile(&t.get_item(2)?)?),
                prep: last()?,
            },
            "record" => {
                let mut fields = Vec::new();
                for f in t.get_item(2)?.try_iter()? {
                    let f = f?;
                    let name = f.get_item(0)?.cast_into::<PyString>()?;
                    let enc = name.to_str().ok().and_then(|n| {
                        let mut b = Vec::new();
                        mp::write_str(&mut b, n.as_bytes()).ok()?;
                        Some(b.into_boxed_slice())
                    });
                    fields.push((name.unbind(), enc, Self::compile(&f.get_item(1)?)?));
                }
                PlanNode::Record {
                    cls: t.get_item(1)?.cast_into::<PyType>()?.unbind(),
                    fields,
                    by_dict: t.get_item(3)?.is_truthy()?,
                    prep: last()?,
                }
            }
            "python" => PlanNode::Python { prep: last()? },
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown plan node {other:?}"
                )))
            }
        })
    }
}

fn has_type(types: &[Py<PyType>], t: *mut ffi::PyTypeObject) -> bool {
    types
        .iter()
        .any(|x| x.as_ptr().cast::<ffi::PyTypeObject>() == t)
}

/// A compiled encode plan for one field type (`Codec.plan`).
#[pyclass(frozen, module = "oaas_sdk._native", name = "Plan")]
pub struct Plan {
    root: PlanNode,
}

/// A compiled decode plan (see `codec._decode_plan_desc`): raw values of the exact types a
/// node accepts are final; others go to the node's Python `_conv`, as `FieldType.decode`
/// would send them.
enum DecPlan {
    Any,
    Exact {
        types: Vec<Py<PyType>>,
        conv: Py<PyAny>,
    },
    List {
        elem: Box<DecPlan>,
        conv: Py<PyAny>,
    },
    Dict {
        keys: Vec<Py<PyType>>,
        key_conv: Py<PyAny>,
        val: Box<DecPlan>,
        conv: Py<PyAny>,
    },
    /// A model or dataclass: the map's values decoded by field into a dict, then
    /// `finish(dict, depth)`; anything irregular goes to `conv` with the raw value.
    Record {
        fields: Vec<(Box<[u8]>, DecPlan)>,
        finish: Py<PyAny>,
        /// A pydantic model whose `finish` is `model_validate(dict, by_name=True)`: its
        /// validator is called directly, with the keyword names `("by_name",)`.
        model: Option<(Py<PyType>, Py<PyTuple>)>,
        conv: Py<PyAny>,
    },
    Python {
        conv: Py<PyAny>,
    },
}

impl DecPlan {
    fn compile(desc: &Bound<'_, PyAny>) -> PyResult<DecPlan> {
        let t = desc.cast::<PyTuple>()?;
        let kind: String = t.get_item(0)?.extract()?;
        let types = |i: usize| desc_types(t, i);
        let last = || desc_last(t);
        Ok(match kind.as_str() {
            "any" => DecPlan::Any,
            "exact" => DecPlan::Exact {
                types: types(1)?,
                conv: last()?,
            },
            "list" => DecPlan::List {
                elem: Box::new(Self::compile(&t.get_item(1)?)?),
                conv: last()?,
            },
            "dict" => DecPlan::Dict {
                keys: types(1)?,
                key_conv: t.get_item(2)?.unbind(),
                val: Box::new(Self::compile(&t.get_item(3)?)?),
                conv: last()?,
            },
            "record" => {
                let mut fields = Vec::new();
                for f in t.get_item(1)?.try_iter()? {
                    let f = f?;
                    let name = f.get_item(0)?.cast_into::<PyString>()?;
                    let name: Box<[u8]> = name.to_str()?.as_bytes().into();
                    fields.push((name, Self::compile(&f.get_item(1)?)?));
                }
                let model = match t.len() {
                    5 => t.get_item(3)?.cast_into::<PyType>().ok(),
                    _ => None,
                };
                let py = t.py();
                DecPlan::Record {
                    fields,
                    finish: t.get_item(2)?.unbind(),
                    model: model
                        .map(|m| {
                            (
                                m.unbind(),
                                PyTuple::new(py, [pyo3::intern!(py, "by_name")]).map(Bound::unbind),
                            )
                        })
                        .map(|(m, k)| k.map(|k| (m, k)))
                        .transpose()?,
                    conv: last()?,
                }
            }
            "python" => DecPlan::Python { conv: last()? },
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown decode plan node {other:?}"
                )))
            }
        })
    }
}

impl DecPlan {
    /// Whether decoding may reach an `Any` part, which builds references with the default
    /// reference factory.
    fn has_any(&self) -> bool {
        match self {
            // Keys that are not fields decode as under `Any`.
            DecPlan::Any | DecPlan::Record { .. } => true,
            DecPlan::List { elem, .. } => elem.has_any(),
            DecPlan::Dict { val, .. } => val.has_any(),
            DecPlan::Exact { .. } | DecPlan::Python { .. } => false,
        }
    }
}

/// A compiled decode plan for one field type (`Codec.decode_plan`).
#[pyclass(frozen, module = "oaas_sdk._native", name = "DecodePlan")]
pub struct DecodePlan {
    root: DecPlan,
    needs_factory: bool,
}

struct Numpy {
    ndarray: Py<PyType>,
}

/// The native codec: Python types and helpers it needs, given once by `oaas_sdk.codec`.
///
/// Built by `codec.set_backend()`; users never construct it.
#[pyclass(frozen, module = "oaas_sdk._native", name = "Codec")]
pub struct Codec {
    t_datetime: Py<PyType>,
    t_date: Py<PyType>,
    t_time: Py<PyType>,
    t_timedelta: Py<PyType>,
    t_uuid: Py<PyType>,
    t_decimal: Py<PyType>,
    t_ext: Py<PyType>,
    ser_error: Py<PyType>,
    too_deep: Py<PyType>,
    mismatch: Py<PyType>,
    prep_any: Py<PyAny>,
    bigint_bytes: Py<PyAny>,
    decimal_str: Py<PyAny>,
    dtype_str: Py<PyAny>,
    tz: Py<PyAny>,
    dec_decimal: Py<PyAny>,
    make_ndarray: Py<PyAny>,
    raw_ref: Py<PyAny>,
    int_from_bytes: Py<PyAny>,
    numpy: OnceLock<Numpy>,
    dtypes: Mutex<Vec<(Py<PyAny>, Py<PyBytes>)>>,
    keys: Mutex<KeyCache>,
    /// Whether `codec.set_backend` made this codec the active one: a [`Coder`] of an
    /// inactive codec hands its calls to the field type's Python code.
    active: AtomicBool,
    /// `codec.set_default_ref_factory`'s function, for `Any` parts decoded by a [`Coder`].
    ref_factory: Mutex<Option<Py<PyAny>>>,
}

fn ptr_of<T>(t: &Py<T>) -> *mut ffi::PyObject {
    t.as_ptr()
}

struct DecodeMode<'py, 'c> {
    /// Under an `Any` hint: references go through this factory and the result is final.
    ref_factory: Option<Bound<'py, PyAny>>,
    /// Bin values at least this long become memoryview slices of `source` (0: never).
    view_min: usize,
    source: Option<Bound<'py, PyAny>>,
    view_of: Option<Bound<'py, PyAny>>,
    ticks: u32,
    /// Address of the first input byte, to turn a slice into an offset.
    base: usize,
    /// The key cache, locked at the first map key (`keys_from` until then), when no other
    /// decode on this thread holds it (re-entry).
    keys: Option<std::sync::MutexGuard<'c, KeyCache>>,
    keys_from: Option<&'c Mutex<KeyCache>>,
}

impl DecodeMode<'_, '_> {
    fn key_cache(&mut self) -> Option<&mut KeyCache> {
        if let Some(src) = self.keys_from.take() {
            self.keys = src.try_lock().ok();
        }
        self.keys.as_deref_mut()
    }
}

impl Codec {
    fn ser_err(&self, py: Python<'_>, msg: impl Into<String>) -> PyErr {
        PyErr::from_type(self.ser_error.bind(py).clone(), msg.into())
    }

    fn derr(&self, py: Python<'_>, e: DecodeError) -> PyErr {
        self.ser_err(py, e.0)
    }

    fn too_deep(&self, py: Python<'_>) -> PyErr {
        PyErr::from_type(
            self.too_deep.bind(py).clone(),
            format!("containers nest more than {MAX_DEPTH} levels deep"),
        )
    }

    fn ndarray_type(&self, py: Python<'_>) -> Option<*mut ffi::PyObject> {
        if let Some(np) = self.numpy.get() {
            return Some(np.ndarray.as_ptr());
        }
        let modules = py.import("sys").ok()?.getattr("modules").ok()?;
        let np = modules.get_item("numpy").ok()?;
        let nd = np.getattr("ndarray").ok()?.cast_into::<PyType>().ok()?;
        let _ = self.numpy.set(Numpy {
            ndarray: nd.unbind(),
        });
        self.numpy.get().map(|n| n.ndarray.as_ptr())
    }

    // ------------------------------------------------------------------------- encode

    fn enc<'py>(
        &self,
        v: &Bound<'py, PyAny>,
        out: &mut Out<'py>,
        depth: usize,
        fallback: bool,
    ) -> PyResult<()> {
        let py = v.py();
        let t = v.get_type_ptr().cast::<ffi::PyObject>();
        // SAFETY: reading the address of the interpreter's static type objects.
        let (t_str, t_int, t_float, t_bool, t_none, t_list, t_dict, t_tuple, t_bytes) = unsafe {
            (
                std::ptr::addr_of_mut!(ffi::PyUnicode_Type).cast::<ffi::PyObject>(),
                std::ptr::addr_of_mut!(ffi::PyLong_Type).cast::<ffi::PyObject>(),
                std::ptr::addr_of_mut!(ffi::PyFloat_Type).cast::<ffi::PyObject>(),
                std::ptr::addr_of_mut!(ffi::PyBool_Type).cast::<ffi::PyObject>(),
                ffi::Py_TYPE(ffi::Py_None()).cast::<ffi::PyObject>(),
                std::ptr::addr_of_mut!(ffi::PyList_Type).cast::<ffi::PyObject>(),
                std::ptr::addr_of_mut!(ffi::PyDict_Type).cast::<ffi::PyObject>(),
                std::ptr::addr_of_mut!(ffi::PyTuple_Type).cast::<ffi::PyObject>(),
                std::ptr::addr_of_mut!(ffi::PyBytes_Type).cast::<ffi::PyObject>(),
            )
        };
        if t == t_str {
            return self.enc_str(v, out);
        }
        if t == t_int {
            return self.enc_int(v, out);
        }
        if t == t_float {
            // SAFETY: `v` is exactly a float, for which PyFloat_AsDouble cannot fail.
            mp::write_f64(&mut out.buf, unsafe { ffi::PyFloat_AsDouble(v.as_ptr()) });
            return Ok(());
        }
        if t == t_bool {
            mp::write_bool(&mut out.buf, v.is_truthy()?);
            return Ok(());
        }
        if t == t_none {
            mp::write_nil(&mut out.buf);
            return Ok(());
        }
        if t == t_list {
            return self.enc_list(v, out, depth);
        }
        if t == t_dict {
            return self.enc_dict(v, out, depth, fallback);
        }
        if t == t_bytes {
            // SAFETY: `v` is exactly bytes; its buffer is immutable and lives as long as
            // the `Keep::Obj` reference we store with the piece.
            let (ptr, len) = unsafe {
                (
                    ffi::PyBytes_AsString(v.as_ptr()).cast::<u8>().cast_const(),
                    ffi::PyBytes_Size(v.as_ptr()) as usize,
                )
            };
            mp::write_bin_header(&mut out.buf, len).map_err(|e| self.derr(py, e))?;
            out.bytes(ptr, len, Keep::Obj(v.clone()));
            return Ok(());
        }
        if t == t_tuple {
            return self.enc_tuple(v, out, depth);
        }
        let (t_bytearray, t_memoryview, t_set, t_frozenset) = (
            std::ptr::addr_of_mut!(ffi::PyByteArray_Type).cast::<ffi::PyObject>(),
            std::ptr::addr_of_mut!(ffi::PyMemoryView_Type).cast::<ffi::PyObject>(),
            std::ptr::addr_of_mut!(ffi::PySet_Type).cast::<ffi::PyObject>(),
            std::ptr::addr_of_mut!(ffi::PyFrozenSet_Type).cast::<ffi::PyObject>(),
        );
        if t == t_bytearray || t == t_memoryview {
            return self.enc_buffer(v, out);
        }
        if t == t_set {
            return self.enc_set(v, out, depth, ext::EXT_SET);
        }
        if t == t_frozenset {
            return self.enc_set(v, out, depth, ext::EXT_FROZENSET);
        }
        if t == ptr_of(&self.t_datetime) {
            return self.enc_datetime(v, out);
        }
        if t == ptr_of(&self.t_date) {
            let c = Clock {
                year: v.getattr("year")?.extract()?,
                month: v.getattr("month")?.extract()?,
                day: v.getattr("day")?.extract()?,
                ..Clock::default()
            };
            let mut p = Vec::with_capacity(4);
            ext::put_date(&mut p, &c);
            return self.ext(py, out, ext::EXT_DATE, &p);
        }
        if t == ptr_of(&self.t_time) {
            return self.enc_time(v, out);
        }
        if t == ptr_of(&self.t_timedelta) {
            let d = Delta {
                days: v.getattr("days")?.extract()?,
                seconds: v.getattr("seconds")?.extract()?,
                microseconds: v.getattr("microseconds")?.extract()?,
            };
            let mut p = Vec::with_capacity(12);
            ext::put_timedelta(&mut p, &d);
            return self.ext(py, out, ext::EXT_TIMEDELTA, &p);
        }
        if t == ptr_of(&self.t_uuid) {
            let n: u128 = v.getattr("int")?.extract()?;
            return self.ext(py, out, ext::EXT_UUID, &n.to_be_bytes());
        }
        if t == ptr_of(&self.t_decimal) {
            let s = self.decimal_str.bind(py).call1((v,))?;
            let s = s.cast::<PyString>()?.to_str()?;
            return self.ext(py, out, ext::EXT_DECIMAL, s.as_bytes());
        }
        if t == ptr_of(&self.t_ext) {
            let code: i8 = v.get_item(0)?.extract()?;
            let data = v.get_item(1)?;
            let data = data.cast::<PyBytes>()?;
            let b = data.as_bytes();
            mp::write_ext_header(&mut out.buf, b.len(), code).map_err(|e| self.derr(py, e))?;
            out.bytes(b.as_ptr(), b.len(), Keep::Obj(data.clone().into_any()));
            return Ok(());
        }
        if let Some(nd) = self.ndarray_type(py) {
            if t == nd {
                if self.enc_ndarray(v, out)? {
                    return Ok(());
                }
                // No C-contiguous buffer (0-d, datetime64, strided): Python copies it.
                let prepared = self.prep_any.bind(py).call1((v, depth))?;
                return self.enc(&prepared, out, depth, false);
            }
        }
        if !fallback {
            return Err(PyTypeError::new_err(format!(
                "cannot store a value of type {:?}",
                v.get_type().name()?.to_string()
            )));
        }
        // Enums, models, dataclasses, references, subclasses of the base types and
        // unsupported values: Python prepares them (docs/format.md, "Core types").
        let prepared = self.prep_any.bind(py).call1((v, depth))?;
        self.enc(&prepared, out, depth, false)
    }

    fn ext(&self, py: Python<'_>, out: &mut Out<'_>, code: i8, payload: &[u8]) -> PyResult<()> {
        mp::write_ext_header(&mut out.buf, payload.len(), code).map_err(|e| self.derr(py, e))?;
        out.buf.extend_from_slice(payload);
        Ok(())
    }

    fn enc_str(&self, v: &Bound<'_, PyAny>, out: &mut Out<'_>) -> PyResult<()> {
        let py = v.py();
        let mut size: ffi::Py_ssize_t = 0;
        // SAFETY: `v` is exactly a str. PyUnicode_AsUTF8AndSize returns a pointer to its
        // cached UTF-8 form (valid while `v` lives, which outlasts this copy) or NULL with
        // an exception set (lone surrogates).
        let p = unsafe { ffi::PyUnicode_AsUTF8AndSize(v.as_ptr(), &mut size) };
        if p.is_null() {
            let e = PyErr::fetch(py);
            return Err(self.ser_err(py, format!("cannot encode str: {e}")));
        }
        // SAFETY: see above; `size` bytes are readable at `p`.
        let s = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), size as usize) };
        mp::write_str(&mut out.buf, s).map_err(|e| self.derr(py, e))
    }

    fn enc_int(&self, v: &Bound<'_, PyAny>, out: &mut Out<'_>) -> PyResult<()> {
        let mut overflow: c_int = 0;
        // SAFETY: `v` is exactly an int; with an overflow flag the call cannot fail.
        let n = unsafe { ffi::PyLong_AsLongLongAndOverflow(v.as_ptr(), &mut overflow) };
        if overflow == 0 {
            mp::write_i64(&mut out.buf, n);
            return Ok(());
        }
        if overflow > 0 {
            if let Ok(u) = v.extract::<u64>() {
                mp::write_u64(&mut out.buf, u);
                return Ok(());
            }
        }
        let py = v.py();
        let payload = self.bigint_bytes.bind(py).call1((v,))?;
        let payload = payload.cast::<PyBytes>()?;
        self.ext(py, out, ext::EXT_BIGINT, payload.as_bytes())
    }

    fn tick(out: &mut Out<'_>, py: Python<'_>) -> PyResult<()> {
        out.ticks += 1;
        if out.ticks >= SIGNAL_EVERY {
            out.ticks = 0;
            py.check_signals()?;
        }
        Ok(())
    }

    fn enc_list<'py>(
        &self,
        v: &Bound<'py, PyAny>,
        out: &mut Out<'py>,
        depth: usize,
    ) -> PyResult<()> {
        let py = v.py();
        if depth >= MAX_DEPTH {
            return Err(self.too_deep(py));
        }
        let list = v.cast::<PyList>()?;
        let n = list.len();
        mp::write_array_header(&mut out.buf, n).map_err(|e| self.derr(py, e))?;
        for i in 0..n {
            // A value's own code (a model property reached through a fallback) could shrink
            // the list while we walk it: get_item checks the index.
            let item = list
                .get_item(i)
                .map_err(|_| self.ser_err(py, "list changed size during encoding"))?;
            self.enc(&item, out, depth + 1, true)?;
            Self::tick(out, py)?;
        }
        if list.len() != n {
            return Err(self.ser_err(py, "list changed size during encoding"));
        }
        Ok(())
    }

    fn enc_dict<'py>(
        &self,
        v: &Bound<'py, PyAny>,
        out: &mut Out<'py>,
        depth: usize,
        fallback: bool,
    ) -> PyResult<()> {
        let py = v.py();
        if depth >= MAX_DEPTH {
            return Err(self.too_deep(py));
        }
        let n = v.len()?;
        let mark = out.mark();
        mp::write_map_header(&mut out.buf, n).map_err(|e| self.derr(py, e))?;
        let mut pos: ffi::Py_ssize_t = 0;
        let mut k: *mut ffi::PyObject = std::ptr::null_mut();
        let mut x: *mut ffi::PyObject = std::ptr::null_mut();
        let mut seen = 0usize;
        // SAFETY: `v` is exactly a dict. dict_next (as PyDict_Next) yields borrowed references, which we
        // turn into owned ones at once, so they stay valid even if Python code run below
        // (a fallback) changes the dict; dict_next bounds-checks `pos` against the
        // current table, and a size change is reported as an error after the step.
        while unsafe { py_fast::dict_next(v.as_ptr(), &mut pos, &mut k, &mut x) } {
            // SAFETY: k and x are valid borrowed references returned just now.
            let (key, val) = unsafe {
                (
                    Bound::from_borrowed_ptr(py, k),
                    Bound::from_borrowed_ptr(py, x),
                )
            };
            seen += 1;
            if key.is_exact_instance_of::<PyString>() {
                self.enc_str(&key, out)?;
            } else if key.get_type_ptr() == std::ptr::addr_of_mut!(ffi::PyLong_Type) {
                self.enc_int(&key, out)?;
            } else if fallback {
                // Keys that need converting (enums, str/int subclasses) or refusing:
                // Python prepares the whole dict and checks that keys stay distinct.
                out.reset(mark);
                let prepared = self.prep_any.bind(py).call1((v, depth))?;
                return self.enc(&prepared, out, depth, false);
            } else {
                return Err(self.ser_err(py, "dict keys must be str or int"));
            }
            self.enc(&val, out, depth + 1, true)?;
            if v.len()? != n {
                return Err(self.ser_err(py, "dict changed size during encoding"));
            }
            Self::tick(out, py)?;
        }
        if seen != n {
            return Err(self.ser_err(py, "dict changed size during encoding"));
        }
        Ok(())
    }

    /// Writes an ext header then a payload produced by `body`, which may contain borrowed
    /// pieces: a maximal header is reserved and shrunk once the payload length is known.
    fn enc_ext_with<'py>(
        &self,
        py: Python<'py>,
        out: &mut Out<'py>,
        code: i8,
        body: impl FnOnce(&mut Out<'py>) -> PyResult<()>,
    ) -> PyResult<()> {
        const RESERVED: usize = 6;
        let start = out.buf.len();
        out.buf.extend_from_slice(&[0; RESERVED]);
        let m = out.mark();
        body(out)?;
        let len = out.len_since(m);
        let mut hdr = Vec::with_capacity(RESERVED);
        mp::write_ext_header(&mut hdr, len, code).map_err(|e| self.derr(py, e))?;
        let shift = RESERVED - hdr.len();
        out.buf.copy_within(start + RESERVED.., start + hdr.len());
        out.buf.truncate(out.buf.len() - shift);
        out.buf[start..start + hdr.len()].copy_from_slice(&hdr);
        for p in &mut out.pieces[m.pieces..] {
            p.at -= shift;
        }
        Ok(())
    }

    fn enc_tuple<'py>(
        &self,
        v: &Bound<'py, PyAny>,
        out: &mut Out<'py>,
        depth: usize,
    ) -> PyResult<()> {
        let py = v.py();
        if depth >= MAX_DEPTH {
            return Err(self.too_deep(py));
        }
        let tup = v.cast::<PyTuple>()?;
        self.enc_ext_with(py, out, ext::EXT_TUPLE, |out| {
            mp::write_array_header(&mut out.buf, tup.len()).map_err(|e| self.derr(py, e))?;
            for item in tup.iter() {
                self.enc(&item, out, depth + 1, true)?;
            }
            Ok(())
        })
    }

    fn enc_set<'py>(
        &self,
        v: &Bound<'py, PyAny>,
        out: &mut Out<'py>,
        depth: usize,
        code: i8,
    ) -> PyResult<()> {
        let py = v.py();
        if depth >= MAX_DEPTH {
            return Err(self.too_deep(py));
        }
        // Elements sorted by their encodings (docs/format.md, ext 3): each is encoded alone.
        let mut parts: Vec<Vec<u8>> = Vec::new();
        for item in v.try_iter()? {
            let item = item?;
            let mut sub = Out::new();
            self.enc(&item, &mut sub, depth + 1, true)?;
            parts.push(sub.flatten());
        }
        parts.sort_unstable();
        let mut payload = Vec::with_capacity(parts.iter().map(Vec::len).sum::<usize>() + 5);
        mp::write_array_header(&mut payload, parts.len()).map_err(|e| self.derr(py, e))?;
        for p in &parts {
            payload.extend_from_slice(p);
        }
        self.ext(py, out, code, &payload)
    }

    fn enc_buffer<'py>(&self, v: &Bound<'py, PyAny>, out: &mut Out<'py>) -> PyResult<()> {
        let py = v.py();
        let buf = PyUntypedBuffer::get(v)
            .map_err(|e| self.ser_err(py, format!("cannot read the buffer: {e}")))?;
        if !buf.is_c_contiguous() {
            return Err(self.ser_err(py, "a memoryview must be C-contiguous"));
        }
        let (ptr, len) = (buf.buf_ptr().cast::<u8>().cast_const(), buf.len_bytes());
        mp::write_bin_header(&mut out.buf, len).map_err(|e| self.derr(py, e))?;
        // The export keeps the memory from being resized or freed until `buf` is released.
        out.bytes(ptr, len, Keep::Buf(buf));
        Ok(())
    }

    fn offset_us(&self, v: &Bound<'_, PyAny>) -> PyResult<Option<i64>> {
        if v.getattr("tzinfo")?.is_none() {
            return Ok(None);
        }
        let off = v.call_method0("utcoffset")?;
        if off.is_none() {
            return Ok(None);
        }
        let days: i64 = off.getattr("days")?.extract()?;
        let secs: i64 = off.getattr("seconds")?.extract()?;
        let us: i64 = off.getattr("microseconds")?.extract()?;
        Ok(Some((days * 86_400 + secs) * 1_000_000 + us))
    }

    fn enc_datetime(&self, v: &Bound<'_, PyAny>, out: &mut Out<'_>) -> PyResult<()> {
        let c = Clock {
            year: v.getattr("year")?.extract()?,
            month: v.getattr("month")?.extract()?,
            day: v.getattr("day")?.extract()?,
            hour: v.getattr("hour")?.extract()?,
            minute: v.getattr("minute")?.extract()?,
            second: v.getattr("second")?.extract()?,
            microsecond: v.getattr("microsecond")?.extract()?,
            offset_us: self.offset_us(v)?,
        };
        let mut p = Vec::with_capacity(19);
        ext::put_datetime(&mut p, &c);
        self.ext(v.py(), out, ext::EXT_DATETIME, &p)
    }

    fn enc_time(&self, v: &Bound<'_, PyAny>, out: &mut Out<'_>) -> PyResult<()> {
        let c = Clock {
            hour: v.getattr("hour")?.extract()?,
            minute: v.getattr("minute")?.extract()?,
            second: v.getattr("second")?.extract()?,
            microsecond: v.getattr("microsecond")?.extract()?,
            offset_us: self.offset_us(v)?,
            ..Clock::default()
        };
        let mut p = Vec::with_capacity(15);
        ext::put_time(&mut p, &c);
        self.ext(v.py(), out, ext::EXT_TIME, &p)
    }

    /// Ext 11 straight from the array's buffer; `Ok(false)` when the array does not export
    /// a C-contiguous buffer (Python's path then copies it in C order).
    fn enc_ndarray<'py>(&self, v: &Bound<'py, PyAny>, out: &mut Out<'py>) -> PyResult<bool> {
        let py = v.py();
        let dtype = v.getattr("dtype")?;
        let dstr = self.dtype_bytes(&dtype)?;
        let Ok(buf) = PyUntypedBuffer::get(v) else {
            return Ok(false); // datetime64 / timedelta64 arrays export no buffer
        };
        if !buf.is_c_contiguous() {
            return Ok(false);
        }
        let shape: Vec<u64> = v.getattr("shape")?.extract()?;
        let dstr = dstr.bind(py).as_bytes();
        let len = buf.len_bytes();
        let payload_len = ext::ndarray_header_len(dstr, shape.len()) + len;
        mp::write_ext_header(&mut out.buf, payload_len, ext::EXT_NDARRAY)
            .map_err(|e| self.derr(py, e))?;
        ext::put_ndarray_header(&mut out.buf, dstr, &shape).map_err(|e| self.derr(py, e))?;
        let ptr = buf.buf_ptr().cast::<u8>().cast_const();
        out.bytes(ptr, len, Keep::Buf(buf));
        Ok(true)
    }

    /// The checked `dtype.str` of a dtype (Python's `_ndarray_dtype_str`), cached by dtype.
    fn dtype_bytes(&self, dtype: &Bound<'_, PyAny>) -> PyResult<Py<PyBytes>> {
        let py = dtype.py();
        if let Ok(cache) = self.dtypes.lock() {
            if let Some((_, s)) = cache.iter().find(|(d, _)| d.as_ptr() == dtype.as_ptr()) {
                return Ok(s.clone_ref(py));
            }
        }
        let s = self
            .dtype_str
            .bind(py)
            .call1((dtype,))?
            .cast_into::<PyBytes>()?
            .unbind();
        if let Ok(mut cache) = self.dtypes.lock() {
            if cache.len() < 64 {
                cache.push((dtype.clone().unbind(), s.clone_ref(py)));
            }
        }
        Ok(s)
    }

    /// Python's `_prep` for a node, then the result encoded as prepared (no further plan).
    fn via_prep<'py>(
        &self,
        prep: &Py<PyAny>,
        v: &Bound<'py, PyAny>,
        out: &mut Out<'py>,
        depth: usize,
    ) -> PyResult<()> {
        let prepared = prep.bind(v.py()).call1((v, depth))?;
        self.enc(&prepared, out, depth, false)
    }

    /// Writes an exact str, float, bool, None or 64-bit int without touching its reference
    /// count; `false` (nothing written, no exception set) for any other value and for a
    /// str the general path must refuse (lone surrogates): the hot case of container
    /// elements. Returns a `bool`, not a `PyResult`: the hot loops then move no error
    /// value around.
    ///
    /// # Safety
    /// `p` must be a valid reference that stays alive during the call. The call runs no
    /// Python code and allocates no Python object.
    #[inline(always)]
    unsafe fn enc_leaf(p: *mut ffi::PyObject, out: &mut Out<'_>) -> bool {
        // SAFETY: the caller guarantees `p` is valid; each branch reads a value of exactly
        // the type just checked.
        unsafe {
            let t = ffi::Py_TYPE(p);
            if t == std::ptr::addr_of_mut!(ffi::PyUnicode_Type) {
                let Some(s) = py_fast::str_utf8(p) else {
                    ffi::PyErr_Clear();
                    return false;
                };
                return py_fast::put_str(&mut out.buf, s);
            }
            if t == std::ptr::addr_of_mut!(ffi::PyLong_Type) {
                let Some(n) = py_fast::int_i64(p) else {
                    return false;
                };
                mp::write_i64(&mut out.buf, n);
                return true;
            }
            if t == std::ptr::addr_of_mut!(ffi::PyFloat_Type) {
                let mut b = [0xcb; 9];
                b[1..].copy_from_slice(&ffi::PyFloat_AS_DOUBLE(p).to_bits().to_be_bytes());
                out.buf.extend_from_slice(&b);
                return true;
            }
            if t == std::ptr::addr_of_mut!(ffi::PyBool_Type) {
                mp::write_bool(&mut out.buf, p == ffi::Py_True());
                return true;
            }
            if p == ffi::Py_None() {
                mp::write_nil(&mut out.buf);
                return true;
            }
        }
        false
    }

    /// Encodes one element of a list or dict with its plan node: leaf fast path when the
    /// node takes the element's exact type, else [`Self::enc_node`] on an owned reference.
    ///
    /// # Safety
    /// `p` must be a valid borrowed reference to an item of a container that stays alive
    /// (and unchanged) while the call runs, as [`Self::enc_leaf`] requires.
    #[inline(always)]
    unsafe fn enc_item<'py>(
        &self,
        py: Python<'py>,
        p: *mut ffi::PyObject,
        node: &PlanNode,
        out: &mut Out<'py>,
        depth: usize,
    ) -> PyResult<()> {
        // SAFETY: the caller guarantees `p` is valid; type pointers of live objects are
        // valid; enc_leaf runs no Python code on success, so `p` stays alive meanwhile.
        unsafe {
            let native = match node {
                PlanNode::Any => true,
                PlanNode::Exact { types, .. } => has_type(types, ffi::Py_TYPE(p)),
                _ => false,
            };
            if native && Self::enc_leaf(p, out) {
                return Ok(());
            }
            self.enc_item_slow(py, p, node, out, depth)
        }
    }

    /// [`Self::enc_item`] for values that are not leaves (kept out of the hot loop).
    ///
    /// # Safety
    /// As [`Self::enc_item`].
    #[inline(never)]
    unsafe fn enc_item_slow<'py>(
        &self,
        py: Python<'py>,
        p: *mut ffi::PyObject,
        node: &PlanNode,
        out: &mut Out<'py>,
        depth: usize,
    ) -> PyResult<()> {
        // SAFETY: `p` is valid (caller). The owned reference keeps the item alive while
        // Python code (a fallback) runs.
        let item = unsafe { Bound::from_borrowed_ptr(py, p) };
        self.enc_node(&item, node, out, depth + 1)
    }

    /// `enc_plan` for a container's element, with the common leaf nodes (`Any`, `Exact`
    /// of a matching type) handled here: dispatching through `enc_plan` per element cost
    /// a third of a `list[Any]` encode.
    #[inline]
    fn enc_node<'py>(
        &self,
        v: &Bound<'py, PyAny>,
        plan: &PlanNode,
        out: &mut Out<'py>,
        depth: usize,
    ) -> PyResult<()> {
        match plan {
            PlanNode::Any => self.enc(v, out, depth, true),
            PlanNode::Exact { types, .. } if has_type(types, v.get_type_ptr()) => {
                self.enc(v, out, depth, true)
            }
            _ => self.enc_plan(v, plan, out, depth),
        }
    }

    fn enc_plan<'py>(
        &self,
        v: &Bound<'py, PyAny>,
        plan: &PlanNode,
        out: &mut Out<'py>,
        depth: usize,
    ) -> PyResult<()> {
        let py = v.py();
        let t = v.get_type_ptr();
        match plan {
            PlanNode::Any => self.enc(v, out, depth, true),
            PlanNode::Python { prep } => self.via_prep(prep, v, out, depth),
            PlanNode::Exact { types, prep } => {
                if has_type(types, t) {
                    self.enc(v, out, depth, true)
                } else {
                    self.via_prep(prep, v, out, depth)
                }
            }
            PlanNode::List { elem, prep } => {
                if t != std::ptr::addr_of_mut!(ffi::PyList_Type) {
                    return self.via_prep(prep, v, out, depth);
                }
                if depth >= MAX_DEPTH {
                    return Err(self.too_deep(py));
                }
                let list = v.cast::<PyList>()?;
                let n = list.len();
                mp::write_array_header(&mut out.buf, n).map_err(|e| self.derr(py, e))?;
                out.buf.reserve(n.saturating_mul(2).min(1 << 16));
                for i in 0..n {
                    // SAFETY: `list` is exactly a list; `i` is checked against its current
                    // size (a fallback's Python code may shrink it), so the slot holds a
                    // valid borrowed reference.
                    let p = unsafe {
                        let l = list.as_ptr();
                        if i as ffi::Py_ssize_t >= ffi::PyList_GET_SIZE(l) {
                            return Err(self.ser_err(py, "list changed size during encoding"));
                        }
                        ffi::PyList_GET_ITEM(l, i as ffi::Py_ssize_t)
                    };
                    // SAFETY: `p` is a live item of `list`, borrowed for this call only.
                    unsafe { self.enc_item(py, p, elem, out, depth) }?;
                    Self::tick(out, py)?;
                }
                if list.len() != n {
                    return Err(self.ser_err(py, "list changed size during encoding"));
                }
                Ok(())
            }
            PlanNode::Dict { keys, val, prep } => {
                if t != std::ptr::addr_of_mut!(ffi::PyDict_Type) {
                    return self.via_prep(prep, v, out, depth);
                }
                if depth >= MAX_DEPTH {
                    return Err(self.too_deep(py));
                }
                let d = v.cast::<PyDict>()?;
                let n = d.len();
                let mark = out.mark();
                mp::write_map_header(&mut out.buf, n).map_err(|e| self.derr(py, e))?;
                let mut seen = 0;
                let mut pos: ffi::Py_ssize_t = 0;
                let mut k: *mut ffi::PyObject = std::ptr::null_mut();
                let mut x: *mut ffi::PyObject = std::ptr::null_mut();
                // SAFETY: as in `enc_dict`: borrowed references from dict_next, made
                // owned at once; a size change is reported after the step.
                while unsafe { py_fast::dict_next(v.as_ptr(), &mut pos, &mut k, &mut x) } {
                    seen += 1;
                    // SAFETY: k is a valid borrowed reference returned just now.
                    let kt = unsafe { ffi::Py_TYPE(k) };
                    if !has_type(keys, kt) {
                        // A key Python would have to convert: the whole dict goes to _prep.
                        out.reset(mark);
                        return self.via_prep(prep, v, out, depth);
                    }
                    // SAFETY: k is an exact str or int held by the dict, which no code
                    // changes while enc_leaf runs (see enc_leaf).
                    // SAFETY: as above.
                    if !unsafe { Self::enc_leaf(k, out) } {
                        // A big int or a str with lone surrogates (which enc_str refuses).
                        // SAFETY: k is a valid borrowed reference, made owned.
                        let k = unsafe { Bound::from_borrowed_ptr(py, k) };
                        if k.is_exact_instance_of::<PyString>() {
                            self.enc_str(&k, out)?;
                        } else {
                            self.enc_int(&k, out)?;
                        }
                    }
                    // SAFETY: `x` is a live value of `d`, borrowed for this call only.
                    unsafe { self.enc_item(py, x, val, out, depth) }?;
                    // SAFETY: `d` is exactly a dict.
                    if unsafe { py_fast::dict_len(d.as_ptr()) } != n {
                        return Err(self.ser_err(py, "dict changed size during encoding"));
                    }
                    Self::tick(out, py)?;
                }
                if seen != n {
                    return Err(self.ser_err(py, "dict changed size during encoding"));
                }
                Ok(())
            }
            PlanNode::Record {
                cls,
                fields,
                by_dict,
                prep,
            } => {
                if t != cls.as_ptr().cast::<ffi::PyTypeObject>() || depth >= MAX_DEPTH {
                    return self.via_prep(prep, v, out, depth);
                }
                let dict = if *by_dict {
                    // SAFETY: `v` is valid; instance_dict returns a borrowed dict (or
                    // NULL), of which we take our own reference at once.
                    let d = unsafe { py_fast::instance_dict(v.as_ptr()) };
                    let d = if d.is_null() {
                        v.getattr(pyo3::intern!(py, "__dict__")).ok()
                    } else {
                        // SAFETY: as above.
                        Some(unsafe { Bound::from_borrowed_ptr(py, d) })
                    };
                    d.and_then(|d| d.cast_into_exact::<PyDict>().ok())
                } else {
                    None
                };
                let mark = out.mark();
                mp::write_map_header(&mut out.buf, fields.len()).map_err(|e| self.derr(py, e))?;
                // Pydantic keeps __dict__ in field order: the i-th entry is usually field
                // i, which saves the lookup; a key that is not the field's name ends that.
                let mut pos: Option<ffi::Py_ssize_t> = Some(0);
                for (name, enc_name, node) in fields {
                    let name = name.bind(py);
                    let p = match &dict {
                        // SAFETY: `d` is a dict we hold and `name` a str; both lookups give
                        // a borrowed reference (or NULL), used below while `d` holds it.
                        Some(d) => unsafe {
                            let mut p = std::ptr::null_mut();
                            if let Some(at) = pos.as_mut() {
                                let mut k = std::ptr::null_mut();
                                if ffi::PyDict_Next(d.as_ptr(), at, &mut k, &mut p) == 0
                                    || !same_str(k, name.as_ptr())
                                {
                                    p = std::ptr::null_mut();
                                    pos = None;
                                }
                            }
                            if p.is_null() {
                                p = ffi::PyDict_GetItemWithError(d.as_ptr(), name.as_ptr());
                                if p.is_null() {
                                    ffi::PyErr_Clear();
                                }
                            }
                            p
                        },
                        None => std::ptr::null_mut(),
                    };
                    // A field missing from __dict__ reads as Python's getattr does.
                    let x = if p.is_null() {
                        Some(v.getattr(name)?)
                    } else {
                        None
                    };
                    match enc_name {
                        Some(b) => py_fast::put_bytes(&mut out.buf, b),
                        None => self.enc_str(name.as_any(), out)?,
                    }
                    let r = match &x {
                        Some(x) => self.enc_node(x, node, out, depth + 1),
                        // SAFETY: `p` is a value of `dict`, which we hold; enc_item takes
                        // its own reference before any Python code runs.
                        None => unsafe { self.enc_item(py, p, node, out, depth) },
                    };
                    if let Err(e) = r {
                        if e.is_instance(py, self.mismatch.bind(py)) {
                            // Python names the field in the message: let it redo the record.
                            out.reset(mark);
                            return self.via_prep(prep, v, out, depth);
                        }
                        return Err(e);
                    }
                }
                Ok(())
            }
        }
    }

    fn encode_one<'py>(
        &self,
        py: Python<'py>,
        value: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let mut out = Out::new();
        self.enc(value, &mut out, 0, true)?;
        out.into_pybytes(py)
    }

    // ------------------------------------------------------------------------- decode

    fn dec<'py>(
        &self,
        py: Python<'py>,
        r: &mut Reader<'_>,
        depth: usize,
        m: &mut DecodeMode<'py, '_>,
    ) -> PyResult<Bound<'py, PyAny>> {
        // SAFETY: dec_raw returns a new reference or NULL with an exception set.
        unsafe { Bound::from_owned_ptr_or_err(py, self.dec_raw(py, r, depth, m)) }
    }

    /// [`Self::dec`] returning a new reference, or NULL with the Python exception set:
    /// the common scalars (fixint, float 64, nil, bool, str up to 255 bytes) are read
    /// straight from the input; anything else (and every malformed item) goes through
    /// [`Reader::read`] and [`Self::dec_token`]. Not a `PyResult`: the per-element loops
    /// then move no error value around.
    #[inline]
    fn dec_raw<'py>(
        &self,
        py: Python<'py>,
        r: &mut Reader<'_>,
        depth: usize,
        m: &mut DecodeMode<'py, '_>,
    ) -> *mut ffi::PyObject {
        if let Some(b) = r.peek() {
            // SAFETY: the GIL is held (`py`); each constructor returns a new reference
            // or NULL with an exception set; None and the bools get a new reference.
            unsafe {
                match b {
                    0x00..=0x7f => {
                        r.take_after(1, 0);
                        return ffi::PyLong_FromLong(std::os::raw::c_long::from(b));
                    }
                    0xe0..=0xff => {
                        r.take_after(1, 0);
                        return ffi::PyLong_FromLong(std::os::raw::c_long::from(b as i8));
                    }
                    0xa0..=0xbf => {
                        if let Some(s) = r.take_after(1, usize::from(b & 0x1f)) {
                            return self.dec_str_raw(py, s);
                        }
                    }
                    0xd9 => {
                        if let Some(&[n]) = r.clone().take_after(1, 1) {
                            if let Some(s) = r.take_after(2, usize::from(n)) {
                                return self.dec_str_raw(py, s);
                            }
                        }
                    }
                    0xcb => {
                        if let Some(s) = r.take_after(1, 8) {
                            let mut a = [0u8; 8];
                            a.copy_from_slice(s);
                            return ffi::PyFloat_FromDouble(f64::from_bits(u64::from_be_bytes(a)));
                        }
                    }
                    0xc0 => {
                        r.take_after(1, 0);
                        return ffi::Py_NewRef(ffi::Py_None());
                    }
                    0xc2 | 0xc3 => {
                        r.take_after(1, 0);
                        return ffi::PyBool_FromLong(std::os::raw::c_long::from(b == 0xc3));
                    }
                    _ => {}
                }
            }
        }
        self.dec_slow(py, r, depth, m)
    }

    /// [`Self::dec_raw`] for everything but the common scalars.
    #[inline(never)]
    fn dec_slow<'py>(
        &self,
        py: Python<'py>,
        r: &mut Reader<'_>,
        depth: usize,
        m: &mut DecodeMode<'py, '_>,
    ) -> *mut ffi::PyObject {
        let v = r
            .read()
            .map_err(|e| self.derr(py, e))
            .and_then(|tok| self.dec_token(py, tok, r, depth, m));
        match v {
            Ok(v) => v.into_ptr(),
            Err(e) => {
                e.restore(py);
                std::ptr::null_mut()
            }
        }
    }

    /// A str value (new reference, or NULL with the error [`Self::dec_str`] raises set).
    #[inline(always)]
    fn dec_str_raw(&self, py: Python<'_>, s: &[u8]) -> *mut ffi::PyObject {
        // SAFETY: the GIL is held (`py`).
        let o = unsafe { py_fast::new_str(s) };
        if o.is_null() {
            let e = PyErr::fetch(py);
            self.ser_err(py, format!("str is not valid UTF-8: {e}"))
                .restore(py);
        }
        o
    }

    /// Decodes the next value for a plan node (see [`DecPlan`]); `any` is the reference
    /// factory for `Any` subtrees, which are final as decoded.
    fn dec_plan<'py>(
        &self,
        py: Python<'py>,
        r: &mut Reader<'_>,
        depth: usize,
        m: &mut DecodeMode<'py, '_>,
        plan: &DecPlan,
        any: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match plan {
            DecPlan::Any => {
                let saved = m.ref_factory.replace(any.clone());
                let v = self.dec(py, r, depth, m);
                m.ref_factory = saved;
                v
            }
            DecPlan::Python { conv } => {
                let raw = self.dec(py, r, depth, m)?;
                conv.bind(py).call1((raw, depth))
            }
            DecPlan::Exact { types, conv } => {
                let raw = self.dec(py, r, depth, m)?;
                if has_type(types, raw.get_type_ptr()) {
                    Ok(raw)
                } else {
                    conv.bind(py).call1((raw, depth))
                }
            }
            DecPlan::List { elem, conv } => {
                let tok = r.read().map_err(|e| self.derr(py, e))?;
                let Token::Array(n) = tok else {
                    let raw = self.dec_token(py, tok, r, depth, m)?;
                    return conv.bind(py).call1((raw, depth));
                };
                if let DecPlan::Any = **elem {
                    // list[Any]: the whole array is final as decoded.
                    let saved = m.ref_factory.replace(any.clone());
                    let v = self.dec_token(py, tok, r, depth, m);
                    m.ref_factory = saved;
                    return v;
                }
                self.check_depth(py, depth, m)?;
                let len =
                    ffi::Py_ssize_t::try_from(n).map_err(|_| self.ser_err(py, "array too long"))?;
                // SAFETY: as in `dec_list`: a new list of `len` NULL slots, each filled
                // once with a new reference (PyList_SET_ITEM steals it); if we stop early,
                // the list's deallocator skips the NULL slots.
                let list = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyList_New(len))? };
                for i in 0..n {
                    let item = self.dec_plan_raw(py, r, depth + 1, m, elem, any);
                    if item.is_null() {
                        return Err(PyErr::fetch(py));
                    }
                    // SAFETY: i < len; slot i of our new list is still NULL.
                    unsafe { ffi::PyList_SET_ITEM(list.as_ptr(), i as ffi::Py_ssize_t, item) };
                }
                Ok(list)
            }
            DecPlan::Dict {
                keys,
                key_conv,
                val,
                conv,
            } => {
                let tok = r.read().map_err(|e| self.derr(py, e))?;
                let Token::Map(n) = tok else {
                    let raw = self.dec_token(py, tok, r, depth, m)?;
                    return conv.bind(py).call1((raw, depth));
                };
                self.check_depth(py, depth, m)?;
                // SAFETY: the GIL is held; a new dict or NULL with an exception set.
                let d = unsafe { Bound::from_owned_ptr_or_err(py, py_fast::new_dict(n))? }
                    .cast_into::<PyDict>()?;
                for _ in 0..n {
                    // SAFETY: dec_key_raw returns a new reference or NULL with an exception.
                    let key =
                        unsafe { Bound::from_owned_ptr_or_err(py, self.dec_key_raw(py, r, m))? };
                    let key = if has_type(keys, key.get_type_ptr()) {
                        key
                    } else {
                        key_conv.bind(py).call1((key, depth + 1))?
                    };
                    let v = self.dec_plan_raw(py, r, depth + 1, m, val, any);
                    // SAFETY: as above.
                    let v = unsafe { Bound::from_owned_ptr_or_err(py, v)? };
                    // SAFETY: `d` is a dict; key and v are valid references (not stolen).
                    if unsafe { ffi::PyDict_SetItem(d.as_ptr(), key.as_ptr(), v.as_ptr()) } != 0 {
                        return Err(PyErr::fetch(py));
                    }
                }
                Ok(d.into_any())
            }
            DecPlan::Record {
                fields,
                finish,
                model,
                conv,
            } => {
                let start = r.clone();
                match self.dec_record(py, r, depth, m, fields, finish, model.as_ref(), any) {
                    Ok(v) => Ok(v),
                    Err(e) if e.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py) => {
                        Err(e)
                    }
                    Err(_) => {
                        // Not a plain map of this record (or a field that does not fit):
                        // Python's conv redoes it from the raw value and raises its error.
                        *r = start;
                        let raw = self.dec(py, r, depth, m)?;
                        conv.bind(py).call1((raw, depth))
                    }
                }
            }
        }
    }

    /// The fast path of [`DecPlan::Record`]: a map with distinct str keys whose values fit
    /// their fields; any other input is an error, after which the caller falls back.
    #[allow(clippy::too_many_arguments)]
    fn dec_record<'py>(
        &self,
        py: Python<'py>,
        r: &mut Reader<'_>,
        depth: usize,
        m: &mut DecodeMode<'py, '_>,
        fields: &[(Box<[u8]>, DecPlan)],
        finish: &Py<PyAny>,
        model: Option<&(Py<PyType>, Py<PyTuple>)>,
        any: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let Token::Map(n) = r.read().map_err(|e| self.derr(py, e))? else {
            return Err(self.ser_err(py, "not a map"));
        };
        self.check_depth(py, depth, m)?;
        // SAFETY: the GIL is held; a new dict or NULL with an exception set.
        let d = unsafe { Bound::from_owned_ptr_or_err(py, py_fast::new_dict(n))? }
            .cast_into::<PyDict>()?;
        for i in 0..n {
            let s = match r.peek() {
                Some(b @ 0xa0..=0xbf) => r.take_after(1, usize::from(b & 0x1f)),
                _ => None,
            };
            let s = match s {
                Some(s) => s,
                None => {
                    let Token::Str(s) = r.read().map_err(|e| self.derr(py, e))? else {
                        return Err(self.ser_err(py, "map key is not str"));
                    };
                    s
                }
            };
            let key = match m.key_cache() {
                // SAFETY: the GIL is held; a new reference or NULL with an exception set.
                Some(c) => unsafe { Bound::from_owned_ptr_or_err(py, c.get_raw(py, s))? },
                None => self.dec_str(py, s)?,
            };
            // Fields usually come in declaration order: look at position i first.
            let node = match fields.get(i) {
                Some((name, node)) if short_eq(name, s) => Some(node),
                _ => fields
                    .iter()
                    .find(|(name, _)| short_eq(name, s))
                    .map(|(_, n)| n),
            };
            let v = self.dec_plan_raw(py, r, depth + 1, m, node.unwrap_or(&DecPlan::Any), any);
            // SAFETY: a new reference or NULL with an exception set.
            let v = unsafe { Bound::from_owned_ptr_or_err(py, v)? };
            // SAFETY: `d` is a dict; key and v are valid references (not stolen).
            if unsafe { ffi::PyDict_SetItem(d.as_ptr(), key.as_ptr(), v.as_ptr()) } != 0 {
                return Err(PyErr::fetch(py));
            }
        }
        if d.len() != n {
            return Err(self.ser_err(py, "duplicate keys"));
        }
        if let Some((cls, by_name)) = model {
            // `model_validate(d, by_name=True)` without its Python frame: the class's
            // current validator (read each time, as model_validate does).
            let validator = cls
                .bind(py)
                .getattr(pyo3::intern!(py, "__pydantic_validator__"))?;
            // SAFETY: [validator, d, True] are valid references and `by_name` the tuple of
            // the one keyword's name: PyObject_VectorcallMethod calls
            // validator.validate_python(d, by_name=True) and returns a new reference or
            // NULL with an exception set.
            return unsafe {
                let args = [validator.as_ptr(), d.as_ptr(), ffi::Py_True()];
                Bound::from_owned_ptr_or_err(
                    py,
                    ffi::PyObject_VectorcallMethod(
                        pyo3::intern!(py, "validate_python").as_ptr(),
                        args.as_ptr(),
                        2,
                        by_name.as_ptr(),
                    ),
                )
            };
        }
        finish.bind(py).call1((d, depth))
    }

    /// [`Self::dec_key`] returning a new reference or NULL with the exception set; fixstr
    /// keys go straight to the key cache.
    #[inline(always)]
    fn dec_key_raw<'py>(
        &self,
        py: Python<'py>,
        r: &mut Reader<'_>,
        m: &mut DecodeMode<'py, '_>,
    ) -> *mut ffi::PyObject {
        if let Some(b @ 0xa0..=0xbf) = r.peek() {
            if let Some(s) = r.take_after(1, usize::from(b & 0x1f)) {
                return match m.key_cache() {
                    Some(c) => {
                        let o = c.get_raw(py, s);
                        if o.is_null() {
                            let e = PyErr::fetch(py);
                            self.ser_err(py, format!("map key: {e}")).restore(py);
                        }
                        o
                    }
                    None => self.dec_str_raw(py, s),
                };
            }
        }
        match self.dec_key(py, r, m) {
            Ok(v) => v.into_ptr(),
            Err(e) => {
                e.restore(py);
                std::ptr::null_mut()
            }
        }
    }

    /// [`Self::dec_plan`] returning a new reference or NULL with the exception set, with
    /// `Exact` nodes (the common container element) handled here on raw pointers.
    #[inline(always)]
    fn dec_plan_raw<'py>(
        &self,
        py: Python<'py>,
        r: &mut Reader<'_>,
        depth: usize,
        m: &mut DecodeMode<'py, '_>,
        plan: &DecPlan,
        any: &Bound<'py, PyAny>,
    ) -> *mut ffi::PyObject {
        let v = match plan {
            DecPlan::Exact { types, conv } => {
                let raw = self.dec_raw(py, r, depth, m);
                // SAFETY: `raw` is NULL or a new reference, whose type we read.
                if raw.is_null() || has_type(types, unsafe { ffi::Py_TYPE(raw) }) {
                    return raw;
                }
                // SAFETY: `raw` is a new reference, handed to the Bound.
                let raw = unsafe { Bound::from_owned_ptr(py, raw) };
                conv.bind(py).call1((raw, depth))
            }
            _ => self.dec_plan(py, r, depth, m, plan, any),
        };
        match v {
            Ok(v) => v.into_ptr(),
            Err(e) => {
                e.restore(py);
                std::ptr::null_mut()
            }
        }
    }

    fn dec_key<'py>(
        &self,
        py: Python<'py>,
        r: &mut Reader<'_>,
        m: &mut DecodeMode<'py, '_>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Ok(match r.read().map_err(|e| self.derr(py, e))? {
            Token::Str(s) => match m.key_cache() {
                Some(c) => c
                    .get(py, s)
                    .map_err(|e| self.ser_err(py, format!("map key: {e}")))?,
                None => self.dec_str(py, s)?,
            },
            Token::Uint(u) => u.into_pyobject(py)?.into_any(),
            Token::Int(i) => i.into_pyobject(py)?.into_any(),
            Token::Ext(ext::EXT_BIGINT, p) => self.dec_bigint(py, p)?,
            _ => return Err(self.ser_err(py, "map key is not str or int")),
        })
    }

    fn check_depth(
        &self,
        py: Python<'_>,
        depth: usize,
        m: &mut DecodeMode<'_, '_>,
    ) -> PyResult<()> {
        if depth >= MAX_DEPTH {
            return Err(self.too_deep(py));
        }
        m.ticks += 1;
        if m.ticks >= 1024 {
            m.ticks = 0;
            py.check_signals()?;
        }
        Ok(())
    }

    fn dec_token<'py>(
        &self,
        py: Python<'py>,
        tok: Token<'_>,
        r: &mut Reader<'_>,
        depth: usize,
        m: &mut DecodeMode<'py, '_>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Ok(match tok {
            Token::Nil => py.None().into_bound(py),
            Token::Bool(b) => pyo3::types::PyBool::new(py, b).to_owned().into_any(),
            // SAFETY: the GIL is held; the constructor returns a new reference or NULL with
            // an exception set, which from_owned_ptr_or_err turns into Err.
            Token::Uint(u) => unsafe {
                Bound::from_owned_ptr_or_err(py, ffi::PyLong_FromUnsignedLongLong(u))?
            },
            // SAFETY: as for Uint.
            Token::Int(i) => unsafe {
                Bound::from_owned_ptr_or_err(py, ffi::PyLong_FromLongLong(i))?
            },
            // SAFETY: as for Uint.
            Token::Float(f) => unsafe {
                Bound::from_owned_ptr_or_err(py, ffi::PyFloat_FromDouble(f))?
            },
            Token::Str(s) => self.dec_str(py, s)?,
            Token::Bin(b) => self.dec_bin(py, b, m)?,
            Token::Array(n) => {
                self.check_depth(py, depth, m)?;
                self.dec_list(py, r, n, depth, m)?
            }
            Token::Map(n) => {
                self.check_depth(py, depth, m)?;
                // SAFETY: the GIL is held; a new dict or NULL with an exception set.
                let d = unsafe { Bound::from_owned_ptr_or_err(py, py_fast::new_dict(n))? };
                for _ in 0..n {
                    // SAFETY: dec_key_raw / dec_raw return a new reference or NULL with an
                    // exception set.
                    let key =
                        unsafe { Bound::from_owned_ptr_or_err(py, self.dec_key_raw(py, r, m))? };
                    // SAFETY: as for the key.
                    let val = unsafe {
                        Bound::from_owned_ptr_or_err(py, self.dec_raw(py, r, depth + 1, m))?
                    };
                    // SAFETY: `d` is a dict; key and val are valid references (not stolen).
                    if unsafe { ffi::PyDict_SetItem(d.as_ptr(), key.as_ptr(), val.as_ptr()) } != 0 {
                        return Err(PyErr::fetch(py));
                    }
                }
                d.into_any()
            }
            Token::Ext(code, payload) => self.dec_ext(py, code, payload, depth, m)?,
        })
    }

    fn dec_str<'py>(&self, py: Python<'py>, s: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        decode_utf8(py, s).map_err(|e| self.ser_err(py, format!("str is not valid UTF-8: {e}")))
    }

    fn dec_bin<'py>(
        &self,
        py: Python<'py>,
        b: &[u8],
        m: &mut DecodeMode<'py, '_>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if m.view_min > 0 && b.len() >= m.view_min {
            if let Some(v) = self.view_of(py, b, m)? {
                return Ok(v);
            }
        }
        Ok(PyBytes::new(py, b).into_any())
    }

    /// A read-only memoryview slice of the decoded input covering `b` (which lies inside it).
    fn view_of<'py>(
        &self,
        py: Python<'py>,
        b: &[u8],
        m: &mut DecodeMode<'py, '_>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let Some(src) = m.source.clone() else {
            return Ok(None);
        };
        if m.view_of.is_none() {
            // SAFETY: `src` is a live object supporting the buffer protocol (we decoded
            // from its buffer); PyMemoryView_FromObject returns a new reference or NULL.
            let mv = unsafe {
                Bound::from_owned_ptr_or_err(py, ffi::PyMemoryView_FromObject(src.as_ptr()))?
            };
            m.view_of = Some(
                mv.call_method0("toreadonly")?
                    .call_method1("cast", ("B",))?,
            );
        }
        let Some(mv) = &m.view_of else {
            return Ok(None);
        };
        let base = m.base;
        let start = b.as_ptr() as usize - base;
        let slice = pyo3::types::PySlice::new(py, start as isize, (start + b.len()) as isize, 1);
        Ok(Some(mv.get_item(slice)?))
    }

    fn dec_list<'py>(
        &self,
        py: Python<'py>,
        r: &mut Reader<'_>,
        n: usize,
        depth: usize,
        m: &mut DecodeMode<'py, '_>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let len = ffi::Py_ssize_t::try_from(n).map_err(|_| self.ser_err(py, "array too long"))?;
        // SAFETY: PyList_New returns a new list of `len` NULL slots (or NULL with an
        // exception). Every slot below is filled once with an owned reference, which
        // PyList_SetItem steals; if we stop early, the list's deallocator skips NULLs.
        let list = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyList_New(len))? };
        for i in 0..n {
            let item = self.dec_raw(py, r, depth + 1, m);
            if item.is_null() {
                return Err(PyErr::fetch(py));
            }
            // SAFETY: i < len, `list` is a new list nobody else sees whose slot i is
            // still NULL; PyList_SET_ITEM steals the new reference `item`.
            unsafe { ffi::PyList_SET_ITEM(list.as_ptr(), i as ffi::Py_ssize_t, item) };
        }
        Ok(list)
    }

    fn dec_items<'py>(
        &self,
        py: Python<'py>,
        code: i8,
        payload: &[u8],
        depth: usize,
        m: &mut DecodeMode<'py, '_>,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        self.check_depth(py, depth, m)?;
        let mut sub = Reader::new(payload);
        let n = match sub.read().map_err(|e| self.derr(py, e))? {
            Token::Array(n) => n,
            _ => return Err(self.ser_err(py, format!("ext {code} payload is not an array"))),
        };
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(self.dec(py, &mut sub, depth + 1, m)?);
        }
        if !sub.is_done() {
            return Err(self.ser_err(py, format!("ext {code} payload has bytes after the array")));
        }
        Ok(items)
    }

    fn dec_bigint<'py>(&self, py: Python<'py>, p: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        ext::check_bigint(p).map_err(|e| self.derr(py, e))?;
        self.int_from_bytes.bind(py).call1((PyBytes::new(py, p),))
    }

    fn make_tz<'py>(&self, py: Python<'py>, off: Option<i64>) -> PyResult<Bound<'py, PyAny>> {
        match off {
            None => Ok(py.None().into_bound(py)),
            Some(o) => self.tz.bind(py).call1((o,)),
        }
    }

    fn dec_ext<'py>(
        &self,
        py: Python<'py>,
        code: i8,
        p: &[u8],
        depth: usize,
        m: &mut DecodeMode<'py, '_>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let de = |e: DecodeError| self.derr(py, e);
        match code {
            ext::EXT_BIGINT => self.dec_bigint(py, p),
            ext::EXT_TUPLE => {
                Ok(PyTuple::new(py, self.dec_items(py, code, p, depth, m)?)?.into_any())
            }
            ext::EXT_SET | ext::EXT_FROZENSET => {
                let items = self.dec_items(py, code, p, depth, m)?;
                let n = items.len();
                let not_hashable = |_| self.ser_err(py, "set element is not hashable");
                let (set, len) = if code == ext::EXT_SET {
                    let s = PySet::new(py, &items).map_err(not_hashable)?;
                    let l = s.len();
                    (s.into_any(), l)
                } else {
                    let s = PyFrozenSet::new(py, &items).map_err(not_hashable)?;
                    let l = s.len();
                    (s.into_any(), l)
                };
                if len != n {
                    return Err(self.ser_err(py, "set holds the same element twice"));
                }
                Ok(set)
            }
            ext::EXT_DATETIME => {
                let c = ext::get_datetime(p).map_err(de)?;
                let tz = self.make_tz(py, c.offset_us)?;
                self.t_datetime
                    .bind(py)
                    .call1((
                        c.year,
                        c.month,
                        c.day,
                        c.hour,
                        c.minute,
                        c.second,
                        c.microsecond,
                        tz,
                    ))
                    .map_err(|e| self.ser_err(py, format!("ext 5 (datetime): {e}")))
            }
            ext::EXT_DATE => {
                let c = ext::get_date(p).map_err(de)?;
                self.t_date
                    .bind(py)
                    .call1((c.year, c.month, c.day))
                    .map_err(|e| self.ser_err(py, format!("ext 6 (date): {e}")))
            }
            ext::EXT_TIME => {
                let c = ext::get_time(p).map_err(de)?;
                let tz = self.make_tz(py, c.offset_us)?;
                self.t_time
                    .bind(py)
                    .call1((c.hour, c.minute, c.second, c.microsecond, tz))
                    .map_err(|e| self.ser_err(py, format!("ext 7 (time): {e}")))
            }
            ext::EXT_TIMEDELTA => {
                let d = ext::get_timedelta(p).map_err(de)?;
                self.t_timedelta
                    .bind(py)
                    .call1((d.days, d.seconds, d.microseconds))
                    .map_err(|e| self.ser_err(py, format!("ext 8 (timedelta): {e}")))
            }
            ext::EXT_UUID => {
                let n = ext::get_uuid(p).map_err(de)?;
                let kw = PyDict::new(py);
                kw.set_item("int", n)?;
                self.t_uuid.bind(py).call((), Some(&kw))
            }
            ext::EXT_DECIMAL => self.dec_decimal.bind(py).call1((PyBytes::new(py, p),)),
            ext::EXT_NDARRAY => self.dec_ndarray(py, p, m),
            ext::EXT_REF => {
                let (cls, pid, oid) = ext::get_ref(p).map_err(de)?;
                let oid = match oid {
                    ObjectId::Num(n) => n.into_pyobject(py)?.into_any(),
                    ObjectId::Str(s) => PyString::new(py, s).into_any(),
                };
                match &m.ref_factory {
                    Some(f) => f.call1((cls, pid, oid)),
                    None => self.raw_ref.bind(py).call1((cls, pid, oid)),
                }
            }
            _ => Err(self.ser_err(py, format!("unknown extension type {code}"))),
        }
    }

    fn dec_ndarray<'py>(
        &self,
        py: Python<'py>,
        p: &[u8],
        m: &mut DecodeMode<'py, '_>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let h = ext::get_ndarray(p).map_err(|e| self.derr(py, e))?;
        if h.dtype.as_bytes()[1] == b'b' && h.data.iter().any(|&b| b > 1) {
            return Err(self.ser_err(
                py,
                "ext 11 (numpy.ndarray) bool data holds bytes other than 0 and 1",
            ));
        }
        let shape = PyTuple::new(py, &h.shape)?;
        let data = match (
            m.view_min > 0 && h.data.len() >= m.view_min,
            h.data.is_empty(),
        ) {
            (_, true) => py.None().into_bound(py),
            (true, false) => match self.view_of(py, h.data, m)? {
                Some(v) => v,
                None => PyByteArray::new(py, h.data).into_any(),
            },
            (false, false) => PyByteArray::new(py, h.data).into_any(),
        };
        self.make_ndarray
            .bind(py)
            .call1((h.dtype, shape, data, h.itemsize))
    }
}

/// A Python str from UTF-8 bytes, validated once (ASCII copied as is, the rest by
/// CPython's decoder: [`py_fast::new_str`]).
#[inline]
fn decode_utf8<'py>(py: Python<'py>, s: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: the GIL is held (`py`); new_str returns a new reference or NULL with an
    // exception set.
    unsafe { Bound::from_owned_ptr_or_err(py, py_fast::new_str(s)) }
}

/// `N` bytes of `s` from `i` as a native integer's bytes (one load).
#[inline(always)]
fn load<const N: usize>(s: &[u8], i: usize) -> [u8; N] {
    let mut w = [0u8; N];
    w.copy_from_slice(&s[i..i + N]);
    w
}

/// `a == b` for short slices without a `memcmp` call: overlapping loads of the first and
/// last 16, 8 or 4 bytes (map keys and field names are short).
#[inline(always)]
fn short_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        0 => true,
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=7 => load::<4>(a, 0) == load::<4>(b, 0) && load::<4>(a, n - 4) == load::<4>(b, n - 4),
        8..=16 => load::<8>(a, 0) == load::<8>(b, 0) && load::<8>(a, n - 8) == load::<8>(b, n - 8),
        17..=32 => {
            load::<16>(a, 0) == load::<16>(b, 0) && load::<16>(a, n - 16) == load::<16>(b, n - 16)
        }
        _ => a == b,
    }
}

/// A hash of a key of at most [`KeyCache::MAX_LEN`] bytes from a few loads.
#[inline(always)]
fn key_hash(s: &[u8]) -> u64 {
    let n = s.len();
    let (a, b) = match n {
        0 => (0, 0),
        1..=3 => (
            u64::from(s[0]) | u64::from(s[n / 2]) << 8 | u64::from(s[n - 1]) << 16,
            0,
        ),
        4..=7 => (
            u64::from(u32::from_le_bytes(load(s, 0))),
            u64::from(u32::from_le_bytes(load(s, n - 4))),
        ),
        8..=16 => (
            u64::from_le_bytes(load(s, 0)),
            u64::from_le_bytes(load(s, n - 8)),
        ),
        _ => (
            u64::from_le_bytes(load(s, 0)) ^ u64::from_le_bytes(load(s, n / 2 - 4)),
            u64::from_le_bytes(load(s, n - 8)),
        ),
    };
    (a ^ b.rotate_left(29) ^ (n as u64) << 56).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Recently decoded map keys (short str), so repeated keys are not decoded again, as
/// orjson and msgspec do. Direct-mapped by a hash of the bytes; the bytes are stored in
/// the slot.
struct KeySlot {
    len: usize,
    bytes: [u8; KeyCache::MAX_LEN],
    obj: Option<Py<PyAny>>,
}

struct KeyCache {
    slots: Box<[KeySlot]>,
}

impl KeyCache {
    const BITS: u32 = 9;
    const MAX_LEN: usize = 32;

    fn new() -> Self {
        KeyCache {
            slots: (0..1usize << Self::BITS)
                .map(|_| KeySlot {
                    len: 0,
                    bytes: [0; Self::MAX_LEN],
                    obj: None,
                })
                .collect(),
        }
    }

    fn get<'py>(&mut self, py: Python<'py>, s: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        // SAFETY: get_raw returns a new reference or NULL with an exception set.
        unsafe { Bound::from_owned_ptr_or_err(py, self.get_raw(py, s)) }
    }

    /// The str for UTF-8 bytes `s`: a new reference, or NULL with an exception set.
    #[inline(always)]
    fn get_raw(&mut self, py: Python<'_>, s: &[u8]) -> *mut ffi::PyObject {
        if s.len() > Self::MAX_LEN {
            // SAFETY: the GIL is held (`py`).
            return unsafe { py_fast::new_str(s) };
        }
        let i = (key_hash(s) >> (64 - Self::BITS)) as usize;
        let slot = &mut self.slots[i];
        if let Some(o) = &slot.obj {
            if short_eq(&slot.bytes[..slot.len], s) {
                return o.clone_ref(py).into_ptr();
            }
        }
        // SAFETY: the GIL is held (`py`).
        let o = unsafe { py_fast::new_str(s) };
        if !o.is_null() {
            slot.len = s.len();
            slot.bytes[..s.len()].copy_from_slice(s);
            // SAFETY: `o` is a valid new reference; the slot takes one more.
            slot.obj = Some(unsafe { Bound::from_borrowed_ptr(py, o) }.unbind());
        }
        o
    }
}

/// Runs `f`, turning a Rust panic into a `SerializationError` instead of letting pyo3's
/// `PanicException` (a `BaseException`) escape to the caller.
fn guarded<T>(codec: &Codec, py: Python<'_>, f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => Err(codec.ser_err(py, "internal error in the native codec")),
    }
}

fn helper<'py>(h: &Bound<'py, PyDict>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    h.get_item(name)?
        .ok_or_else(|| PyValueError::new_err(format!("Codec: missing helper {name:?}")))
}

fn helper_type(h: &Bound<'_, PyDict>, name: &str) -> PyResult<Py<PyType>> {
    Ok(helper(h, name)?.cast_into::<PyType>()?.unbind())
}

#[pymethods]
impl Codec {
    /// Built by `oaas_sdk.codec.set_backend` from a dict of the Python types and helpers
    /// the codec needs (see `codec._native_helpers`).
    #[new]
    fn py_new(helpers: &Bound<'_, PyDict>) -> PyResult<Self> {
        let h = helpers;
        Ok(Codec {
            t_datetime: helper_type(h, "datetime")?,
            t_date: helper_type(h, "date")?,
            t_time: helper_type(h, "time")?,
            t_timedelta: helper_type(h, "timedelta")?,
            t_uuid: helper_type(h, "UUID")?,
            t_decimal: helper_type(h, "Decimal")?,
            t_ext: helper_type(h, "ExtType")?,
            ser_error: helper_type(h, "SerializationError")?,
            too_deep: helper_type(h, "TooDeep")?,
            mismatch: helper_type(h, "Mismatch")?,
            prep_any: helper(h, "prep_any")?.unbind(),
            bigint_bytes: helper(h, "bigint_bytes")?.unbind(),
            decimal_str: helper(h, "decimal_str")?.unbind(),
            dtype_str: helper(h, "dtype_str")?.unbind(),
            tz: helper(h, "tz")?.unbind(),
            dec_decimal: helper(h, "dec_decimal")?.unbind(),
            make_ndarray: helper(h, "make_ndarray")?.unbind(),
            raw_ref: helper(h, "raw_ref")?.unbind(),
            int_from_bytes: helper(h, "int_from_bytes")?.unbind(),
            numpy: OnceLock::new(),
            dtypes: Mutex::new(Vec::new()),
            keys: Mutex::new(KeyCache::new()),
            active: AtomicBool::new(false),
            ref_factory: Mutex::new(None),
        })
    }

    /// Encode one value under an `Any` hint: bytes per docs/format.md, "State codec".
    ///
    /// Raises TypeError for values of unsupported types, SerializationError for values
    /// that cannot be represented (lone surrogates, bad dict keys, nesting over 100).
    fn encode<'py>(
        &self,
        py: Python<'py>,
        value: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        guarded(self, py, || self.encode_one(py, value))
    }

    /// Compile an encode plan from its description (`codec._plan_desc`).
    fn plan(&self, desc: &Bound<'_, PyAny>) -> PyResult<Plan> {
        Ok(Plan {
            root: PlanNode::compile(desc)?,
        })
    }

    /// Encode a value for a hinted field: types the plan accepts are checked and written
    /// here; other values go through the hint's Python `_prep` first. Errors as `encode`.
    fn encode_plan<'py>(
        &self,
        py: Python<'py>,
        value: &Bound<'py, PyAny>,
        plan: &Bound<'py, Plan>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        guarded(self, py, || {
            let mut out = Out::new();
            self.enc_plan(value, &plan.get().root, &mut out, 0)?;
            out.into_pybytes(py)
        })
    }

    /// Encode each value of a list; one call for many fields or objects. `plans`: one
    /// `Plan` (or None for `Any`) per value. On error, the exception gets an attribute
    /// `_oaas_index` naming the failing position.
    #[pyo3(signature = (values, plans=None))]
    fn encode_many<'py>(
        &self,
        py: Python<'py>,
        values: &Bound<'py, PyList>,
        plans: Option<Bound<'py, PyList>>,
    ) -> PyResult<Bound<'py, PyList>> {
        guarded(self, py, || {
            let out = PyList::empty(py);
            for (i, v) in values.iter().enumerate() {
                let plan = match &plans {
                    Some(p) => Some(p.get_item(i)?),
                    None => None,
                };
                let r = match plan.as_ref().map(|p| p.cast::<Plan>()) {
                    Some(Ok(p)) => {
                        let mut o = Out::new();
                        self.enc_plan(&v, &p.get().root, &mut o, 0)
                            .and_then(|_| o.into_pybytes(py))
                    }
                    _ => self.encode_one(py, &v),
                };
                match r {
                    Ok(b) => out.append(b)?,
                    Err(e) => {
                        let _ = e.value(py).setattr("_oaas_index", i);
                        return Err(e);
                    }
                }
                if i % 64 == 63 {
                    py.check_signals()?;
                }
            }
            Ok(out)
        })
    }

    /// Decode bytes (or any C-contiguous buffer) to a value.
    ///
    /// `ref_factory`: callable `(cls_id, partition_id, object_id)` for references (an
    /// `Any` hint); `None` gives `codec._RawRef` records for the hint code to rebuild.
    /// `view_min`: bin values (and ndarray data) of at least this many bytes come back as
    /// read-only views into `data` instead of copies (0: always copy). Raises
    /// SerializationError for malformed input.
    #[pyo3(signature = (data, ref_factory=None, view_min=0))]
    fn decode<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
        ref_factory: Option<Bound<'py, PyAny>>,
        view_min: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        guarded(self, py, || {
            self.decode_one(py, data, ref_factory, view_min)
        })
    }

    /// Compile a decode plan from its description (`codec._decode_plan_desc`).
    fn decode_plan(&self, desc: &Bound<'_, PyAny>) -> PyResult<DecodePlan> {
        let root = DecPlan::compile(desc)?;
        Ok(DecodePlan {
            needs_factory: root.has_any(),
            root,
        })
    }

    /// Marks this codec active (`codec.set_backend` chose it) or not.
    fn set_active(&self, active: bool) {
        self.active.store(active, Ordering::Relaxed);
    }

    /// The default reference factory (`codec.set_default_ref_factory`) for [`Coder`]s.
    fn set_ref_factory(&self, factory: Py<PyAny>) {
        if let Ok(mut f) = self.ref_factory.lock() {
            *f = Some(factory);
        }
    }

    /// The native encode and decode of one field type (see [`Coder`]).
    #[pyo3(signature = (owner, exact, any, plan, decode_plan, view_min))]
    fn coder(
        slf: &Bound<'_, Self>,
        owner: Py<PyAny>,
        exact: &Bound<'_, PyAny>,
        any: bool,
        plan: Py<Plan>,
        decode_plan: Py<DecodePlan>,
        view_min: usize,
    ) -> PyResult<Coder> {
        let exact = exact
            .try_iter()?
            .map(|x| Ok(x?.cast_into::<PyType>()?.unbind()))
            .collect::<PyResult<Vec<_>>>()?;
        let all = T_STR | T_INT | T_FLOAT | T_BOOL | T_NONE | T_BYTES;
        let enc_fast = if any {
            all
        } else {
            scalar_bits(&exact)
                | match &plan.get().root {
                    PlanNode::Any => all,
                    PlanNode::Exact { types, .. } => scalar_bits(types),
                    _ => 0,
                }
        };
        let dec_fast = match (any, &decode_plan.get().root) {
            (true, _) | (_, DecPlan::Any) => all,
            (_, DecPlan::Exact { types, .. }) => scalar_bits(types),
            _ => 0,
        };
        Ok(Coder {
            enc_fast,
            dec_fast,
            codec: slf.clone().unbind(),
            owner,
            exact,
            any,
            plan,
            decode_plan,
            view_min,
        })
    }

    /// Decode bytes for a hinted field: raw values the plan accepts are final, others go
    /// through the hint's Python conversion (errors as `FieldType.decode`). `ref_factory`
    /// builds references under `Any` parts of the hint; `view_min` as in `decode`.
    #[pyo3(signature = (data, plan, ref_factory, view_min=0))]
    fn decode_with<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
        plan: &Bound<'py, DecodePlan>,
        ref_factory: Bound<'py, PyAny>,
        view_min: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        guarded(self, py, || {
            self.decode_inner(
                py,
                data,
                None,
                view_min,
                Some((&plan.get().root, &ref_factory)),
            )
        })
    }
}

impl Codec {
    fn decode_one<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
        ref_factory: Option<Bound<'py, PyAny>>,
        view_min: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.decode_inner(py, data, ref_factory, view_min, None)
    }

    fn decode_inner<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
        ref_factory: Option<Bound<'py, PyAny>>,
        view_min: usize,
        plan: Option<(&DecPlan, &Bound<'py, PyAny>)>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mut keep_buf = None;
        let bytes: &[u8] = if let Ok(b) = data.cast::<PyBytes>() {
            b.as_bytes()
        } else {
            let buf = PyUntypedBuffer::get(data)
                .map_err(|e| self.ser_err(py, format!("cannot read the input buffer: {e}")))?;
            if !buf.is_c_contiguous() {
                return Err(self.ser_err(py, "input buffer is not C-contiguous"));
            }
            keep_buf = Some(buf);
            let buf = keep_buf.as_ref().map(|b| (b.buf_ptr(), b.len_bytes()));
            match buf {
                // SAFETY: the export held in `keep_buf` keeps this memory alive and
                // unresized until the end of this function. Python code that runs while
                // decoding (a ref factory, tzinfo construction) could write to a writable
                // buffer; each byte is read once as a plain u8 and every length is
                // re-checked, so that can only change the result, not break memory safety.
                Some((p, n)) if n > 0 => unsafe {
                    std::slice::from_raw_parts(p.cast::<u8>().cast_const(), n)
                },
                _ => &[],
            }
        };
        let mut m = DecodeMode {
            ref_factory,
            view_min,
            source: (view_min > 0).then(|| data.clone()),
            view_of: None,
            ticks: 0,
            base: bytes.as_ptr() as usize,
            keys: None,
            keys_from: Some(&self.keys),
        };
        let mut r = Reader::new(bytes);
        let v = match plan {
            Some((p, any)) => self.dec_plan(py, &mut r, 0, &mut m, p, any)?,
            None => self.dec(py, &mut r, 0, &mut m)?,
        };
        if !r.is_done() {
            return Err(self.ser_err(py, format!("{} bytes after the value", r.remaining())));
        }
        drop(keep_buf);
        Ok(v)
    }
}

/// The native `encode` and `decode` of one compiled field type: `codec.FieldType` stores
/// these bound methods as its own `encode` / `decode`, so a call is one call into the
/// extension with no Python frame. The exact-type check, the plan and the error wrapping
/// are those of `FieldType._encode_slow` / `_decode_slow`, which this hands the call to
/// while its codec is not the active backend.
#[pyclass(frozen, module = "oaas_sdk._native", name = "Coder")]
pub struct Coder {
    codec: Py<Codec>,
    /// A weak reference to the `FieldType` (it holds this coder's bound methods).
    owner: Py<PyAny>,
    /// Exact types encoded as under `Any` (`FieldType._pexact`).
    exact: Vec<Py<PyType>>,
    any: bool,
    plan: Py<Plan>,
    decode_plan: Py<DecodePlan>,
    /// `codec.ZERO_COPY_MIN`: the view threshold of `decode(..., zero_copy=True)`.
    view_min: usize,
    /// Exact scalar types (`T_*` bits) encoded as under `Any` (the plan or `exact` keeps
    /// them unchanged): written without the plan.
    enc_fast: u8,
    /// Exact scalar types the decode plan keeps as decoded.
    dec_fast: u8,
}

impl Coder {
    fn owner<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let ft = self.owner.bind(py).call0()?;
        if ft.is_none() {
            return Err(PyValueError::new_err(
                "the field type of this coder is gone",
            ));
        }
        Ok(ft)
    }

    /// The exception the field type raises for `e` (`FieldType._encode_failed` /
    /// `_decode_failed`), so both backends raise the same errors.
    fn failed(&self, py: Python<'_>, wrap: &Bound<'_, PyString>, e: PyErr) -> PyErr {
        let Ok(ft) = self.owner(py) else {
            return e;
        };
        match ft.call_method1(wrap, (e.value(py),)) {
            Ok(err) => PyErr::from_value(err),
            Err(other) => other,
        }
    }
}

/// Exact scalar types a [`Coder`] encodes or decodes without its plan (bit masks).
const T_STR: u8 = 1;
const T_INT: u8 = 2;
const T_FLOAT: u8 = 4;
const T_BOOL: u8 = 8;
const T_NONE: u8 = 16;
const T_BYTES: u8 = 32;

/// The scalar bit of an exact type, 0 for any other type.
#[inline(always)]
fn scalar_bit(t: *mut ffi::PyTypeObject) -> u8 {
    // SAFETY: reading the addresses of the interpreter's static type objects and of None.
    unsafe {
        if t == std::ptr::addr_of_mut!(ffi::PyUnicode_Type) {
            T_STR
        } else if t == std::ptr::addr_of_mut!(ffi::PyLong_Type) {
            T_INT
        } else if t == std::ptr::addr_of_mut!(ffi::PyFloat_Type) {
            T_FLOAT
        } else if t == std::ptr::addr_of_mut!(ffi::PyBool_Type) {
            T_BOOL
        } else if t == ffi::Py_TYPE(ffi::Py_None()) {
            T_NONE
        } else if t == std::ptr::addr_of_mut!(ffi::PyBytes_Type) {
            T_BYTES
        } else {
            0
        }
    }
}

/// The scalar types in `types`.
fn scalar_bits(types: &[Py<PyType>]) -> u8 {
    types.iter().fold(0, |m, t| {
        m | scalar_bit(t.as_ptr().cast::<ffi::PyTypeObject>())
    })
}

impl Coder {
    /// The whole encoding of an exact str, int (64-bit), float, bool or None that this
    /// coder writes as under `Any`, built straight into its `bytes` object. `None` (no
    /// exception set) for any other value, left to the general path, which also raises
    /// the errors (lone surrogates).
    ///
    /// # Safety
    /// `v` must be a valid reference; the GIL must be held.
    #[inline(always)]
    unsafe fn encode_scalar(&self, v: *mut ffi::PyObject) -> Option<*mut ffi::PyObject> {
        // SAFETY: `v` is valid (caller); each branch reads a value of exactly the type
        // just checked; the GIL is held for the allocations. A new bytes object of
        // `1 + len` bytes (or 9 for a float) is filled completely (header byte, then the
        // str's bytes or the float's 8) before anyone else sees it.
        unsafe {
            let bit = scalar_bit(ffi::Py_TYPE(v)) & self.enc_fast;
            let mut h = mp::Small::default();
            match bit {
                0 => return None,
                T_STR => {
                    let Some(s) = py_fast::str_utf8(v) else {
                        ffi::PyErr_Clear();
                        return None;
                    };
                    if s.len() <= 31 {
                        // fixstr: one header byte (as write_str_header writes it).
                        let o = ffi::PyBytes_FromStringAndSize(
                            std::ptr::null(),
                            1 + s.len() as ffi::Py_ssize_t,
                        );
                        if !o.is_null() {
                            let dst = ffi::PyBytes_AS_STRING(o).cast::<u8>().cast_mut();
                            *dst = 0xa0 | s.len() as u8;
                            py_fast::copy_short(s.as_ptr(), dst.add(1), s.len());
                        }
                        return Some(o);
                    }
                    mp::write_str_header(&mut h, s.len()).ok()?;
                    let n = h.len;
                    return Some(py_fast::new_bytes_with(n + s.len(), |dst| {
                        dst[..n].copy_from_slice(h.as_slice());
                        let rest = &mut dst[n..];
                        // SAFETY: `rest` and `s` have the same length and do not overlap
                        // (a new bytes object and the str's storage).
                        py_fast::copy_short(s.as_ptr(), rest.as_mut_ptr(), s.len());
                    }));
                }
                T_INT => {
                    let n = py_fast::int_i64(v)?;
                    if (0..0x80).contains(&n) {
                        // positive fixint: CPython's cached one-byte bytes object.
                        return Some(ffi::PyBytes_FromStringAndSize([n as u8].as_ptr().cast(), 1));
                    }
                    mp::write_i64(&mut h, n)
                }
                T_BYTES => {
                    // bin header and the bytes, as `Codec::enc` writes them.
                    let b = py_fast::bytes_of(v);
                    mp::write_bin_header(&mut h, b.len()).ok()?;
                    let n = h.len;
                    return Some(py_fast::new_bytes_with(n + b.len(), |dst| {
                        dst[..n].copy_from_slice(h.as_slice());
                        dst[n..].copy_from_slice(b);
                    }));
                }
                T_FLOAT => {
                    // float 64 (as `mp::write_f64`), written straight into the new bytes.
                    let o = ffi::PyBytes_FromStringAndSize(std::ptr::null(), 9);
                    if !o.is_null() {
                        let dst = ffi::PyBytes_AS_STRING(o).cast::<u8>().cast_mut();
                        *dst = 0xcb;
                        let bits = ffi::PyFloat_AS_DOUBLE(v).to_bits().to_be_bytes();
                        std::ptr::copy_nonoverlapping(bits.as_ptr(), dst.add(1), 8);
                    }
                    return Some(o);
                }
                T_BOOL => mp::write_bool(&mut h, v == ffi::Py_True()),
                _ => mp::write_nil(&mut h),
            }
            Some(ffi::PyBytes_FromStringAndSize(
                h.buf.as_ptr().cast(),
                h.len as ffi::Py_ssize_t,
            ))
        }
    }

    /// The value of `data` when it is exact `bytes` holding one scalar this coder keeps
    /// as decoded, for a call without `zero_copy=True` (a bin value is copied). `None` (no exception set) otherwise: the general path decodes it and
    /// raises the errors (invalid UTF-8).
    ///
    /// # Safety
    /// `data` must be a valid reference; the GIL must be held.
    #[inline(always)]
    unsafe fn decode_scalar(&self, data: *mut ffi::PyObject) -> Option<*mut ffi::PyObject> {
        if self.dec_fast == 0 {
            return None;
        }
        // SAFETY: `data` is valid (caller) and, once checked, exactly bytes; the
        // constructors return a new reference or NULL with an exception set.
        unsafe {
            if ffi::Py_TYPE(data) != std::ptr::addr_of_mut!(ffi::PyBytes_Type) {
                return None;
            }
            let b = py_fast::bytes_of(data);
            let tok = match (b.first().copied()?, b.len()) {
                (x @ (0x00..=0x7f | 0xe0..=0xff), 1) => Token::Int(i64::from(x as i8)),
                (x @ 0xa0..=0xbf, n) if n == 1 + usize::from(x & 0x1f) => Token::Str(&b[1..]),
                (0xcb, 9) => Token::Float(f64::from_bits(u64::from_be_bytes(load(b, 1)))),
                _ => {
                    let mut r = Reader::new(b);
                    let tok = r.read().ok()?;
                    if !r.is_done() {
                        return None;
                    }
                    tok
                }
            };
            let ok = |bit: u8| self.dec_fast & bit != 0;
            Some(match tok {
                Token::Nil if ok(T_NONE) => ffi::Py_NewRef(ffi::Py_None()),
                Token::Bool(b) if ok(T_BOOL) => ffi::PyBool_FromLong(b.into()),
                Token::Uint(u) if ok(T_INT) => ffi::PyLong_FromUnsignedLongLong(u),
                Token::Int(i) if ok(T_INT) => ffi::PyLong_FromLongLong(i),
                Token::Float(f) if ok(T_FLOAT) => ffi::PyFloat_FromDouble(f),
                Token::Bin(b) if ok(T_BYTES) => {
                    ffi::PyBytes_FromStringAndSize(b.as_ptr().cast(), b.len() as ffi::Py_ssize_t)
                }
                Token::Str(s) if ok(T_STR) => {
                    let o = py_fast::new_str(s);
                    if o.is_null() {
                        ffi::PyErr_Clear();
                        return None;
                    }
                    o
                }
                _ => return None,
            })
        }
    }

    /// `FieldType.encode` on the native backend, once the codec is known to be active
    /// and the value is not one [`Self::encode_scalar`] writes: errors as the Python one.
    fn encode<'py>(
        &self,
        py: Python<'py>,
        value: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let codec = self.codec.get();
        let r = guarded(codec, py, || {
            let mut out = Out::new();
            if self.any || has_type(&self.exact, value.get_type_ptr()) {
                codec.enc(value, &mut out, 0, true)?;
            } else {
                codec.enc_plan(value, &self.plan.get().root, &mut out, 0)?;
            }
            out.into_pybytes(py)
        });
        r.map(Bound::into_any)
            .map_err(|e| self.failed(py, pyo3::intern!(py, "_encode_failed"), e))
    }

    /// `FieldType.decode` on the native backend, once the codec is known to be active
    /// and the input is not one [`Self::decode_scalar`] reads: errors as the Python one.
    fn decode<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
        zero_copy: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let codec = self.codec.get();
        let view_min = if zero_copy { self.view_min } else { 0 };
        let plan = self.decode_plan.get();
        let factory = if self.any || plan.needs_factory {
            codec
                .ref_factory
                .lock()
                .ok()
                .and_then(|f| f.as_ref().map(|f| f.bind(py).clone()))
        } else {
            None
        };
        let r = guarded(codec, py, || {
            if self.any {
                codec.decode_inner(py, data, factory, view_min, None)
            } else {
                let any = factory.unwrap_or_else(|| py.None().into_bound(py));
                codec.decode_inner(py, data, None, view_min, Some((&plan.root, &any)))
            }
        });
        r.map_err(|e| self.failed(py, pyo3::intern!(py, "_decode_failed"), e))
    }

    /// The error for a panic that escaped everything else (a bug): a `SerializationError`.
    fn panicked(&self, py: Python<'_>) -> PyErr {
        self.codec
            .get()
            .ser_err(py, "internal error in the native codec")
    }
}

/// A `PyMethodDef` in a static. CPython only ever reads it.
pub(crate) struct MethodDef(pub(crate) std::cell::UnsafeCell<ffi::PyMethodDef>);

// SAFETY: the definitions are constants never written after initialisation; CPython
// reads them (with the GIL held) and keeps pointers to them, which stay valid forever.
unsafe impl Sync for MethodDef {}

impl MethodDef {
    pub(crate) fn get(&self) -> *mut ffi::PyMethodDef {
        self.0.get()
    }
}

/// Offset of the `FieldType` slot that holds its [`Coder`] (`FieldType._ncoder`), set by
/// `Coder.install`; 0 until then.
static CODER_SLOT: AtomicIsize = AtomicIsize::new(0);
/// The `Coder` type object, set by `Coder.install`.
static CODER_TYPE: AtomicPtr<ffi::PyTypeObject> = AtomicPtr::new(std::ptr::null_mut());

/// The class `Coder.install` made `encode` / `decode` native methods of
/// (`codec.FieldType`), for [`encode_field`].
static FIELD_CLASS: AtomicPtr<ffi::PyTypeObject> = AtomicPtr::new(std::ptr::null_mut());

/// `ft.encode(value)` for Rust callers (the engine's one-call commit), with no method
/// lookup and no argument tuple: exactly what the native `FieldType.encode` does.
/// `None` when `ft` is not exactly an instance of the installed `FieldType` class (the
/// caller then calls its `encode` method).
pub(crate) fn encode_field<'py>(
    ft: &Bound<'py, PyAny>,
    value: &Bound<'py, PyAny>,
) -> Option<PyResult<Bound<'py, PyAny>>> {
    let cls = FIELD_CLASS.load(Ordering::Relaxed);
    if cls.is_null() || ft.get_type_ptr() != cls {
        return None;
    }
    // SAFETY: `ft` is an instance of the installed class (checked above), as the method
    // descriptor would have checked; both references are valid and the GIL is held (a
    // `Bound`). The result is a new reference or NULL with an exception set.
    Some(unsafe {
        let p = field_encode_raw(ft.as_ptr(), value.as_ptr());
        Bound::from_owned_ptr_or_err(ft.py(), p)
    })
}

/// The [`Coder`] in `ft`'s coder slot, borrowed, when it holds one and its codec is the
/// active backend: for the scalar fast paths, which run no Python code (so nothing can
/// replace the slot's value while the reference is used).
///
/// # Safety
/// As [`coder_of`]; the result must not be used after Python code may have run.
#[inline(always)]
unsafe fn active_coder<'a>(ft: *mut ffi::PyObject) -> Option<&'a Coder> {
    // SAFETY: as `slot_coder`; the object is kept alive by `ft`'s slot for as long as no
    // Python code runs (caller), and it is a `Coder` (type checked), a frozen pyclass
    // whose contents `get` borrows.
    unsafe {
        let p = slot_coder(ft)?;
        let py = Python::assume_attached();
        let c: &'a Coder = &*std::ptr::from_ref(
            pyo3::Borrowed::from_ptr(py, p)
                .cast_unchecked::<Coder>()
                .get(),
        );
        c.codec.get().active.load(Ordering::Relaxed).then_some(c)
    }
}

/// The [`Coder`] in `ft`'s coder slot (a new reference), when it holds one.
///
/// # Safety
/// `ft` must be a valid reference to an instance of the class `Coder.install` was given
/// (the method descriptors that call this check that); the GIL must be held.
#[inline(always)]
unsafe fn coder_of<'py>(py: Python<'py>, ft: *mut ffi::PyObject) -> Option<Bound<'py, Coder>> {
    // SAFETY: as `slot_coder`; we take our own reference before any Python code could
    // replace the slot's value, and the type was checked there.
    unsafe {
        let p = slot_coder(ft)?;
        Some(Bound::from_borrowed_ptr(py, p).cast_into_unchecked::<Coder>())
    }
}

/// The object in `ft`'s coder slot, borrowed, when it is a `Coder`.
///
/// # Safety
/// As [`coder_of`].
#[inline(always)]
unsafe fn slot_coder(ft: *mut ffi::PyObject) -> Option<*mut ffi::PyObject> {
    let off = CODER_SLOT.load(Ordering::Relaxed);
    if off <= 0 {
        return None;
    }
    // SAFETY: `off` is the offset of an object slot (a `T_OBJECT_EX` member) of the
    // class `ft` is an instance of (caller): a possibly NULL object pointer. A non-NULL
    // value is a live object owned by `ft`. Its type is checked before anyone casts it.
    unsafe {
        let p = *ft.cast::<u8>().offset(off).cast::<*mut ffi::PyObject>();
        (!p.is_null() && ffi::Py_TYPE(p) == CODER_TYPE.load(Ordering::Relaxed)).then_some(p)
    }
}

/// Hands a call's result to CPython: a new reference, or NULL with the exception set. A
/// panic (caught by the caller) becomes a `SerializationError`.
fn into_raw(
    py: Python<'_>,
    coder: Option<&Coder>,
    r: std::thread::Result<PyResult<*mut ffi::PyObject>>,
) -> *mut ffi::PyObject {
    let r = match r {
        Ok(r) => r,
        Err(_) => match coder.map(|c| catch_unwind(AssertUnwindSafe(|| c.panicked(py)))) {
            Some(Ok(e)) => Err(e),
            _ => {
                // SAFETY: the GIL is held; the strings are static and NUL-terminated.
                unsafe {
                    ffi::PyErr_SetString(
                        ffi::PyExc_SystemError,
                        c"internal error in the native codec".as_ptr(),
                    );
                }
                return std::ptr::null_mut();
            }
        },
    };
    match r {
        Ok(p) => p,
        Err(e) => {
            e.restore(py);
            std::ptr::null_mut()
        }
    }
}

/// `FieldType.encode` once the extension is loaded: a `METH_O` method of the class
/// (`Coder.install`), so that `ft.encode(v)` is CPython's specialised method call with no
/// argument parsing and no pyo3 trampoline. Without a coder for the active codec, the
/// call goes to the type's Python `_encode_slow` (which builds the coder when the native
/// backend is active).
unsafe extern "C" fn field_encode_raw(
    ft: *mut ffi::PyObject,
    arg: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls a method with the GIL held; `ft` is an instance of the class
    // (the method descriptor checked it) and `arg` a valid reference. encode_scalar runs
    // no Python code. It cannot panic, but a panic must not unwind into CPython: caught.
    let fast = catch_unwind(|| unsafe { active_coder(ft).and_then(|c| c.encode_scalar(arg)) });
    if let Ok(Some(p)) = fast {
        return p;
    }
    // SAFETY: as above.
    unsafe { field_encode_general(ft, arg) }
}

/// [`field_encode_raw`] for every value but the scalars.
///
/// # Safety
/// As [`field_encode_raw`].
#[inline(never)]
unsafe fn field_encode_general(
    ft: *mut ffi::PyObject,
    arg: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls a method with the GIL held (the thread is attached).
    let py = unsafe { Python::assume_attached() };
    // SAFETY: the method descriptor checked that `ft` is an instance of the class.
    let coder = unsafe { coder_of(py, ft) };
    let coder = coder.as_ref().map(Bound::get);
    let r = catch_unwind(AssertUnwindSafe(|| match coder {
        Some(c) if c.codec.get().active.load(Ordering::Relaxed) => {
            // SAFETY: `arg` is a valid borrowed reference; the GIL is held.
            if let Some(p) = unsafe { c.encode_scalar(arg) } {
                return Ok(p);
            }
            // SAFETY: as above.
            let value = unsafe { pyo3::Borrowed::from_ptr(py, arg) };
            c.encode(py, &value).map(Bound::into_ptr)
        }
        _ => {
            // SAFETY: `ft` and `arg` are valid; a new reference or NULL with an exception.
            let p = unsafe {
                ffi::PyObject_CallMethodOneArg(ft, pyo3::intern!(py, "_encode_slow").as_ptr(), arg)
            };
            Ok(p)
        }
    }));
    into_raw(py, coder, r)
}

/// `FieldType.decode` (see [`field_encode_raw`]), a `METH_FASTCALL | METH_KEYWORDS`
/// method: `decode(data)` and `decode(data, zero_copy=<bool>)` are handled here; any other
/// call is passed as it is to the type's Python `_decode_slow`, which parses it.
unsafe extern "C" fn field_decode_raw(
    ft: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    if nargs == 1 && kwnames.is_null() {
        // SAFETY: as in `field_encode_raw`; one positional argument, a valid reference.
        let fast =
            catch_unwind(|| unsafe { active_coder(ft).and_then(|c| c.decode_scalar(*args)) });
        if let Ok(Some(p)) = fast {
            return p;
        }
    }
    // SAFETY: as above.
    unsafe { field_decode_general(ft, args, nargs, kwnames) }
}

/// [`field_decode_raw`] for every input but a lone scalar.
///
/// # Safety
/// As [`field_decode_raw`].
#[inline(never)]
unsafe fn field_decode_general(
    ft: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: as in `field_encode_raw`.
    let py = unsafe { Python::assume_attached() };
    // SAFETY: as in `field_encode_raw`.
    let coder = unsafe { coder_of(py, ft) };
    let coder = coder.as_ref().map(Bound::get);
    let r = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: CPython passes `nargs` positional arguments then one value per name in
        // `kwnames` (a tuple of str, or NULL), all valid borrowed references.
        let zero_copy = unsafe {
            match (nargs, kwnames.is_null()) {
                (1, true) => Some(false),
                (1, false) if ffi::PyTuple_GET_SIZE(kwnames) == 1 => {
                    let name = ffi::PyTuple_GET_ITEM(kwnames, 0);
                    let v = *args.add(1);
                    let is_zc = ffi::Py_TYPE(name) == std::ptr::addr_of_mut!(ffi::PyUnicode_Type)
                        && py_fast::str_utf8(name) == Some(b"zero_copy".as_slice());
                    match (is_zc, v == ffi::Py_True(), v == ffi::Py_False()) {
                        (true, true, _) => Some(true),
                        (true, _, true) => Some(false),
                        _ => None,
                    }
                }
                _ => None,
            }
        };
        match (coder, zero_copy) {
            (Some(c), Some(zc)) if c.codec.get().active.load(Ordering::Relaxed) => {
                // SAFETY: one positional argument, a valid borrowed reference; GIL held.
                let data = unsafe { *args };
                // Scalars and copies only: zero_copy may ask for a view of a bin value.
                if !zc {
                    // SAFETY: as above.
                    if let Some(p) = unsafe { c.decode_scalar(data) } {
                        return Ok(p);
                    }
                }
                // SAFETY: as above.
                let data = unsafe { pyo3::Borrowed::from_ptr(py, data) };
                c.decode(py, &data, zc).map(Bound::into_ptr)
            }
            _ => {
                // The call as it came, to `ft._decode_slow`: [ft, *args, *kwvalues].
                let nkw = if kwnames.is_null() {
                    0
                } else {
                    // SAFETY: kwnames is a tuple.
                    unsafe { ffi::PyTuple_GET_SIZE(kwnames) }
                };
                let mut all = Vec::with_capacity((1 + nargs + nkw) as usize);
                all.push(ft);
                // SAFETY: `args` holds nargs + nkw valid pointers.
                all.extend_from_slice(unsafe {
                    std::slice::from_raw_parts(args, (nargs + nkw) as usize)
                });
                // SAFETY: valid method name, argument array and keyword names; a new
                // reference or NULL with an exception set.
                let p = unsafe {
                    ffi::PyObject_VectorcallMethod(
                        pyo3::intern!(py, "_decode_slow").as_ptr(),
                        all.as_ptr(),
                        (1 + nargs) as usize,
                        kwnames,
                    )
                };
                Ok(p)
            }
        }
    }));
    into_raw(py, coder, r)
}

static FIELD_ENCODE: MethodDef = MethodDef(std::cell::UnsafeCell::new(ffi::PyMethodDef {
    ml_name: c"encode".as_ptr(),
    ml_meth: ffi::PyMethodDefPointer {
        PyCFunction: field_encode_raw,
    },
    ml_flags: ffi::METH_O,
    ml_doc: c"encode(value) -> bytes: see FieldType._encode_slow (native coder).".as_ptr(),
}));

static FIELD_DECODE: MethodDef = MethodDef(std::cell::UnsafeCell::new(ffi::PyMethodDef {
    ml_name: c"decode".as_ptr(),
    ml_meth: ffi::PyMethodDefPointer {
        PyCFunctionFastWithKeywords: field_decode_raw,
    },
    ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
    ml_doc: c"decode(data, *, zero_copy=False): see FieldType._decode_slow (native coder)."
        .as_ptr(),
}));

#[pymethods]
impl Coder {
    /// Makes `cls.encode` / `cls.decode` (`codec.FieldType`) the native methods, which
    /// find the type's coder in the object slot `slot` (the member descriptor
    /// `cls._ncoder`) and otherwise call `_encode_slow` / `_decode_slow`.
    #[staticmethod]
    fn install(cls: &Bound<'_, PyType>, slot: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = cls.py();
        // SAFETY: the member descriptor's fields are read only after its exact type is
        // checked; PyDescr_NewMethod gets a static definition and a live type.
        unsafe {
            let d = slot.as_ptr();
            if ffi::Py_TYPE(d) != std::ptr::addr_of_mut!(ffi::PyMemberDescr_Type) {
                return Err(PyTypeError::new_err("slot must be a member descriptor"));
            }
            let d = d.cast::<ffi::PyMemberDescrObject>();
            let m = (*d).d_member;
            if (*d).d_common.d_type != cls.as_ptr().cast::<ffi::PyTypeObject>()
                || m.is_null()
                || (*m).type_code != ffi::Py_T_OBJECT_EX
                || (*m).offset <= 0
            {
                return Err(PyValueError::new_err("slot must be an object slot of cls"));
            }
            let off = (*m).offset;
            let prev = CODER_SLOT.load(Ordering::Relaxed);
            if prev != 0 && prev != off {
                return Err(PyValueError::new_err(
                    "Coder.install: another class is installed",
                ));
            }
            CODER_TYPE.store(
                <Coder as pyo3::PyTypeInfo>::type_object_raw(py),
                Ordering::Relaxed,
            );
            CODER_SLOT.store(off, Ordering::Relaxed);
            let ty = cls.as_ptr().cast::<ffi::PyTypeObject>();
            FIELD_CLASS.store(ty, Ordering::Relaxed);
            for (name, def) in [("encode", &FIELD_ENCODE), ("decode", &FIELD_DECODE)] {
                let descr =
                    Bound::from_owned_ptr_or_err(py, ffi::PyDescr_NewMethod(ty, def.get()))?;
                cls.setattr(name, descr)?;
            }
        }
        Ok(())
    }
}
