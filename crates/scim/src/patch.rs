//! The PATCH engine (RFC 7644 §3.5.2), tolerant of what Okta and Entra ID
//! actually send (see `docs/identity-providers.md` §3).
//!
//! Operations apply to a copy of the resource; the caller stores the result
//! only if every operation succeeded, which makes a PATCH atomic.

use serde_json::{Map, Value};

use crate::ScimError;
use crate::filter::{self, AttrPath, Filter, get_ci};

pub const ENTERPRISE_USER: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// Enterprise-extension attributes that Entra addresses without their URN
/// (`"path": "manager"`).
const ENTERPRISE_ATTRS: [&str; 6] =
    ["employeenumber", "costcenter", "organization", "division", "department", "manager"];

/// The canonical spelling of attributes we know, so that stored resources
/// are consistent whatever case the IdP wrote.
fn canonical(lower: &str) -> Option<&'static str> {
    Some(match lower {
        "username" => "userName",
        "displayname" => "displayName",
        "externalid" => "externalId",
        "nickname" => "nickName",
        "profileurl" => "profileUrl",
        "usertype" => "userType",
        "preferredlanguage" => "preferredLanguage",
        "phonenumbers" => "phoneNumbers",
        "givenname" => "givenName",
        "familyname" => "familyName",
        "middlename" => "middleName",
        "honorificprefix" => "honorificPrefix",
        "honorificsuffix" => "honorificSuffix",
        "streetaddress" => "streetAddress",
        "postalcode" => "postalCode",
        "employeenumber" => "employeeNumber",
        "costcenter" => "costCenter",
        "x509certificates" => "x509Certificates",
        "ims" => "ims",
        "name" => "name",
        "emails" => "emails",
        "active" => "active",
        "title" => "title",
        "locale" => "locale",
        "timezone" => "timezone",
        "members" => "members",
        "addresses" => "addresses",
        "roles" => "roles",
        "entitlements" => "entitlements",
        "photos" => "photos",
        "manager" => "manager",
        "department" => "department",
        "organization" => "organization",
        "division" => "division",
        "formatted" => "formatted",
        "value" => "value",
        "display" => "display",
        "type" => "type",
        "primary" => "primary",
        "locality" => "locality",
        "region" => "region",
        "country" => "country",
        _ => return None,
    })
}

/// The multi-valued attributes of the User and Group schemas, lower-cased.
pub(crate) const MULTI_VALUED: [&str; 9] = [
    "emails",
    "phonenumbers",
    "addresses",
    "members",
    "roles",
    "entitlements",
    "photos",
    "ims",
    "x509certificates",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Replace,
    Remove,
}

/// The most operations one PATCH may carry. Entra sends one per changed
/// attribute or member, a few hundred at most in a request body.
pub const MAX_OPERATIONS: usize = 1000;

/// Applies a PatchOp request body to `resource`. `id` is the resource's id,
/// which a path-less value may repeat (Okta's group rename) but not change.
pub fn apply(resource: &Value, body: &Value, is_user: bool) -> Result<Value, ScimError> {
    let ops = get_ci(body, "Operations")
        .and_then(Value::as_array)
        .ok_or_else(|| ScimError::invalid_syntax("a PATCH needs an Operations array"))?;
    if ops.len() > MAX_OPERATIONS {
        return Err(ScimError::invalid_value(format!("at most {MAX_OPERATIONS} operations per PATCH")));
    }
    let mut out = resource.clone();
    for (i, op) in ops.iter().enumerate() {
        apply_one(&mut out, op, is_user)
            .map_err(|e| ScimError { detail: format!("Operations[{i}]: {}", e.detail), ..e })?;
    }
    normalise(&mut out);
    Ok(out)
}

