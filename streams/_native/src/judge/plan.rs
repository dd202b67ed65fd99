//! One writer schema compiled for the fast path: which field of which record the cleared event
//! reads (Slot), and which the rule table reads (rules::FieldRef), by position.

use std::sync::atomic::AtomicUsize;

use crate::canonical::CanonicalPlan;
use crate::rules::{FieldRef, RuleTable, Scope};
use crate::schema::{Node, NodeId, Record, Schema};
use crate::walk::Layout;

/// What a field of the invoice is to the cleared event and the chain checks. The record a field
/// belongs to decides it (see the roles below), so a Party record used elsewhere, or a record
/// nested in a captured one, captures nothing.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Slot {
    /// Not read here (it goes into the canonical JSON, and to the rules if the table names it).
    Other,
    /// Before the root record starts.
    Start,
    InvoiceId,
    TenantId,
    InvoiceNumber,
    Icv,
    PreviousHash,
    IssuedAt,
    Seller,
    Buyer,
    Lines,
    VatTotal,
    TaxInclusive,
    Currency,
    SellerName,
    SellerVat,
}

/// The records whose fields are captured, as indexes into Plan::slots and Plan::caps.
pub const ROOT: usize = 0;
pub const SELLER: usize = 1;
pub const BUYER: usize = 2;
pub const LINE: usize = 3;
pub const OTHER: usize = 4;

/// One writer schema, compiled for the fast path.
pub struct Plan {
    pub schema: Schema,
    pub layout: Layout,
    pub canonical: CanonicalPlan,
    /// Per captured record (ROOT, SELLER, BUYER, LINE): each field's slot.
    pub slots: [Vec<Slot>; 4],
    /// Per captured record: each field's capture for the rule table, if it names the field.
    pub caps: [Vec<Option<FieldRef>>; 4],
    /// The last canonical JSON's size, for the next buffer.
    pub json_size: AtomicUsize,
}

fn bind(slots: &mut [Slot], record: &Record, name: &str, slot: Slot) -> Option<NodeId> {
    let index = record.fields.iter().position(|f| f.name == name)?;
    slots[index] = slot;
    Some(record.fields[index].node)
}

fn string(schema: &Schema, id: NodeId) -> Option<()> {
    matches!(schema.node(id), Node::String).then_some(())
}

/// ["null", "string"] in either order (what a missing VAT number decodes from: None).
fn nullable_string(schema: &Schema, id: NodeId) -> Option<()> {
    let Node::Union(union) = schema.node(id) else {
        return None;
    };
    let kinds: Vec<_> = union
        .branches
        .iter()
        .map(|&b| match schema.node(b) {
            Node::Null => 0,
            Node::String => 1,
            _ => 2,
        })
        .collect();
    (kinds == [0, 1] || kinds == [1, 0]).then_some(())
}

fn decimal(schema: &Schema, id: NodeId, places: u32) -> Option<()> {
    matches!(schema.node(id), Node::Decimal { scale, .. } if *scale == places).then_some(())
}

fn record(schema: &Schema, id: NodeId) -> Option<&Record> {
    match schema.node(id) {
        Node::Record(record) => Some(record),
        _ => None,
    }
}

/// ["null", Party] in either order: the Party record.
fn nullable_record(schema: &Schema, id: NodeId) -> Option<&Record> {
    let Node::Union(union) = schema.node(id) else {
        return None;
    };
    match union.branches[..] {
        [a, b] => match (schema.node(a), schema.node(b)) {
            (Node::Null, Node::Record(r)) | (Node::Record(r), Node::Null) => Some(r),
            _ => None,
        },
        _ => None,
    }
}

/// The root record's fields the cleared event and the chain checks read, with their slots.
fn root_slots(s: &Schema, root: &Record, top: &mut [Slot]) -> Option<()> {
    for (name, slot) in [
        ("invoice_id", Slot::InvoiceId),
        ("tenant_id", Slot::TenantId),
        ("invoice_number", Slot::InvoiceNumber),
        ("previous_invoice_hash", Slot::PreviousHash),
        ("currency", Slot::Currency),
    ] {
        string(s, bind(top, root, name, slot)?)?;
    }
    for (name, slot) in [
        ("vat_total", Slot::VatTotal),
        ("tax_inclusive_total", Slot::TaxInclusive),
    ] {
        decimal(s, bind(top, root, name, slot)?, 2)?;
    }
    let icv = bind(top, root, "icv", Slot::Icv)?;
    matches!(s.node(icv), Node::Long).then_some(())?;
    let issued = bind(top, root, "issued_at", Slot::IssuedAt)?;
    matches!(s.node(issued), Node::Timestamp { local: false, .. }).then_some(())
}

impl Plan {
    /// The plan for a schema with the invoice fields the cleared event and the rule table read
    /// (those the event reads typed as in schemas/invoice.created.avsc), or None.
    pub fn new(schema: Schema, rules: &RuleTable) -> Option<Plan> {
        let canonical = CanonicalPlan::new(&schema);
        if canonical.unsupported.is_some() {
            return None;
        }
        let s = &schema;
        let root = record(s, s.root)?;
        let mut top = vec![Slot::Other; root.fields.len()];
        root_slots(s, root, &mut top)?;

        let seller = record(s, bind(&mut top, root, "seller", Slot::Seller)?)?;
        let mut seller_slots = vec![Slot::Other; seller.fields.len()];
        let name = bind(&mut seller_slots, seller, "name", Slot::SellerName)?;
        string(s, name)?;
        let vat = bind(&mut seller_slots, seller, "vat_number", Slot::SellerVat)?;
        nullable_string(s, vat)?;
        let buyer = nullable_record(s, bind(&mut top, root, "buyer", Slot::Buyer)?)?;
        let Node::Array { items } = s.node(bind(&mut top, root, "lines", Slot::Lines)?) else {
            return None;
        };
        let line = record(s, *items)?;

        let records = [root, seller, buyer, line];
        let mut caps: [Vec<Option<FieldRef>>; 4] = records.map(|r| vec![None; r.fields.len()]);
        let position =
            |record: &Record, name: &str| record.fields.iter().position(|f| f.name == name);
        for (i, (scope, name)) in rules.scalars.iter().enumerate() {
            let role = match scope {
                Scope::Root => ROOT,
                Scope::Seller => SELLER,
                Scope::Buyer => BUYER,
            };
            caps[role][position(records[role], name)?] = Some(FieldRef::Scalar(i));
        }
        for (i, name) in rules.line_fields.iter().enumerate() {
            caps[LINE][position(line, name)?] = Some(FieldRef::Line(i));
        }
        let slots = [
            top,
            seller_slots,
            vec![Slot::Other; buyer.fields.len()],
            vec![Slot::Other; line.fields.len()],
        ];
        Some(Plan {
            layout: Layout::new(&schema),
            canonical,
            slots,
            caps,
            json_size: AtomicUsize::new(512),
            schema,
        })
    }
}
