//! Compiled plans: [`PlanNode`] (encode) and [`DecPlan`] (decode), built once per field
//! type from the descriptor `oaas_sdk.codec` compiles from its type hint; the `Plan` and
//! `DecodePlan` handles Python holds.

use super::*;

/// A compiled encode plan (see `codec._plan_desc`): which exact types each node of a hint
/// passes through unchanged, so that the native encoder checks them itself and calls the
/// node's Python `_prep` only for values that need converting or refusing.
pub(crate) enum PlanNode {
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
pub(crate) unsafe fn same_str(k: *mut ffi::PyObject, name: *mut ffi::PyObject) -> bool {
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
pub(crate) type RecordField = (Py<PyString>, Option<Box<[u8]>>, PlanNode);

/// Item `i` of a plan description tuple: an iterable of types.
pub(crate) fn desc_types(t: &Bound<'_, PyTuple>, i: usize) -> PyResult<Vec<Py<PyType>>> {
    t.get_item(i)?
        .try_iter()?
        .map(|x| Ok(x?.cast_into::<PyType>()?.unbind()))
        .collect()
}

/// The last item of a plan description tuple: its Python fallback callable.
pub(crate) fn desc_last(t: &Bound<'_, PyTuple>) -> PyResult<Py<PyAny>> {
    Ok(t.get_item(t.len() - 1)?.unbind())
}

impl PlanNode {
    pub(crate) fn compile(desc: &Bound<'_, PyAny>) -> PyResult<PlanNode> {
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

#[inline]
pub(crate) fn has_type(types: &[Py<PyType>], t: *mut ffi::PyTypeObject) -> bool {
    types
        .iter()
        .any(|x| x.as_ptr().cast::<ffi::PyTypeObject>() == t)
}

/// A compiled encode plan for one field type (`Codec.plan`).
#[pyclass(frozen, module = "oaas_sdk._native", name = "Plan")]
pub struct Plan {
    pub(crate) root: PlanNode,
}

/// A compiled decode plan (see `codec._decode_plan_desc`): raw values of the exact types a
/// node accepts are final; others go to the node's Python `_conv`, as `FieldType.decode`
/// would send them.
pub(crate) enum DecPlan {
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
    pub(crate) fn compile(desc: &Bound<'_, PyAny>) -> PyResult<DecPlan> {
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
    #[inline]
    pub(crate) fn has_any(&self) -> bool {
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
    pub(crate) root: DecPlan,
    pub(crate) needs_factory: bool,
}
