//! The pyo3 layer of the entry cache: the interface of `oaas_sdk.cache.EntryCache` over
//! the Rust cache `oprc_core::cache`, with lookups and inserts run with the GIL released.

use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple};

use oprc_core::cache::{EntryCache, Record};
use oprc_core::id::ObjectId;
use oprc_core::store::layout::object_key;

/// Object key bytes of an identity `(cls_id, partition_id, object_id)`
/// (`oprc_core::store::layout::object_key`): the cache needs a key it can hash without
/// the GIL.
fn key_bytes(key: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    let t = key.cast::<PyTuple>().map_err(|_| {
        PyValueError::new_err("cache key must be (cls_id, partition_id, object_id)")
    })?;
    if t.len() != 3 {
        return Err(PyValueError::new_err(
            "cache key must be (cls_id, partition_id, object_id)",
        ));
    }
    let cls = t.get_item(0)?;
    let cls = cls.cast::<PyString>()?.to_str()?;
    let pid: u32 = t.get_item(1)?.extract()?;
    let oid = t.get_item(2)?;
    Ok(match oid.cast::<PyString>() {
        Ok(s) => object_key(cls, pid, ObjectId::Str(s.to_str()?)),
        Err(_) => object_key(cls, pid, ObjectId::Num(oid.extract::<u64>()?)),
    })
}

fn entries_of(d: &Bound<'_, PyDict>) -> PyResult<Vec<(String, Arc<[u8]>)>> {
    let mut v = Vec::with_capacity(d.len());
    for (k, x) in d.iter() {
        let name: String = k.extract()?;
        let data: &[u8] = x.cast::<PyBytes>()?.as_bytes();
        v.push((name, Arc::from(data)));
    }
    Ok(v)
}

/// Native `EntryCache`: committed objects by identity, bounded by bytes, optional TTL.
///
/// Same interface as `oaas_sdk.cache.EntryCache`; `record_type` builds what `get`
/// returns (`StoredObject(version, created_ms, updated_ms, entries)`).
#[pyclass(frozen, module = "oaas_sdk._native", name = "EntryCache")]
pub struct PyEntryCache {
    inner: EntryCache,
    record_type: Py<PyAny>,
    #[pyo3(get)]
    max_bytes: u64,
    #[pyo3(get)]
    ttl_s: Option<f64>,
}

#[pymethods]
impl PyEntryCache {
    /// `max_bytes`: bound on the summed record weights (`oprc_core::cache::weight`, the
    /// same as the Python cache's; 0 disables the cache); `ttl_s`: seconds a record stays valid, or None.
    #[new]
    #[pyo3(signature = (max_bytes, ttl_s=None, record_type=None))]
    fn new(
        py: Python<'_>,
        max_bytes: i64,
        ttl_s: Option<f64>,
        record_type: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        let ttl = match ttl_s {
            Some(s) if !(s.is_finite() && s >= 0.0) => {
                return Err(PyValueError::new_err("ttl_s must be a finite number >= 0"))
            }
            Some(s) => Some(Duration::from_secs_f64(s)),
            None => None,
        };
        let record_type = match record_type {
            Some(t) => t,
            None => py
                .import("oaas_sdk.stores")?
                .getattr("StoredObject")?
                .unbind(),
        };
        let max_bytes = u64::try_from(max_bytes.max(0)).unwrap_or(0);
        Ok(PyEntryCache {
            inner: EntryCache::new(max_bytes, ttl),
            record_type,
            max_bytes,
            ttl_s,
        })
    }

    /// The cached record (a new entries dict), or None on a miss or expiry.
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let k = key_bytes(key)?;
        let inner = &self.inner;
        let Some(rec) = py.detach(|| inner.get(&k)) else {
            return Ok(None);
        };
        let entries = PyDict::new(py);
        for (name, data) in &rec.entries {
            entries.set_item(name, PyBytes::new(py, data))?;
        }
        Ok(Some(self.record_type.bind(py).call1((
            rec.version,
            rec.created_ms,
            rec.updated_ms,
            entries,
        ))?))
    }

    /// Insert or replace `key`; least recently used records are evicted beyond the bound.
    fn put(&self, py: Python<'_>, key: &Bound<'_, PyAny>, obj: &Bound<'_, PyAny>) -> PyResult<()> {
        let k = key_bytes(key)?;
        let entries = obj.getattr("entries")?;
        let rec = Record {
            version: obj.getattr("version")?.extract()?,
            created_ms: obj.getattr("created_ms")?.extract()?,
            updated_ms: obj.getattr("updated_ms")?.extract()?,
            entries: entries_of(entries.cast::<PyDict>()?)?,
        };
        let inner = &self.inner;
        py.detach(|| inner.put(k, rec));
        Ok(())
    }

    /// Apply a commit to a cached record; inserts it when `version` is 1 (a new object).
    #[pyo3(signature = (key, version, time_ms, entries, deletes=Vec::new()))]
    fn update(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        version: u64,
        time_ms: i64,
        entries: &Bound<'_, PyDict>,
        deletes: Vec<String>,
    ) -> PyResult<()> {
        let k = key_bytes(key)?;
        let e = entries_of(entries)?;
        let inner = &self.inner;
        py.detach(|| inner.update(k, version, time_ms, e, &deletes));
        Ok(())
    }

    /// Forget `key` (after a delete, a conflict or a failed write).
    fn discard(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        let k = key_bytes(key)?;
        let inner = &self.inner;
        py.detach(|| inner.discard(&k));
        Ok(())
    }

    fn clear(&self, py: Python<'_>) {
        let inner = &self.inner;
        py.detach(|| inner.clear());
    }

    /// Bytes currently counted against the bound.
    #[getter]
    fn nbytes(&self, py: Python<'_>) -> u64 {
        let inner = &self.inner;
        py.detach(|| inner.nbytes())
    }

    #[getter]
    fn hits(&self) -> u64 {
        self.inner.hits()
    }

    #[getter]
    fn misses(&self) -> u64 {
        self.inner.misses()
    }

    #[getter]
    fn evictions(&self, py: Python<'_>) -> u64 {
        let inner = &self.inner;
        py.detach(|| inner.evictions())
    }

    fn __len__(&self, py: Python<'_>) -> usize {
        let inner = &self.inner;
        py.detach(|| inner.len()) as usize
    }
}
