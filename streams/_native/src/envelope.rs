//! One topic's CloudEvents (Kafka binding, binary mode) in one call: the Confluent wire-format value,
//! the record key, the event id and the header list, checked before anything is returned.
//!
//! The Python side (streams/publish.py) owns the rules; this is their fast path. Every message
//! raised here is worded as the publisher words it, without the "topic 'x': " prefix it adds.

use std::sync::Mutex;

use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use crate::Encoder;
use crate::failure::short_repr;
use crate::ids;

create_exception!(
    _avro_native,
    EnvelopeError,
    PyValueError,
    "An event's key, tenant, traceparent or size is wrong (the payload itself encoded)."
);

/// Builds `(key, value, headers, event_id)` for one topic.
///
/// `EventWriter(encoder, prefix, source, ce_type, key_path, max_bytes)`; `build(datum, ...)` raises
/// ValueError/TypeError (from the encoder, naming the field) when the payload does not fit the
/// schema, and EnvelopeError when the key, tenant, traceparent or size is wrong.
#[pyclass(frozen, module = "streams._avro_native")]
pub struct EventWriter {
    encoder: Py<Encoder>,
    prefix: Vec<u8>,
    key_path: Vec<Py<PyString>>,
    max_bytes: usize,
    // Header names and the tuples whose value never changes, made once and shared by every list.
    ce_specversion: Py<PyTuple>,
    ce_source: Py<PyTuple>,
    ce_type: Py<PyTuple>,
    content_type: Py<PyTuple>,
    name_id: Py<PyString>,
    name_type: Py<PyString>,
    name_time: Py<PyString>,
    name_tenant: Py<PyString>,
    name_traceparent: Py<PyString>,
    tenant_field: Py<PyString>,
    clock: Mutex<Option<(i64, Py<PyBytes>)>>,
}

fn pair<'py>(
    py: Python<'py>,
    name: &Bound<'py, PyString>,
    value: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyTuple>> {
    PyTuple::new(py, [name.as_any(), value])
}

fn text_bytes<'py>(value: &Bound<'py, PyAny>, what: &str) -> PyResult<Bound<'py, PyBytes>> {
    let py = value.py();
    if let Ok(b) = value.cast::<PyBytes>() {
        return Ok(b.clone());
    }
    match value.cast::<PyString>() {
        Ok(s) => Ok(PyBytes::new(py, s.to_str()?.as_bytes())),
        Err(_) => Err(EnvelopeError::new_err(format!(
            "{what} must be str or bytes, got {}",
            value.get_type().name()?
        ))),
    }
}

/// The given event id (a non-empty str), or a fresh uuid4.
fn event_id_of<'py>(
    py: Python<'py>,
    given: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyString>> {
    match given {
        Some(given) if given.is_truthy()? => match given.cast::<PyString>() {
            Ok(s) => Ok(s.clone()),
            Err(_) => Err(EnvelopeError::new_err(format!(
                "event_id must be str, got {}",
                given.get_type().name()?
            ))),
        },
        _ => {
            let id = ids::uuid4();
            // ASCII by construction, so this check cannot fail.
            let text =
                std::str::from_utf8(&id).map_err(|e| EnvelopeError::new_err(e.to_string()))?;
            Ok(PyString::new(py, text))
        }
    }
}

/// The given W3C traceparent's bytes, or a new trace's.
fn traceparent_of<'py>(
    py: Python<'py>,
    given: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let Some(t) = given else {
        return Ok(PyBytes::new(py, &ids::traceparent()));
    };
    let valid = t
        .cast::<PyString>()
        .ok()
        .and_then(|s| s.to_str().ok())
        .filter(|s| ids::is_traceparent(s.as_bytes()));
    match valid {
        Some(text) => Ok(PyBytes::new(py, text.as_bytes())),
        None => Err(EnvelopeError::new_err(format!(
            "traceparent {} is not W3C '00-<32 hex>-<16 hex>-<2 hex>'",
            short_repr(t)
        ))),
    }
}

/// `(key, value, headers, event_id)` of one built event.
pub(crate) type Built<'py> = (
    Option<Bound<'py, PyBytes>>,
    Bound<'py, PyBytes>,
    Bound<'py, PyList>,
    Bound<'py, PyString>,
);