fn apply_one(resource: &mut Value, op: &Value, is_user: bool) -> Result<(), ScimError> {
    let kind = match get_ci(op, "op").and_then(Value::as_str).map(str::to_ascii_lowercase).as_deref() {
        Some("add") => Op::Add,
        Some("replace") => Op::Replace,
        Some("remove") => Op::Remove,
        other => return Err(ScimError::invalid_syntax(format!("unknown op {other:?}"))),
    };
    let value = get_ci(op, "value").cloned();
    let path = get_ci(op, "path").and_then(Value::as_str).map(str::trim).filter(|p| !p.is_empty());
    match path {
        None => {
            // Whatever its value (RFC 7644 §3.5.2.2).
            if kind == Op::Remove {
                return Err(ScimError::no_target("remove needs a path"));
            }
            let Some(Value::Object(map)) = value else {
                return Err(ScimError::invalid_syntax("an operation without a path needs an object value"));
            };
            for (key, v) in map {
                if key.eq_ignore_ascii_case("id") {
                    // Okta repeats the read-only id in group renames.
                    if get_ci(resource, "id") == Some(&v) {
                        continue;
                    }
                    return Err(ScimError::mutability("id cannot be changed"));
                }
                if key.eq_ignore_ascii_case("schemas") || key.eq_ignore_ascii_case("meta") {
                    continue;
                }
                // An extension URN whose value is an object merges into it.
                if key.to_ascii_lowercase().starts_with("urn:")
                    && v.is_object()
                    && !key_has_attr_after_urn(&key)
                {
                    for (k, inner) in v.as_object().into_iter().flatten() {
                        let target = Target::parse(&format!("{key}:{k}"), is_user)?;
                        set(resource, &target, inner.clone(), kind)?;
                    }
                    continue;
                }
                let target = Target::parse(&key, is_user)?;
                guard(resource, &target, kind, Some(&v), is_user)?;
                set(resource, &target, v, kind)?;
            }
            Ok(())
        }
        Some(path) if is_whole_extension(path) => {
            let root = resource.as_object_mut().ok_or_else(|| ScimError::invalid_value("not an object"))?;
            let key = root.keys().find(|k| k.eq_ignore_ascii_case(path)).cloned();
            match (kind, value) {
                (Op::Remove, _) => {
                    if let Some(key) = key {
                        root.remove(&key);
                    }
                    Ok(())
                }
                (_, Some(Value::Object(attrs))) => {
                    if kind == Op::Replace
                        && let Some(key) = &key
                    {
                        root.remove(key);
                    }
                    for (k, inner) in attrs {
                        let target = Target::parse(&format!("{path}:{k}"), is_user)?;
                        set(resource, &target, inner, kind)?;
                    }
                    Ok(())
                }
                _ => Err(ScimError::invalid_value(format!("{path} takes an object of its attributes"))),
            }
        }
        Some(path) => {
            let target = Target::parse(path, is_user)?;
            guard(resource, &target, kind, value.as_ref(), is_user)?;
            match kind {
                Op::Remove => remove(resource, &target, value),
                _ => {
                    let v = value.ok_or_else(|| ScimError::invalid_syntax("add and replace need a value"))?;
                    set(resource, &target, v, kind)
                }
            }
        }
    }
}

/// Whether a path names an extension as a whole
/// (`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User`); the core
/// schemas are not removable or replaceable whole.
fn is_whole_extension(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.starts_with("urn:")
        && !lower.contains(":core:")
        && !path.contains('[')
        && !key_has_attr_after_urn(path)
}

/// What the server owns (RFC 7643 `mutability: readOnly`): a PATCH may
/// repeat the current value, never change or remove it.
const READ_ONLY: [&str; 3] = ["id", "meta", "schemas"];

