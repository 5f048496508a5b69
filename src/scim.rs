//! SCIM users as platform users: the mapping both ways.
//!
//! A platform user's SCIM resource is what the IdP last wrote (so extension
//! and custom attributes survive), overlaid with what the platform owns: id,
//! userName, active, externalId, displayName, emails, meta.

use chrono::{DateTime, SecondsFormat, Utc};
use gatehouse_core::{Email, User, UserId};
use gatehouse_scim::ScimError;
use gatehouse_scim::filter::{AttrPath, CompareOp, Filter, boolean, get_ci, instant, is_instant};
use gatehouse_store::{
    EmailCondition, EmailField, TextOp, TimeColumn, TimeOp, UserColumn, UserCondition, UserSort, UserSortKey,
};
use serde_json::{Map, Value, json};

pub(crate) const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// At most this many operations in one bulk request.
pub(crate) const BULK_MAX_OPERATIONS: usize = 1000;
/// At most this many bytes in one bulk request.
pub(crate) const BULK_MAX_PAYLOAD: usize = 1024 * 1024;
pub(crate) const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";

/// At most this many emails per user: each is a row of the store's email
/// index, so a body of a thousand empty entries must not become a thousand
/// rows.
const MAX_EMAILS: usize = 50;

/// Attributes the platform owns (or must never keep: a password); never
/// kept in the stored resource.
const OWNED: [&str; 6] = ["id", "meta", "schemas", "password", "groups", "active"];

/// What a create, replace or patch says about the platform user.
pub(crate) struct UserFields {
    pub(crate) user_name: String,
    /// `None` when neither emails nor the userName hold an address: SCIM
    /// requires only a userName.
    pub(crate) email: Option<Email>,
    pub(crate) display_name: String,
    pub(crate) external_id: Option<String>,
    pub(crate) active: bool,
    /// The resource to keep, without the attributes the platform owns (and
    /// never a password: Okta sends one, and it is dropped).
    pub(crate) stored: String,
}

fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
}

/// Reads a User resource (a POST or PUT body, or a patched resource).
pub(crate) fn user_fields(resource: &Value) -> Result<UserFields, ScimError> {
    if !resource.is_object() {
        return Err(ScimError::invalid_syntax("the body must be a JSON object"));
    }
    let user_name =
        text(get_ci(resource, "userName")).ok_or_else(|| ScimError::invalid_value("userName is required"))?;
    if user_name.chars().count() > 254 || user_name.chars().any(char::is_control) {
        return Err(ScimError::invalid_value(
            "userName must be at most 254 characters, without control characters",
        ));
    }
    // The platform email: the primary email, else the work one, else the
    // first, else the userName when it is an email address.
    let emails: Vec<&Value> = match get_ci(resource, "emails") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) if list.len() <= MAX_EMAILS => list.iter().collect(),
        Some(Value::Array(_)) => {
            return Err(ScimError::invalid_value(format!("emails has at most {MAX_EMAILS} entries")));
        }
        Some(_) => return Err(ScimError::invalid_value("emails must be a list")),
    };
    // RFC 7643 §4.1.2's shape, so that what is stored is what filters on
    // emails compare (the store indexes value, type and primary).
    for entry in &emails {
        let shape_ok = entry.is_object()
            && ["value", "type", "display"]
                .iter()
                .all(|k| get_ci(entry, k).is_none_or(|v| v.is_string() || v.is_null()))
            && get_ci(entry, "primary").is_none_or(|v| v.is_null() || boolean(v).is_some());
        if !shape_ok {
            return Err(ScimError::invalid_value(
                "each of emails must be an object whose value, type and display are strings and primary a boolean",
            ));
        }
    }
    let pick = emails
        .iter()
        .find(|e| get_ci(e, "primary").and_then(boolean) == Some(true))
        .or_else(|| {
            emails.iter().find(|e| {
                get_ci(e, "type").and_then(Value::as_str).is_some_and(|t| t.eq_ignore_ascii_case("work"))
            })
        })
        .or_else(|| emails.first())
        .and_then(|e| text(get_ci(e, "value")));
    let email = match pick {
        Some(e) => {
            Some(Email::parse(&e).map_err(|err| ScimError::invalid_value(format!("emails: {e:?} {err}")))?)
        }
        None => Email::parse(&user_name).ok(),
    };
    let active = match get_ci(resource, "active") {
        None | Some(Value::Null) => true,
        Some(v) => boolean(v)
            .ok_or_else(|| ScimError::invalid_value(format!("active must be a boolean, not {v}")))?,
    };
    let name = get_ci(resource, "name");
    let display_name = text(get_ci(resource, "displayName"))
        .or_else(|| text(name.and_then(|n| get_ci(n, "formatted"))))
        .or_else(|| {
            let parts: Vec<String> = ["givenName", "familyName"]
                .iter()
                .filter_map(|k| text(name.and_then(|n| get_ci(n, k))))
                .collect();
            (!parts.is_empty()).then(|| parts.join(" "))
        })
        .unwrap_or_default();
    let external_id = text(get_ci(resource, "externalId"));
    let mut stored = resource.as_object().cloned().unwrap_or_default();
    stored.retain(|k, v| !OWNED.iter().any(|o| k.eq_ignore_ascii_case(o)) && !v.is_null());
    Ok(UserFields {
        user_name,
        email,
        display_name: display_name.chars().take(200).collect(),
        external_id,
        active,
        stored: Value::Object(stored).to_string(),
    })
}

