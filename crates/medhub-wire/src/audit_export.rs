//! The audit log's export formats (docs/audit-export.md): FHIR R4 AuditEvent coded after IHE
//! BALP and DICOM PS3.15 (as one Bundle, or one resource per line), the flat record as NDJSON,
//! and CSV for spreadsheets. Pure: each function turns stored entries into bytes, so that the
//! REST route and the CLI stream the same output a page at a time.
//!
//! Every format carries every field of the record with its `seq` and RFC 9162 leaf hash, so an
//! auditor can tie each exported line back to the Merkle log (`GET /api/v1/audit/proof/inclusion`).

use std::net::IpAddr;

use jiff::Timestamp;
use medhub_core::audit::{AuditRecord, Outcome};
use serde::{Deserialize, Serialize};

/// One stored entry of the audit log, as exported.
#[derive(Clone, Copy, Debug)]
pub struct ExportEntry<'a> {
    /// The record's leaf number in the Merkle log.
    pub seq: u64,
    pub record: &'a AuditRecord,
    /// Its RFC 9162 leaf hash, as stored.
    pub leaf_hash: &'a [u8],
}

/// What an export is written as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ExportFormat {
    /// A FHIR R4 Bundle (type `collection`) of AuditEvent resources.
    Fhir,
    /// FHIR R4 AuditEvent resources, one per line (FHIR Bulk Data NDJSON).
    FhirNdjson,
    /// The flat record, one JSON object per line, with the same fields as the CSV.
    Ndjson,
    /// RFC 4180 CSV with a header row; cells that a spreadsheet would run as a formula are
    /// neutralised.
    Csv,
}

impl ExportFormat {
    pub const ALL: [ExportFormat; 4] =
        [ExportFormat::Fhir, ExportFormat::FhirNdjson, ExportFormat::Ndjson, ExportFormat::Csv];

    pub fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Fhir => "fhir",
            ExportFormat::FhirNdjson => "fhir-ndjson",
            ExportFormat::Ndjson => "ndjson",
            ExportFormat::Csv => "csv",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// The media type of the body.
    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Fhir => "application/fhir+json",
            ExportFormat::FhirNdjson => "application/fhir+ndjson",
            ExportFormat::Ndjson => "application/x-ndjson",
            ExportFormat::Csv => "text/csv; charset=utf-8; header=present",
        }
    }

    /// The file name extension of a download.
    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Fhir => "fhir.json",
            ExportFormat::FhirNdjson => "fhir.ndjson",
            ExportFormat::Ndjson => "ndjson",
            ExportFormat::Csv => "csv",
        }
    }

    /// What the output starts with, before the first entry. `generated` is the export's time
    /// (the Bundle's `timestamp`).
    pub fn prefix(self, generated: Timestamp) -> String {
        match self {
            ExportFormat::Fhir => format!(
                "{{\"resourceType\":\"Bundle\",\"type\":\"collection\",\"timestamp\":{},\"entry\":[",
                json_string(&instant(generated))
            ),
            ExportFormat::Csv => csv_line(CSV_HEADER.iter().map(|h| (*h).to_owned())),
            ExportFormat::FhirNdjson | ExportFormat::Ndjson => String::new(),
        }
    }

    /// Appends one entry; `first` says whether it is the first of the output (the Bundle
    /// separates entries with commas).
    pub fn push(self, out: &mut String, e: &ExportEntry<'_>, first: bool) {
        match self {
            ExportFormat::Fhir => {
                if !first {
                    out.push(',');
                }
                out.push_str("{\"resource\":");
                out.push_str(&to_json(&audit_event(e)));
                out.push('}');
            }
            ExportFormat::FhirNdjson => {
                out.push_str(&to_json(&audit_event(e)));
                out.push('\n');
            }
            ExportFormat::Ndjson => {
                out.push_str(&to_json(&FlatRecord::from(e)));
                out.push('\n');
            }
            ExportFormat::Csv => out.push_str(&csv_line(FlatRecord::from(e).cells())),
        }
    }

    /// What the output ends with, after the last entry.
    pub fn suffix(self) -> &'static str {
        match self {
            ExportFormat::Fhir => "]}\n",
            _ => "",
        }
    }
}

