//! CPython fast paths of the codec: the version-specific (non-limited) C API that the
//! stable ABI hides, used where a call per value would dominate the cost (docs/native.md,
//! "Fast paths"). The extension is built for one CPython minor version (no `abi3`).
//!
//! Every function here takes raw pointers and documents what it needs from them.

use std::os::raw::c_int;

use pyo3::ffi;

extern "C" {
    // cpython/dictobject.h, exported by every CPython 3.x (orjson and msgspec call it):
    // a new empty dict sized for `minused` items without a resize.
    fn _PyDict_NewPresized(minused: ffi::Py_ssize_t) -> *mut ffi::PyObject;
    // cpython/object.h: the address of an object's instance-dict slot (NULL when its type
    // has none); what `obj.__dict__` reads.
    fn _PyObject_GetDictPtr(obj: *mut ffi::PyObject) -> *mut *mut ffi::PyObject;
}

/// The instance `__dict__` of `obj` when it has one already (borrowed), else NULL: the
/// object `getattr(obj, "__dict__")` returns, without the attribute lookup (a pydantic
/// model's `__getattr__` hook makes that lookup slow).
///
/// # Safety
/// `obj` must be a valid reference; the GIL must be held. The result is valid while
/// `obj` keeps it (the caller takes a reference before running Python code).
#[inline]
pub(super) unsafe fn instance_dict(obj: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: `obj` is valid (caller); the dict slot holds NULL or a dict reference.
    unsafe {
        let p = _PyObject_GetDictPtr(obj);
        if p.is_null() {
            return std::ptr::null_mut();
        }
        *p
    }
}

/// The UTF-8 form of an exact `str`, borrowed from the object: compact ASCII strings are
/// read in place (their characters are their UTF-8 bytes); others through
/// `PyUnicode_AsUTF8AndSize`, which caches the UTF-8 form in the object. `None`, with a
/// Python exception set, for a string with lone surrogates.
///
/// # Safety
/// `s` must be a valid reference to an exact `str`; the slice is valid while `s` lives
/// (and is not used after `s` may have been freed).
#[inline(always)]
pub(super) unsafe fn str_utf8<'a>(s: *mut ffi::PyObject) -> Option<&'a [u8]> {
    // SAFETY: the caller guarantees `s` is a live str; a compact ASCII str stores its
    // `length` one-byte characters right after its header (PyUnicode_DATA).
    unsafe {
        if ffi::PyUnicode_IS_COMPACT_ASCII(s) != 0 {
            let len = ffi::PyUnicode_GET_LENGTH(s) as usize;
            let p = ffi::PyUnicode_DATA(s).cast::<u8>().cast_const();
            return Some(std::slice::from_raw_parts(p, len));
        }
        let mut size: ffi::Py_ssize_t = 0;
        let p = ffi::PyUnicode_AsUTF8AndSize(s, &mut size);
        if p.is_null() {
            return None;
        }
        Some(std::slice::from_raw_parts(p.cast::<u8>(), size as usize))
    }
}

/// Whether every byte of `s` is ASCII (8 bytes at a time).
#[inline(always)]
fn is_ascii(s: &[u8]) -> bool {
    let mut chunks = s.chunks_exact(8);
    let mut acc = 0u64;
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        acc |= u64::from_ne_bytes(w);
    }
    for &b in chunks.remainder() {
        acc |= u64::from(b);
    }
    acc & 0x8080_8080_8080_8080 == 0
}