/// The attributes an IdP wrote, as kept (`None` or unreadable: none).
fn stored_attributes(stored: Option<&str>) -> Map<String, Value> {
    match stored.map(serde_json::from_str::<Value>) {
        Some(Ok(Value::Object(map))) => map,
        _ => Map::new(),
    }
}

pub(crate) fn etag(version: i64) -> String {
    format!("W/\"{version}\"")
}

fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The SCIM view of a platform user.
pub(crate) fn user_resource(user: &User, base: &str) -> Value {
    let mut map = stored_attributes(user.scim_resource.as_deref());
    let mut schemas = vec![Value::from(USER_SCHEMA)];
    for k in map.keys() {
        if k.to_ascii_lowercase().starts_with("urn:") && map[k].is_object() {
            schemas.push(Value::from(k.clone()));
        }
    }
    let set = |map: &mut Map<String, Value>, key: &str, value: Value| {
        let existing = map.keys().find(|k| k.eq_ignore_ascii_case(key)).cloned();
        if let Some(k) = existing {
            map.remove(&k);
        }
        map.insert(key.to_owned(), value);
    };
    set(&mut map, "schemas", Value::Array(schemas));
    set(&mut map, "id", user.id.to_string().into());
    set(&mut map, "userName", user.scim_user_name().into());
    set(&mut map, "active", user.active.into());
    match &user.external_id {
        Some(e) => set(&mut map, "externalId", e.clone().into()),
        None => set(&mut map, "externalId", Value::Null),
    }
    // The display name the platform keeps, or none: never a stored one
    // the platform read as blank, so that filters see what the database
    // compares.
    if user.display_name.is_empty() {
        map.retain(|k, _| !k.eq_ignore_ascii_case("displayName"));
    } else {
        set(&mut map, "displayName", user.display_name.clone().into());
    }
    // Exactly the emails the store indexes for filters.
    let emails = user.scim_emails_in(Some(&map));
    map.retain(|k, _| !k.eq_ignore_ascii_case("emails"));
    if !emails.is_empty() {
        map.insert("emails".into(), Value::Array(emails));
    }
    set(
        &mut map,
        "meta",
        json!({
            "resourceType": "User",
            "created": timestamp(user.created_at),
            "lastModified": timestamp(user.updated_at),
            "location": format!("{base}/Users/{}", user.id),
            "version": etag(user.version),
        }),
    );
    map.retain(|_, v| !v.is_null());
    Value::Object(map)
}

/// Attributes returned whatever `attributes` and `excludedAttributes` say
/// (RFC 7643 `returned: always`; `schemas` and `meta` describe the
/// resource itself).
const ALWAYS: [&str; 3] = ["id", "schemas", "meta"];

/// One name in `attributes` or `excludedAttributes`: an attribute of the
/// core schema or of an extension (the key of its object in the resource),
/// with or without a sub-attribute. Names compare without case.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Projected {
    /// The extension's key in the resource, for an extension attribute.
    extension: Option<String>,
    /// `None` with an extension: the whole extension.
    attr: Option<String>,
    sub: Option<String>,
}

fn key_ci<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a String> {
    object.keys().find(|k| k.eq_ignore_ascii_case(name))
}

/// Reads one name; `None` for an empty one.
fn projected(resource: &Map<String, Value>, name: &str) -> Option<Projected> {
    let name = name.trim();
    if name.is_empty() {
        return None;
    }
    let split = |path: &str| -> (Option<String>, Option<String>) {
        let (attr, sub) = match path.split_once('.') {
            Some((a, s)) => (a, Some(s.to_owned())),
            None => (path, None),
        };
        ((!attr.is_empty()).then(|| attr.to_owned()), sub)
    };
    if name.len() > 4 && name[..4].eq_ignore_ascii_case("urn:") {
        // An extension present in the resource, whole or an attribute of it.
        let lower = name.to_ascii_lowercase();
        for key in resource.keys().filter(|k| k.starts_with("urn:")) {
            let key_lower = key.to_ascii_lowercase();
            if lower == key_lower {
                return Some(Projected { extension: Some(key.clone()), attr: None, sub: None });
            }
            if let Some(rest) = lower.strip_prefix(&format!("{key_lower}:")) {
                let (attr, sub) = split(&name[name.len() - rest.len()..]);
                return Some(Projected { extension: Some(key.clone()), attr, sub });
            }
        }
        // The core schemas' URN before a core attribute; any other URN
        // names nothing this resource has.
        let core = [USER_SCHEMA, GROUP_SCHEMA].iter().find_map(|u| {
            lower
                .strip_prefix(&format!("{}:", u.to_ascii_lowercase()))
                .map(|rest| &name[name.len() - rest.len()..])
        })?;
        let (attr, sub) = split(core);
        return Some(Projected { extension: None, attr, sub });
    }
    let (attr, sub) = split(name);
    Some(Projected { extension: None, attr, sub })
}

/// Keeps only `sub` of a complex value, or of each entry of a multi-valued
/// one.
fn only_sub(value: &Value, sub: &str) -> Option<Value> {
    let keep = |v: &Value| -> Option<Value> {
        let object = v.as_object()?;
        let key = key_ci(object, sub)?;
        Some(Value::Object(Map::from_iter([(key.clone(), object[key].clone())])))
    };
    match value {
        Value::Array(items) => {
            let kept: Vec<Value> = items.iter().filter_map(keep).collect();
            (!kept.is_empty()).then_some(Value::Array(kept))
        }
        other => keep(other),
    }
}