/// Serializes a value that cannot fail to serialize (plain structs of strings and numbers).
fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// A FHIR `instant`: RFC 3339 in UTC, with the record's microseconds when it has any.
fn instant(t: Timestamp) -> String {
    t.to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// --- The flat record (NDJSON and CSV) ---------------------------------------------------------

/// The record's fields, flat, as the NDJSON export writes them and the CSV's columns name
/// them. An absent field is `null` (an empty cell in CSV).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlatRecord {
    pub seq: u64,
    /// The stored RFC 9162 leaf hash, hex.
    pub leaf_hash: String,
    /// The leaf encoding's version (docs/audit.md).
    pub version: u8,
    /// RFC 3339, UTC, microseconds.
    pub at: String,
    pub org: Option<String>,
    pub actor: Option<String>,
    pub session: Option<String>,
    pub device: Option<String>,
    pub ip: Option<String>,
    pub action: String,
    pub object_type: Option<String>,
    pub object_id: Option<String>,
    pub patient_ref: Option<String>,
    pub target: Option<String>,
    pub outcome: String,
    pub reason: Option<String>,
    pub node: Option<String>,
    pub region: Option<String>,
}

/// The CSV's header row, in column order: the fields of [`FlatRecord`].
pub const CSV_HEADER: [&str; 18] = [
    "seq",
    "leaf_hash",
    "version",
    "at",
    "org",
    "actor",
    "session",
    "device",
    "ip",
    "action",
    "object_type",
    "object_id",
    "patient_ref",
    "target",
    "outcome",
    "reason",
    "node",
    "region",
];

impl From<&ExportEntry<'_>> for FlatRecord {
    fn from(e: &ExportEntry<'_>) -> Self {
        let r = e.record;
        FlatRecord {
            seq: e.seq,
            leaf_hash: hex(e.leaf_hash),
            version: r.version,
            at: instant(r.at),
            org: r.org.map(|o| o.to_string()),
            actor: r.actor.map(|a| a.to_string()),
            session: r.session.map(|s| s.to_string()),
            device: r.device.clone(),
            ip: r.ip.clone(),
            action: r.action.clone(),
            object_type: r.object_type.clone(),
            object_id: r.object_id.clone(),
            patient_ref: r.patient_ref.clone(),
            target: r.target.clone(),
            outcome: r.outcome.as_str().to_owned(),
            reason: r.reason.clone(),
            node: r.node.clone(),
            region: r.region.clone(),
        }
    }
}

impl FlatRecord {
    /// The cells of its CSV row, in [`CSV_HEADER`] order (absent fields empty).
    pub fn cells(&self) -> impl Iterator<Item = String> {
        let o = |v: &Option<String>| v.clone().unwrap_or_default();
        [
            self.seq.to_string(),
            self.leaf_hash.clone(),
            self.version.to_string(),
            self.at.clone(),
            o(&self.org),
            o(&self.actor),
            o(&self.session),
            o(&self.device),
            o(&self.ip),
            self.action.clone(),
            o(&self.object_type),
            o(&self.object_id),
            o(&self.patient_ref),
            o(&self.target),
            self.outcome.clone(),
            o(&self.reason),
            o(&self.node),
            o(&self.region),
        ]
        .into_iter()
    }

    /// The fields present, by name, as the FHIR export's log-entry details carry them.
    fn named(&self) -> Vec<(&'static str, String)> {
        CSV_HEADER.iter().copied().zip(self.cells()).filter(|(_, v)| !v.is_empty()).collect()
    }
}

/// One CSV record (RFC 4180): cells separated by commas, a cell quoted when it holds a comma,
/// a quote, CR or LF (quotes doubled), the line ended with CRLF. A cell that a spreadsheet
/// would run as a formula (starting with `=`, `+`, `-`, `@`, a tab or CR, OWASP's list) is
/// prefixed with `'`, and so is a cell that already starts with `'`: removing one leading `'`
/// from every cell that has one gives the value back exactly.
pub fn csv_line(cells: impl Iterator<Item = String>) -> String {
    let mut line = String::new();
    for (i, cell) in cells.enumerate() {
        if i > 0 {
            line.push(',');
        }
        let cell = neutralise(cell);
        if cell.contains([',', '"', '\r', '\n']) {
            line.push('"');
            line.push_str(&cell.replace('"', "\"\""));
            line.push('"');
        } else {
            line.push_str(&cell);
        }
    }
    line.push_str("\r\n");
    line
}

