//! From a raw Microsoft Graph user to an Okta identity-source profile: the
//! filter, the attribute mapping and the schema check of the mapper stage
//! (DESIGN §5). A record that cannot be sent is rejected alone, with a reason
//! an operator can act on; the rest of its page goes on.

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;

use crate::ids::ExternalId;
use crate::messages::{OktaProfile, Op, Rejected};
use crate::validate::{Violation, validate_profile};

/// The original workflow's table (reference §6.4): Okta attribute ← Graph
/// field. The default mapping of every sync.
pub const ORIGINAL_WORKFLOW_ATTRIBUTES: [(&str, &str); 14] = [
    ("userName", "userPrincipalName"),
    ("firstName", "givenName"),
    ("lastName", "surname"),
    ("email", "mail"),
    ("mobilePhone", "mobilePhone"),
    ("displayName", "displayName"),
    ("department", "department"),
    ("title", "jobTitle"),
    ("streetAddress", "streetAddress"),
    ("city", "city"),
    ("state", "state"),
    ("countryCode", "country"),
    ("zipCode", "postalCode"),
    ("organization", "companyName"),
];

/// The Graph field used as `externalId` by default: `id` is immutable, so a
/// renamed user stays the same Okta user. (The original workflow used
/// `userPrincipalName`, which changes when a user is renamed.)
pub const DEFAULT_EXTERNAL_ID_FIELD: &str = "id";

/// A mapping or filter rule that cannot work. `key` is relative to the
/// rule's section (`external_id`, `attributes.title`, `department`, …).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct RuleError {
    pub key: String,
    pub problem: String,
}

fn rule_error(key: impl Into<String>, problem: impl Into<String>) -> RuleError {
    RuleError { key: key.into(), problem: problem.into() }
}

/// Graph property names and Okta attribute names are identifiers; anything
/// else is a typo that would silently map nothing.
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic()) && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn check_graph_field(key: &str, field: &str) -> Result<(), RuleError> {
    if is_identifier(field) {
        Ok(())
    } else {
        Err(rule_error(
            key,
            format!(
                "{field:?} is not a Graph user property name (letters, digits and '_', starting with a letter; \
                 nested properties are not supported)"
            ),
        ))
    }
}

/// Which Graph field feeds each Okta attribute, and which one is the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    external_id: String,
    /// Okta attribute → Graph field.
    attributes: BTreeMap<String, String>,
}

impl Mapping {
    /// `attributes` maps Okta attribute → Graph field. It must map `userName`
    /// and `email`, without which Okta refuses every profile.
    pub fn new(external_id: &str, attributes: BTreeMap<String, String>) -> Result<Self, RuleError> {
        check_graph_field("external_id", external_id)?;
        for (attr, field) in &attributes {
            let key = format!("attributes.{attr}");
            if !is_identifier(attr) {
                return Err(rule_error(
                    key,
                    "is not an Okta attribute name (letters, digits and '_', starting with a letter)",
                ));
            }
            check_graph_field(&key, field)?;
        }
        for required in crate::validate::REQUIRED {
            if !attributes.contains_key(required) {
                return Err(rule_error(
                    "attributes",
                    format!("{required} is not mapped; Okta requires userName and email on every profile"),
                ));
            }
        }
        Ok(Self { external_id: external_id.into(), attributes })
    }

    /// The original workflow's table with `externalId` from `external_id`.
    pub fn original_workflow(external_id: &str) -> Result<Self, RuleError> {
        Self::new(external_id, Self::original_workflow_attributes())
    }

    pub fn original_workflow_attributes() -> BTreeMap<String, String> {
        ORIGINAL_WORKFLOW_ATTRIBUTES.iter().map(|(attr, field)| (attr.to_string(), field.to_string())).collect()
    }

    /// The Graph field whose value becomes `externalId`.
    pub fn external_id_field(&self) -> &str {
        &self.external_id
    }

    /// (Okta attribute, Graph field) pairs, by attribute name.
    pub fn attributes(&self) -> impl Iterator<Item = (&str, &str)> {
        self.attributes.iter().map(|(a, f)| (a.as_str(), f.as_str()))
    }

    fn field_for(&self, attr: &str) -> Option<&str> {
        self.attributes.get(attr).map(String::as_str)
    }
}

/// Client-side filter: a user is kept only when every listed Graph field
/// equals its value. A missing or null field does not match.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filter {
    equals: BTreeMap<String, Value>,
}

impl Filter {
    /// Keeps everyone.
    pub fn none() -> Self {
        Self::default()
    }