/// Removes `sub` from a complex value, or from each entry of a multi-valued
/// one.
fn drop_sub(value: &mut Value, sub: &str) {
    let drop = |v: &mut Value| {
        if let Some(object) = v.as_object_mut()
            && let Some(key) = key_ci(object, sub).cloned()
        {
            object.remove(&key);
        }
    };
    match value {
        Value::Array(items) => items.iter_mut().for_each(drop),
        other => drop(other),
    }
}

/// Merges `add` into `into` (objects key by key; otherwise `add` wins).
fn merge(into: &mut Value, add: Value) {
    match (into, add) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (x, y) in a.iter_mut().zip(b) {
                merge(x, y);
            }
        }
        (slot, add) => *slot = add,
    }
}

/// Applies `attributes` / `excludedAttributes` (RFC 7644 §3.4.2.5): names
/// of core or extension attributes, with or without a sub-attribute
/// (`name.givenName`, `emails.value`,
/// `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager`).
/// `id`, `schemas` and `meta` always stay; a name the resource does not
/// have is ignored.
pub(crate) fn project(resource: Value, attributes: Option<&str>, excluded: Option<&str>) -> Value {
    let Value::Object(object) = resource else { return resource };
    let names = |list: Option<&str>| -> Vec<Projected> {
        list.map(|l| l.split(',').filter_map(|n| projected(&object, n)).collect()).unwrap_or_default()
    };
    let (wanted, unwanted) = (names(attributes), names(excluded));
    let mut out = if wanted.is_empty() {
        object.clone()
    } else {
        let mut kept = Map::new();
        for key in object.keys().filter(|k| ALWAYS.iter().any(|a| k.eq_ignore_ascii_case(a))) {
            kept.insert(key.clone(), object[key].clone());
        }
        for p in &wanted {
            let (container, source): (Option<&String>, &Map<String, Value>) = match &p.extension {
                Some(ext) => match object.get(ext).and_then(Value::as_object) {
                    Some(inner) => (Some(ext), inner),
                    None => continue,
                },
                None => (None, &object),
            };
            let picked = match (&p.attr, &p.sub) {
                (None, _) => Some(Value::Object(source.clone())),
                (Some(attr), sub) => key_ci(source, attr).and_then(|key| {
                    let value = match sub {
                        Some(sub) => only_sub(&source[key], sub)?,
                        None => source[key].clone(),
                    };
                    Some(Value::Object(Map::from_iter([(key.clone(), value)])))
                }),
            };
            let Some(picked) = picked else { continue };
            match container {
                Some(ext) => {
                    merge(kept.entry(ext.clone()).or_insert_with(|| Value::Object(Map::new())), picked)
                }
                None => {
                    let mut whole = Value::Object(std::mem::take(&mut kept));
                    merge(&mut whole, picked);
                    if let Value::Object(map) = whole {
                        kept = map;
                    }
                }
            }
        }
        kept
    };
    for p in &unwanted {
        let target = match &p.extension {
            Some(ext) => match (&p.attr, out.get_mut(ext)) {
                (None, _) => {
                    out.remove(ext);
                    continue;
                }
                (Some(_), Some(Value::Object(inner))) => inner,
                _ => continue,
            },
            None => &mut out,
        };
        let Some(attr) = &p.attr else { continue };
        if p.extension.is_none() && p.sub.is_none() && ALWAYS.iter().any(|a| a.eq_ignore_ascii_case(attr)) {
            continue;
        }
        let Some(key) = key_ci(target, attr).cloned() else { continue };
        match &p.sub {
            None => {
                target.remove(&key);
            }
            Some(sub) => {
                if let Some(value) = target.get_mut(&key) {
                    drop_sub(value, sub);
                }
            }
        }
    }
    Value::Object(out)
}

/// Where a page of a list stands: at a 1-based index (RFC 7644
/// §3.4.2.4), or, paged by cursor (RFC 9865), before the cursor of the next
/// page, which the last page does not have.
pub(crate) enum Position {
    Index(usize),
    Cursor { next: Option<String> },
}

/// A ListResponse page.
pub(crate) fn list_response(total: usize, position: Position, resources: Vec<Value>) -> Value {
    let mut list = json!({
        "schemas": [LIST_SCHEMA],
        "totalResults": total,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    });
    match position {
        Position::Index(start_index) => list["startIndex"] = start_index.into(),
        Position::Cursor { next: Some(cursor) } => list["nextCursor"] = cursor.into(),
        Position::Cursor { next: None } => {}
    }
    list
}

/// Resources in a page when the request does not say (`count`).
pub(crate) const DEFAULT_PAGE_SIZE: usize = 100;
/// The most resources in a page, whatever `count` asks.
pub(crate) const MAX_PAGE_SIZE: usize = 1000;

pub(crate) fn service_provider_config(base: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "documentationUri": format!("{base}/ServiceProviderConfig"),
        "patch": { "supported": true },
        "bulk": {
            "supported": true,
            "maxOperations": BULK_MAX_OPERATIONS,
            "maxPayloadSize": BULK_MAX_PAYLOAD,
        },
        "filter": { "supported": true, "maxResults": MAX_PAGE_SIZE },
        "changePassword": { "supported": false },
        "sort": { "supported": true },
        // RFC 9865. A cursor is the last id of a page: it never expires,
        // and no state is kept for it.
        "pagination": {
            "cursor": true,
            "index": true,
            "defaultPaginationMethod": "index",
            "defaultPageSize": DEFAULT_PAGE_SIZE,
            "maxPageSize": MAX_PAGE_SIZE,
        },
        "etag": { "supported": true },
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "Bearer token",
            "description": "A SCIM token minted for the organization under /admin/v1/orgs/{org_id}/scim-tokens",
            "primary": true
        }],
        "meta": { "resourceType": "ServiceProviderConfig", "location": format!("{base}/ServiceProviderConfig") }
    })
}