/// Prefixes a cell a spreadsheet would treat as a formula (see [`csv_line`]).
fn neutralise(cell: String) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r', '\'']) { format!("'{cell}") } else { cell }
}

/// Undoes [`neutralise`]: the value a CSV cell was made from.
pub fn csv_cell_value(cell: &str) -> &str {
    cell.strip_prefix('\'').unwrap_or(cell)
}

// --- FHIR R4 AuditEvent ----------------------------------------------------------------------

/// DICOM's code system (PS3.16), where the audit event ids and types come from.
pub const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
/// FHIR's own audit event types (`rest`).
pub const AUDIT_EVENT_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-event-type";
/// HL7 v3 ActReason: the purpose of use (TREAT, ETREAT, BTG).
pub const ACT_REASON: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
pub const AUDIT_ENTITY_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
pub const OBJECT_ROLE: &str = "http://terminology.hl7.org/CodeSystem/object-role";
pub const SECURITY_SOURCE_TYPE: &str = "http://terminology.hl7.org/CodeSystem/security-source-type";
pub const SECURITY_ROLE_TYPE: &str = "http://terminology.hl7.org/CodeSystem/extra-security-role-type";
/// RFC 3986 URIs as identifiers: medhub's UUIDs as `urn:uuid:…`.
pub const URI_IDENTIFIER: &str = "urn:ietf:rfc:3986";

/// A FHIR Coding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coding {
    pub system: String,
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

fn coding(system: &str, code: &str, display: &str) -> Coding {
    Coding { system: system.to_owned(), code: code.to_owned(), display: Some(display.to_owned()) }
}

/// A FHIR CodeableConcept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeableConcept {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub coding: Vec<Coding>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

fn concept(c: Coding) -> CodeableConcept {
    CodeableConcept { coding: vec![c], text: None }
}

/// A FHIR Identifier.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identifier {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<CodeableConcept>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    pub value: String,
}

/// A FHIR Reference (by identifier: medhub's users and objects are not FHIR resources).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reference {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identifier: Option<Identifier>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub address: String,
    /// `1` machine name, `2` IP address (http://hl7.org/fhir/network-type).
    #[serde(rename = "type")]
    pub kind: String,
}

/// `AuditEvent.agent`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Agent {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<CodeableConcept>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub who: Option<Reference>,
    pub requestor: bool,
    /// The session the user acted in, as `urn:uuid:…` (BALP puts the token's id here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub purpose_of_use: Vec<CodeableConcept>,
}

/// `AuditEvent.source`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    pub observer: Reference,
    #[serde(rename = "type", default, skip_serializing_if = "Vec::is_empty")]
    pub kind: Vec<Coding>,
}

/// `AuditEvent.entity.detail`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Detail {
    #[serde(rename = "type")]
    pub kind: String,
    pub value_string: String,
}

/// `AuditEvent.entity`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entity {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub what: Option<Reference>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<Coding>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Coding>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The query of an export, base64 (FHIR `base64Binary`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub detail: Vec<Detail>,
}

/// A FHIR R4 AuditEvent (http://hl7.org/fhir/R4/auditevent.html), with the elements medhub
/// fills in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    pub resource_type: String,
    /// The record's `seq`.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: Coding,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subtype: Vec<Coding>,
    /// C, R, U, D or E.
    pub action: String,
    pub recorded: String,
    /// 0 success, 4 minor failure (refused), 8 serious failure (the server failed).
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome_desc: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub purpose_of_event: Vec<CodeableConcept>,
    pub agent: Vec<Agent>,
    pub source: Source,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entity: Vec<Entity>,
}

