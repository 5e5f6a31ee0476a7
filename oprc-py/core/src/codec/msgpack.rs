//! MessagePack writer and reader (https://github.com/msgpack/msgpack/blob/master/spec.md).
//!
//! No Python here: the pyo3 layer walks Python objects and calls these. The writer always
//! picks the smallest header (docs/format.md, "One value, one encoding"); the reader accepts
//! any header width, as msgpack readers do, and bounds every length by the bytes present
//! before anything is allocated.

use std::fmt;

/// Malformed input; the message says what and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

#[inline]
pub fn err<T>(msg: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError(msg.into()))
}

// ----------------------------------------------------------------------------- writer

/// Where the writer puts bytes: a `Vec` or, for one scalar, a [`Small`] on the stack.
pub trait Sink {
    fn put(&mut self, b: &[u8]);
    #[inline(always)]
    fn put_byte(&mut self, b: u8) {
        self.put(&[b]);
    }
}

impl Sink for Vec<u8> {
    #[inline(always)]
    fn put(&mut self, b: &[u8]) {
        self.extend_from_slice(b);
    }
    #[inline(always)]
    fn put_byte(&mut self, b: u8) {
        self.push(b);
    }
}

/// The encoding of one scalar or a str/bin header (at most 9 bytes), on the stack.
#[derive(Default)]
pub struct Small {
    pub buf: [u8; 9],
    pub len: usize,
}