pub(crate) fn resource_types(base: &str) -> Vec<Value> {
    vec![
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": "User",
            "name": "User",
            "endpoint": "/Users",
            "schema": USER_SCHEMA,
            "schemaExtensions": [{ "schema": gatehouse_scim::patch::ENTERPRISE_USER, "required": false }],
            "meta": { "resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/User") }
        }),
        group_resource_type(base),
    ]
}

/// An attribute's definition (RFC 7643 §7) with the common
/// characteristics: single-valued, optional, case-insensitive, read-write,
/// returned by default, not unique. `with` overrides them.
fn attribute(name: &str, kind: &str, description: &str) -> Value {
    json!({
        "name": name,
        "type": kind,
        "multiValued": false,
        "description": description,
        "required": false,
        "caseExact": false,
        "mutability": "readWrite",
        "returned": "default",
        "uniqueness": "none",
    })
}

fn with(mut attribute: Value, overrides: Value) -> Value {
    if let (Some(a), Value::Object(o)) = (attribute.as_object_mut(), overrides) {
        a.extend(o);
    }
    attribute
}

fn string(name: &str) -> Value {
    attribute(name, "string", "Kept as the identity provider wrote it.")
}

fn complex(name: &str, multi: bool, description: &str, sub: Vec<Value>) -> Value {
    with(attribute(name, "complex", description), json!({ "multiValued": multi, "subAttributes": sub }))
}

/// `id`, as every resource has it: assigned by the server, never changed,
/// always returned.
fn id_attribute() -> Value {
    with(
        attribute("id", "string", "Assigned by Gatehouse; a PATCH may repeat it, never change it."),
        json!({ "caseExact": true, "mutability": "readOnly", "returned": "always", "uniqueness": "server" }),
    )
}

fn external_id_attribute(description: &str) -> Value {
    with(attribute("externalId", "string", description), json!({ "caseExact": true }))
}

/// Typed, primary-flagged multi-valued entries (emails, phone numbers…).
fn typed(name: &str, description: &str, types: &[&str]) -> Value {
    complex(
        name,
        true,
        description,
        vec![
            string("value"),
            string("display"),
            with(string("type"), json!({ "canonicalValues": types })),
            attribute("primary", "boolean", "At most one entry is primary."),
        ],
    )
}

/// The schemas this server implements, with the characteristics it
/// enforces: what is read-only is ignored in a PUT and refused in a PATCH
/// unless repeated unchanged, what is write-only is never returned, what
/// is unique is refused twice with `uniqueness`.
pub(crate) fn schemas(base: &str) -> Vec<Value> {
    let user = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
        "id": USER_SCHEMA,
        "name": "User",
        "description": "A platform user",
        "attributes": [
            id_attribute(),
            external_id_attribute("The identity provider's identifier for the user; a connection may match sign-ins by it."),
            with(
                attribute("userName", "string", "Unique in the organization, whatever its case."),
                json!({ "required": true, "uniqueness": "server" }),
            ),
            complex("name", false, "Kept as written.", ["formatted", "familyName", "givenName", "middleName", "honorificPrefix", "honorificSuffix"].into_iter().map(string).collect()),
            attribute("displayName", "string", "The user's name as shown; from name when absent."),
            string("nickName"),
            with(attribute("profileUrl", "reference", "Kept as written."), json!({ "referenceTypes": ["external"] })),
            string("title"), string("userType"), string("preferredLanguage"), string("locale"), string("timezone"),
            attribute("active", "boolean", "false deactivates the user and ends their sessions at once. It cannot be removed: replace it with true or false."),
            with(
                attribute("password", "string", "Accepted and discarded: provisioned users sign in through their identity provider."),
                json!({ "mutability": "writeOnly", "returned": "never" }),
            ),
            typed("emails", "The primary address (else the work one, else the first; else a userName that is an address) is the one the user signs in with.", &["work", "home", "other"]),
            typed("phoneNumbers", "Kept as written.", &["work", "home", "mobile", "fax", "pager", "other"]),
            complex("addresses", true, "Kept as written.", ["formatted", "streetAddress", "locality", "region", "postalCode", "country", "type"].into_iter().map(string).chain([attribute("primary", "boolean", "")]).collect()),
            typed("roles", "Kept as written.", &[]),
            typed("entitlements", "Kept as written.", &[]),
        ],
        "meta": { "resourceType": "Schema", "location": format!("{base}/Schemas/{USER_SCHEMA}") }
    });
    let enterprise = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
        "id": gatehouse_scim::patch::ENTERPRISE_USER,
        "name": "EnterpriseUser",
        "description": "Enterprise User",
        "attributes": [
            string("employeeNumber"), string("costCenter"), string("organization"), string("division"), string("department"),
            complex("manager", false, "The user's manager: an id, as Entra and Okta send it.", vec![
                string("value"),
                with(attribute("$ref", "reference", "The manager's URI."), json!({ "referenceTypes": ["User"] })),
                with(string("displayName"), json!({ "mutability": "readOnly" })),
            ]),
        ],
        "meta": { "resourceType": "Schema", "location": format!("{base}/Schemas/{}", gatehouse_scim::patch::ENTERPRISE_USER) }
    });
    vec![user, enterprise, group_schema(base)]
}

