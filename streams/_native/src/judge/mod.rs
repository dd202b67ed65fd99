//! The validation agent's native fast path: an invoice.created record that passes every rule,
//! judged in one pass over its Avro datum and turned into its invoice.cleared event.
//!
//! The reference is Python: `ValidationAgent.judge` (streams/agents/validation.py) and the rules in
//! streams/agents/zatca.py. `InvoiceJudge.try_clear` covers only the case where that code clears the
//! invoice, and must give exactly its result there: the same (key, value, headers, event id) from the
//! same EventWriter, and the same writes to the partition state. Anything else (a rule that fails,
//! a duplicate or re-published invoice, an odd value, header or state, a decode error) returns None
//! without touching anything, and the Python path judges the record as before.
//!
//! The rules are the table's (streams/agents/zatca_rules.json), given to the constructor and
//! evaluated by rules.rs; the constructor refuses a table it does not fully implement. One walk
//! (walk.rs) writes the canonical JSON (canonical.rs, hashed for the invoice chain) and captures
//! the fields the rules and the cleared event read, by position: add_schema compiles which field of
//! which record is which, once per writer schema (plan.rs, sink.rs).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PySet, PyString, PyTuple};
use sha2::{Digest, Sha256};

use crate::canonical::{JsonSink, write_base64};
use crate::decode::DecodeEnv;
use crate::envelope::EventWriter;
use crate::input::Input;
use crate::rules::RuleTable;
use crate::schema::Schema;
use crate::walk::Walk;

mod outcome;
mod plan;
mod python;
mod sink;

use outcome::{outcome_id, qr_payload};
use plan::Plan;
use python::{event_id, seller_chain, text};
use sink::{Invoice, JudgeSink};

/// A record's invoice, judged by the table's stateless rules, and the SHA-256 of its canonical JSON.
struct Judged<'a> {
    invoice: Invoice<'a>,
    digest: [u8; 32],
}

/// try_clear's arguments from the agent: the record, the partition state and its dirty keys, the time.
#[derive(Clone, Copy)]
struct Delivery<'a, 'py> {
    message: &'a Bound<'py, PyAny>,
    state: &'a Bound<'py, PyDict>,
    dirty: &'a Bound<'py, PySet>,
    now: &'a Bound<'py, PyAny>,
}

/// The validation agent's fast path for invoices that pass every rule (see the module docs).
///
/// `InvoiceJudge(cleared_writer, first_pih, max_record_bytes, rules)`, `rules` being the rule
/// table's JSON (ValueError if it names anything this side does not implement);
/// `add_schema(schema_id, schema_json)` compiles a writer schema (False when the fast path does not
/// support it); `try_clear(message, state, dirty, now, now_micros)` returns the invoice.cleared
/// event as EventEncoder.build returns it, updating `state` and `dirty` as ValidationAgent.judge
/// would; None when the record is not for the fast path (nothing changed); the schema id (an int)
/// when it was never added.
#[pyclass(frozen, module = "streams._avro_native")]
pub struct InvoiceJudge {
    writer: Py<EventWriter>,
    first_pih: Py<PyString>,
    max_record_bytes: usize,
    rules: RuleTable,
    env: DecodeEnv,
    decimal: Py<PyAny>,
    plans: Mutex<HashMap<u32, Option<Arc<Plan>>>>,
}

impl InvoiceJudge {
    /// The schema id's plan: Err(None) unsupported, Err(Some(id)) never added.
    fn plan(&self, schema_id: u32) -> Result<Arc<Plan>, Option<u32>> {
        let plans = self
            .plans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match plans.get(&schema_id) {
            None => Err(Some(schema_id)),
            Some(None) => Err(None),
            Some(Some(plan)) => Ok(Arc::clone(plan)),
        }
    }

