//! Payload layouts of the extension types 1-12 (docs/format.md, "Extension types").
//!
//! No Python here: the pyo3 layer reads the fields of Python values, and builds Python
//! values from what these functions check and return.

use super::msgpack::{err, DecodeError, Reader, Token};
pub use crate::id::ObjectId;

pub const EXT_BIGINT: i8 = 1;
pub const EXT_TUPLE: i8 = 2;
pub const EXT_SET: i8 = 3;
pub const EXT_FROZENSET: i8 = 4;
pub const EXT_DATETIME: i8 = 5;
pub const EXT_DATE: i8 = 6;
pub const EXT_TIME: i8 = 7;
pub const EXT_TIMEDELTA: i8 = 8;
pub const EXT_UUID: i8 = 9;
pub const EXT_DECIMAL: i8 = 10;
pub const EXT_NDARRAY: i8 = 11;
pub const EXT_REF: i8 = 12;

/// Nesting limit of containers (`codec.MAX_DEPTH`).
pub const MAX_DEPTH: usize = 100;
/// At most this many dimensions in an ext 11 array.
pub const MAX_NDIM: usize = 64;
const DAY_US: i64 = 86_400_000_000;

/// Ext 1: checks that a payload is a minimal two's-complement integer outside the
/// 64-bit range MessagePack ints cover. The caller builds the int from the same bytes.
#[inline]
pub fn check_bigint(data: &[u8]) -> Result<(), DecodeError> {
    if data.is_empty() {
        return err("ext 1 (int) with an empty payload");
    }
    if data.len() < 9 || (data.len() == 9 && data[0] == 0) {
        return err("ext 1 (int) holds a value that fits a MessagePack int");
    }
    let (b0, b1) = (data[0], data[1]);
    if (b0 == 0x00 && b1 & 0x80 == 0) || (b0 == 0xff && b1 & 0x80 != 0) {
        return err("ext 1 (int) is not of minimal length");
    }
    Ok(())
}

/// Fields of a datetime, date or time, as the value holds them (local wall-clock time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Clock {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    pub microsecond: u32,
    /// `utcoffset()` in microseconds, `None` when naive.
    pub offset_us: Option<i64>,
}

fn check_offset(off: i64) -> Result<i64, DecodeError> {
    if -DAY_US < off && off < DAY_US {
        Ok(off)
    } else {
        err(format!("UTC offset {off} us is not within one day"))
    }
}

#[inline]
pub fn put_datetime(out: &mut Vec<u8>, c: &Clock) {
    out.extend_from_slice(&c.year.to_be_bytes());
    out.extend_from_slice(&[c.month, c.day, c.hour, c.minute, c.second]);
    out.extend_from_slice(&c.microsecond.to_be_bytes());
    if let Some(off) = c.offset_us {
        out.extend_from_slice(&off.to_be_bytes());
    }
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_i64(b: &[u8]) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    i64::from_be_bytes(a)
}

#[inline]
pub fn get_datetime(data: &[u8]) -> Result<Clock, DecodeError> {
    if data.len() != 11 && data.len() != 19 {
        return err(format!(
            "ext 5 (datetime) payload is {} bytes, expected 11 or 19",
            data.len()
        ));
    }
    let offset_us = if data.len() == 19 {
        Some(check_offset(be_i64(&data[11..]))?)
    } else {
        None
    };
    Ok(Clock {
        year: u16::from_be_bytes([data[0], data[1]]),
        month: data[2],
        day: data[3],
        hour: data[4],
        minute: data[5],
        second: data[6],
        microsecond: be_u32(&data[7..]),
        offset_us,
    })
}

#[inline]
pub fn put_date(out: &mut Vec<u8>, c: &Clock) {
    out.extend_from_slice(&c.year.to_be_bytes());
    out.extend_from_slice(&[c.month, c.day]);
}

#[inline]
pub fn get_date(data: &[u8]) -> Result<Clock, DecodeError> {
    if data.len() != 4 {
        return err(format!(
            "ext 6 (date) payload is {} bytes, expected 4",
            data.len()
        ));
    }
    Ok(Clock {
        year: u16::from_be_bytes([data[0], data[1]]),
        month: data[2],
        day: data[3],
        ..Clock::default()
    })
}