pub(crate) const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";

/// The SCIM view of a group.
pub(crate) fn group_resource(group: &gatehouse_store::Group, base: &str) -> Value {
    let mut map = stored_attributes(group.scim_resource.as_deref());
    map.insert("schemas".into(), json!([GROUP_SCHEMA]));
    map.insert("id".into(), group.id.clone().into());
    map.insert("displayName".into(), group.display_name.clone().into());
    if let Some(e) = &group.external_id {
        map.insert("externalId".into(), e.clone().into());
    }
    let members: Vec<Value> = group
        .members
        .iter()
        .map(|(id, display)| {
            let mut m =
                json!({ "value": id.to_string(), "$ref": format!("{base}/Users/{id}"), "type": "User" });
            if !display.is_empty() {
                m["display"] = display.clone().into();
            }
            m
        })
        .collect();
    map.insert("members".into(), Value::Array(members));
    map.insert(
        "meta".into(),
        json!({
            "resourceType": "Group",
            "created": timestamp(group.created_at),
            "lastModified": timestamp(group.updated_at),
            "location": format!("{base}/Groups/{}", group.id),
            "version": etag(group.version),
        }),
    );
    Value::Object(map)
}

/// Reads a Group resource (a POST or PUT body, or a patched group).
pub(crate) fn group_fields(resource: &Value) -> Result<gatehouse_store::GroupState, ScimError> {
    if !resource.is_object() {
        return Err(ScimError::invalid_syntax("the body must be a JSON object"));
    }
    let display_name = text(get_ci(resource, "displayName"))
        .ok_or_else(|| ScimError::invalid_value("displayName is required"))?;
    if display_name.chars().count() > 256 || display_name.chars().any(char::is_control) {
        return Err(ScimError::invalid_value(
            "displayName must be at most 256 characters, without control characters",
        ));
    }
    let mut members = Vec::new();
    for m in get_ci(resource, "members").and_then(Value::as_array).into_iter().flatten() {
        let value =
            text(get_ci(m, "value")).ok_or_else(|| ScimError::invalid_value("every member needs a value"))?;
        members.push(
            value
                .parse()
                .map_err(|_| ScimError::invalid_value(format!("member {value:?} is not a user id")))?,
        );
    }
    let mut stored = resource.as_object().cloned().unwrap_or_default();
    stored.retain(|k, v| {
        !["id", "meta", "schemas", "members", "displayName", "externalId"]
            .iter()
            .any(|o| k.eq_ignore_ascii_case(o))
            && !v.is_null()
    });
    Ok(gatehouse_store::GroupState {
        display_name,
        external_id: text(get_ci(resource, "externalId")),
        scim_resource: (!stored.is_empty()).then(|| Value::Object(stored).to_string()),
        members,
    })
}

pub(crate) fn group_resource_type(base: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
        "id": "Group",
        "name": "Group",
        "endpoint": "/Groups",
        "schema": GROUP_SCHEMA,
        "meta": { "resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/Group") }
    })
}

pub(crate) fn group_schema(base: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
        "id": GROUP_SCHEMA,
        "name": "Group",
        "description": "A group of platform users",
        "attributes": [
            id_attribute(),
            external_id_attribute("The identity provider's identifier for the group."),
            with(
                attribute("displayName", "string", "Unique in the organization, whatever its case; the name access tokens carry."),
                json!({ "required": true, "uniqueness": "server" }),
            ),
            complex("members", true, "Users of the organization only.", vec![
                with(attribute("value", "string", "A user's id."), json!({ "caseExact": true, "mutability": "immutable", "required": true })),
                with(attribute("$ref", "reference", "The user's URI."), json!({ "referenceTypes": ["User"], "mutability": "immutable" })),
                with(string("display"), json!({ "mutability": "readOnly", "description": "The user's displayName." })),
                with(string("type"), json!({ "mutability": "immutable", "canonicalValues": ["User"] })),
            ]),
        ],
        "meta": { "resourceType": "Schema", "location": format!("{base}/Schemas/{GROUP_SCHEMA}") }
    })
}

/// A PATCH that only adds and removes group members, in the shapes Okta
/// and Entra send (`add` with path `members` and a list; `remove` with
/// path `members` and a list, or with path `members[value eq "id"]`): the
/// user ids added and removed. `None` for any other PATCH, which is applied
/// to the whole group instead.
pub(crate) fn member_changes(patch: &Value) -> Option<(Vec<UserId>, Vec<UserId>)> {
    let ops = get_ci(patch, "Operations")?.as_array()?;
    if ops.is_empty() || ops.len() > gatehouse_scim::patch::MAX_OPERATIONS {
        return None;
    }
    let ids = |value: Option<&Value>| -> Option<Vec<UserId>> {
        value?.as_array()?.iter().map(|m| get_ci(m, "value")?.as_str()?.parse().ok()).collect()
    };
    let (mut add, mut remove) = (Vec::new(), Vec::new());
    for op in ops {
        let kind = get_ci(op, "op")?.as_str()?.to_ascii_lowercase();
        let path = get_ci(op, "path")?.as_str()?.trim();
        let value = get_ci(op, "value");
        match (kind.as_str(), path.eq_ignore_ascii_case("members")) {
            ("add", true) => add.extend(ids(value)?),
            ("remove", true) => remove.extend(ids(value)?),
            ("remove", false) => {
                let inner = path.get(..8).filter(|p| p.eq_ignore_ascii_case("members["))?;
                let inner = path[inner.len()..].strip_suffix(']')?;
                let filter = gatehouse_scim::filter::parse(inner).ok()?;
                remove.push(filter.as_value_eq()?.parse().ok()?);
            }
            _ => return None,
        }
    }
    // A member both added and removed in one PATCH: the operations' order
    // decides, which the whole-group path honours.
    if add.iter().any(|a| remove.contains(a)) {
        return None;
    }
    Some((add, remove))
}

