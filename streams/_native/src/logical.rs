//! Logical types: decimal, timestamps, date and time of day, converted exactly (no floats).

use pyo3::exceptions::PyTypeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyInt, PyString};

use crate::decimal::{DecimalError, Width, write_decimal, write_unscaled};
use crate::encode::Encoder;
use crate::failure::{Failure, Res, short_repr, show};
use crate::mpd;
use crate::schema::{NodeId, TimeUnit};

/// date(1970, 1, 1).toordinal(): fastavro's DAYS_SHIFT.
const EPOCH_ORDINAL: i64 = 719_163;

impl<'py> Encoder<'_, 'py> {
    pub(crate) fn write_decimal(
        &self,
        id: NodeId,
        precision: u32,
        scale: u32,
        fixed: &Option<(String, usize)>,
        v: &Bound<'py, PyAny>,
        out: &mut Vec<u8>,
    ) -> Res<()> {
        let exact = v.get_type().is(self.env.decimal.bind(self.py));
        let width = fixed
            .as_ref()
            .map_or(Width::Bytes, |(_, size)| Width::Fixed(*size));
        if exact
            && let Some(parts) = self.env.decimal_layout.parts(v)
            && let Some(value) = mpd::unscaled(&parts, precision, scale)
            && write_unscaled(value, width, out).is_ok()
        {
            return Ok(());
        }
        let numeric = exact
            || (v.is_instance_of::<PyInt>() && !v.is_instance_of::<PyBool>())
            || self.is(v, &self.env.decimal);
        if !numeric {
            // Already-encoded bytes pass through, as fastavro allows.
            return match fixed {
                None => self.write_raw_bytes(id, v, out),
                Some((name, size)) => {
                    let data = self.bytes_of(id, v)?;
                    if data.len() != *size {
                        return Err(Failure::value(format!(
                            "fixed {name} takes exactly {size} bytes, got {}",
                            data.len()
                        )));
                    }
                    out.extend_from_slice(data);
                    Ok(())
                }
            };
        }
        let text = v.str().map_err(|e| Failure::python(e, self.py))?;
        let text = text.to_str().map_err(|e| Failure::python(e, self.py))?;
        write_decimal(text, precision, scale, width, out).map_err(|e| match e {
            DecimalError::NotFinite => {
                Failure::value(format!("{} is not a finite decimal", short_repr(v)))
            }
            DecimalError::TooManyPlaces => Failure::value(format!(
                "{text} has more than {scale} decimal places (scale {scale})"
            )),
            DecimalError::TooManyDigits => Failure::value(format!(
                "{text} has more than {precision} digits (precision {precision})"
            )),
            DecimalError::TooWide => Failure::value(format!(
                "{text} does not fit in {} bytes",
                fixed.as_ref().map_or(0, |(_, size)| *size)
            )),
        })
    }

    pub(crate) fn timestamp(
        &self,
        id: NodeId,
        unit: TimeUnit,
        local: bool,
        v: &Bound<'py, PyAny>,
    ) -> Res<i64> {
        let py = self.py;
        if !self.is(v, &self.env.datetime) {
            return self.int(id, v);
        }
        let since_epoch = if local {
            // Wall-clock time, whatever the zone (fastavro's local-timestamp).
            let naive = if v
                .getattr(intern!(py, "tzinfo"))
                .map_err(|e| Failure::python(e, py))?
                .is_none()
            {
                v.clone()
            } else {
                let kwargs = PyDict::new(py);
                kwargs
                    .set_item("tzinfo", py.None())
                    .map_err(|e| Failure::python(e, py))?;
                v.call_method(intern!(py, "replace"), (), Some(&kwargs))
                    .map_err(|e| Failure::python(e, py))?
            };
            naive
                .sub(self.env.epoch_naive.bind(py))
                .map_err(|e| Failure::python(e, py))?
        } else {
            // Exact integer arithmetic in CPython's datetime, honouring utcoffset().
            v.sub(self.env.epoch.bind(py)).map_err(|e| {
                // naive - aware is a TypeError; tell that apart from a broken tzinfo.
                let naive = e.is_instance_of::<PyTypeError>(py)
                    && v.call_method0(intern!(py, "utcoffset"))
                        .is_ok_and(|offset| offset.is_none());
                if naive {
                    Failure::value(format!(
                        "datetime {} has no timezone; use an aware datetime",
                        show(v)
                    ))
                } else {
                    Failure::python(e, py)
                }
            })?
        };
        // A timedelta normalises to days, 0 <= seconds < 86400 and 0 <= microseconds < 10**6; the
        // sum fits an i64 for every datetime Python can hold. Reading the three parts is ~4x cheaper
        // than timedelta // timedelta.
        let part = |name: &Bound<'py, PyString>| -> Res<i64> {
            since_epoch
                .getattr(name)
                .and_then(|n| n.extract::<i64>())
                .map_err(|e| Failure::python(e, py))
        };
        let micros = (part(intern!(py, "days"))? * 86_400 + part(intern!(py, "seconds"))?)
            * 1_000_000
            + part(intern!(py, "microseconds"))?;
        Ok(match unit {
            TimeUnit::Millis => micros.div_euclid(1000),
            TimeUnit::Micros => micros,
        })
    }

    pub(crate) fn date(&self, id: NodeId, v: &Bound<'py, PyAny>) -> Res<i64> {
        let py = self.py;
        let date = if self.is(v, &self.env.date) {
            v.clone()
        } else if v.is_instance_of::<PyString>() {
            self.env
                .date_fromisoformat
                .bind(py)
                .call1((v,))
                .map_err(|e| {
                    Failure::value(format!("{} is not an ISO date (YYYY-MM-DD)", short_repr(v)))
                        .with_cause(e)
                })?
        } else {
            let n = self.int(id, v)?;
            if i32::try_from(n).is_err() {
                return Err(Failure::value(format!(
                    "{n} is out of range for Avro int (32-bit)"
                )));
            }
            return Ok(n);
        };
        let ordinal = date
            .call_method0(intern!(py, "toordinal"))
            .and_then(|n| n.extract::<i64>())
            .map_err(|e| Failure::python(e, py))?;
        Ok(ordinal - EPOCH_ORDINAL)
    }

    pub(crate) fn time_of_day(
        &self,
        id: NodeId,
        unit: TimeUnit,
        v: &Bound<'py, PyAny>,
    ) -> Res<i64> {
        let py = self.py;
        if !self.is(v, &self.env.time) {
            let n = self.int(id, v)?;
            if unit == TimeUnit::Millis && i32::try_from(n).is_err() {
                return Err(Failure::value(format!(
                    "{n} is out of range for Avro int (32-bit)"
                )));
            }
            return Ok(n);
        }
        let part = |name: &Bound<'py, PyString>| -> Res<i64> {
            v.getattr(name)
                .and_then(|n| n.extract::<i64>())
                .map_err(|e| Failure::python(e, py))
        };
        let hour = part(intern!(py, "hour"))?;
        let minute = part(intern!(py, "minute"))?;
        let second = part(intern!(py, "second"))?;
        let micros = part(intern!(py, "microsecond"))?;
        let total_micros = ((hour * 60 + minute) * 60 + second) * 1_000_000 + micros;
        Ok(match unit {
            TimeUnit::Millis => total_micros / 1000,
            TimeUnit::Micros => total_micros,
        })
    }
}