/// Refuses, with RFC 7644 §3.5.2's `mutability`, an operation on a
/// read-only attribute (a user's `groups` too) other than one repeating its
/// value, and the removal of what a resource cannot be without (a user's
/// `userName`, a group's `displayName`) or of `active`, whose absence would
/// say nothing (replace it with true or false instead).
fn guard(
    resource: &Value,
    target: &Target,
    kind: Op,
    value: Option<&Value>,
    is_user: bool,
) -> Result<(), ScimError> {
    if target.urn.is_some() {
        return Ok(());
    }
    let attr = target.attr.as_str();
    let whole = target.filter.is_none() && target.sub.is_none();
    let read_only = READ_ONLY.contains(&attr) || (is_user && attr == "groups");
    if read_only {
        if kind != Op::Remove && whole && value.is_some() && get_ci(resource, attr) == value {
            return Ok(());
        }
        return Err(ScimError::mutability(format!("{attr} is read-only")));
    }
    let clears = kind == Op::Remove || value.is_none_or(is_empty);
    if clears && whole {
        let required = if is_user { "username" } else { "displayname" };
        if attr == required {
            return Err(ScimError::mutability(format!("{attr} is required and cannot be removed")));
        }
        if is_user && attr == "active" {
            return Err(ScimError::mutability("active cannot be removed: replace it with true or false"));
        }
    }
    Ok(())
}

/// Whether a URN key names an attribute (`urn:…:User:manager`) rather than
/// the extension itself (`urn:…:User`).
fn key_has_attr_after_urn(key: &str) -> bool {
    let last = key.rsplit(':').next().unwrap_or("");
    !last.chars().next().is_some_and(char::is_uppercase)
}

/// Where an operation points.
#[derive(Debug)]
struct Target {
    /// The extension object holding the attribute, if any.
    urn: Option<String>,
    attr: String,
    filter: Option<Filter>,
    sub: Option<String>,
}

impl Target {
    fn parse(path: &str, is_user: bool) -> Result<Self, ScimError> {
        let bad = |e: filter::FilterError| ScimError::invalid_path(e.0);
        let (head, filter, tail) = match path.find('[') {
            Some(open) => {
                // The last ']', after the '[' (a path like "][" has none).
                let close = path
                    .rfind(']')
                    .filter(|close| *close > open)
                    .ok_or_else(|| ScimError::invalid_path("missing ']'"))?;
                let inner = filter::parse(&path[open + 1..close]).map_err(bad)?;
                let tail = path[close + 1..].trim().strip_prefix('.').map(str::to_owned);
                (&path[..open], Some(inner), tail)
            }
            None => (path, None, None),
        };
        // Keep the URN's own case: extension keys are written as sent.
        let (urn, rest) = if head.to_ascii_lowercase().starts_with("urn:") {
            let i = head.rfind(':').ok_or_else(|| ScimError::invalid_path("bad URN path"))?;
            (Some(head[..i].to_owned()), &head[i + 1..])
        } else {
            (None, head)
        };
        let parsed = AttrPath::parse(rest).map_err(bad)?;
        let urn = match urn {
            Some(u) if u.to_ascii_lowercase().contains(":core:") => None,
            Some(u) => Some(u),
            None if is_user && ENTERPRISE_ATTRS.contains(&parsed.attr.as_str()) => {
                Some(ENTERPRISE_USER.to_owned())
            }
            None => None,
        };
        let sub = match (parsed.sub, tail) {
            (Some(_), Some(_)) => return Err(ScimError::invalid_path("too many sub-attributes")),
            (a, b) => a.or(b).map(|s| s.to_ascii_lowercase()),
        };
        Ok(Self { urn, attr: parsed.attr, filter, sub })
    }

    fn container<'a>(&self, resource: &'a mut Value, create: bool) -> Option<&'a mut Map<String, Value>> {
        let root = resource.as_object_mut()?;
        match &self.urn {
            None => Some(root),
            Some(urn) => {
                let key = root.keys().find(|k| k.eq_ignore_ascii_case(urn)).cloned();
                let key = match key {
                    Some(k) => k,
                    None if create => {
                        root.insert(urn.clone(), Value::Object(Map::new()));
                        urn.clone()
                    }
                    None => return None,
                };
                root.get_mut(&key)?.as_object_mut()
            }
        }
    }
}