/// Whether a projection shows a group's members: not when
/// `excludedAttributes` names them (how Entra reads big groups), nor when
/// `attributes` lists others only. Members not shown need not be read.
pub(crate) fn shows_members(attributes: Option<&str>, excluded: Option<&str>) -> bool {
    let names = |list: Option<&str>| {
        list.is_some_and(|l| {
            l.split(',').any(|a| {
                a.trim().eq_ignore_ascii_case("members")
                    || a.trim().to_ascii_lowercase().starts_with("members.")
            })
        })
    };
    match (attributes.map(str::trim).filter(|a| !a.is_empty()), excluded) {
        (Some(_), _) => names(attributes),
        (None, excluded) => !names(excluded),
    }
}

/// The attributes [`user_condition`] hands to the database, in words.
pub(crate) const DATABASE_ATTRIBUTES: &str = "userName, externalId, id, displayName, active, meta.created, \
     meta.lastModified and emails (value, type and primary, also in brackets)";

/// The user filter as a condition the database evaluates, when every
/// comparison in it is on a column (userName, externalId, id, displayName,
/// active, the meta instants) or on emails (through the store's email index), with the in-memory matcher's
/// exact meaning; `None` otherwise (other attributes, other value paths),
/// and the filter is evaluated on each user instead.
pub(crate) fn user_condition(filter: &Filter) -> Option<UserCondition> {
    enum Col {
        Text(UserColumn),
        Active,
    }
    let column = |path: &AttrPath| -> Option<Col> {
        if !is_core(path) || path.sub.is_some() {
            return None;
        }
        match path.attr.as_str() {
            "username" => Some(Col::Text(UserColumn::UserName)),
            "externalid" => Some(Col::Text(UserColumn::ExternalId)),
            "id" => Some(Col::Text(UserColumn::Id)),
            "displayname" => Some(Col::Text(UserColumn::DisplayName)),
            "active" => Some(Col::Active),
            _ => None,
        }
    };
    if let Some(condition) = email_condition(filter) {
        return Some(condition);
    }
    if let Filter::Compare { path, op, value } = filter
        && is_instant(path)
    {
        // In time; `co`, `sw` and `ew` look at the text, user by user.
        let op = match op {
            CompareOp::Eq => TimeOp::Eq,
            CompareOp::Ne => TimeOp::Ne,
            CompareOp::Gt => TimeOp::Gt,
            CompareOp::Ge => TimeOp::Ge,
            CompareOp::Lt => TimeOp::Lt,
            CompareOp::Le => TimeOp::Le,
            CompareOp::Co | CompareOp::Sw | CompareOp::Ew => return None,
        };
        let column =
            if path.sub.as_deref() == Some("created") { TimeColumn::Created } else { TimeColumn::Modified };
        return Some(UserCondition::Time { column, op, at: instant(value)? });
    }
    if let Filter::Present(path) = filter
        && is_instant(path)
    {
        // Every user has both.
        return Some(UserCondition::Present(UserColumn::Id));
    }
    Some(match filter {
        Filter::Compare { path, op, value } => match (column(path)?, value) {
            (Col::Active, value) => {
                let wanted = boolean(value)?;
                match op {
                    CompareOp::Eq => UserCondition::Active(wanted),
                    CompareOp::Ne => UserCondition::Active(!wanted),
                    _ => return None,
                }
            }
            (Col::Text(column), Value::String(text)) => {
                let op = text_op(*op);
                // id compares exactly, and only for (in)equality here.
                let value = match column {
                    UserColumn::Id if matches!(op, TextOp::Eq | TextOp::Ne) => text.clone(),
                    UserColumn::Id => return None,
                    _ => text.to_lowercase(),
                };
                UserCondition::Text { column, op, value }
            }
            _ => return None,
        },
        Filter::Present(path) => match column(path)? {
            Col::Text(column) => UserCondition::Present(column),
            Col::Active => return None,
        },
        Filter::And(a, b) => UserCondition::And(Box::new(user_condition(a)?), Box::new(user_condition(b)?)),
        Filter::Or(a, b) => UserCondition::Or(Box::new(user_condition(a)?), Box::new(user_condition(b)?)),
        Filter::Not(a) => UserCondition::Not(Box::new(user_condition(a)?)),
        Filter::ValuePath { .. } => return None,
    })
}

fn is_core(path: &AttrPath) -> bool {
    path.urn.as_deref().is_none_or(|u| u == USER_SCHEMA.to_ascii_lowercase())
}

fn text_op(op: CompareOp) -> TextOp {
    match op {
        CompareOp::Eq => TextOp::Eq,
        CompareOp::Ne => TextOp::Ne,
        CompareOp::Co => TextOp::Co,
        CompareOp::Sw => TextOp::Sw,
        CompareOp::Ew => TextOp::Ew,
        CompareOp::Gt => TextOp::Gt,
        CompareOp::Ge => TextOp::Ge,
        CompareOp::Lt => TextOp::Lt,
        CompareOp::Le => TextOp::Le,
    }
}

