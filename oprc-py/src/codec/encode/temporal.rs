//! Encoding of datetime (ext 5) and time (ext 7) values, naive or aware.

use crate::codec::*;

impl Codec {
    #[inline]
    pub(crate) fn offset_us(&self, v: &Bound<'_, PyAny>) -> PyResult<Option<i64>> {
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

    #[inline]
    pub(crate) fn enc_datetime(&self, v: &Bound<'_, PyAny>, out: &mut Out<'_>) -> PyResult<()> {
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

    #[inline]
    pub(crate) fn enc_time(&self, v: &Bound<'_, PyAny>, out: &mut Out<'_>) -> PyResult<()> {
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
}
