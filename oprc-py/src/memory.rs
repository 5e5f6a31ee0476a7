//! Python binding of the native memory store (`oprc_core::store::memory`):
//! `oaas_sdk._native.MemoryStore`. The native engine over the memory store holds the same
//! store (`Engine(..., memory=store)`), and `oaas_sdk.stores.memory.NativeMemoryStore`
//! gives it the Python store interface, so it outlives an engine as the Python memory
//! store does (a test's "restart" hands it to the next configuration).

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use oprc_core::id::{Identity, ObjectId};
use oprc_core::store::layout::{object_key, WriteRecord};
use oprc_core::store::memory::{MemoryStore, MEMORY_STORE_NAME};
use oprc_core::store::Store;

use crate::engine::{object_id, stored_to_py};

/// Objects in process memory, with the version checks of the durable stores; nothing
/// persisted. Made empty; shared by every engine it is given to.
#[pyclass(name = "MemoryStore", module = "oaas_sdk._native", frozen)]
pub struct PyMemoryStore(pub(crate) Arc<MemoryStore>);

/// One record of `MemoryStore.write_batch`: `(cls_id, partition_id, object_id,
/// expected_version, entries, deletes, delete_object, time_ms)`.
type RecordArgs<'py> = (
    String,
    u32,
    Bound<'py, PyAny>,
    u64,
    Bound<'py, PyDict>,
    Vec<String>,
    bool,
    i64,
);

#[pymethods]
impl PyMemoryStore {
    #[new]
    fn new() -> Self {
        PyMemoryStore(Arc::new(MemoryStore::new()))
    }

    /// `"memory store"`, for messages.
    #[getter]
    fn name(&self) -> &'static str {
        MEMORY_STORE_NAME
    }

    /// Number of stored objects.
    fn __len__(&self) -> usize {
        self.0.len()
    }

    /// The stored object `(cls_id, partition_id, object_id)` as a tuple `(version,
    /// created_ms, updated_ms, {field: bytes})` (entries in the order first written), or
    /// `None`. `TypeError` for an object id that is not an int in `[0, 2**64)` or a str.
    #[allow(clippy::type_complexity)]
    fn read<'py>(
        &self,
        py: Python<'py>,
        cls_id: &str,
        partition_id: u32,
        #[pyo3(from_py_with = object_id)] object_id: ObjectId,
    ) -> PyResult<Option<(u64, i64, i64, Bound<'py, PyDict>)>> {
        let key = object_key(cls_id, partition_id, object_id.as_deref());
        let Ok(Some(obj)) = self.0.read(&key, &"") else {
            return Ok(None); // a memory read never fails
        };
        stored_to_py(py, obj).map(Some)
    }

    /// Apply records `(cls_id, partition_id, object_id, expected_version, entries,
    /// deletes, delete_object, time_ms)` in order, each version-checked on its own
    /// (`expected_version` 0: the object must not exist; entries: `{field: bytes}`).
    /// Returns one result per record: `None` when applied, else the conflict's message
    /// (the record is skipped). `TypeError` for a malformed record; nothing is applied then.
    fn write_batch<'py>(
        &self,
        py: Python<'py>,
        records: Vec<RecordArgs<'py>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let mut built = Vec::with_capacity(records.len());
        for (cls_id, partition_id, oid, expected, entries, deletes, delete_object, time_ms) in
            records
        {
            let identity = Identity {
                cls_id,
                partition_id,
                object_id: object_id(&oid)?,
            };
            let mut r = WriteRecord::new(identity, expected, time_ms);
            let mut pairs = Vec::with_capacity(entries.len());
            for (k, v) in entries.iter() {
                pairs.push((k.cast_into::<PyString>()?, v.cast_into::<PyBytes>()?));
            }
            r.entries = crate::object::commit::entries_of(&pairs)?;
            r.deletes = deletes;
            r.delete_object = delete_object;
            built.push(r);
        }
        let refs: Vec<&WriteRecord> = built.iter().collect();
        let results = self.0.write(&refs);
        PyList::new(py, results.into_iter().map(|r| r.err()))
    }

    /// Object keys (bytes, layout of docs/format.md) of the stored objects starting with
    /// `prefix`, in key order.
    fn scan<'py>(&self, py: Python<'py>, prefix: &[u8]) -> PyResult<Bound<'py, PyList>> {
        let keys = self.0.scan(prefix).unwrap_or_default(); // a memory scan never fails
        PyList::new(py, keys.iter().map(|k| PyBytes::new(py, k)))
    }
}

/// Register `MemoryStore` on the extension module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyMemoryStore>()
}