/// How one medhub action is coded: the event type, its subtype and the FHIR action code.
/// The table is docs/audit-export.md's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventCoding {
    pub kind: Coding,
    pub subtype: Option<Coding>,
    pub action: &'static str,
}

const SECURITY_ALERT: (&str, &str) = ("110113", "Security Alert");
const USER_AUTHENTICATION: (&str, &str) = ("110114", "User Authentication");

fn dcm(code: (&str, &str)) -> Coding {
    coding(DCM, code.0, code.1)
}

/// The event type, subtype and action code of `r` (docs/audit-export.md has the table):
/// DICOM PS3.15 audit event ids with their DICOM type codes, as IHE BALP and FHIR's own
/// break-glass examples use them.
pub fn event_coding(r: &AuditRecord) -> EventCoding {
    let refused = matches!(r.outcome, Outcome::Deny | Outcome::Failure);
    let alert = |sub: (&str, &str), action| EventCoding { kind: dcm(SECURITY_ALERT), subtype: Some(dcm(sub)), action };
    let auth =
        |sub: Option<(&str, &str)>| EventCoding { kind: dcm(USER_AUTHENTICATION), subtype: sub.map(dcm), action: "E" };
    const LOGIN: (&str, &str) = ("110122", "Login");
    const LOGOUT: (&str, &str) = ("110123", "Logout");
    const RESTRICTED: (&str, &str) = ("110132", "Use of Restricted Function");
    const USER_ATTRIBUTES: (&str, &str) = ("110137", "User Security Attributes Changed");
    const ROLES: (&str, &str) = ("110136", "Security Roles Changed");
    const OBJECT_ATTRIBUTES: (&str, &str) = ("110135", "Object Security Attributes Changed");
    const CONFIGURATION: (&str, &str) = ("110129", "Security Configuration");
    match r.action.as_str() {
        "http" => {
            let action = http_action(r.target.as_deref());
            if refused {
                alert(RESTRICTED, action)
            } else {
                EventCoding { kind: coding(AUDIT_EVENT_TYPE, "rest", "RESTful Operation"), subtype: None, action }
            }
        }
        "ws.frame" => {
            if refused {
                alert(RESTRICTED, "E")
            } else {
                EventCoding { kind: dcm(("110100", "Application Activity")), subtype: None, action: "E" }
            }
        }
        "auth.sign_in" | "auth.mfa" => auth(Some(LOGIN)),
        "session.end" | "admin.session_kill" => auth(Some(LOGOUT)),
        "auth.mfa_enrol"
        | "auth.password_change"
        | "auth.recovery_codes"
        | "auth.invite_accept"
        | "admin.role_grant"
        | "admin.user_update"
        | "admin.mfa_reset"
        | "admin.password_reset"
        | "sso.roles" => alert(USER_ATTRIBUTES, "U"),
        "admin.invite" => alert(USER_ATTRIBUTES, "C"),
        "auth.passkey_delete" => alert(USER_ATTRIBUTES, "D"),
        "admin.role_create" => alert(ROLES, "C"),
        "admin.settings" => alert(CONFIGURATION, "U"),
        "org.create" => alert(CONFIGURATION, "C"),
        "care_team.add" => alert(OBJECT_ATTRIBUTES, "C"),
        "care_team.remove" => alert(OBJECT_ATTRIBUTES, "D"),
        "break_glass.start" => alert(("110127", "Emergency Override Started"), "E"),
        "break_glass.end" => alert(("110138", "Emergency Override Stopped"), "E"),
        "patient.read" | "handoff.read" => {
            EventCoding { kind: dcm(("110110", "Patient Record")), subtype: None, action: "R" }
        }
        "handoff.give" => EventCoding { kind: dcm(("110110", "Patient Record")), subtype: None, action: "C" },
        "handoff.accept" => EventCoding { kind: dcm(("110110", "Patient Record")), subtype: None, action: "U" },
        "handoff.cancel" => EventCoding { kind: dcm(("110110", "Patient Record")), subtype: None, action: "D" },
        "audit.export" => EventCoding { kind: dcm(("110106", "Export")), subtype: None, action: "R" },
        a if a.starts_with("audit.") => {
            EventCoding { kind: dcm(("110101", "Audit Log Used")), subtype: None, action: "R" }
        }
        // Other sign-in steps (step-up, factors to come): a user authentication.
        a if a.starts_with("auth.") => auth(None),
        a if a.starts_with("admin.") => alert(CONFIGURATION, "U"),
        _ => EventCoding { kind: dcm(("110100", "Application Activity")), subtype: None, action: "E" },
    }
}