fn key_in(map: &Map<String, Value>, lower: &str) -> String {
    map.keys()
        .find(|k| k.eq_ignore_ascii_case(lower))
        .cloned()
        .unwrap_or_else(|| canonical(lower).map(str::to_owned).unwrap_or_else(|| lower.to_owned()))
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty() || a.iter().all(|e| e.is_null()),
        _ => false,
    }
}

/// Entra sometimes sends an entry whose `value` is itself JSON text.
fn unwrap_nested(v: Value) -> Value {
    match v {
        Value::Object(mut m) => {
            if let Some(Value::String(s)) = m.get("value")
                && s.trim_start().starts_with('{')
                && let Ok(Value::Object(inner)) = serde_json::from_str::<Value>(s)
            {
                return Value::Object(inner);
            }
            m.retain(|k, v| !(k == "$ref" && v.is_null()));
            Value::Object(m)
        }
        other => other,
    }
}

fn set(resource: &mut Value, target: &Target, value: Value, kind: Op) -> Result<(), ScimError> {
    // Clearing: `replace` (or `add`) with "" or null removes the attribute.
    if is_empty(&value) && target.filter.is_none() && !MULTI_VALUED.contains(&target.attr.as_str()) {
        return remove(resource, target, None);
    }
    if target.attr == "manager" && target.urn.is_some() {
        return set_manager(resource, target, value);
    }
    let container =
        target.container(resource, true).ok_or_else(|| ScimError::invalid_value("not an object"))?;
    let key = key_in(container, &target.attr);
    let multi = MULTI_VALUED.contains(&target.attr.as_str());
    match (&target.filter, &target.sub) {
        (None, None) if multi => {
            let incoming: Vec<Value> = match value {
                Value::Array(a) => a.into_iter().filter(|v| !v.is_null()).map(unwrap_nested).collect(),
                Value::Null => vec![],
                v => vec![unwrap_nested(v)],
            };
            let list = container.entry(key).or_insert_with(|| Value::Array(vec![]));
            if kind == Op::Replace || !list.is_array() {
                *list = Value::Array(vec![]);
            }
            let Value::Array(items) = list else { unreachable!() };
            for v in incoming {
                // Members (and any entry with a `value`) are a set.
                let same =
                    |e: &Value| get_ci(e, "value").is_some() && get_ci(e, "value") == get_ci(&v, "value");
                match items.iter_mut().find(|e| same(e)) {
                    Some(existing) => *existing = v,
                    None => items.push(v),
                }
            }
        }
        (None, None) => {
            let value = match (&target.attr[..], value) {
                ("active", Value::String(s)) => Value::Bool(s.eq_ignore_ascii_case("true")),
                (_, v) => v,
            };
            match (container.get_mut(&key), value) {
                // An object merges into an existing one (`name`), for `add`
                // and `replace` alike: sub-attributes the value leaves out
                // are left unchanged (RFC 7644 §3.5.2.1, §3.5.2.3).
                (Some(Value::Object(existing)), Value::Object(incoming)) => {
                    for (k, v) in incoming {
                        let k2 = key_in(existing, &k.to_ascii_lowercase());
                        existing.insert(k2, v);
                    }
                }
                (_, v) => {
                    container.insert(key, v);
                }
            }
        }
        (None, Some(sub)) => {
            let obj = container.entry(key).or_insert_with(|| Value::Object(Map::new()));
            if !obj.is_object() {
                *obj = Value::Object(Map::new());
            }
            let obj = obj.as_object_mut().expect("just made an object");
            let k = key_in(obj, sub);
            obj.insert(k, value);
        }
        (Some(filter), sub) => {
            let list = container.entry(key).or_insert_with(|| Value::Array(vec![]));
            if !list.is_array() {
                *list = Value::Array(vec![]);
            }
            let Value::Array(items) = list else { unreachable!() };
            let mut matched = false;
            for entry in items.iter_mut().filter(|e| filter.matches(e)) {
                matched = true;
                match sub {
                    Some(sub) => {
                        if let Some(obj) = entry.as_object_mut() {
                            let k = key_in(obj, sub);
                            obj.insert(k, value.clone());
                        }
                    }
                    None => *entry = value.clone(),
                }
            }
            // No entry matched: create one from the filter's `type eq "x"`
            // (Entra's `emails[type eq "work"].value` on a user without one).
            if !matched {
                let mut entry = Map::new();
                if let Filter::Compare { path, op: filter::CompareOp::Eq, value: v } = filter {
                    entry.insert(key_in(&Map::new(), &path.attr), v.clone());
                }
                match (sub, value) {
                    (Some(sub), v) => {
                        entry.insert(key_in(&Map::new(), sub), v);
                    }
                    (None, Value::Object(m)) => entry.extend(m),
                    (None, v) => {
                        entry.insert("value".into(), v);
                    }
                }
                items.push(Value::Object(entry));
            }
        }
    }
    Ok(())
}

