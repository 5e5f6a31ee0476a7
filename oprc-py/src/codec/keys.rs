//! The decoder's cache of short map keys (interned str objects by their bytes).

use super::*;

/// `N` bytes of `s` from `i` as a native integer's bytes (one load).
#[inline(always)]
pub(crate) fn load<const N: usize>(s: &[u8], i: usize) -> [u8; N] {
    let mut w = [0u8; N];
    w.copy_from_slice(&s[i..i + N]);
    w
}

/// `a == b` for short slices without a `memcmp` call: overlapping loads of the first and
/// last 16, 8 or 4 bytes (map keys and field names are short).
#[inline(always)]
pub(crate) fn short_eq(a: &[u8], b: &[u8]) -> bool {
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
pub(crate) fn key_hash(s: &[u8]) -> u64 {
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
pub(crate) struct KeySlot {
    pub(crate) len: usize,
    pub(crate) bytes: [u8; KeyCache::MAX_LEN],
    pub(crate) obj: Option<Py<PyAny>>,
}

pub(crate) struct KeyCache {
    pub(crate) slots: Box<[KeySlot]>,
}

impl KeyCache {
    const BITS: u32 = 9;
    const MAX_LEN: usize = 32;

    #[inline]
    pub(crate) fn new() -> Self {
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

    #[inline]
    pub(crate) fn get<'py>(&mut self, py: Python<'py>, s: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        // SAFETY: get_raw returns a new reference or NULL with an exception set.
        unsafe { Bound::from_owned_ptr_or_err(py, self.get_raw(py, s)) }
    }

    /// The str for UTF-8 bytes `s`: a new reference, or NULL with an exception set.
    #[inline(always)]
    pub(crate) fn get_raw(&mut self, py: Python<'_>, s: &[u8]) -> *mut ffi::PyObject {
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