/// The FHIR action of an HTTP request from its method (the record's target is
/// `METHOD /path`).
fn http_action(target: Option<&str>) -> &'static str {
    match target.and_then(|t| t.split(' ').next()) {
        Some("GET" | "HEAD") => "R",
        Some("POST") => "C",
        Some("PUT" | "PATCH") => "U",
        Some("DELETE") => "D",
        _ => "E",
    }
}

/// `AuditEvent.outcome`: 0 for an allowed or successful action, 4 (minor failure) for one
/// refused, 8 (serious failure) for one the server failed.
pub fn outcome_code(o: Outcome) -> &'static str {
    match o {
        Outcome::Allow | Outcome::Success => "0",
        Outcome::Deny | Outcome::Failure => "4",
        Outcome::Error => "8",
    }
}

/// The purpose of use of `r`: break-glass (its start, end and the reads it allowed) is
/// emergency treatment (ETREAT) and a break-the-glass override (BTG); other reads of a
/// patient's data are treatment (TREAT). Other events have none.
pub fn purpose_of_use(r: &AuditRecord) -> Vec<CodeableConcept> {
    let emergency = || {
        vec![
            concept(coding(ACT_REASON, "ETREAT", "Emergency Treatment")),
            concept(coding(ACT_REASON, "BTG", "break the glass")),
        ]
    };
    match r.action.as_str() {
        "break_glass.start" | "break_glass.end" => emergency(),
        "patient.read" if r.reason.as_deref() == Some("break_glass") => emergency(),
        "patient.read" => vec![concept(coding(ACT_REASON, "TREAT", "treatment"))],
        _ => Vec::new(),
    }
}

/// A UUID as an RFC 3986 identifier; any other id as it is.
fn id_identifier(id: &str) -> Identifier {
    match uuid::Uuid::parse_str(id) {
        Ok(u) => Identifier { kind: None, system: Some(URI_IDENTIFIER.into()), value: format!("urn:uuid:{u}") },
        Err(_) => Identifier { kind: None, system: None, value: id.to_owned() },
    }
}

fn text_concept(text: &str) -> CodeableConcept {
    CodeableConcept { coding: Vec::new(), text: Some(text.to_owned()) }
}

/// A FHIR string may not be empty.
fn non_empty(s: &Option<String>) -> Option<String> {
    s.clone().filter(|v| !v.trim().is_empty())
}