#[inline]
pub fn put_time(out: &mut Vec<u8>, c: &Clock) {
    out.extend_from_slice(&[c.hour, c.minute, c.second]);
    out.extend_from_slice(&c.microsecond.to_be_bytes());
    if let Some(off) = c.offset_us {
        out.extend_from_slice(&off.to_be_bytes());
    }
}

#[inline]
pub fn get_time(data: &[u8]) -> Result<Clock, DecodeError> {
    if data.len() != 7 && data.len() != 15 {
        return err(format!(
            "ext 7 (time) payload is {} bytes, expected 7 or 15",
            data.len()
        ));
    }
    let offset_us = if data.len() == 15 {
        Some(check_offset(be_i64(&data[7..]))?)
    } else {
        None
    };
    Ok(Clock {
        hour: data[0],
        minute: data[1],
        second: data[2],
        microsecond: be_u32(&data[3..]),
        offset_us,
        ..Clock::default()
    })
}

/// A timedelta in Python's normalized form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delta {
    pub days: i32,
    pub seconds: i32,
    pub microseconds: i32,
}

#[inline]
pub fn put_timedelta(out: &mut Vec<u8>, d: &Delta) {
    out.extend_from_slice(&d.days.to_be_bytes());
    out.extend_from_slice(&d.seconds.to_be_bytes());
    out.extend_from_slice(&d.microseconds.to_be_bytes());
}

#[inline]
pub fn get_timedelta(data: &[u8]) -> Result<Delta, DecodeError> {
    if data.len() != 12 {
        return err(format!(
            "ext 8 (timedelta) payload is {} bytes, expected 12",
            data.len()
        ));
    }
    let d = Delta {
        days: be_i32(data),
        seconds: be_i32(&data[4..]),
        microseconds: be_i32(&data[8..]),
    };
    if !(0..86_400).contains(&d.seconds) || !(0..1_000_000).contains(&d.microseconds) {
        return err("ext 8 (timedelta) seconds or microseconds out of range");
    }
    Ok(d)
}

#[inline]
pub fn get_uuid(data: &[u8]) -> Result<u128, DecodeError> {
    if data.len() != 16 {
        return err(format!(
            "ext 9 (UUID) payload is {} bytes, expected 16",
            data.len()
        ));
    }
    let mut a = [0u8; 16];
    a.copy_from_slice(data);
    Ok(u128::from_be_bytes(a))
}

/// Whether `s` matches `[<>|][biufcmMS][0-9]+(\[[0-9]*[A-Za-z]+\])?`; returns the item
/// size (the digits after the kind letter) when it does.
#[inline]
pub fn dtype_itemsize(s: &[u8]) -> Option<usize> {
    if s.len() < 3 || !matches!(s[0], b'<' | b'>' | b'|') || !b"biufcmMS".contains(&s[1]) {
        return None;
    }
    let digits = s[2..].iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 || digits > 18 {
        return None;
    }
    let size: usize = std::str::from_utf8(&s[2..2 + digits]).ok()?.parse().ok()?;
    let rest = &s[2 + digits..];
    if !rest.is_empty() {
        // \[[0-9]*[A-Za-z]+\]
        if rest.len() < 3 || rest[0] != b'[' || rest[rest.len() - 1] != b']' {
            return None;
        }
        let inner = &rest[1..rest.len() - 1];
        let n = inner.iter().take_while(|c| c.is_ascii_digit()).count();
        let unit = &inner[n..];
        if unit.is_empty() || !unit.iter().all(u8::is_ascii_alphabetic) {
            return None;
        }
    }
    Some(size)
}

/// A checked ext 11 header; `data` holds exactly `prod(shape) * itemsize` bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct NdHeader<'a> {
    pub dtype: &'a str,
    pub itemsize: usize,
    pub shape: Vec<u64>,
    pub data: &'a [u8],
}

#[inline]
pub fn put_ndarray_header(
    out: &mut Vec<u8>,
    dtype: &[u8],
    shape: &[u64],
) -> Result<(), DecodeError> {
    let n = u8::try_from(dtype.len()).or_else(|_| err("dtype string too long"))?;
    if shape.len() > MAX_NDIM {
        return err(format!(
            "numpy array has {} dimensions (at most {MAX_NDIM})",
            shape.len()
        ));
    }
    out.push(n);
    out.extend_from_slice(dtype);
    out.push(shape.len() as u8);
    for d in shape {
        out.extend_from_slice(&d.to_be_bytes());
    }
    Ok(())
}

