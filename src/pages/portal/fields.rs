//! The portal's configuration forms, described once: each field's JSON
//! name, label and input. A form is rendered from the stored configuration
//! and read back into the same JSON the admin API takes, so that the pages
//! and the API share one parser and one validation, and a field the API
//! refuses is named beside its input.

use serde_json::{Map, Value};

/// How a field is typed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Input {
    Text,
    Url,
    /// Write-only: never shown; left empty, the saved value is kept.
    Secret,
    Number,
    Check,
    /// One entry per line; a JSON array.
    Lines,
    /// Free text over several lines.
    Area,
    /// One of fixed values: (value, label).
    Choice(&'static [(&'static str, &'static str)]),
    /// REST headers, one `Name: value` per line; values are write-only.
    Headers,
    /// PEM certificates, one after another; a JSON array.
    Pems,
}

/// A field's description.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec {
    pub(crate) name: &'static str,
    pub(crate) label: &'static str,
    pub(crate) help: &'static str,
    pub(crate) input: Input,
}

pub(crate) const fn spec(name: &'static str, label: &'static str, input: Input, help: &'static str) -> Spec {
    Spec { name, label, help, input }
}

/// A field, ready to render.
#[derive(Debug, Clone)]
pub(crate) struct Field {
    pub(crate) name: &'static str,
    pub(crate) label: &'static str,
    pub(crate) help: &'static str,
    /// `text`, `url`, `password`, `number`, `check`, `lines`, `area`,
    /// `choice` (the template's switch).
    pub(crate) kind: &'static str,
    pub(crate) value: String,
    pub(crate) checked: bool,
    pub(crate) choices: Vec<Choice>,
    pub(crate) error: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Choice {
    pub(crate) value: &'static str,
    pub(crate) label: &'static str,
    pub(crate) selected: bool,
}

/// The fields of `specs` showing `config` (the stored JSON, secrets left
/// out), with `error` beside the field it names.
pub(crate) fn render(specs: &[Spec], config: &Value, error: Option<(&str, &str)>) -> Vec<Field> {
    specs
        .iter()
        .map(|s| {
            let v = config.get(s.name);
            let text = |v: Option<&Value>| match v {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => String::new(),
            };
            let (kind, value) = match s.input {
                Input::Text => ("text", text(v)),
                Input::Url => ("url", text(v)),
                Input::Secret => ("password", String::new()),
                Input::Number => ("number", text(v)),
                Input::Check => ("check", String::new()),
                Input::Lines => ("lines", lines(v)),
                Input::Area => ("area", text(v)),
                Input::Choice(_) => ("choice", text(v)),
                Input::Headers => ("headers", header_names(v)),
                Input::Pems => ("area", lines(v)),
            };
            let choices = match s.input {
                Input::Choice(options) => options
                    .iter()
                    .map(|&(value, label)| Choice {
                        value,
                        label,
                        selected: text(v).eq_ignore_ascii_case(value),
                    })
                    .collect(),
                _ => Vec::new(),
            };
            Field {
                name: s.name,
                label: s.label,
                help: s.help,
                kind,
                checked: v.and_then(Value::as_bool).unwrap_or(false),
                value,
                choices,
                error: error.filter(|(field, _)| *field == s.name).map(|(_, m)| m.to_owned()),
            }
        })
        .collect()
}

fn lines(v: Option<&Value>) -> String {
    match v {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("\n"),
        _ => String::new(),
    }
}

/// Header names only: their values may be credentials.
fn header_names(v: Option<&Value>) -> String {
    match v {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|h| h.get("name").and_then(Value::as_str))
            .map(|name| format!("{name}:"))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The longest a form field may be (SAML metadata XML is the longest).
const MAX_FIELD: usize = 256 * 1024;

/// Reads a posted form into configuration JSON: empty text fields are left
/// out (the API's defaults apply, and a left-out secret is kept).
pub(crate) fn read(
    specs: &[Spec],
    form: &[(String, String)],
) -> Result<Map<String, Value>, (&'static str, String)> {
    let get = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let mut out = Map::new();
    for s in specs {
        let raw = get(s.name).unwrap_or("");
        if raw.len() > MAX_FIELD {
            return Err((s.name, "is too long".into()));
        }
        let trimmed = raw.trim();
        let value = match s.input {
            Input::Check => Some(Value::Bool(get(s.name).is_some())),
            _ if trimmed.is_empty() => None,
            Input::Text | Input::Url | Input::Secret | Input::Choice(_) => {
                Some(Value::String(trimmed.to_owned()))
            }
            Input::Area => Some(Value::String(raw.replace("\r\n", "\n"))),
            Input::Number => Some(Value::Number(
                trimmed.parse::<u64>().map_err(|_| (s.name, "must be a whole number".to_owned()))?.into(),
            )),
            Input::Lines => Some(Value::Array(
                trimmed
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(|l| Value::String(l.into()))
                    .collect(),
            )),
            Input::Headers => Some(Value::Array(headers(trimmed).map_err(|m| (s.name, m))?)),
            Input::Pems => Some(Value::Array(pems(trimmed))),
        };
        if let Some(value) = value {
            out.insert(s.name.to_owned(), value);
        }
    }
    Ok(out)
}

/// Certificates pasted one after another, each ending at its END line.
fn pems(text: &str) -> Vec<Value> {
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(END) {
        let (one, after) = rest.split_at(at + END.len());
        out.push(Value::String(one.trim().to_owned()));
        rest = after;
    }
    if !rest.trim().is_empty() {
        // A bare base64 certificate, or an unfinished one the API refuses.
        out.push(Value::String(rest.trim().to_owned()));
    }
    out
}

/// `Name: value` lines; a line with a name and no value keeps the saved
/// value of that header.
fn headers(text: &str) -> Result<Vec<Value>, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
        .map(|(n, line)| {
            // The line itself is not repeated: it may hold a credential.
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("header {} is not written as Name: value", n + 1))?;
            let value = value.trim();
            Ok(serde_json::json!({
                "name": name.trim(),
                "value": if value.is_empty() { Value::Null } else { Value::String(value.to_owned()) },
            }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: &[Spec] = &[
        spec("url", "URL", Input::Url, ""),
        spec("secret", "Secret", Input::Secret, ""),
        spec("on", "On", Input::Check, ""),
        spec("n", "N", Input::Number, ""),
        spec("list", "List", Input::Lines, ""),
        spec("headers", "Headers", Input::Headers, ""),
        spec("pick", "Pick", Input::Choice(&[("a", "A"), ("b", "B")]), ""),
    ];

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn forms_read_into_the_apis_json() {
        let read = read(
            SPECS,
            &form(&[
                ("url", " https://x.example "),
                ("secret", ""),
                ("on", "on"),
                ("n", "2500"),
                ("list", "a\r\n\r\n b \n"),
                ("headers", "X-Key: k1\nX-Kept:"),
                ("pick", "b"),
            ]),
        )
        .unwrap();
        assert_eq!(
            Value::Object(read),
            serde_json::json!({
                "url": "https://x.example", "on": true, "n": 2500, "list": ["a", "b"], "pick": "b",
                "headers": [{"name": "X-Key", "value": "k1"}, {"name": "X-Kept", "value": null}],
            }),
            "an empty secret is left out, so the saved one is kept"
        );
        assert_eq!(read_err(&[("n", "ten")]), ("n", "must be a whole number".into()));
        let (field, message) = read_err(&[("headers", "Authorization Bearer s3cr3t-value-here")]);
        assert_eq!(field, "headers");
        assert!(!message.contains("s3cr3t-value-here"), "{message}");
    }

    fn read_err(pairs: &[(&str, &str)]) -> (&'static str, String) {
        read(SPECS, &form(pairs)).unwrap_err()
    }

    #[test]
    fn forms_never_show_secrets_or_header_values() {
        let stored = serde_json::json!({
            "secret": "never", "headers": [{"name": "X-Key", "value": "k1"}], "on": true, "pick": "A",
        });
        let fields = render(SPECS, &stored, Some(("url", "must be https")));
        let html = format!("{fields:?}");
        assert!(!html.contains("never") && !html.contains("k1"), "{html}");
        assert_eq!(fields[0].error.as_deref(), Some("must be https"));
        assert!(fields[2].checked);
        assert!(fields[6].choices[0].selected, "choices compare without case");
    }
}
