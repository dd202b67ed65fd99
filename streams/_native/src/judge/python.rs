//! The Python objects try_clear reads as the Python path does: a message's headers and coordinates,
//! and the seller's chain state in the partition state.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyInt, PyList, PyString, PyTuple};

/// SourceRecord.header's text: None for a None value, the text of valid UTF-8 bytes; Err for
/// anything else (Python would decode with replacement characters or take str(value)).
fn header_text<'py>(raw: &Bound<'py, PyAny>) -> Result<HeaderText<'py>, ()> {
    if raw.is_none() {
        return Ok(None);
    }
    let bytes = raw.cast::<PyBytes>().map_err(|_| ())?;
    let text = std::str::from_utf8(bytes.as_bytes()).map_err(|_| ())?;
    Ok(Some(PyString::new(raw.py(), text)))
}

/// A header's text, if it has one.
type HeaderText<'py> = Option<Bound<'py, PyString>>;

/// The first ce_id and ce_traceparent headers' text (SourceRecord.header), or Err when the headers
/// are not a list or tuple of (str, bytes | None) pairs.
fn event_headers<'py>(
    headers: &Bound<'py, PyAny>,
) -> Result<(HeaderText<'py>, HeaderText<'py>), ()> {
    let (mut id, mut trace, mut id_seen, mut trace_seen) = (None, None, false, false);
    if headers.is_none() {
        return Ok((id, trace));
    }
    let mut visit = |item: Bound<'py, PyAny>| -> Result<(), ()> {
        let pair = item.cast_exact::<PyTuple>().map_err(|_| ())?;
        if pair.len() != 2 {
            return Err(());
        }
        let key = pair.get_item(0).map_err(|_| ())?;
        let key = key.cast_exact::<PyString>().map_err(|_| ())?;
        match key.to_str().map_err(|_| ())? {
            "ce_id" if !id_seen => {
                id_seen = true;
                id = header_text(&pair.get_item(1).map_err(|_| ())?)?;
            }
            "ce_traceparent" if !trace_seen => {
                trace_seen = true;
                trace = header_text(&pair.get_item(1).map_err(|_| ())?)?;
            }
            _ => {}
        }
        Ok(())
    };
    if let Ok(list) = headers.cast_exact::<PyList>() {
        for item in list.iter() {
            visit(item)?;
        }
    } else {
        for item in headers.cast_exact::<PyTuple>().map_err(|_| ())?.iter() {
            visit(item)?;
        }
    }
    Ok((id, trace))
}

/// `message.method() or default` for topic(), partition() and offset(): None, or exactly str/int.
fn coordinate(value: &Bound<'_, PyAny>) -> Result<Option<String>, ()> {
    if value.is_none() {
        return Ok(None);
    }
    if let Ok(text) = value.cast_exact::<PyString>() {
        return text.to_str().map(|s| Some(s.to_owned())).map_err(|_| ());
    }
    if value.is_exact_instance_of::<PyInt>() {
        return value
            .extract::<i64>()
            .map(|n| Some(n.to_string()))
            .map_err(|_| ());
    }
    Err(())
}

/// A seller's (last ICV as stored, the same as a number, last hash).
pub type Chain<'py> = (Bound<'py, PyAny>, i64, Bound<'py, PyString>);

/// The seller's chain state as SellerChain.from_json reads it: (last ICV, last hash), the ICV as an
/// int object and as a number. None for anything but no state or a tuple/list [int, str, ...].
pub fn seller_chain<'py>(
    found: Option<Bound<'py, PyAny>>,
    first_pih: &Bound<'py, PyString>,
) -> Option<Chain<'py>> {
    let py = first_pih.py();
    let zero = || 0i64.into_pyobject(py).map(|n| n.into_any()).ok();
    let Some(data) = found.filter(|d| !d.is_none()) else {
        return Some((zero()?, 0, first_pih.clone()));
    };
    let items = if let Ok(list) = data.cast_exact::<PyList>() {
        list.as_sequence().to_tuple().ok()?
    } else {
        data.cast_exact::<PyTuple>().ok()?.clone()
    };
    if items.is_empty() {
        return Some((zero()?, 0, first_pih.clone()));
    }
    let icv = items.get_item(0).ok()?;
    let hash = items.get_item(1).ok()?;
    if !icv.is_exact_instance_of::<PyInt>() {
        return None;
    }
    let number = icv.extract::<i64>().ok()?;
    let hash = hash.cast_exact::<PyString>().ok()?.clone();
    Some((icv, number, hash))
}

/// SourceRecord.event_id (the ce_id header, else "topic/partition/offset") and the
/// ce_traceparent header's text; None when the headers or coordinates are not what the Python
/// path surely reads the same way.
pub fn event_id<'py>(
    message: &Bound<'py, PyAny>,
) -> PyResult<Option<(Bound<'py, PyString>, HeaderText<'py>)>> {
    let py = message.py();
    let headers = message.call_method0(intern!(py, "headers"))?;
    let Ok((ce_id, trace)) = event_headers(&headers) else {
        return Ok(None);
    };
    if let Some(id) = ce_id.filter(|id| id.to_str().is_ok_and(|s| !s.is_empty())) {
        return Ok(Some((id, trace)));
    }
    let topic = coordinate(&message.call_method0(intern!(py, "topic"))?);
    let partition = coordinate(&message.call_method0(intern!(py, "partition"))?);
    let offset = coordinate(&message.call_method0(intern!(py, "offset"))?);
    let (Ok(topic), Ok(partition), Ok(offset)) = (topic, partition, offset) else {
        return Ok(None);
    };
    // `or`: an empty topic and a zero partition or offset are their defaults anyway.
    let id = format!(
        "{}/{}/{}",
        topic.unwrap_or_default(),
        partition.unwrap_or_else(|| "0".into()),
        offset.unwrap_or_else(|| "0".into()),
    );
    Ok(Some((PyString::new(py, &id), trace)))
}

/// A captured string as text (the JSON sink has checked it is UTF-8).
pub fn text(raw: Option<&[u8]>) -> Option<&str> {
    std::str::from_utf8(raw?).ok()
}