#[inline]
pub fn ndarray_header_len(dtype: &[u8], ndim: usize) -> usize {
    2 + dtype.len() + 8 * ndim
}

/// Parses and checks an ext 11 payload before anything is allocated for it: dtype syntax,
/// dimensions, and that the data length equals `prod(shape) * itemsize` (no overflow).
#[inline]
pub fn get_ndarray(data: &[u8]) -> Result<NdHeader<'_>, DecodeError> {
    let n = data.len();
    if n < 2 {
        return err("ext 11 (numpy.ndarray) payload too short");
    }
    let pos = 1 + usize::from(data[0]);
    if pos + 1 > n {
        return err("ext 11 (numpy.ndarray) dtype runs past the payload");
    }
    let ds = &data[1..pos];
    let itemsize = match (std::str::from_utf8(ds), dtype_itemsize(ds)) {
        (Ok(_), Some(size)) if size > 0 => size,
        _ => {
            return err(format!(
                "ext 11 (numpy.ndarray) dtype {:?} is not allowed",
                String::from_utf8_lossy(ds)
            ))
        }
    };
    let dtype = std::str::from_utf8(ds).or_else(|_| err("dtype is not ASCII"))?;
    let ndim = usize::from(data[pos]);
    if ndim > MAX_NDIM {
        return err(format!(
            "ext 11 (numpy.ndarray) has {ndim} dimensions (at most {MAX_NDIM})"
        ));
    }
    let start = pos + 1;
    let end = start + 8 * ndim;
    if end > n {
        return err("ext 11 (numpy.ndarray) shape runs past the payload");
    }
    let mut shape = Vec::with_capacity(ndim);
    let mut count: Option<u128> = Some(1);
    for i in 0..ndim {
        let d = u64::from_be_bytes(
            data[start + 8 * i..start + 8 * i + 8]
                .try_into()
                .or_else(|_| err("shape"))?,
        );
        if d > 0x7fff_ffff_ffff_ffff {
            return err("ext 11 (numpy.ndarray) dimension too large");
        }
        shape.push(d);
        count = count.and_then(|c| c.checked_mul(u128::from(d)));
    }
    let need = count.and_then(|c| c.checked_mul(itemsize as u128));
    let have = (n - end) as u128;
    if need != Some(have) {
        let need = need.map_or_else(|| "more than 2**128".to_string(), |n| n.to_string());
        return err(format!(
            "ext 11 (numpy.ndarray) shape {shape:?} of {dtype} needs {need} data bytes, payload has {have}"
        ));
    }
    Ok(NdHeader {
        dtype,
        itemsize,
        shape,
        data: &data[end..],
    })
}

/// Ext 12 payload: exactly `[cls_id: str, partition_id: u32, object_id: u64 | str]`.
#[inline]
pub fn get_ref(data: &[u8]) -> Result<(&str, u32, ObjectId<&str>), DecodeError> {
    let bad = || DecodeError("ext 12 (reference) payload is not [str, u32, u64 or str]".into());
    let mut r = Reader::new(data);
    if r.read()? != Token::Array(3) {
        return err("ext 12 (reference) payload is not an array of 3 elements");
    }
    let cls = match r.read()? {
        Token::Str(s) => std::str::from_utf8(s).map_err(|_| bad())?,
        _ => return Err(bad()),
    };
    let pid = match r.read()? {
        Token::Uint(p) => u32::try_from(p).map_err(|_| bad())?,
        Token::Int(p) if p >= 0 => u32::try_from(p).map_err(|_| bad())?,
        _ => return Err(bad()),
    };
    let oid = match r.read()? {
        Token::Uint(o) => ObjectId::Num(o),
        Token::Int(o) if o >= 0 => ObjectId::Num(o as u64),
        Token::Str(s) => ObjectId::Str(std::str::from_utf8(s).map_err(|_| bad())?),
        _ => return Err(bad()),
    };
    if !r.is_done() {
        return err("ext 12 (reference) payload has trailing bytes");
    }
    Ok((cls, pid, oid))
}