/// A filter on the user's emails (`emails[…]`, `emails.value op …`) as a
/// condition on the email index, with the matcher's meaning: a bracket
/// holds if some entry meets its filter; `emails.x op v` if some entry's x
/// does, except `ne`, which holds if no entry's x equals v.
fn email_condition(filter: &Filter) -> Option<UserCondition> {
    let is_emails = |path: &AttrPath| is_core(path) && path.attr == "emails";
    match filter {
        Filter::ValuePath { attr, filter } if is_emails(attr) && attr.sub.is_none() => {
            Some(UserCondition::AnyEmail(entry_condition(filter)?))
        }
        Filter::Compare { path, op, value } if is_emails(path) => {
            let sub = path.sub.as_deref()?;
            let entry =
                |op| entry_condition(&Filter::Compare { path: sub_path(sub), op, value: value.clone() });
            Some(match op {
                CompareOp::Ne => UserCondition::NoEmail(entry(CompareOp::Eq)?),
                op => UserCondition::AnyEmail(entry(*op)?),
            })
        }
        _ => None,
    }
}

fn sub_path(name: &str) -> AttrPath {
    AttrPath { urn: None, attr: name.to_owned(), sub: None }
}

/// A filter inside `emails[…]`, on one entry.
fn entry_condition(filter: &Filter) -> Option<EmailCondition> {
    let both = |a: &Filter, b: &Filter| Some((Box::new(entry_condition(a)?), Box::new(entry_condition(b)?)));
    Some(match filter {
        Filter::Compare { path: AttrPath { urn: None, attr, sub: None }, op, value } => {
            match (attr.as_str(), value) {
                ("value" | "type", Value::String(text)) => EmailCondition::Text {
                    field: if attr == "value" { EmailField::Value } else { EmailField::Type },
                    op: text_op(*op),
                    value: text.to_lowercase(),
                },
                ("primary", value) => {
                    let wanted = boolean(value)?;
                    match op {
                        CompareOp::Eq => EmailCondition::Primary(wanted),
                        CompareOp::Ne => EmailCondition::NotPrimary(wanted),
                        _ => return None,
                    }
                }
                _ => return None,
            }
        }
        Filter::And(a, b) => {
            let (a, b) = both(a, b)?;
            EmailCondition::And(a, b)
        }
        Filter::Or(a, b) => {
            let (a, b) = both(a, b)?;
            EmailCondition::Or(a, b)
        }
        Filter::Not(a) => EmailCondition::Not(Box::new(entry_condition(a)?)),
        _ => return None,
    })
}

/// The attributes lists can be sorted by, by their `sortBy` names: the
/// store's sort keys, which the in-memory sort follows too.
const SORTABLE: [(&str, UserSortKey); 8] = [
    ("id", UserSortKey::Id),
    ("username", UserSortKey::UserName),
    ("externalid", UserSortKey::ExternalId),
    ("displayname", UserSortKey::DisplayName),
    ("emails", UserSortKey::Email),
    ("emails.value", UserSortKey::Email),
    ("meta.created", UserSortKey::Created),
    ("meta.lastmodified", UserSortKey::Modified),
];

/// The value a resource is sorted by (compared without case, as none of
/// these attributes is case-exact except `id`, whose case is fixed).
fn sort_value(key: UserSortKey, resource: &Value) -> Option<String> {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_lowercase);
    match key {
        UserSortKey::Id => text(get_ci(resource, "id")),
        UserSortKey::UserName => text(get_ci(resource, "userName")),
        UserSortKey::ExternalId => text(get_ci(resource, "externalId")),
        UserSortKey::DisplayName => text(get_ci(resource, "displayName")),
        UserSortKey::Email => {
            let emails = get_ci(resource, "emails").and_then(Value::as_array)?;
            let primary = emails.iter().find(|e| get_ci(e, "primary").and_then(boolean) == Some(true));
            text(primary.or(emails.first()).and_then(|e| get_ci(e, "value")))
        }
        UserSortKey::Created => text(get_ci(resource, "meta").and_then(|m| get_ci(m, "created"))),
        UserSortKey::Modified => text(get_ci(resource, "meta").and_then(|m| get_ci(m, "lastModified"))),
    }
}

/// `sortBy` and `sortOrder` (RFC 7644 §3.4.2.3) for users (`users`) or
/// groups; an attribute that cannot be sorted by is `invalidValue`, never
/// ignored.
pub(crate) fn parse_sort(
    sort_by: Option<&str>,
    order: Option<&str>,
    users: bool,
) -> Result<Option<UserSort>, ScimError> {
    let descending = match order.map(|o| o.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("ascending") => false,
        Some("descending") => true,
        Some(_) => return Err(ScimError::invalid_value("sortOrder must be ascending or descending")),
    };
    let Some(sort_by) = sort_by.map(str::trim).filter(|s| !s.is_empty()) else { return Ok(None) };
    let lower = sort_by.to_ascii_lowercase();
    let schema = if users { USER_SCHEMA } else { "urn:ietf:params:scim:schemas:core:2.0:Group" };
    let name = lower.strip_prefix(&format!("{}:", schema.to_ascii_lowercase())).unwrap_or(&lower);
    // Groups have no userName or emails.
    let allowed: Vec<(&str, UserSortKey)> = SORTABLE
        .into_iter()
        .filter(|(_, key)| users || !matches!(key, UserSortKey::UserName | UserSortKey::Email))
        .collect();
    match allowed.iter().find(|(n, _)| *n == name) {
        Some((_, key)) => Ok(Some(UserSort { key: *key, descending })),
        None => {
            let names: Vec<&str> = allowed.iter().map(|(n, _)| *n).collect();
            Err(ScimError::invalid_value(format!(
                "cannot sort by {sort_by}; sortBy may be {}",
                names.join(", ")
            )))
        }
    }
}