/// A new `str` from UTF-8 bytes: ASCII is copied straight into a new compact ASCII
/// string (`PyUnicode_New(len, 127)`, as orjson does); anything else goes through
/// `PyUnicode_DecodeUTF8`, which validates it. Returns a new reference, or NULL with a
/// Python exception set (invalid UTF-8, out of memory).
///
/// # Safety
/// The GIL must be held.
#[inline]
pub(super) unsafe fn new_str(s: &[u8]) -> *mut ffi::PyObject {
    let Ok(len) = ffi::Py_ssize_t::try_from(s.len()) else {
        // SAFETY: the GIL is held (caller); the strings are static and NUL-terminated.
        unsafe {
            ffi::PyErr_SetString(ffi::PyExc_OverflowError, c"str too long".as_ptr());
        }
        return std::ptr::null_mut();
    };
    // SAFETY: the GIL is held. PyUnicode_New(len, 127) returns a compact ASCII string
    // with room for `len` one-byte characters plus a terminating NUL it already wrote (or
    // NULL with an exception); we fill exactly those `len` bytes with ASCII before anyone
    // else sees the object. PyUnicode_DecodeUTF8 copies `len` readable bytes.
    unsafe {
        if is_ascii(s) {
            let o = ffi::PyUnicode_New(len, 127);
            if !o.is_null() {
                std::ptr::copy_nonoverlapping(
                    s.as_ptr(),
                    ffi::PyUnicode_DATA(o).cast::<u8>(),
                    s.len(),
                );
            }
            return o;
        }
        ffi::PyUnicode_DecodeUTF8(s.as_ptr().cast(), len, c"strict".as_ptr())
    }
}

/// A new empty dict with room for `n` items (`_PyDict_NewPresized`). New reference or
/// NULL with an exception set.
///
/// # Safety
/// The GIL must be held.
#[inline]
pub(super) unsafe fn new_dict(n: usize) -> *mut ffi::PyObject {
    // SAFETY: the GIL is held (caller); the function only allocates. Small maps take
    // the plain constructor (CPython presizes only above 5 items anyway).
    unsafe {
        if n <= 5 {
            ffi::PyDict_New()
        } else {
            _PyDict_NewPresized(n.min(1 << 16) as ffi::Py_ssize_t)
        }
    }
}

/// A new `bytes` object of `len` bytes filled by `fill`, which must write every byte of
/// the slice it is given. New reference or NULL with an exception set.
///
/// # Safety
/// The GIL must be held.
#[inline(always)]
pub(super) unsafe fn new_bytes_with(
    len: usize,
    fill: impl FnOnce(&mut [u8]),
) -> *mut ffi::PyObject {
    let Ok(n) = ffi::Py_ssize_t::try_from(len) else {
        // SAFETY: the GIL is held (caller).
        unsafe {
            ffi::PyErr_SetString(ffi::PyExc_OverflowError, c"result too large".as_ptr());
        }
        return std::ptr::null_mut();
    };
    // SAFETY: PyBytes_FromStringAndSize(NULL, n) returns a new bytes object with `n`
    // bytes of storage that nobody else sees before we return it (or NULL with an
    // exception). The slice covers exactly that storage; `fill` writes all of it.
    unsafe {
        let o = ffi::PyBytes_FromStringAndSize(std::ptr::null(), n);
        if !o.is_null() {
            let dst = ffi::PyBytes_AS_STRING(o).cast::<u8>().cast_mut();
            fill(std::slice::from_raw_parts_mut(dst, len));
        }
        o
    }
}

/// The bytes of an exact `bytes` object, borrowed.
///
/// # Safety
/// `b` must be a valid reference to an exact `bytes`; the slice is valid while it lives.
#[inline(always)]
pub(super) unsafe fn bytes_of<'a>(b: *mut ffi::PyObject) -> &'a [u8] {
    // SAFETY: the caller guarantees `b` is a live bytes object: `ob_size` bytes of
    // immutable storage at PyBytes_AS_STRING.
    unsafe {
        std::slice::from_raw_parts(
            ffi::PyBytes_AS_STRING(b).cast::<u8>(),
            ffi::Py_SIZE(b) as usize,
        )
    }
}

/// `PyLong_AsLongLongAndOverflow` on an exact `int`: `None` when it does not fit 64 bits.
///
/// # Safety
/// `v` must be a valid reference to an exact `int`.
#[inline(always)]
pub(super) unsafe fn int_i64(v: *mut ffi::PyObject) -> Option<i64> {
    let mut overflow: c_int = 0;
    // SAFETY: `v` is an int (caller); with the overflow flag the call cannot fail.
    let n = unsafe { ffi::PyLong_AsLongLongAndOverflow(v, &mut overflow) };
    (overflow == 0).then_some(n)
}