/// Entra's manager shapes: a plain id, `[{"value": id}]`, or an object.
fn set_manager(resource: &mut Value, target: &Target, value: Value) -> Result<(), ScimError> {
    let id = match value {
        Value::String(s) => Some(s),
        Value::Array(a) => {
            a.into_iter().find_map(|e| get_ci(&e, "value").and_then(Value::as_str).map(str::to_owned))
        }
        Value::Object(o) => get_ci(&Value::Object(o), "value").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    };
    let container =
        target.container(resource, true).ok_or_else(|| ScimError::invalid_value("not an object"))?;
    let key = key_in(container, "manager");
    match id.filter(|s| !s.is_empty()) {
        Some(id) => {
            container.insert(key, serde_json::json!({ "value": id }));
        }
        None => {
            container.remove(&key);
        }
    }
    Ok(())
}

fn remove(resource: &mut Value, target: &Target, value: Option<Value>) -> Result<(), ScimError> {
    let Some(container) = target.container(resource, false) else { return Ok(()) };
    let key = key_in(container, &target.attr);
    match (&target.filter, &target.sub) {
        (None, None) => {
            // Entra's `Remove members` with a value list removes only those.
            if let (Some(Value::Array(listed)), Some(Value::Array(items))) = (&value, container.get_mut(&key))
            {
                let ids: Vec<&Value> = listed.iter().filter_map(|v| get_ci(v, "value")).collect();
                items.retain(|e| !get_ci(e, "value").is_some_and(|v| ids.contains(&v)));
            } else {
                container.remove(&key);
            }
        }
        (None, Some(sub)) => {
            if let Some(obj) = container.get_mut(&key).and_then(Value::as_object_mut) {
                let k = key_in(obj, sub);
                obj.remove(&k);
            }
        }
        (Some(filter), sub) => match container.get_mut(&key) {
            Some(Value::Array(items)) => match sub {
                None => items.retain(|e| !filter.matches(e)),
                Some(sub) => {
                    for e in items.iter_mut().filter(|e| filter.matches(e)) {
                        if let Some(obj) = e.as_object_mut() {
                            let k = key_in(obj, sub);
                            obj.remove(&k);
                        }
                    }
                }
            },
            // `manager[value eq "x"]`: a filter on a single-valued attribute.
            Some(single @ Value::Object(_)) if filter.matches(single) => {
                container.remove(&key);
            }
            _ => {}
        },
    }
    // What is left empty is unassigned (RFC 7643 §2.5), and not shown.
    let emptied = match container.get(&key) {
        Some(Value::Array(items)) => items.is_empty(),
        Some(Value::Object(attrs)) => attrs.is_empty(),
        _ => false,
    };
    if emptied {
        container.remove(&key);
    }
    Ok(())
}