/// Writes the ext 12 payload for an identity.
#[inline]
pub fn put_ref(
    out: &mut Vec<u8>,
    cls_id: &str,
    partition_id: u32,
    object_id: ObjectId<&str>,
) -> Result<(), DecodeError> {
    use super::msgpack::{write_array_header, write_str, write_u64};
    write_array_header(out, 3)?;
    write_str(out, cls_id.as_bytes())?;
    write_u64(out, u64::from(partition_id));
    match object_id {
        ObjectId::Num(o) => write_u64(out, o),
        ObjectId::Str(s) => write_str(out, s.as_bytes())?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bigint_checks() {
        assert!(check_bigint(&[]).is_err());
        assert!(check_bigint(&[0x01; 8]).is_err());
        assert!(check_bigint(&[0, 0x80, 0, 0, 0, 0, 0, 0, 0]).is_err()); // fits u64
        check_bigint(&[1, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap(); // 2**64
        check_bigint(&[0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).unwrap();
        assert!(check_bigint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(check_bigint(&[0, 0x01, 0, 0, 0, 0, 0, 0, 0, 0]).is_err()); // not minimal
    }

    #[test]
    fn datetime_layout() {
        let c = Clock {
            year: 1970,
            month: 1,
            day: 1,
            offset_us: Some(-18_000_000_000),
            ..Clock::default()
        };
        let mut out = Vec::new();
        put_datetime(&mut out, &c);
        assert_eq!(out.len(), 19);
        assert_eq!(get_datetime(&out).unwrap(), c);
        let mut bad = out.clone();
        bad[11..].copy_from_slice(&DAY_US.to_be_bytes());
        assert!(get_datetime(&bad).is_err());
        assert!(get_datetime(&out[..12]).is_err());
    }

    #[test]
    fn time_and_delta_layout() {
        let c = Clock {
            hour: 1,
            minute: 2,
            second: 3,
            microsecond: 4,
            ..Clock::default()
        };
        let mut out = Vec::new();
        put_time(&mut out, &c);
        assert_eq!(get_time(&out).unwrap(), c);
        let d = Delta {
            days: -1,
            seconds: 3600,
            microseconds: 5,
        };
        out.clear();
        put_timedelta(&mut out, &d);
        assert_eq!(out, [0xff, 0xff, 0xff, 0xff, 0, 0, 0x0e, 0x10, 0, 0, 0, 5]);
        assert_eq!(get_timedelta(&out).unwrap(), d);
        out[5] = 0x02; // seconds = 0x00020e10 = 134672, past one day
        assert!(get_timedelta(&out).is_err());
    }

    #[test]
    fn dtype_syntax() {
        assert_eq!(dtype_itemsize(b"<f8"), Some(8));
        assert_eq!(dtype_itemsize(b"|S5"), Some(5));
        assert_eq!(dtype_itemsize(b"<M8[ns]"), Some(8));
        assert_eq!(dtype_itemsize(b"<m8[10s]"), Some(8));
        assert_eq!(dtype_itemsize(b"|O8"), None);
        assert_eq!(dtype_itemsize(b"<U4"), None);
        assert_eq!(dtype_itemsize(b"<f8[]"), None);
        assert_eq!(dtype_itemsize(b"f8"), None);
    }

    #[test]
    fn ndarray_header_round_trip_and_size_check() {
        let mut out = Vec::new();
        put_ndarray_header(&mut out, b"<i4", &[2]).unwrap();
        assert_eq!(out.len(), ndarray_header_len(b"<i4", 1));
        out.extend_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0]);
        let h = get_ndarray(&out).unwrap();
        assert_eq!(
            (h.dtype, h.itemsize, h.shape.clone(), h.data.len()),
            ("<i4", 4, vec![2], 8)
        );
        out.pop();
        assert!(get_ndarray(&out).is_err());
        // A huge shape with no data is refused without allocating.
        let mut big = Vec::new();
        put_ndarray_header(&mut big, b"<f8", &[1 << 62, 1 << 62]).unwrap();
        assert!(get_ndarray(&big).is_err());
    }

    #[test]
    fn ref_payload() {
        let mut out = Vec::new();
        put_ref(&mut out, "example.Counter", 1, ObjectId::Str("alice")).unwrap();
        assert_eq!(
            get_ref(&out).unwrap(),
            ("example.Counter", 1, ObjectId::Str("alice"))
        );
        out.push(0);
        assert!(get_ref(&out).is_err());
        assert!(get_ref(&[0x93, 0xa0, 0xcf, 1, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }
}