/// Copies `n` bytes from `src` to `dst` with at most two overlapping loads and stores for
/// short strings (a `memcpy` call costs more than the copy for map keys and short values).
///
/// # Safety
/// `src` must be readable and `dst` writable for `n` bytes; they must not overlap.
#[inline(always)]
pub(super) unsafe fn copy_short(src: *const u8, dst: *mut u8, n: usize) {
    // SAFETY: every access below stays within [0, n) of both ranges (caller).
    unsafe {
        match n {
            0 => {}
            1..=3 => {
                *dst = *src;
                *dst.add(n / 2) = *src.add(n / 2);
                *dst.add(n - 1) = *src.add(n - 1);
            }
            4..=7 => {
                let a = src.cast::<u32>().read_unaligned();
                let b = src.add(n - 4).cast::<u32>().read_unaligned();
                dst.cast::<u32>().write_unaligned(a);
                dst.add(n - 4).cast::<u32>().write_unaligned(b);
            }
            8..=16 => {
                let a = src.cast::<u64>().read_unaligned();
                let b = src.add(n - 8).cast::<u64>().read_unaligned();
                dst.cast::<u64>().write_unaligned(a);
                dst.add(n - 8).cast::<u64>().write_unaligned(b);
            }
            17..=32 => {
                let a = src.cast::<u128>().read_unaligned();
                let b = src.add(n - 16).cast::<u128>().read_unaligned();
                dst.cast::<u128>().write_unaligned(a);
                dst.add(n - 16).cast::<u128>().write_unaligned(b);
            }
            _ => std::ptr::copy_nonoverlapping(src, dst, n),
        }
    }
}

/// Appends a MessagePack str (the smallest header, as `msgpack::write_str`, then the
/// bytes) to `buf`; `false`, appending nothing, when `s` is too long for MessagePack.
#[inline(always)]
pub(super) fn put_str(buf: &mut Vec<u8>, s: &[u8]) -> bool {
    let n = s.len();
    let mut h = [0u8; 5];
    let hl = match n {
        0..=31 => {
            h[0] = 0xa0 | n as u8;
            1
        }
        32..=0xff => {
            h[0] = 0xd9;
            h[1] = n as u8;
            2
        }
        0x100..=0xffff => {
            h[0] = 0xda;
            h[1..3].copy_from_slice(&(n as u16).to_be_bytes());
            3
        }
        _ => match u32::try_from(n) {
            Ok(m) => {
                h[0] = 0xdb;
                h[1..5].copy_from_slice(&m.to_be_bytes());
                5
            }
            Err(_) => return false,
        },
    };
    buf.reserve(5 + n);
    // SAFETY: `reserve` made room for the 5-byte header slot and the `n` bytes after the
    // current length; we write `hl + n` bytes there (5 header bytes, of which `hl` count)
    // and then extend the length over exactly those.
    unsafe {
        let dst = buf.as_mut_ptr().add(buf.len());
        dst.cast::<[u8; 5]>().write_unaligned(h);
        copy_short(s.as_ptr(), dst.add(hl), n);
        buf.set_len(buf.len() + hl + n);
    }
    true
}

/// The number of items of an exact `dict` (its `ma_used`).
///
/// # Safety
/// `d` must be a valid reference to a dict.
#[inline(always)]
pub(super) unsafe fn dict_len(d: *mut ffi::PyObject) -> usize {
    // SAFETY: `d` is a dict (caller).
    unsafe { (*d.cast::<ffi::PyDictObject>()).ma_used as usize }
}

/// The header of a dict's keys object, `struct _dictkeysobject` in CPython's
/// `Include/internal/pycore_dict.h` (3.11 to 3.13, without free threading); the hash
/// index (`1 << dk_log2_index_bytes` bytes) and then the entries follow it.
#[repr(C)]
struct DictKeys {
    dk_refcnt: ffi::Py_ssize_t,
    dk_log2_size: u8,
    dk_log2_index_bytes: u8,
    dk_kind: u8,
    dk_version: u32,
    dk_usable: ffi::Py_ssize_t,
    dk_nentries: ffi::Py_ssize_t,
}