    /// One walk over the datum: its canonical JSON and captures; None on a decode error, or when a
    /// rule fails or cannot be decided here.
    fn judge<'a>(
        &self,
        py: Python<'_>,
        plan: &Plan,
        datum: &'a [u8],
        now_micros: i64,
    ) -> Option<Judged<'a>> {
        let json = JsonSink::new(
            py,
            &plan.canonical,
            &self.env,
            plan.json_size.load(Ordering::Relaxed),
        );
        let sink = JudgeSink::new(
            json,
            plan,
            self.rules.scalars.len(),
            self.rules.line_fields.len(),
        );
        let mut walk = Walk {
            schema: &plan.schema,
            layout: &plan.layout,
            sink,
        };
        walk.datum(&mut Input::new(datum))
            .and_then(|()| walk.sink.json.finish())
            .ok()?;
        let JudgeSink { json, invoice, .. } = walk.sink;
        let canonical = json.output();
        plan.json_size.store(canonical.len(), Ordering::Relaxed);
        if invoice.oversize {
            return None;
        }
        self.rules.passes(&plan.schema, &invoice.caps, now_micros)?;
        Some(Judged {
            invoice,
            digest: Sha256::digest(canonical).into(),
        })
    }
}

#[pymethods]
impl InvoiceJudge {
    #[new]
    fn new(
        py: Python<'_>,
        cleared_writer: Py<EventWriter>,
        first_pih: Py<PyString>,
        max_record_bytes: usize,
        rules: &str,
    ) -> PyResult<Self> {
        let rules = RuleTable::parse(rules).map_err(|e| {
            PyValueError::new_err(format!("the native judge refuses the rule table: {e}"))
        })?;
        Ok(InvoiceJudge {
            writer: cleared_writer,
            first_pih,
            max_record_bytes,
            rules,
            env: DecodeEnv::new(py)?,
            decimal: py.import("decimal")?.getattr("Decimal")?.unbind(),
            plans: Mutex::new(HashMap::new()),
        })
    }

    /// The predicates this side implements (rules.rs), for the table's tests.
    #[staticmethod]
    fn predicates() -> Vec<&'static str> {
        crate::rules::STATELESS
            .iter()
            .chain(&crate::rules::CHAIN)
            .copied()
            .collect()
    }

    /// Compiles the writer schema registered under `schema_id`; whether the fast path supports it.
    fn add_schema(&self, py: Python<'_>, schema_id: u32, schema_json: &str) -> bool {
        let plan = Schema::compile(py, schema_json)
            .ok()
            .and_then(|schema| Plan::new(schema, &self.rules))
            .map(Arc::new);
        let supported = plan.is_some();
        self.plans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(schema_id, plan);
        supported
    }

    /// The cleared event `(key, value, headers, event_id)`, None, or an unknown schema id.
    fn try_clear<'py>(
        &self,
        py: Python<'py>,
        message: &Bound<'py, PyAny>,
        state: &Bound<'py, PyDict>,
        dirty: &Bound<'py, PySet>,
        now: &Bound<'py, PyAny>,
        now_micros: i64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let none = || Ok(py.None().into_bound(py));
        let value = message.call_method0(intern!(py, "value"))?;
        let Ok(value) = value.cast::<PyBytes>() else {
            return none();
        };
        let data = value.as_bytes();
        if data.len() > self.max_record_bytes || data.len() < 5 || data[0] != 0 {
            return none();
        }
        let schema_id = u32::from_be_bytes([data[1], data[2], data[3], data[4]]);
        let plan = match self.plan(schema_id) {
            Ok(plan) => plan,
            Err(None) => return none(),
            Err(Some(id)) => return Ok(id.into_pyobject(py)?.into_any()),
        };
        let Some(judged) = self.judge(py, &plan, &data[5..], now_micros) else {
            return none();
        };
        let delivery = Delivery {
            message,
            state,
            dirty,
            now,
        };
        match self.clear(py, &delivery, &judged)? {
            Some(built) => Ok(built),
            None => none(),
        }
    }
}

