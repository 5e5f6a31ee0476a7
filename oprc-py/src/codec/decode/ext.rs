//! Decoding of the extension types 2-12 (tuple, set, datetime, date, time, timedelta,
//! UUID, Decimal, ndarray, reference).

use crate::codec::*;

impl Codec {
    #[inline]
    pub(crate) fn make_tz<'py>(
        &self,
        py: Python<'py>,
        off: Option<i64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match off {
            None => Ok(py.None().into_bound(py)),
            Some(o) => self.tz.bind(py).call1((o,)),
        }
    }

    pub(crate) fn dec_ext<'py>(
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

    pub(crate) fn dec_ndarray<'py>(
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