impl EventWriter {
    /// ce_time of the clock's current millisecond; one bytes object serves every event within it.
    fn now<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let millis = ids::now_millis();
        let mut cached = self
            .clock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, text)) = cached.as_ref()
            && *at == millis
        {
            return text.bind(py).clone();
        }
        let text = PyBytes::new(py, &ids::rfc3339_millis(millis));
        *cached = Some((millis, text.clone().unbind()));
        text
    }

    fn key<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
        key: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        if let Some(key) = key {
            return text_bytes(key, "key").map(Some);
        }
        if self.key_path.is_empty() {
            return Ok(None);
        }
        let mut value = data.clone();
        for part in &self.key_path {
            let found = match value.cast::<PyDict>() {
                Ok(dict) => dict.get_item(part.bind(py))?,
                Err(_) => None,
            };
            match found {
                Some(v) if !v.is_none() => value = v,
                _ => {
                    let names: Vec<String> = self.key_path.iter().map(|p| p.to_string()).collect();
                    return Err(EnvelopeError::new_err(format!(
                        "key field '{}' is missing from the payload",
                        names.join(".")
                    )));
                }
            }
        }
        let text = match value.cast::<PyString>() {
            Ok(s) => s.clone(),
            Err(_) => value.str()?,
        };
        Ok(Some(PyBytes::new(py, text.to_str()?.as_bytes())))
    }

    fn tenant<'py>(
        &self,
        py: Python<'py>,
        data: Option<&Bound<'py, PyDict>>,
        tenant: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let in_payload = match data {
            Some(dict) => dict.get_item(self.tenant_field.bind(py))?,
            None => None,
        };
        let chosen = match tenant {
            Some(t) => t.clone(),
            None => match &in_payload {
                Some(t) if !t.is_none() => t.clone(),
                _ => return Ok(None),
            },
        };
        let valid = chosen
            .cast::<PyString>()
            .ok()
            .and_then(|s| s.to_str().ok())
            .filter(|s| ids::is_tenant(s.as_bytes()));
        let Some(text) = valid else {
            return Err(EnvelopeError::new_err(format!(
                "tenant id {} is not valid; use 1-64 characters of letters, digits, '.', '_' or '-', \
                 starting with a letter or digit",
                short_repr(&chosen)
            )));
        };
        if tenant.is_some()
            && let Some(own) = in_payload
            && !own.is_none()
            && !own.eq(&chosen)?
        {
            return Err(EnvelopeError::new_err(format!(
                "tenant {} differs from the payload's tenant_id {}",
                short_repr(&chosen),
                short_repr(&own)
            )));
        }
        Ok(Some(PyBytes::new(py, text.as_bytes())))
    }
}

#[pymethods]
impl EventWriter {
    #[new]
    #[pyo3(signature = (encoder, prefix, source, ce_type, key_path, max_bytes))]
    fn new(
        py: Python<'_>,
        encoder: Py<Encoder>,
        prefix: &[u8],
        source: &[u8],
        ce_type: &[u8],
        key_path: Vec<String>,
        max_bytes: usize,
    ) -> PyResult<Self> {
        let constant = |name: &str, value: &[u8]| -> PyResult<Py<PyTuple>> {
            Ok(pair(py, &PyString::intern(py, name), &PyBytes::new(py, value))?.unbind())
        };
        let name = |text: &str| PyString::intern(py, text).unbind();
        Ok(EventWriter {
            encoder,
            prefix: prefix.to_vec(),
            key_path: key_path.iter().map(|p| name(p)).collect(),
            max_bytes,
            ce_specversion: constant("ce_specversion", b"1.0")?,
            ce_source: constant("ce_source", source)?,
            ce_type: constant("ce_type", ce_type)?,
            content_type: constant("content-type", b"application/avro")?,
            name_id: name("ce_id"),
            name_type: name("ce_type"),
            name_time: name("ce_time"),
            name_tenant: name("ce_tenantid"),
            name_traceparent: name("ce_traceparent"),
            tenant_field: name("tenant_id"),
            clock: Mutex::new(None),
        })
    }

    /// `(key, value, headers, event_id)` of one event; nothing is returned unless all of it is valid.
    ///
    /// `time` is the ce_time header's bytes (the clock's current millisecond when None); `key`,
    /// `tenant`, `event_type`, `event_id` and `traceparent` override what is derived or generated.
    #[pyo3(signature = (datum, key=None, tenant=None, event_type=None, event_id=None, time=None, traceparent=None))]
    #[allow(
        clippy::too_many_arguments,
        reason = "the Python signature: keyword arguments, each an override"
    )]
    pub(crate) fn build<'py>(
        &self,
        py: Python<'py>,
        datum: &Bound<'py, PyAny>,
        key: Option<&Bound<'py, PyAny>>,
        tenant: Option<&Bound<'py, PyAny>>,
        event_type: Option<&Bound<'py, PyAny>>,
        event_id: Option<&Bound<'py, PyAny>>,
        time: Option<&Bound<'py, PyBytes>>,
        traceparent: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Built<'py>> {
        let value = self.encoder.get().encode_into(py, datum, &self.prefix)?;
        let size = value.as_bytes().len();
        if size > self.max_bytes {
            return Err(EnvelopeError::new_err(format!(
                "encoded event is {size} bytes, over the topic's max.message.bytes {}",
                self.max_bytes
            )));
        }
        // The encoder only accepts a dict for a record, so a record's payload is one here.
        let data = datum.cast::<PyDict>().ok();
        let record_key = self.key(py, datum, key)?;
        let id = event_id_of(py, event_id)?;
        let id_bytes = PyBytes::new(py, id.to_str()?.as_bytes());
        let time = match time {
            Some(t) => t.clone(),
            None => self.now(py),
        };
        let type_header = match event_type {
            Some(t) if t.is_truthy()? => pair(
                py,
                self.name_type.bind(py),
                text_bytes(t, "event_type")?.as_any(),
            )?,
            _ => self.ce_type.bind(py).clone(),
        };
        let tenant_id = self.tenant(py, data, tenant)?;
        let trace = traceparent_of(py, traceparent)?;
        let mut items: Vec<Bound<'py, PyTuple>> = Vec::with_capacity(8);
        items.push(self.ce_specversion.bind(py).clone());
        items.push(pair(py, self.name_id.bind(py), id_bytes.as_any())?);
        items.push(self.ce_source.bind(py).clone());
        items.push(type_header);
        items.push(pair(py, self.name_time.bind(py), time.as_any())?);
        items.push(self.content_type.bind(py).clone());
        if let Some(tenant_id) = tenant_id {
            items.push(pair(py, self.name_tenant.bind(py), tenant_id.as_any())?);
        }
        items.push(pair(py, self.name_traceparent.bind(py), trace.as_any())?);
        Ok((record_key, value, PyList::new(py, items)?, id))
    }
}