/// `active` is a boolean whatever form it came in.
pub fn normalise(resource: &mut Value) {
    if let Some(obj) = resource.as_object_mut() {
        let key = obj.keys().find(|k| k.eq_ignore_ascii_case("active")).cloned();
        if let Some(key) = key
            && let Some(Value::String(s)) = obj.get(&key)
        {
            let b = s.eq_ignore_ascii_case("true");
            obj.remove(&key);
            obj.insert("active".into(), Value::Bool(b));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn user() -> Value {
        json!({
            "id": "u1",
            "userName": "alice@example.com",
            "active": true,
            "name": { "givenName": "Alice", "familyName": "Liddell" },
            "emails": [{ "type": "work", "value": "alice@example.com", "primary": true }],
        })
    }

    fn patch(resource: &Value, ops: Value, is_user: bool) -> Value {
        apply(
            resource,
            &json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops }),
            is_user,
        )
        .unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn a_bracket_closed_before_it_opens_is_an_invalid_path() {
        // Found by the fuzz test: "][" sliced the path backwards and panicked.
        for path in ["][", "emails]x[", "a]b[c]"] {
            let ops = json!({ "Operations": [{ "op": "add", "path": path, "value": "x" }] });
            let refused = apply(&user(), &ops, true);
            assert!(
                matches!(&refused, Err(e) if e.scim_type == Some("invalidPath") || e.scim_type == Some("noTarget")),
                "{path}: {refused:?}"
            );
        }
    }

    #[test]
    fn okta_deactivation_and_entra_string_booleans() {
        assert_eq!(
            patch(&user(), json!([{ "op": "replace", "value": { "active": false } }]), true)["active"],
            false
        );
        assert_eq!(
            patch(&user(), json!([{ "op": "Replace", "path": "active", "value": "False" }]), true)["active"],
            false
        );
        let off = patch(&user(), json!([{ "op": "replace", "path": "active", "value": false }]), true);
        assert_eq!(
            patch(&off, json!([{ "op": "Replace", "path": "active", "value": "True" }]), true)["active"],
            true
        );
    }

    #[test]
    fn entra_dotted_and_urn_keys_are_paths() {
        let out = patch(
            &user(),
            json!([{ "op": "replace", "value": {
                "displayName": "Alice L.",
                "name.givenName": "Alicia",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber": "42"
            } }]),
            true,
        );
        assert_eq!(out["displayName"], "Alice L.");
        assert_eq!(out["name"]["givenName"], "Alicia");
        assert_eq!(out["name"]["familyName"], "Liddell");
        assert_eq!(out[ENTERPRISE_USER]["employeeNumber"], "42");
        assert!(out.get("name.givenName").is_none());
    }

    #[test]
    fn value_paths_update_or_create_entries() {
        let out = patch(
            &user(),
            json!([{ "op": "Replace", "path": "emails[type eq \"work\"].value", "value": "new@example.com" }]),
            true,
        );
        assert_eq!(out["emails"][0]["value"], "new@example.com");
        assert_eq!(out["emails"].as_array().unwrap().len(), 1);
        let bare = json!({ "id": "u2", "userName": "b" });
        let out = patch(
            &bare,
            json!([{ "op": "add", "path": "emails[type eq \"work\"].value", "value": "b@example.com" }]),
            true,
        );
        assert_eq!(out["emails"], json!([{ "type": "work", "value": "b@example.com" }]));
    }

    #[test]
    fn clearing_with_empty_or_null() {
        let with_title = patch(&user(), json!([{ "op": "add", "path": "title", "value": "CEO" }]), true);
        assert_eq!(with_title["title"], "CEO");
        assert!(
            patch(&with_title, json!([{ "op": "replace", "path": "title", "value": "" }]), true)
                .get("title")
                .is_none()
        );
        assert!(
            patch(&with_title, json!([{ "op": "replace", "path": "title", "value": null }]), true)
                .get("title")
                .is_none()
        );
        assert!(
            patch(&with_title, json!([{ "op": "remove", "path": "title" }]), true).get("title").is_none()
        );
    }

    #[test]
    fn manager_shapes() {
        let urn_path = format!("{ENTERPRISE_USER}:manager");
        for op in [
            json!({ "op": "Add", "path": "manager", "value": [{ "$ref": "../Users/m1", "value": "m1" }] }),
            json!({ "op": "add", "path": urn_path, "value": "m1" }),
        ] {
            let out = patch(&user(), json!([op]), true);
            assert_eq!(out[ENTERPRISE_USER]["manager"], json!({ "value": "m1" }));
        }
        let with = patch(&user(), json!([{ "op": "add", "path": "manager", "value": "m1" }]), true);
        let gone = patch(&with, json!([{ "op": "remove", "path": "manager[value eq \"m1\"]" }]), true);
        assert!(gone[ENTERPRISE_USER].get("manager").is_none());
        let gone = patch(&with, json!([{ "op": "Replace", "path": "manager", "value": "" }]), true);
        assert!(gone[ENTERPRISE_USER].get("manager").is_none());
    }

    #[test]
    fn group_membership_in_every_form() {
        let group = json!({ "id": "g1", "displayName": "Eng", "members": [] });
        let added = patch(
            &group,
            json!([{ "op": "add", "path": "members", "value": [{ "value": "u1", "display": "A", "$ref": null }, { "value": "u2" }, { "value": "u3" }] }]),
            false,
        );
        assert_eq!(added["members"].as_array().unwrap().len(), 3);
        assert!(added["members"][0].get("$ref").is_none());
        // Adding a member twice keeps one.
        let again =
            patch(&added, json!([{ "op": "add", "path": "members", "value": [{ "value": "u1" }] }]), false);
        assert_eq!(again["members"].as_array().unwrap().len(), 3);
        let okta = patch(&added, json!([{ "op": "remove", "path": "members[value eq \"u1\"]" }]), false);
        assert_eq!(okta["members"].as_array().unwrap().len(), 2);
        let entra = patch(
            &added,
            json!([{ "op": "Remove", "path": "members", "value": [{ "value": "u2" }] }]),
            false,
        );
        let ids: Vec<_> =
            entra["members"].as_array().unwrap().iter().map(|m| m["value"].as_str().unwrap()).collect();
        assert_eq!(ids, ["u1", "u3"], "only the listed member goes");
        let replaced = patch(
            &added,
            json!([{ "op": "replace", "path": "members", "value": [{ "value": "u9" }] }]),
            false,
        );
        assert_eq!(replaced["members"], json!([{ "value": "u9" }]));
        let all_gone = patch(&added, json!([{ "op": "remove", "path": "members" }]), false);
        assert!(all_gone.get("members").is_none());
        // Removing someone who is not a member succeeds.
        patch(&added, json!([{ "op": "remove", "path": "members[value eq \"nobody\"]" }]), false);
    }

    #[test]
    fn okta_group_rename_carries_the_read_only_id() {
        let group = json!({ "id": "g1", "displayName": "Eng", "members": [{ "value": "u1" }] });
        let out = patch(
            &group,
            json!([{ "op": "replace", "value": { "id": "g1", "displayName": "Engineering" } }]),
            false,
        );
        assert_eq!(out["displayName"], "Engineering");
        assert_eq!(out["members"], json!([{ "value": "u1" }]), "a replace without members keeps them");
        let err =
            apply(&group, &json!({ "Operations": [{ "op": "replace", "value": { "id": "other" } }] }), false)
                .unwrap_err();
        assert_eq!(err.scim_type, Some("mutability"));
    }

    #[test]
    fn nested_json_values_are_unwrapped() {
        let out = patch(
            &user(),
            json!([{ "op": "add", "path": "roles", "value": [{ "value": "{\"id\":\"r1\",\"value\":\"Admin\",\"displayName\":\"Admin\"}" }] }]),
            true,
        );
        assert_eq!(out["roles"], json!([{ "id": "r1", "value": "Admin", "displayName": "Admin" }]));
    }

    #[test]
    fn the_number_of_operations_is_bounded() {
        let op = json!({ "op": "replace", "path": "title", "value": "x" });
        let ok = json!({ "Operations": vec![op.clone(); MAX_OPERATIONS] });
        assert_eq!(apply(&user(), &ok, true).unwrap()["title"], "x");
        let too_many = json!({ "Operations": vec![op; MAX_OPERATIONS + 1] });
        assert_eq!(apply(&user(), &too_many, true).unwrap_err().scim_type, Some("invalidValue"));
    }

    #[test]
    fn bad_operations_change_nothing() {
        for body in [
            json!({}),
            json!({ "Operations": [{ "op": "move", "path": "title", "value": "x" }] }),
            json!({ "Operations": [{ "op": "add", "path": "title" }] }),
            json!({ "Operations": [{ "op": "add", "value": "not an object" }] }),
            json!({ "Operations": [{ "op": "replace", "path": "emails[type eq", "value": "x" }] }),
            json!({ "Operations": [{ "op": "replace", "path": "title", "value": "ok" }, { "op": "bogus" }] }),
        ] {
            assert!(apply(&user(), &body, true).is_err(), "{body}");
        }
    }

    #[test]
    fn read_only_and_required_attributes_refuse_what_the_rfc_refuses() {
        let user = json!({ "id": "u1", "userName": "a", "active": true, "title": "Eng",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": { "department": "R&D", "costCenter": "7" } });
        let ops = |ops: Value| json!({ "Operations": ops });
        let refused = |ops_: Value| apply(&user, &ops(ops_), true).unwrap_err().scim_type;
        for op in [
            json!([{ "op": "replace", "path": "id", "value": "u2" }]),
            json!([{ "op": "remove", "path": "id" }]),
            json!([{ "op": "replace", "path": "meta.created", "value": "2020-01-01T00:00:00Z" }]),
            json!([{ "op": "add", "path": "groups", "value": [{ "value": "g1" }] }]),
            json!([{ "op": "remove", "path": "userName" }]),
            json!([{ "op": "replace", "path": "userName", "value": "" }]),
            json!([{ "op": "remove", "path": "active" }]),
            json!([{ "op": "replace", "path": "active", "value": null }]),
            json!([{ "op": "replace", "value": { "active": null } }]),
        ] {
            assert_eq!(refused(op.clone()), Some("mutability"), "{op}");
        }
        // Repeating a read-only value is no change.
        let same =
            apply(&user, &ops(json!([{ "op": "replace", "path": "id", "value": "u1" }])), true).unwrap();
        assert_eq!(same["id"], "u1");
        let group = json!({ "id": "g1", "displayName": "Eng" });
        let err = apply(&group, &ops(json!([{ "op": "remove", "path": "displayName" }])), false).unwrap_err();
        assert_eq!(err.scim_type, Some("mutability"));
        // Optional attributes go, an extension's attributes and the
        // extension whole included.
        let ext = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
        let out = apply(&user, &ops(json!([{ "op": "remove", "path": "title" }, { "op": "remove", "path": format!("{ext}:department") }])), true).unwrap();
        assert!(out.get("title").is_none());
        assert_eq!(out[ext], json!({ "costCenter": "7" }));
        let out = apply(&user, &ops(json!([{ "op": "remove", "path": ext }])), true).unwrap();
        assert!(out.get(ext).is_none(), "{out}");
        let out = apply(
            &user,
            &ops(json!([{ "op": "replace", "path": ext, "value": { "division": "North" } }])),
            true,
        )
        .unwrap();
        assert_eq!(out[ext], json!({ "division": "North" }), "replace whole");
        let out =
            apply(&user, &ops(json!([{ "op": "add", "path": ext, "value": { "division": "North" } }])), true)
                .unwrap();
        assert_eq!(
            out[ext],
            json!({ "department": "R&D", "costCenter": "7", "division": "North" }),
            "add merges"
        );
        let err = apply(&user, &ops(json!([{ "op": "add", "path": ext, "value": "x" }])), true).unwrap_err();
        assert_eq!(err.scim_type, Some("invalidValue"));
    }
}