impl Small {
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Sink for Small {
    /// Callers write at most 9 bytes in all (one scalar or header); more is a bug, which
    /// panics (the pyo3 layer turns panics into errors).
    #[inline(always)]
    fn put(&mut self, b: &[u8]) {
        self.buf[self.len..self.len + b.len()].copy_from_slice(b);
        self.len += b.len();
    }
}

#[inline]
pub fn write_nil(out: &mut impl Sink) {
    out.put_byte(0xc0);
}

#[inline]
pub fn write_bool(out: &mut impl Sink, v: bool) {
    out.put_byte(if v { 0xc3 } else { 0xc2 });
}

/// Smallest unsigned form (never the signed ones).
#[inline]
pub fn write_u64(out: &mut impl Sink, v: u64) {
    if v < 0x80 {
        out.put_byte(v as u8);
    } else if v <= 0xff {
        out.put(&[0xcc, v as u8]);
    } else if v <= 0xffff {
        out.put_byte(0xcd);
        out.put(&(v as u16).to_be_bytes());
    } else if v <= 0xffff_ffff {
        out.put_byte(0xce);
        out.put(&(v as u32).to_be_bytes());
    } else {
        out.put_byte(0xcf);
        out.put(&v.to_be_bytes());
    }
}

/// Non-negative values as [`write_u64`]; negative ones in the smallest signed form.
#[inline]
pub fn write_i64(out: &mut impl Sink, v: i64) {
    if v >= 0 {
        write_u64(out, v as u64);
    } else if v >= -32 {
        out.put_byte(v as i8 as u8);
    } else if v >= i64::from(i8::MIN) {
        out.put(&[0xd0, v as i8 as u8]);
    } else if v >= i64::from(i16::MIN) {
        out.put_byte(0xd1);
        out.put(&(v as i16).to_be_bytes());
    } else if v >= i64::from(i32::MIN) {
        out.put_byte(0xd2);
        out.put(&(v as i32).to_be_bytes());
    } else {
        out.put_byte(0xd3);
        out.put(&v.to_be_bytes());
    }
}

/// Always float 64 (a NaN keeps its bits).
#[inline]
pub fn write_f64(out: &mut impl Sink, v: f64) {
    out.put_byte(0xcb);
    out.put(&v.to_bits().to_be_bytes());
}

fn too_long(what: &str, len: usize) -> DecodeError {
    DecodeError(format!(
        "{what} of {len} bytes or elements exceeds the MessagePack limit"
    ))
}

#[inline]
fn write_len(
    out: &mut impl Sink,
    len: usize,
    fix: Option<(u8, usize)>,
    c8: Option<u8>,
    c16: u8,
    c32: u8,
    what: &str,
) -> Result<(), DecodeError> {
    match fix {
        Some((base, max)) if len <= max => {
            out.put_byte(base | len as u8);
            return Ok(());
        }
        _ => {}
    }
    match c8 {
        Some(code) if len <= 0xff => out.put(&[code, len as u8]),
        _ if len <= 0xffff => {
            out.put_byte(c16);
            out.put(&(len as u16).to_be_bytes());
        }
        _ if len <= 0xffff_ffff => {
            out.put_byte(c32);
            out.put(&(len as u32).to_be_bytes());
        }
        _ => return Err(too_long(what, len)),
    }
    Ok(())
}

#[inline]
pub fn write_str_header(out: &mut impl Sink, len: usize) -> Result<(), DecodeError> {
    write_len(out, len, Some((0xa0, 31)), Some(0xd9), 0xda, 0xdb, "str")
}

#[inline]
pub fn write_str(out: &mut Vec<u8>, s: &[u8]) -> Result<(), DecodeError> {
    write_str_header(out, s.len())?;
    out.extend_from_slice(s);
    Ok(())
}

#[inline]
pub fn write_bin_header(out: &mut impl Sink, len: usize) -> Result<(), DecodeError> {
    write_len(out, len, None, Some(0xc4), 0xc5, 0xc6, "bin")
}

#[inline]
pub fn write_array_header(out: &mut Vec<u8>, len: usize) -> Result<(), DecodeError> {
    write_len(out, len, Some((0x90, 15)), None, 0xdc, 0xdd, "array")
}

#[inline]
pub fn write_map_header(out: &mut Vec<u8>, len: usize) -> Result<(), DecodeError> {
    write_len(out, len, Some((0x80, 15)), None, 0xde, 0xdf, "map")
}

/// Ext header for a payload of `len` bytes: fixext when `len` is 1, 2, 4, 8 or 16.
#[inline]
pub fn write_ext_header(out: &mut Vec<u8>, len: usize, code: i8) -> Result<(), DecodeError> {
    let fix = match len {
        1 => Some(0xd4),
        2 => Some(0xd5),
        4 => Some(0xd6),
        8 => Some(0xd7),
        16 => Some(0xd8),
        _ => None,
    };
    match fix {
        Some(h) => out.push(h),
        None => write_len(out, len, None, Some(0xc7), 0xc8, 0xc9, "ext")?,
    }
    out.push(code as u8);
    Ok(())
}

/// Length of the header [`write_ext_header`] writes for a payload of `len` bytes.
#[inline]
pub fn ext_header_len(len: usize) -> usize {
    match len {
        1 | 2 | 4 | 8 | 16 => 2,
        0..=0xff => 3,
        0x100..=0xffff => 4,
        _ => 6,
    }
}

// ----------------------------------------------------------------------------- reader

/// One MessagePack item header; containers give their element count, whose elements follow.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Token<'a> {
    Nil,
    Bool(bool),
    Uint(u64),
    Int(i64),
    Float(f64),
    /// UTF-8 not yet validated.
    Str(&'a [u8]),
    Bin(&'a [u8]),
    Array(usize),
    Map(usize),
    Ext(i8, &'a [u8]),
}

/// Reads tokens from a byte slice; never reads past it and never panics.
#[derive(Clone)]
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    #[inline]
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }

    #[inline]
    pub fn position(&self) -> usize {
        self.pos
    }

    #[inline]
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    #[inline]
    pub fn is_done(&self) -> bool {
        self.pos == self.data.len()
    }

    /// The next byte, not consumed.
    #[inline(always)]
    pub fn peek(&self) -> Option<u8> {
        self.data.get(self.pos).copied()
    }

    /// Consumes a header of `head` bytes (already looked at with [`Self::peek`] and
    /// friends) and the `n` bytes after it, which it returns; `None`, consuming nothing,
    /// when they are not all present (the caller then reads the item with [`Self::read`],
    /// which reports the error).
    #[inline(always)]
    pub fn take_after(&mut self, head: usize, n: usize) -> Option<&'a [u8]> {
        let start = self.pos.checked_add(head)?;
        let end = start.checked_add(n)?;
        let s = self.data.get(start..end)?;
        self.pos = end;
        Some(s)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return err(format!(
                "truncated input: {n} bytes needed at offset {}, {} present",
                self.pos,
                self.remaining()
            ));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn be<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn len_of(&mut self, width: u8) -> Result<usize, DecodeError> {
        Ok(match width {
            1 => usize::from(self.byte()?),
            2 => usize::from(u16::from_be_bytes(self.be()?)),
            _ => u32::from_be_bytes(self.be()?) as usize,
        })
    }

    /// A container count that cannot fit in the remaining bytes (each element takes at
    /// least one byte, a map entry two) is refused before the caller allocates for it.
    fn count(&mut self, n: usize, per: usize) -> Result<usize, DecodeError> {
        if n.saturating_mul(per) > self.remaining() {
            return err(format!(
                "container of {n} elements at offset {} but only {} bytes follow",
                self.pos,
                self.remaining()
            ));
        }
        Ok(n)
    }

    #[inline]
    pub fn read(&mut self) -> Result<Token<'a>, DecodeError> {
        let b = self.byte()?;
        Ok(match b {
            0x00..=0x7f => Token::Uint(u64::from(b)),
            0x80..=0x8f => Token::Map(self.count(usize::from(b & 0x0f), 2)?),
            0x90..=0x9f => Token::Array(self.count(usize::from(b & 0x0f), 1)?),
            0xa0..=0xbf => Token::Str(self.take(usize::from(b & 0x1f))?),
            0xc0 => Token::Nil,
            0xc1 => return err("reserved byte 0xc1"),
            0xc2 => Token::Bool(false),
            0xc3 => Token::Bool(true),
            0xc4..=0xc6 => {
                let n = self.len_of(1 << (b - 0xc4))?;
                Token::Bin(self.take(n)?)
            }
            0xc7..=0xc9 => {
                let n = self.len_of(1 << (b - 0xc7))?;
                let code = self.byte()? as i8;
                Token::Ext(code, self.take(n)?)
            }
            0xca => Token::Float(f64::from(f32::from_bits(u32::from_be_bytes(self.be()?)))),
            0xcb => Token::Float(f64::from_bits(u64::from_be_bytes(self.be()?))),
            0xcc => Token::Uint(u64::from(self.byte()?)),
            0xcd => Token::Uint(u64::from(u16::from_be_bytes(self.be()?))),
            0xce => Token::Uint(u64::from(u32::from_be_bytes(self.be()?))),
            0xcf => Token::Uint(u64::from_be_bytes(self.be()?)),
            0xd0 => Token::Int(i64::from(self.byte()? as i8)),
            0xd1 => Token::Int(i64::from(i16::from_be_bytes(self.be()?))),
            0xd2 => Token::Int(i64::from(i32::from_be_bytes(self.be()?))),
            0xd3 => Token::Int(i64::from_be_bytes(self.be()?)),
            0xd4..=0xd8 => {
                let code = self.byte()? as i8;
                Token::Ext(code, self.take(1 << (b - 0xd4))?)
            }
            0xd9..=0xdb => {
                let n = self.len_of(1 << (b - 0xd9))?;
                Token::Str(self.take(n)?)
            }
            0xdc | 0xdd => {
                let n = self.len_of(if b == 0xdc { 2 } else { 4 })?;
                Token::Array(self.count(n, 1)?)
            }
            0xde | 0xdf => {
                let n = self.len_of(if b == 0xde { 2 } else { 4 })?;
                Token::Map(self.count(n, 2)?)
            }
            0xe0..=0xff => Token::Int(i64::from(b as i8)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn ints_pick_the_smallest_form() {
        let cases: &[(i64, &str)] = &[
            (0, "00"),
            (127, "7f"),
            (128, "cc80"),
            (256, "cd0100"),
            (65536, "ce00010000"),
            (-1, "ff"),
            (-32, "e0"),
            (-33, "d0df"),
            (-129, "d1ff7f"),
            (-32769, "d2ffff7fff"),
            (i64::MIN, "d38000000000000000"),
        ];
        for (v, h) in cases {
            let mut out = Vec::new();
            write_i64(&mut out, *v);
            assert_eq!(hex(&out), *h, "{v}");
            let mut r = Reader::new(&out);
            let t = r.read().unwrap();
            assert!(matches!(t, Token::Uint(u) if u as i64 == *v) || t == Token::Int(*v));
            assert!(r.is_done());
        }
        let mut out = Vec::new();
        write_u64(&mut out, u64::MAX);
        assert_eq!(hex(&out), "cfffffffffffffffff");
    }

    #[test]
    fn headers() {
        let mut out = Vec::new();
        write_str(&mut out, &[b'a'; 32]).unwrap();
        assert_eq!(hex(&out[..2]), "d920");
        out.clear();
        write_bin_header(&mut out, 0).unwrap();
        assert_eq!(hex(&out), "c400");
        out.clear();
        write_array_header(&mut out, 16).unwrap();
        assert_eq!(hex(&out), "dc0010");
        out.clear();
        write_map_header(&mut out, 2).unwrap();
        assert_eq!(hex(&out), "82");
        for (len, h) in [(1, "d402"), (3, "c70302"), (16, "d802"), (300, "c8012c02")] {
            out.clear();
            write_ext_header(&mut out, len, 2).unwrap();
            assert_eq!(hex(&out), h);
            assert_eq!(ext_header_len(len), out.len());
        }
        out.clear();
        write_ext_header(&mut out, 70000, 2).unwrap();
        assert_eq!(out.len(), ext_header_len(70000));
    }

    #[test]
    fn reader_accepts_wide_headers_and_refuses_overlong_counts() {
        let mut r = Reader::new(&[0xcd, 0x00, 0x01]);
        assert_eq!(r.read().unwrap(), Token::Uint(1));
        let mut r = Reader::new(&[0xca, 0x3f, 0xc0, 0, 0]);
        assert_eq!(r.read().unwrap(), Token::Float(1.5));
        let mut r = Reader::new(&[0xdd, 0xff, 0xff, 0xff, 0xff, 0x00]);
        assert!(r.read().is_err());
        let mut r = Reader::new(&[0xc6, 0xff, 0xff, 0xff, 0xff]);
        assert!(r.read().is_err());
        let mut r = Reader::new(&[0xc1]);
        assert!(r.read().is_err());
        let mut r = Reader::new(&[]);
        assert!(r.read().is_err());
    }

    #[test]
    fn reader_never_panics_on_any_prefix() {
        let mut seed: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..20000 {
            let mut buf = Vec::new();
            for _ in 0..(seed % 12) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                buf.push(seed as u8);
            }
            let mut r = Reader::new(&buf);
            while let Ok(_t) = r.read() {
                if r.is_done() {
                    break;
                }
            }
        }
    }
}