/// `dk_kind` of a combined table with only str keys (`PyDictUnicodeEntry`: key, value)
/// and of one with any keys (`PyDictKeyEntry`: hash, key, value).
const DICT_KEYS_GENERAL: u8 = 0;
const DICT_KEYS_UNICODE: u8 = 1;

/// Whether the running CPython has the [`DictKeys`] layout (checked once). Never on a
/// free-threaded build (`Py_GIL_DISABLED`: the keys object has a mutex in front, and
/// another thread may resize the table while it is read).
#[cfg(Py_GIL_DISABLED)]
fn dict_layout_known() -> bool {
    false
}

/// See the other `dict_layout_known`.
#[cfg(not(Py_GIL_DISABLED))]
fn dict_layout_known() -> bool {
    static KNOWN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    // SAFETY: `Py_Version` is a constant exported by CPython 3.11 and later.
    *KNOWN.get_or_init(|| (0x030b..=0x030d).contains(&(unsafe { ffi::Py_Version } >> 16)))
}

/// `PyDict_Next` (same `pos` protocol, borrowed references), reading the entries of a
/// combined table in place: the call and its hash lookup cost a fifth of encoding a
/// `dict[str, str]`. Split tables (instance dicts) and unknown CPython versions go
/// through `PyDict_Next`. Like it, every call re-reads the table and bounds-checks `pos`,
/// so a dict changed between calls (by Python code) is read safely.
///
/// # Safety
/// `d` must be a valid reference to a dict; the GIL must be held.
#[inline(always)]
pub(super) unsafe fn dict_next(
    d: *mut ffi::PyObject,
    pos: &mut ffi::Py_ssize_t,
    key: &mut *mut ffi::PyObject,
    value: &mut *mut ffi::PyObject,
) -> bool {
    // SAFETY: `d` is a dict (caller). A combined table (`ma_values` NULL) stores
    // `dk_nentries` entries right after its `1 << dk_log2_index_bytes` index bytes, each
    // a (key, value) pair of pointers for the unicode kind and (hash, key, value) for the
    // general kind; a deleted entry has a NULL value. We read only entries below
    // `dk_nentries`, as `_PyDict_Next` does.
    unsafe {
        let mp = d.cast::<ffi::PyDictObject>();
        if !(*mp).ma_values.is_null() || !dict_layout_known() {
            return ffi::PyDict_Next(d, pos, key, value) != 0;
        }
        let keys = (*mp).ma_keys.cast::<DictKeys>();
        let (width, first) = match (*keys).dk_kind {
            DICT_KEYS_UNICODE => (2, 0),
            DICT_KEYS_GENERAL => (3, 1),
            _ => return ffi::PyDict_Next(d, pos, key, value) != 0,
        };
        let n = (*keys).dk_nentries;
        let mut i = *pos;
        if i < 0 {
            return false;
        }
        let entries = keys
            .add(1)
            .cast::<u8>()
            .add(1usize << (*keys).dk_log2_index_bytes)
            .cast::<*mut ffi::PyObject>();
        while i < n {
            let e = entries.add(i as usize * width + first);
            let v = *e.add(1);
            if !v.is_null() {
                *key = *e;
                *value = v;
                *pos = i + 1;
                return true;
            }
            i += 1;
        }
        false
    }
}

/// Appends `b` to `buf` (as `extend_from_slice`, without a `memcpy` call for short `b`).
#[inline(always)]
pub(super) fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    buf.reserve(b.len());
    // SAFETY: `reserve` made room for `b.len()` bytes after the current length, which we
    // write and then extend the length over.
    unsafe {
        copy_short(b.as_ptr(), buf.as_mut_ptr().add(buf.len()), b.len());
        buf.set_len(buf.len() + b.len());
    }
}