/// Sorts resources in memory; missing values last when ascending, ties by
/// id.
pub(crate) fn sort_resources(resources: &mut [Value], sort: UserSort) {
    resources.sort_by(|a, b| {
        let (x, y) = (sort_value(sort.key, a), sort_value(sort.key, b));
        let order = match (&x, &y) {
            (Some(x), Some(y)) => x.cmp(y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
        .then_with(|| sort_value(UserSortKey::Id, a).cmp(&sort_value(UserSortKey::Id, b)));
        if sort.descending { order.reverse() } else { order }
    });
}

#[cfg(test)]
mod tests {
    use super::project;
    use serde_json::json;

    const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

    fn user() -> serde_json::Value {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
            "id": "u1",
            "userName": "ada@x.test",
            "name": { "givenName": "Ada", "familyName": "Lovelace" },
            "emails": [{ "value": "ada@x.test", "type": "work", "primary": true }, { "value": "a@home.test", "type": "home" }],
            ENTERPRISE: { "department": "Engines", "manager": { "value": "u2" } },
            "meta": { "resourceType": "User" }
        })
    }

    #[test]
    fn attributes_pick_sub_attributes_and_extensions() {
        let picked = project(user(), Some("name.givenName, emails.value,userName"), None);
        assert_eq!(
            picked,
            json!({
                "schemas": user()["schemas"], "id": "u1", "meta": { "resourceType": "User" },
                "userName": "ada@x.test", "name": { "givenName": "Ada" },
                "emails": [{ "value": "ada@x.test" }, { "value": "a@home.test" }],
            })
        );
        let both = project(user(), Some("name.givenName,name.familyName"), None);
        assert_eq!(
            both["name"],
            json!({ "givenName": "Ada", "familyName": "Lovelace" }),
            "sub-attributes merge"
        );
        let manager = project(user(), Some(&format!("{ENTERPRISE}:manager")), None);
        assert_eq!(manager[ENTERPRISE], json!({ "manager": { "value": "u2" } }));
        assert!(manager.get("userName").is_none());
        let whole = project(user(), Some(ENTERPRISE), None);
        assert_eq!(whole[ENTERPRISE], user()[ENTERPRISE]);
        let core_urn = project(user(), Some("urn:ietf:params:scim:schemas:core:2.0:User:USERNAME"), None);
        assert_eq!(core_urn["userName"], "ada@x.test", "the core URN and any case");
        let unknown = project(user(), Some("nickName,urn:example:other:thing"), None);
        assert_eq!(unknown.as_object().unwrap().len(), 3, "only what is always returned: {unknown}");
    }

    #[test]
    fn filters_on_columns_go_to_the_database_and_others_do_not() {
        let condition = |f: &str| super::user_condition(&gatehouse_scim::filter::parse(f).unwrap());
        for f in [
            "userName co \"a\"",
            "userName sw \"b\" and not (externalId pr)",
            "externalId gt \"x\" or active eq \"True\"",
            "id eq \"u1\"",
            "urn:ietf:params:scim:schemas:core:2.0:User:userName ew \"@x\"",
            "emails[type eq \"work\" and value co \"@x\"]",
            "emails.value co \"x\"",
            "emails[primary eq \"True\"] or emails.type ne \"home\"",
            "meta.lastModified gt \"2026-01-01T00:00:00Z\"",
            "meta.created pr and displayName co \"a\"",
        ] {
            assert!(condition(f).is_some(), "{f}");
        }
        for f in [
            "emails pr",
            "emails.value pr",
            "emails[display eq \"x\"]",
            "emails[value eq 1]",
            "phoneNumbers[type eq \"work\"]",
            "title eq \"x\"",
            "userName co \"a\" and title pr",
            "id co \"u\"",
            "userName eq 1",
            // In time only; as text, user by user.
            "meta.lastModified co \"2026\"",
            "displayName eq true",
        ] {
            assert!(condition(f).is_none(), "{f}");
        }
        assert_eq!(
            condition("userName eq \"ÉLODIE\""),
            Some(gatehouse_store::UserCondition::Text {
                column: gatehouse_store::UserColumn::UserName,
                op: gatehouse_store::TextOp::Eq,
                value: "élodie".into()
            }),
            "lower-cased as the column is"
        );
    }

    #[test]
    fn excluded_attributes_drop_sub_attributes_never_the_id() {
        let slim = project(user(), None, Some("emails.type,name,id,meta"));
        assert!(slim.get("name").is_none());
        assert_eq!(
            slim["emails"],
            json!([{ "value": "ada@x.test", "primary": true }, { "value": "a@home.test" }])
        );
        assert_eq!((slim["id"].as_str(), slim["meta"].is_object()), (Some("u1"), true), "always returned");
        let no_manager = project(user(), None, Some(&format!("{ENTERPRISE}:manager")));
        assert_eq!(no_manager[ENTERPRISE], json!({ "department": "Engines" }));
        let no_extension = project(user(), None, Some(ENTERPRISE));
        assert!(no_extension.get(ENTERPRISE).is_none());
        let both = project(user(), Some("name,emails"), Some("name.familyName"));
        assert_eq!(both["name"], json!({ "givenName": "Ada" }));
    }
}
