//! streams._avro_native: an Avro binary encoder and decoder compiled once per schema, the encoder
//! byte-identical to fastavro.schemaless_writer, the decoder returning what fastavro.schemaless_reader
//! returns (and refusing malformed data).

mod canonical;
mod decimal;
mod decode;
mod defaults;
mod encode;
mod envelope;
mod evidence;
mod failure;
mod ids;
mod input;
mod judge;
mod logical;
mod logical_read;
mod mpd;
mod rules;
mod schema;
mod segment;
mod union;
mod walk;

use std::sync::atomic::{AtomicUsize, Ordering};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use defaults::json_to_py;
use encode::{Encoder as Writer, PyEnv};
use schema::{Node, Schema};

/// Encodes Python values to Avro binary for one schema (no Confluent header).
///
/// `Encoder(schema_json)` parses and compiles the schema; ValueError when it is invalid.
/// `encode(datum)` returns the Avro datum; `encode_into(datum, prefix)` returns prefix + datum.
/// Encoding errors are ValueError or TypeError and name the field path, e.g.
/// "field 'lines[2].quantity': expected a Decimal, got str '1.5'".
#[pyclass(frozen, module = "streams._avro_native")]
struct Encoder {
    schema: Schema,
    env: PyEnv,
    /// The last datum's size: the next buffer starts big enough, most of the time.
    size_hint: AtomicUsize,
}

impl Encoder {
    fn write_into<'py>(
        &self,
        py: Python<'py>,
        datum: &Bound<'py, PyAny>,
        out: &mut Vec<u8>,
    ) -> PyResult<()> {
        let writer = Writer {
            py,
            schema: &self.schema,
            env: &self.env,
        };
        writer
            .write(self.schema.root, datum, out, 0)
            .map_err(|failure| (*failure).into_pyerr(py))?;
        self.size_hint.store(out.len(), Ordering::Relaxed);
        Ok(())
    }

    /// Encodes every field default once, so a missing field costs one copy.
    fn compile_defaults(&self, py: Python<'_>) -> PyResult<()> {
        let writer = Writer {
            py,
            schema: &self.schema,
            env: &self.env,
        };
        for node in &self.schema.nodes {
            let Node::Record(record) = node else { continue };
            for field in &record.fields {
                let Some(default) = &field.default else {
                    continue;
                };
                let invalid = |detail: String| {
                    PyValueError::new_err(format!(
                        "invalid Avro schema: record {}, field '{}': default {} does not fit the field's type: {detail}",
                        record.name, field.name, default.json
                    ))
                };
                let value = json_to_py(py, &self.schema, field.node, &default.json)
                    .map_err(|e| invalid(e.to_string()))?;
                let mut encoded = Vec::new();
                writer
                    .write(field.node, &value, &mut encoded, 0)
                    .map_err(|failure| invalid(failure.render()))?;
                // A default may have been cached already while encoding an enclosing default.
                let _ = default.encoded.set(encoded);
            }
        }
        Ok(())
    }
}

#[pymethods]
impl Encoder {
    #[new]
    fn new(py: Python<'_>, schema_json: &str) -> PyResult<Self> {
        let schema = Schema::compile(py, schema_json)?;
        let encoder = Encoder {
            schema,
            env: PyEnv::new(py)?,
            size_hint: AtomicUsize::new(256),
        };
        encoder.compile_defaults(py)?;
        Ok(encoder)
    }

    /// The Avro binary encoding of `datum`.
    fn encode<'py>(
        &self,
        py: Python<'py>,
        datum: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let mut out = Vec::with_capacity(self.size_hint.load(Ordering::Relaxed) + 16);
        self.write_into(py, datum, &mut out)?;
        Ok(PyBytes::new(py, &out))
    }

    /// `prefix` followed by the Avro binary encoding of `datum` (e.g. the Confluent header).
    fn encode_into<'py>(
        &self,
        py: Python<'py>,
        datum: &Bound<'py, PyAny>,
        prefix: &[u8],
    ) -> PyResult<Bound<'py, PyBytes>> {
        let mut out =
            Vec::with_capacity(prefix.len() + self.size_hint.load(Ordering::Relaxed) + 16);
        out.extend_from_slice(prefix);
        self.write_into(py, datum, &mut out)?;
        Ok(PyBytes::new(py, &out))
    }
}

#[pymodule]
mod _avro_native {
    use pyo3::prelude::*;

    #[pymodule_export]
    use super::Encoder;
    #[pymodule_export]
    use super::decode::Decoder;
    #[pymodule_export]
    use super::envelope::EventWriter;
    #[pymodule_export]
    use super::evidence::{
        encode_evidence_batch, evidence_merkle_root, evidence_sha256, evidence_sha256_accelerated,
    };
    #[pymodule_export]
    use super::judge::InvoiceJudge;
    #[pymodule_export]
    use super::segment::{ArchivedRecord, decode_archive_segment};

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add(
            "EnvelopeError",
            m.py().get_type::<super::envelope::EnvelopeError>(),
        )
    }
}