/// The agents: who acted (the user, the operator, an unknown user at a sign-in, or medhub
/// itself), and the client device they acted from (BALP's source role, with its address).
fn agents(r: &AuditRecord, purpose: &[CodeableConcept]) -> Vec<Agent> {
    let human = Some(concept(coding(SECURITY_ROLE_TYPE, "humanuser", "human user")));
    let operator = r.actor.is_none() && r.reason.as_deref() == Some("operator");
    let by_request = r.actor.is_some()
        || r.session.is_some()
        || r.ip.is_some()
        || r.action == "http"
        || r.action.starts_with("auth.");
    let mut user = match (r.actor, operator, by_request) {
        (Some(a), _, _) => Agent {
            kind: human,
            who: Some(Reference { identifier: Some(id_identifier(&a.to_string())), display: None }),
            requestor: true,
            policy: Vec::new(),
            network: None,
            purpose_of_use: purpose.to_vec(),
        },
        (None, true, _) => Agent {
            kind: human,
            who: Some(Reference { identifier: None, display: Some("medhub operator (command line)".into()) }),
            requestor: true,
            policy: Vec::new(),
            network: None,
            purpose_of_use: purpose.to_vec(),
        },
        (None, false, true) => Agent {
            kind: human,
            who: Some(Reference { identifier: None, display: Some("unidentified user".into()) }),
            requestor: true,
            policy: Vec::new(),
            network: None,
            purpose_of_use: purpose.to_vec(),
        },
        (None, false, false) => Agent {
            kind: Some(concept(dcm(("110150", "Application")))),
            who: Some(observer(r)),
            requestor: true,
            policy: Vec::new(),
            network: None,
            purpose_of_use: purpose.to_vec(),
        },
    };
    if let Some(s) = r.session {
        user.policy.push(format!("urn:uuid:{s}"));
    }
    let mut out = vec![user];
    let device = non_empty(&r.device);
    let ip = non_empty(&r.ip);
    if device.is_some() || ip.is_some() {
        out.push(Agent {
            kind: Some(concept(dcm(("110153", "Source Role ID")))),
            who: device.map(|d| Reference {
                identifier: Some(Identifier {
                    kind: Some(text_concept("user agent SHA-256, first 16 bytes")),
                    system: None,
                    value: d,
                }),
                display: None,
            }),
            requestor: false,
            policy: Vec::new(),
            network: ip.map(|a| {
                let kind = if a.parse::<IpAddr>().is_ok() { "2" } else { "1" };
                Network { address: a, kind: kind.into() }
            }),
            purpose_of_use: Vec::new(),
        });
    }
    out
}

/// The server that wrote the record.
fn observer(r: &AuditRecord) -> Reference {
    match non_empty(&r.node) {
        Some(node) => Reference {
            identifier: Some(Identifier { kind: None, system: None, value: node.clone() }),
            display: Some(format!("medhub node {node}")),
        },
        None => Reference { identifier: None, display: Some("medhub".into()) },
    }
}

