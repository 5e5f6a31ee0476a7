//! The pyo3 layer of the state codec: walks Python values into MessagePack bytes and builds
//! Python values from bytes (docs/format.md, "State codec"). Byte layouts live in
//! `oprc_core::codec` (`msgpack`, `ext`); hint-driven checks and rebuilding of models,
//! dataclasses and enums stay in `oaas_sdk.codec`, which calls [`Codec`] for the bytes.
//!
//! One file per job and per kind of plan node (as orjson's `serialize/per_type/` and
//! pydantic-core's `serializers/type_serializers/`):
//! - here: the [`Codec`] class, its Python methods and error helpers;
//! - `plan`: compiled encode / decode plans (`Plan`, `DecodePlan`);
//! - `out`: the encoder's output buffer;
//! - `encode/`: the walk (`mod.rs`) and one file per node kind: `scalar` (str, int, bin),
//!   `containers` (list, dict, tuple, set), `temporal` (datetime, time), `ndarray`,
//!   `record` (plan-driven: models, dataclasses, enums, typed containers);
//! - `decode/`: the same split: `scalar`, `containers`, `ext` (ext types 2-12), `record`;
//! - `keys`: the decoder's cache of short map keys;
//! - `coder`: `Coder`, one field type's native encode / decode;
//! - `field`: those as C functions stored on `FieldType` (no Python frame per call).

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

mod coder;
mod decode;
mod encode;
mod field;
mod keys;
mod out;
mod plan;

pub use coder::Coder;
use coder::*;
pub(crate) use field::*;
use keys::*;
use out::*;
use plan::*;
pub use plan::{DecodePlan, Plan};

pub(crate) struct Numpy {
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

#[inline]
pub(crate) fn ptr_of<T>(t: &Py<T>) -> *mut ffi::PyObject {
    t.as_ptr()
}

pub(crate) struct DecodeMode<'py, 'c> {
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
    #[inline]
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
}

/// Runs `f`, turning a Rust panic into a `SerializationError` instead of letting pyo3's
/// `PanicException` (a `BaseException`) escape to the caller.
pub(crate) fn guarded<T>(
    codec: &Codec,
    py: Python<'_>,
    f: impl FnOnce() -> PyResult<T>,
) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => Err(codec.ser_err(py, "internal error in the native codec")),
    }
}

pub(crate) fn helper<'py>(h: &Bound<'py, PyDict>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    h.get_item(name)?
        .ok_or_else(|| PyValueError::new_err(format!("Codec: missing helper {name:?}")))
}

pub(crate) fn helper_type(h: &Bound<'_, PyDict>, name: &str) -> PyResult<Py<PyType>> {
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