    /// Graph field → value. Values are strings or booleans (`accountEnabled`).
    pub fn new(equals: BTreeMap<String, Value>) -> Result<Self, RuleError> {
        for (field, value) in &equals {
            check_graph_field(field, field)?;
            if !(value.is_string() || value.is_boolean()) {
                return Err(rule_error(field, format!("{value} must be a string or a boolean")));
            }
        }
        Ok(Self { equals })
    }

    pub fn matches(&self, user: &Value) -> bool {
        self.equals.iter().all(|(field, wanted)| user.get(field) == Some(wanted))
    }

    /// (Graph field, wanted value) pairs.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.equals.iter().map(|(f, v)| (f.as_str(), v))
    }
}

/// Everything the mapper needs to turn a Graph user into an Okta profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingRules {
    pub mapping: Mapping,
    pub filter: Filter,
}

impl MappingRules {
    /// Every Graph field the rules read, once each: the key, the mapped
    /// fields, then the filter's. The fetcher must `$select` at least these.
    pub fn graph_fields(&self) -> Vec<&str> {
        let mut seen = HashSet::new();
        std::iter::once(self.mapping.external_id_field())
            .chain(self.mapping.attributes().map(|(_, field)| field))
            .chain(self.filter.fields().map(|(field, _)| field))
            .filter(|field| seen.insert(*field))
            .collect()
    }
}

/// What became of one source record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapOutcome {
    Mapped(OktaProfile),
    /// The filter does not select this user; not an error.
    FilteredOut,
    Rejected(Rejected),
}

/// Filters, maps and validates one Graph user for `op`. A delete needs only
/// the `externalId`, so its attributes are neither mapped nor checked.
pub fn map_user(rules: &MappingRules, user: &Value, op: Op) -> MapOutcome {
    match try_map_user(rules, user, op) {
        Ok(Some(profile)) => MapOutcome::Mapped(profile),
        Ok(None) => MapOutcome::FilteredOut,
        Err(reason) => MapOutcome::Rejected(Rejected { external_id: record_id(rules, user), reason }),
    }
}

fn try_map_user(rules: &MappingRules, user: &Value, op: Op) -> Result<Option<OktaProfile>, String> {
    if !user.is_object() {
        return Err(format!("not a Graph user object but {}", kind(user)));
    }
    if !rules.filter.matches(user) {
        return Ok(None);
    }
    let external_id = external_id(&rules.mapping, user)?;
    if op == Op::Delete {
        return Ok(Some(OktaProfile { external_id, profile: None }));
    }
    let mut profile = BTreeMap::new();
    for (attr, field) in rules.mapping.attributes() {
        match user.get(field) {
            // Absent, null and "" all mean "no value": the attribute is left
            // out (Okta's minLength 1 on names would refuse "").
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.is_empty() => {}
            Some(Value::String(s)) => {
                profile.insert(attr.to_string(), s.clone());
            }
            Some(other) => {
                return Err(format!(
                    "{field} is {}, but Okta profile attributes are strings only (mapped to {attr})",
                    kind(other)
                ));
            }
        }
    }
    validate_profile(&profile).map_err(|v| explain(&rules.mapping, &v))?;
    Ok(Some(OktaProfile { external_id, profile: Some(profile) }))
}

fn external_id(mapping: &Mapping, user: &Value) -> Result<ExternalId, String> {
    let field = mapping.external_id_field();
    match user.get(field) {
        None | Some(Value::Null) => Err(format!("empty {field} (it is the Okta externalId)")),
        Some(Value::String(s)) if s.is_empty() => Err(format!("empty {field} (it is the Okta externalId)")),
        Some(Value::String(s)) => {
            ExternalId::parse(s.as_str()).map_err(|e| format!("{field} cannot be the Okta externalId: {e}"))
        }
        Some(other) => Err(format!("{field} is {}, but the Okta externalId must be a string", kind(other))),
    }
}

/// A violation told in terms of the source field the operator can fix.
fn explain(mapping: &Mapping, violation: &Violation) -> String {
    let field = mapping.field_for(violation.attr()).unwrap_or("an unmapped field");
    match violation {
        Violation::Missing { attr } => format!("missing {field} (Okta {attr} is required)"),
        other => format!("{other} (from {field})"),
    }
}

/// The id reported with a rejection: the record's key when it has a usable
/// one, else its Graph `id`.
fn record_id(rules: &MappingRules, user: &Value) -> Option<String> {
    let non_empty = |field: &str| user.get(field).and_then(Value::as_str).filter(|s| !s.is_empty());
    non_empty(rules.mapping.external_id_field()).or_else(|| non_empty("id")).map(str::to_string)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One page's worth of mapping.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PageMapping {
    /// In page order.
    pub profiles: Vec<OktaProfile>,
    pub filtered_out: u32,
    pub rejected: Vec<Rejected>,
}