/// The audit-entity-type and object-role of a medhub object type.
fn object_kind(object_type: &str) -> (Coding, Option<Coding>) {
    let system_object = coding(AUDIT_ENTITY_TYPE, "2", "System Object");
    let role = |code: &str, display: &str| Some(coding(OBJECT_ROLE, code, display));
    match object_type {
        "user" => (system_object, role("11", "Security User Entity")),
        "role" => (system_object, role("12", "Security Group Entity")),
        "session" | "grant" | "passkey" => (system_object, role("13", "Security Resource")),
        "conversation" | "message" => (system_object, role("4", "Domain Resource")),
        "org" => (coding(AUDIT_ENTITY_TYPE, "3", "Organization"), None),
        "export" | "report" => (system_object, role("24", "Query")),
        "patient" => (coding(AUDIT_ENTITY_TYPE, "1", "Person"), role("1", "Patient")),
        _ => (system_object, None),
    }
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The entities: the object acted on, the patient it concerns, and the log entry itself (its
/// `seq`, leaf hash and every field of the record, so that nothing is lost).
fn entities(e: &ExportEntry<'_>) -> Vec<Entity> {
    let r = e.record;
    let mut out = Vec::new();
    if let Some(t) = non_empty(&r.object_type) {
        let (kind, role) = object_kind(&t);
        let query =
            (t == "export" || t == "report").then(|| r.target.as_deref().map(|q| base64(q.as_bytes()))).flatten();
        out.push(Entity {
            what: non_empty(&r.object_id).map(|id| Reference { identifier: Some(id_identifier(&id)), display: None }),
            kind: Some(kind),
            role,
            name: Some(t),
            description: None,
            query,
            detail: Vec::new(),
        });
    }
    if let Some(p) = non_empty(&r.patient_ref) {
        let (kind, role) = object_kind("patient");
        out.push(Entity {
            what: Some(Reference {
                identifier: Some(Identifier { kind: Some(text_concept("EHR patient id")), system: None, value: p }),
                display: None,
            }),
            kind: Some(kind),
            role,
            name: None,
            description: None,
            query: None,
            detail: Vec::new(),
        });
    }
    let flat = FlatRecord::from(e);
    out.push(Entity {
        what: Some(Reference {
            identifier: Some(Identifier {
                kind: Some(text_concept("medhub audit log seq")),
                system: None,
                value: e.seq.to_string(),
            }),
            display: None,
        }),
        kind: Some(coding(AUDIT_ENTITY_TYPE, "2", "System Object")),
        role: None,
        name: Some("medhub audit log entry".into()),
        description: Some(format!(
            "Leaf {} of medhub's RFC 9162 audit log; leaf_hash is its SHA-256 leaf hash (hex)",
            e.seq
        )),
        query: None,
        detail: flat
            .named()
            .into_iter()
            .filter(|(_, v)| !v.trim().is_empty())
            .map(|(k, v)| Detail { kind: k.to_owned(), value_string: v })
            .collect(),
    });
    out
}

/// The FHIR R4 AuditEvent of one log entry (docs/audit-export.md). Its `id` is the entry's
/// `seq`.
pub fn audit_event(e: &ExportEntry<'_>) -> AuditEvent {
    let r = e.record;
    let coded = event_coding(r);
    let purpose = purpose_of_use(r);
    let outcome_desc = match non_empty(&r.reason) {
        Some(reason) => format!("{}: {reason}", r.outcome.as_str()),
        None => r.outcome.as_str().to_owned(),
    };
    AuditEvent {
        resource_type: "AuditEvent".into(),
        id: e.seq.to_string(),
        kind: coded.kind,
        subtype: coded.subtype.into_iter().collect(),
        action: coded.action.into(),
        recorded: instant(r.at),
        outcome: outcome_code(r.outcome).into(),
        outcome_desc: Some(outcome_desc),
        agent: agents(r, &purpose),
        purpose_of_event: purpose,
        source: Source {
            site: non_empty(&r.region),
            observer: observer(r),
            kind: vec![coding(SECURITY_SOURCE_TYPE, "4", "Application Server")],
        },
        entity: entities(e),
    }
}

#[cfg(test)]
mod tests {
    use medhub_core::ids::{OrgId, SessionId, UserId};

    use super::*;

    fn record(action: &str, outcome: Outcome) -> AuditRecord {
        AuditRecord {
            org: Some(OrgId::from_uuid(uuid::Uuid::from_u128(0xa))),
            actor: Some(UserId::from_uuid(uuid::Uuid::from_u128(0xb))),
            session: Some(SessionId::from_uuid(uuid::Uuid::from_u128(0xc))),
            device: Some("00112233445566778899aabbccddeeff".into()),
            ip: Some("10.0.0.7".into()),
            node: Some("n1".into()),
            region: Some("eu-1".into()),
            ..AuditRecord::new(Timestamp::from_microsecond(1_800_000_000_123_456).unwrap(), action, outcome)
        }
    }

    fn event(r: &AuditRecord) -> AuditEvent {
        audit_event(&ExportEntry { seq: 7, record: r, leaf_hash: &[0xab; 32] })
    }

    fn codes(v: &[CodeableConcept]) -> Vec<&str> {
        v.iter().flat_map(|c| c.coding.iter().map(|c| c.code.as_str())).collect()
    }

    #[test]
    fn break_glass_is_an_emergency_override_for_emergency_treatment() {
        let start = event(&record("break_glass.start", Outcome::Success).patient("P1").object("grant", "g"));
        assert_eq!((start.kind.code.as_str(), start.subtype[0].code.as_str()), ("110113", "110127"));
        assert_eq!(start.kind.system, DCM);
        assert_eq!(codes(&start.purpose_of_event), ["ETREAT", "BTG"]);
        assert_eq!(codes(&start.agent[0].purpose_of_use), ["ETREAT", "BTG"]);
        let end = event(&record("break_glass.end", Outcome::Success));
        assert_eq!((end.kind.code.as_str(), end.subtype[0].code.as_str()), ("110113", "110138"));
        let read = event(&record("patient.read", Outcome::Allow).patient("P1").reason("break_glass"));
        assert_eq!((read.kind.code.as_str(), read.action.as_str()), ("110110", "R"));
        assert_eq!(codes(&read.purpose_of_event), ["ETREAT", "BTG"]);
        let read = event(&record("patient.read", Outcome::Allow).patient("P1").reason("care_team"));
        assert_eq!(codes(&read.purpose_of_event), ["TREAT"]);
    }

    #[test]
    fn refusals_are_security_alerts_and_sign_ins_user_authentications() {
        let denied = event(&record("http", Outcome::Deny).target("GET /api/v1/x").reason("forbidden"));
        assert_eq!((denied.kind.code.as_str(), denied.subtype[0].code.as_str()), ("110113", "110132"));
        assert_eq!((denied.outcome.as_str(), denied.action.as_str()), ("4", "R"));
        assert_eq!(denied.outcome_desc.as_deref(), Some("deny: forbidden"));
        let allowed = event(&record("http", Outcome::Allow).target("DELETE /api/v1/x"));
        assert_eq!((allowed.kind.code.as_str(), allowed.action.as_str(), allowed.outcome.as_str()), ("rest", "D", "0"));
        let failed = event(&record("auth.sign_in", Outcome::Failure).reason("invalid_credentials"));
        assert_eq!(
            (failed.kind.code.as_str(), failed.subtype[0].code.as_str(), failed.outcome.as_str()),
            ("110114", "110122", "4")
        );
        assert_eq!(outcome_code(Outcome::Error), "8");
    }

    #[test]
    fn agents_entities_and_source_carry_every_field() {
        let r = record("patient.read", Outcome::Allow).patient("P42").object("conversation", uuid::Uuid::from_u128(9));
        let e = event(&r);
        assert_eq!(e.id, "7");
        assert_eq!(e.recorded, "2027-01-15T08:00:00.123456Z");
        let user = &e.agent[0];
        assert!(user.requestor);
        assert_eq!(
            user.who.as_ref().unwrap().identifier.as_ref().unwrap().value,
            format!("urn:uuid:{}", uuid::Uuid::from_u128(0xb))
        );
        assert_eq!(user.policy, [format!("urn:uuid:{}", uuid::Uuid::from_u128(0xc))]);
        let device = &e.agent[1];
        assert_eq!(device.network, Some(Network { address: "10.0.0.7".into(), kind: "2".into() }));
        assert_eq!(e.source.site.as_deref(), Some("eu-1"));
        assert_eq!(e.source.observer.display.as_deref(), Some("medhub node n1"));
        let patient = e.entity.iter().find(|x| x.role.as_ref().is_some_and(|r| r.code == "1")).unwrap();
        assert_eq!(patient.what.as_ref().unwrap().identifier.as_ref().unwrap().value, "P42");
        let log = e.entity.last().unwrap();
        let detail = |k: &str| log.detail.iter().find(|d| d.kind == k).map(|d| d.value_string.as_str());
        assert_eq!(detail("leaf_hash"), Some("ab".repeat(32).as_str()));
        assert_eq!(detail("seq"), Some("7"));
        assert_eq!(detail("patient_ref"), Some("P42"));
        assert_eq!(detail("reason"), None);
    }

    #[test]
    fn csv_quotes_per_rfc_4180_and_neutralises_formulas() {
        let line = csv_line(
            ["a,b", "say \"hi\"", "=HYPERLINK(\"x\")", "-1", "'q", "two\nlines", "plain"].map(String::from).into_iter(),
        );
        assert_eq!(line, "\"a,b\",\"say \"\"hi\"\"\",\"'=HYPERLINK(\"\"x\"\")\",'-1,''q,\"two\nlines\",plain\r\n");
        for v in ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "'x", "x"] {
            assert_eq!(csv_cell_value(&neutralise(v.to_owned())), v);
        }
    }

    #[test]
    fn a_bundle_is_one_json_document() {
        let r = record("auth.sign_in", Outcome::Success);
        let f = ExportFormat::Fhir;
        let mut out = f.prefix(Timestamp::from_second(1_800_000_000).unwrap());
        for (i, seq) in [3u64, 2].into_iter().enumerate() {
            f.push(&mut out, &ExportEntry { seq, record: &r, leaf_hash: &[1; 32] }, i == 0);
        }
        out.push_str(f.suffix());
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["entry"].as_array().unwrap().len(), 2);
        assert_eq!(v["entry"][1]["resource"]["id"], "2");
        assert_eq!(v["type"], "collection");
    }
}