impl InvoiceJudge {
    /// The chain checks on the partition's state (a first delivery only), then the cleared event
    /// and the state writes; None (nothing written) when the Python path must judge.
    fn clear<'py>(
        &self,
        py: Python<'py>,
        delivery: &Delivery<'_, 'py>,
        judged: &Judged<'_>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let Delivery {
            message,
            state,
            dirty,
            now,
        } = *delivery;
        let invoice = &judged.invoice;
        let (Some(invoice_id), Some(tenant_id), Some(previous_hash), Some(icv)) = (
            text(invoice.invoice_id),
            text(invoice.tenant_id),
            invoice.previous_hash,
            invoice.icv,
        ) else {
            return Ok(None);
        };
        let Some((event_id, trace)) = event_id(message)? else {
            return Ok(None);
        };
        // first_submission: the fast path takes only invoices it has never seen.
        let invoice_key = PyString::new(py, &["invoice:", invoice_id].concat());
        if state
            .get_item(&invoice_key)?
            .is_some_and(|seen| !seen.is_none())
        {
            return Ok(None);
        }
        let seller_key = PyString::new(py, &["seller:", tenant_id].concat());
        let Some((last_icv, last_icv_number, last_hash)) =
            seller_chain(state.get_item(&seller_key)?, self.first_pih.bind(py))
        else {
            return Ok(None);
        };
        // counter_increases and links_previous_hash.
        if icv <= last_icv_number
            || last_hash.to_str().ok().map(str::as_bytes) != Some(previous_hash)
        {
            return Ok(None);
        }
        let mut digest = Vec::with_capacity(44);
        write_base64(&mut digest, &judged.digest);
        let digest = PyString::new(py, std::str::from_utf8(&digest).unwrap_or_default());
        let Some(cleared) = self.cleared(py, invoice, &digest, &event_id, now)? else {
            return Ok(None);
        };
        let outcome = PyString::new(py, &outcome_id(event_id.to_str()?, "cleared"));
        let built = self.writer.get().build(
            py,
            cleared.as_any(),
            None,
            None,
            None,
            Some(outcome.as_any()),
            None,
            trace.as_ref().map(Bound::as_any),
        );
        let Ok(built) = built else {
            return Ok(None);
        };
        // PartitionState writes, in judge's order: the invoice, then the seller's chain.
        let seen = PyTuple::new(py, [event_id.as_any(), &last_icv, last_hash.as_any()])?;
        state.set_item(&invoice_key, seen)?;
        let chain = PyTuple::new(py, [icv.into_pyobject(py)?.as_any(), digest.as_any()])?;
        state.set_item(&seller_key, chain)?;
        dirty.add(&invoice_key)?;
        dirty.add(&seller_key)?;
        Ok(Some(built.into_pyobject(py)?.into_any()))
    }

    /// The invoice.cleared payload as ValidationAgent.judge makes it.
    fn cleared<'py>(
        &self,
        py: Python<'py>,
        invoice: &Invoice<'_>,
        digest: &Bound<'py, PyString>,
        event_id: &Bound<'py, PyString>,
        now: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let (
            Some(invoice_id),
            Some(tenant_id),
            Some(invoice_number),
            Some(currency),
            Some(seller_vat),
            Some(qr),
        ) = (
            text(invoice.invoice_id),
            text(invoice.tenant_id),
            text(invoice.invoice_number),
            text(invoice.currency),
            text(invoice.seller_vat),
            qr_payload(invoice),
        )
        else {
            return Ok(None);
        };
        let decimal = self.decimal.bind(py);
        let cleared = PyDict::new(py);
        cleared.set_item(intern!(py, "invoice_id"), invoice_id)?;
        cleared.set_item(intern!(py, "tenant_id"), tenant_id)?;
        cleared.set_item(intern!(py, "invoice_number"), invoice_number)?;
        cleared.set_item(intern!(py, "seller_vat_number"), seller_vat)?;
        cleared.set_item(intern!(py, "invoice_hash"), digest)?;
        cleared.set_item(intern!(py, "qr_payload"), qr)?;
        let inclusive = decimal.call1((invoice.tax_inclusive_text.as_str(),))?;
        cleared.set_item(intern!(py, "tax_inclusive_total"), inclusive)?;
        let vat = decimal.call1((invoice.vat_total_text.as_str(),))?;
        cleared.set_item(intern!(py, "vat_total"), vat)?;
        cleared.set_item(intern!(py, "currency"), currency)?;
        cleared.set_item(intern!(py, "cleared_at"), now)?;
        cleared.set_item(intern!(py, "source_event_id"), event_id)?;
        Ok(Some(cleared))
    }
}