/// Maps every user of a page. Two users with the same `externalId` in one
/// page would make the bulk request ambiguous: the first is kept and the
/// later ones are rejected.
pub fn map_page(rules: &MappingRules, users: &[Value], op: Op) -> PageMapping {
    let mut out = PageMapping::default();
    let mut seen = HashSet::new();
    for user in users {
        match map_user(rules, user, op) {
            MapOutcome::Mapped(profile) => {
                if seen.insert(profile.external_id.clone()) {
                    out.profiles.push(profile);
                } else {
                    out.rejected.push(Rejected {
                        external_id: Some(profile.external_id.to_string()),
                        reason: format!(
                            "duplicate externalId (an earlier user of this page has the same {}; the first was kept)",
                            rules.mapping.external_id_field()
                        ),
                    });
                }
            }
            MapOutcome::FilteredOut => out.filtered_out = out.filtered_out.saturating_add(1),
            MapOutcome::Rejected(rejected) => out.rejected.push(rejected),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Reference microsoft-graph.md §6.2, first user.
    fn adele() -> Value {
        json!({"id": "87d349ed-44d7-43e1-9a83-5f2406dee5bd", "userPrincipalName": "AdeleV@contoso.com",
            "givenName": "Adele", "surname": "Vance", "displayName": "Adele Vance", "mail": "AdeleV@contoso.com",
            "otherMails": ["adele.vance@fabrikam.com"], "mobilePhone": "+1 425 555 0109",
            "businessPhones": ["+1 425 555 0109"], "department": "Retail", "jobTitle": "Retail Manager",
            "streetAddress": "205 108th Ave. NE, Suite 400", "city": "Bellevue", "state": "WA",
            "country": "United States", "postalCode": "98004", "companyName": "Contoso", "usageLocation": "US",
            "accountEnabled": true, "employeeId": "1000123", "onPremisesImmutableId": "bWRmbGtqc2Rm0w=="})
    }

    fn rules() -> MappingRules {
        MappingRules { mapping: Mapping::original_workflow("id").unwrap(), filter: Filter::none() }
    }

    fn workflow_rules() -> MappingRules {
        let filter = Filter::new(BTreeMap::from([("department".into(), json!("Okta Workflows"))])).unwrap();
        MappingRules { mapping: Mapping::original_workflow("userPrincipalName").unwrap(), filter }
    }

    fn mapped(outcome: MapOutcome) -> OktaProfile {
        match outcome {
            MapOutcome::Mapped(p) => p,
            other => panic!("expected Mapped, got {other:?}"),
        }
    }

    fn rejected(outcome: MapOutcome) -> Rejected {
        match outcome {
            MapOutcome::Rejected(r) => r,
            other => panic!("expected Rejected, got {other:?}"),
        }
    }

    #[test]
    fn the_original_workflow_table_maps_field_by_field() {
        let p = mapped(map_user(&rules(), &adele(), Op::Upsert));
        assert_eq!(p.external_id.as_str(), "87d349ed-44d7-43e1-9a83-5f2406dee5bd");
        let profile = p.profile.unwrap();
        let expected = [
            ("userName", "AdeleV@contoso.com"),
            ("firstName", "Adele"),
            ("lastName", "Vance"),
            ("email", "AdeleV@contoso.com"),
            ("mobilePhone", "+1 425 555 0109"),
            ("displayName", "Adele Vance"),
            ("department", "Retail"),
            ("title", "Retail Manager"),
            ("streetAddress", "205 108th Ave. NE, Suite 400"),
            ("city", "Bellevue"),
            ("state", "WA"),
            ("countryCode", "United States"),
            ("zipCode", "98004"),
            ("organization", "Contoso"),
        ];
        for (attr, value) in expected {
            assert_eq!(profile.get(attr).map(String::as_str), Some(value), "{attr}");
        }
        // Nothing else: otherMails, businessPhones, employeeId… are not mapped.
        assert_eq!(profile.len(), expected.len());
    }

    #[test]
    fn the_original_workflow_keys_by_user_principal_name() {
        let mut user = adele();
        user["department"] = json!("Okta Workflows");
        let p = mapped(map_user(&workflow_rules(), &user, Op::Upsert));
        assert_eq!(p.external_id.as_str(), "AdeleV@contoso.com");
    }

    #[test]
    fn the_filter_keeps_only_matching_users() {
        let r = workflow_rules();
        assert_eq!(map_user(&r, &adele(), Op::Upsert), MapOutcome::FilteredOut);
        let mut user = adele();
        user["department"] = Value::Null;
        assert_eq!(map_user(&r, &user, Op::Upsert), MapOutcome::FilteredOut);
        user.as_object_mut().unwrap().remove("department");
        assert_eq!(map_user(&r, &user, Op::Upsert), MapOutcome::FilteredOut);
        user["department"] = json!("okta workflows");
        assert_eq!(map_user(&r, &user, Op::Upsert), MapOutcome::FilteredOut, "equality is exact");
        user["department"] = json!("Okta Workflows");
        assert!(matches!(map_user(&r, &user, Op::Upsert), MapOutcome::Mapped(_)));
        // The filter applies to deactivations too (reference §6.5).
        assert_eq!(map_user(&r, &adele(), Op::Delete), MapOutcome::FilteredOut);
    }

    #[test]
    fn a_boolean_filter_matches_booleans_only() {
        let filter = Filter::new(BTreeMap::from([("accountEnabled".into(), json!(true))])).unwrap();
        let r = MappingRules { filter, ..rules() };
        assert!(matches!(map_user(&r, &adele(), Op::Upsert), MapOutcome::Mapped(_)));
        let mut user = adele();
        user["accountEnabled"] = json!("true");
        assert_eq!(map_user(&r, &user, Op::Upsert), MapOutcome::FilteredOut);
    }

    #[test]
    fn null_absent_and_empty_fields_are_left_out() {
        let mut user = adele();
        user["jobTitle"] = Value::Null;
        user["city"] = json!("");
        user.as_object_mut().unwrap().remove("companyName");
        let profile = mapped(map_user(&rules(), &user, Op::Upsert)).profile.unwrap();
        assert!(!profile.contains_key("title"));
        assert!(!profile.contains_key("city"));
        assert!(!profile.contains_key("organization"));
        assert_eq!(profile.len(), 11);
    }

    #[test]
    fn a_non_string_field_rejects_the_whole_record() {
        for (value, what) in [
            (json!(42), "a number"),
            (json!(true), "a boolean"),
            (json!(["a"]), "an array"),
            (json!({"a": 1}), "an object"),
        ] {
            let mut user = adele();
            user["jobTitle"] = value;
            let r = rejected(map_user(&rules(), &user, Op::Upsert));
            assert_eq!(
                r.reason,
                format!("jobTitle is {what}, but Okta profile attributes are strings only (mapped to title)")
            );
            assert_eq!(r.external_id.as_deref(), Some("87d349ed-44d7-43e1-9a83-5f2406dee5bd"));
        }
    }

    #[test]
    fn a_missing_mail_is_rejected_with_its_reason() {
        let mut user = adele();
        user["mail"] = Value::Null;
        let r = rejected(map_user(&rules(), &user, Op::Upsert));
        assert_eq!(r.reason, "missing mail (Okta email is required)");
        user.as_object_mut().unwrap().remove("userPrincipalName");
        let r = rejected(map_user(&rules(), &user, Op::Upsert));
        assert_eq!(r.reason, "missing userPrincipalName (Okta userName is required)");
    }

    #[test]
    fn a_bad_email_is_rejected_naming_the_source_field() {
        let mut user = adele();
        user["mail"] = json!("adele at contoso");
        let r = rejected(map_user(&rules(), &user, Op::Upsert));
        assert_eq!(
            r.reason,
            "email \"adele at contoso\" is not an email address: it contains spaces or control characters (from mail)"
        );
    }

    #[test]
    fn names_are_measured_in_characters_and_kept_intact() {
        let mut user = adele();
        user["givenName"] = json!("Zoë-Ångström 李");
        user["surname"] = json!("ü".repeat(50));
        let profile = mapped(map_user(&rules(), &user, Op::Upsert)).profile.unwrap();
        assert_eq!(profile["firstName"], "Zoë-Ångström 李");
        assert_eq!(profile["lastName"], "ü".repeat(50));

        user["givenName"] = json!("é".repeat(51));
        let r = rejected(map_user(&rules(), &user, Op::Upsert));
        assert_eq!(r.reason, "firstName is 51 characters long; Okta allows 1 to 50 (from givenName)");
    }

    #[test]
    fn the_external_id_must_be_a_usable_string() {
        let r = workflow_rules();
        let mut user = adele();
        user["department"] = json!("Okta Workflows");
        user["userPrincipalName"] = json!("");
        let rej = rejected(map_user(&r, &user, Op::Upsert));
        assert_eq!(rej.reason, "empty userPrincipalName (it is the Okta externalId)");
        assert_eq!(rej.external_id.as_deref(), Some("87d349ed-44d7-43e1-9a83-5f2406dee5bd"), "falls back to id");

        user.as_object_mut().unwrap().remove("userPrincipalName");
        assert_eq!(
            rejected(map_user(&r, &user, Op::Delete)).reason,
            "empty userPrincipalName (it is the Okta externalId)"
        );

        user["userPrincipalName"] = json!(7);
        assert_eq!(
            rejected(map_user(&r, &user, Op::Upsert)).reason,
            "userPrincipalName is a number, but the Okta externalId must be a string"
        );

        user["userPrincipalName"] = json!("x".repeat(513));
        let rej = rejected(map_user(&r, &user, Op::Upsert));
        assert_eq!(
            rej.reason,
            "userPrincipalName cannot be the Okta externalId: externalId is 513 characters long; the limit is 512"
        );
    }

    #[test]
    fn a_non_object_is_rejected() {
        let r = rejected(map_user(&rules(), &json!("adele"), Op::Upsert));
        assert_eq!(r.reason, "not a Graph user object but a string");
        assert_eq!(r.external_id, None);
    }

    #[test]
    fn a_delete_carries_only_the_external_id() {
        let mut user = adele();
        user["jobTitle"] = json!(42); // would be rejected for an upsert
        user["mail"] = Value::Null;
        let p = mapped(map_user(&rules(), &user, Op::Delete));
        assert_eq!(
            p,
            OktaProfile {
                external_id: ExternalId::parse("87d349ed-44d7-43e1-9a83-5f2406dee5bd").unwrap(),
                profile: None
            }
        );
    }

    #[test]
    fn a_page_keeps_order_counts_filtered_and_rejects_duplicates() {
        let r = workflow_rules();
        let user = |upn: &str, dept: &str| {
            let mut u = adele();
            u["userPrincipalName"] = json!(upn);
            u["mail"] = json!(upn);
            u["department"] = json!(dept);
            u
        };
        let mut bad = user("bad@contoso.com", "Okta Workflows");
        bad["mail"] = Value::Null;
        let users = [
            user("b@contoso.com", "Okta Workflows"),
            user("a@contoso.com", "Okta Workflows"),
            user("x@contoso.com", "Sales"),
            bad,
            user("b@contoso.com", "Okta Workflows"),
            user("c@contoso.com", "Okta Workflows"),
        ];
        let page = map_page(&r, &users, Op::Upsert);
        let ids: Vec<_> = page.profiles.iter().map(|p| p.external_id.as_str()).collect();
        assert_eq!(ids, ["b@contoso.com", "a@contoso.com", "c@contoso.com"]);
        assert_eq!(page.filtered_out, 1);
        assert_eq!(
            page.rejected,
            vec![
                Rejected {
                    external_id: Some("bad@contoso.com".into()),
                    reason: "missing mail (Okta email is required)".into()
                },
                Rejected {
                    external_id: Some("b@contoso.com".into()),
                    reason: "duplicate externalId (an earlier user of this page has the same userPrincipalName; \
                             the first was kept)"
                        .into()
                },
            ]
        );
    }

    #[test]
    fn graph_fields_lists_what_the_rules_read_once() {
        let rules = workflow_rules();
        let fields = rules.graph_fields();
        assert_eq!(fields[0], "userPrincipalName");
        assert_eq!(fields.len(), 14, "{fields:?}"); // 14 mapped fields, UPN and department shared
        for f in ["givenName", "mail", "companyName", "department"] {
            assert!(fields.contains(&f), "{f}");
        }
    }

    #[test]
    fn broken_rules_are_refused() {
        let mut attrs = Mapping::original_workflow_attributes();
        attrs.remove("email");
        let err = Mapping::new("id", attrs).unwrap_err();
        assert_eq!(
            err.to_string(),
            "attributes: email is not mapped; Okta requires userName and email on every profile"
        );

        let mut attrs = Mapping::original_workflow_attributes();
        attrs.insert("title".into(), "job title".into());
        assert_eq!(Mapping::new("id", attrs).unwrap_err().key, "attributes.title");

        let mut attrs = Mapping::original_workflow_attributes();
        attrs.insert("bad-name".into(), "jobTitle".into());
        assert_eq!(Mapping::new("id", attrs).unwrap_err().key, "attributes.bad-name");

        assert_eq!(Mapping::original_workflow("").unwrap_err().key, "external_id");
        let err = Filter::new(BTreeMap::from([("department".into(), json!(3))])).unwrap_err();
        assert_eq!(err.to_string(), "department: 3 must be a string or a boolean");
    }
}
