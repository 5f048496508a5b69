//! Escaping each value for where it lands, and proving at save time that
//! every placeholder lands somewhere escaping makes safe.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::config::DataAs;
use crate::template::{Part, Template};

/// Everything but RFC 3986 unreserved characters is percent-encoded, so a
/// value can never add a path segment, a query parameter or a fragment.
const URL_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Escaper {
    Url,
    /// Inside a JSON string literal: the template author writes the quotes.
    JsonString,
    Xml,
    Form,
    /// Header values are sent as they are; the caller refuses CR, LF and NUL.
    None,
}

impl Escaper {
    pub(crate) fn escape(self, value: &str) -> String {
        match self {
            Self::Url => utf8_percent_encode(value, URL_VALUE).to_string(),
            Self::JsonString => {
                let quoted = serde_json::Value::String(value.to_owned()).to_string();
                quoted[1..quoted.len() - 1].to_owned()
            }
            Self::Xml => {
                let mut out = String::with_capacity(value.len());
                for c in value.chars() {
                    match c {
                        '&' => out.push_str("&amp;"),
                        '<' => out.push_str("&lt;"),
                        '>' => out.push_str("&gt;"),
                        '"' => out.push_str("&quot;"),
                        '\'' => out.push_str("&apos;"),
                        // Control characters other than tab and newlines are
                        // not allowed in XML 1.0 at all; carriage returns and
                        // newlines would be normalised by the parser, so they
                        // travel as character references.
                        '\r' => out.push_str("&#13;"),
                        '\n' => out.push_str("&#10;"),
                        '\t' => out.push_str("&#9;"),
                        c if (c as u32) < 0x20 => out.push('\u{FFFD}'),
                        c => out.push(c),
                    }
                }
                out
            }
            Self::Form => form_urlencoded::byte_serialize(value.as_bytes()).collect(),
            Self::None => value.to_owned(),
        }
    }
}

/// Stands in for a placeholder while scanning a template's structure.
const MARK: char = '\u{E000}';

fn marked(t: &Template) -> Result<String, String> {
    let mut out = String::new();
    for part in t.parts() {
        match part {
            Part::Text(s) if s.contains(MARK) => return Err("contains a reserved character (U+E000)".into()),
            Part::Text(s) => out.push_str(s),
            Part::Value(_) => out.push(MARK),
        }
    }
    Ok(out)
}

fn placeholder_at(t: &Template, index: usize) -> String {
    t.parts()
        .iter()
        .filter_map(|p| if let Part::Value(v) = p { Some(v.to_string()) } else { None })
        .nth(index)
        .unwrap_or_default()
}

/// In a JSON body every placeholder must sit inside a string literal: JSON
/// string escaping keeps a value from closing the string, but nothing could
/// keep a bare value from adding keys or changing types.
pub(crate) fn scan_json_placements(t: &Template) -> Result<(), String> {
    let text = marked(t)?;
    let (mut in_string, mut escaped, mut seen) = (false, false, 0);
    for c in text.chars() {
        if c == MARK {
            if !in_string {
                return Err(format!(
                    "{} must be inside a JSON string, e.g. \"{}\"",
                    placeholder_at(t, seen),
                    placeholder_at(t, seen)
                ));
            }
            seen += 1;
            continue;
        }
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
        }
    }
    Ok(())
}

/// In an XML body placeholders may stand in element text or in a quoted
/// attribute value, where escaping keeps them text. Anywhere else (tag and
/// attribute names, comments, CDATA sections, processing instructions) a value
/// would not be escaped the way it is read.
pub(crate) fn scan_xml_placements(t: &Template) -> Result<(), String> {
    #[derive(PartialEq)]
    enum S {
        Text,
        Tag,
        Attr(char),
        Comment,
        CData,
        Special,
    }
    let text = marked(t)?;
    let mut state = S::Text;
    let mut seen = 0;
    let mut i = 0;
    let bytes: Vec<char> = text.chars().collect();
    let starts = |i: usize, s: &str| s.chars().enumerate().all(|(k, c)| bytes.get(i + k) == Some(&c));
    while i < bytes.len() {
        let c = bytes[i];
        if c == MARK {
            if !matches!(state, S::Text | S::Attr(_)) {
                let p = placeholder_at(t, seen);
                return Err(format!("{p} may only appear in element text or a quoted attribute value"));
            }
            seen += 1;
            i += 1;
            continue;
        }
        match state {
            S::Text if starts(i, "<!--") => {
                state = S::Comment;
                i += 4;
                continue;
            }
            S::Text if starts(i, "<![CDATA[") => {
                state = S::CData;
                i += 9;
                continue;
            }
            S::Text if starts(i, "<?") || starts(i, "<!") => state = S::Special,
            S::Text if c == '<' => state = S::Tag,
            S::Tag if c == '"' || c == '\'' => state = S::Attr(c),
            S::Tag if c == '>' => state = S::Text,
            S::Attr(q) if c == q => state = S::Tag,
            S::Comment if starts(i, "-->") => {
                state = S::Text;
                i += 3;
                continue;
            }
            S::CData if starts(i, "]]>") => {
                state = S::Text;
                i += 3;
                continue;
            }
            S::Special if c == '>' => state = S::Text,
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// Parses a rendered URL and proves that parsing changed none of its
/// structure. Run on sample values when a configuration is saved, and on
/// every real request before it is sent.
///
/// Escaping keeps a value from adding a `/`, `?` or `#`, but a URL parser
/// still rewrites what it is given: `..` and `.` segments (also spelled
/// `%2e`) are removed with the segment before them, so a value of `..` in
/// `/login/{{DEVICENAME}}` would send the credentials to `/`. No path segment
/// may therefore be a dot segment, not even once percent-decoded (servers
/// that decode `%2F` before normalising would read `..%2F..` as two), and
/// the parsed URL must keep the rendered path and query byte for byte.
pub(crate) fn check_url(rendered: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(rendered).map_err(|e| format!("not a valid absolute URL: {e}"))?;
    let after_scheme = rendered.split_once("://").map_or("", |(_, rest)| rest);
    let Some(path_start) = after_scheme.find(['/', '?', '#']) else {
        return Ok(url);
    };
    let rest = &after_scheme[path_start..];
    let (path_and_query, _fragment) = rest.split_once('#').unwrap_or((rest, ""));
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    for segment in path.split('/') {
        let decoded = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
        if decoded.split(['/', '\\']).any(|piece| piece == "." || piece == "..") {
            return Err("a path segment is \".\" or \"..\", which would change the path".into());
        }
    }
    let expected_path = if path.is_empty() { "/" } else { path };
    if url.path() != expected_path || url.query() != query {
        return Err(format!(
            "the URL would be sent as {}: write it with every special character percent-encoded",
            url.as_str()
        ));
    }
    Ok(url)
}

/// Checks that a rendered body is well-formed for its format. Run on sample
/// values when a configuration is saved, and on every real request before it
/// is sent.
pub(crate) fn check_body(data_as: DataAs, body: &str) -> Result<(), String> {
    match data_as {
        DataAs::Json => {
            serde_json::from_str::<serde_json::Value>(body).map(|_| ()).map_err(|e| e.to_string())
        }
        DataAs::Xml => check_xml(body),
        DataAs::UrlEncoded => check_form(body),
    }
}

fn check_xml(body: &str) -> Result<(), String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(body);
    reader.config_mut().check_end_names = true;
    let mut depth: i64 = 0;
    let mut roots = 0;
    loop {
        match reader.read_event().map_err(|e| e.to_string())? {
            Event::Start(_) => {
                if depth == 0 {
                    roots += 1;
                }
                depth += 1;
            }
            Event::End(_) => depth -= 1,
            Event::Empty(_) if depth == 0 => roots += 1,
            Event::Text(t) if depth == 0 && !t.iter().all(u8::is_ascii_whitespace) => {
                return Err("text outside the root element".into());
            }
            Event::DocType(_) => return Err("a DOCTYPE is not allowed".into()),
            Event::Eof => break,
            _ => {}
        }
    }
    match (depth, roots) {
        (0, 1) => Ok(()),
        (0, _) => Err("must have exactly one root element".into()),
        _ => Err("unclosed element".into()),
    }
}

fn check_form(body: &str) -> Result<(), String> {
    for pair in body.split('&') {
        let (key, _) = pair.split_once('=').ok_or_else(|| format!("{pair:?} is not name=value"))?;
        if key.is_empty() {
            return Err("a pair has an empty name".into());
        }
        let bytes = pair.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'%' => {
                    let hex = bytes.get(i + 1..i + 3).ok_or("a truncated %-escape")?;
                    if !hex.iter().all(u8::is_ascii_hexdigit) {
                        return Err("an invalid %-escape".into());
                    }
                    i += 3;
                    continue;
                }
                b'+' | b'=' | b'-' | b'.' | b'_' | b'~' | b'*' => {}
                b if b.is_ascii_alphanumeric() => {}
                b => return Err(format!("character {:?} must be %-encoded", b as char)),
            }
            i += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapers_keep_values_inert() {
        assert_eq!(Escaper::Url.escape("a b/?#&=+%é"), "a%20b%2F%3F%23%26%3D%2B%25%C3%A9");
        assert_eq!(Escaper::JsonString.escape("\"\\\n"), "\\\"\\\\\\n");
        assert_eq!(Escaper::Xml.escape("<a href='x'>&]]>"), "&lt;a href=&apos;x&apos;&gt;&amp;]]&gt;");
        assert_eq!(Escaper::Form.escape("a b&c=d+e"), "a+b%26c%3Dd%2Be");
    }

    /// Issue 13, hole 1: a value of `..` in a path segment made the URL
    /// parser drop the segment before it, and the credentials went to `/`.
    #[test]
    fn no_value_can_make_a_dot_segment() {
        let template = crate::template::Template::parse("https://auth.example/login/{{DEVICENAME}}").unwrap();
        for value in [".", "..", "%2e%2e", ".%2E", "%2E.", "..%2F..", "..\\..", "a/../..", "..;", "...."] {
            let rendered = template.render(|_| value.to_owned(), |v| Escaper::Url.escape(v));
            match check_url(&rendered) {
                // Whatever is accepted still has the template's path prefix
                // and exactly one more segment.
                Ok(url) => {
                    let segments: Vec<_> = url.path_segments().unwrap().collect();
                    assert_eq!((segments.len(), segments[0]), (2, "login"), "{value:?} gave {url}");
                    let decoded = percent_encoding::percent_decode_str(segments[1]).decode_utf8_lossy();
                    assert_eq!(decoded, value, "{value:?} arrives as itself");
                }
                Err(e) => assert!(e.contains("\"..\""), "{value:?}: {e}"),
            }
        }
        // The two that the URL parser would have rewritten are refused.
        for value in [".", ".."] {
            let rendered = template.render(|_| value.to_owned(), |v| Escaper::Url.escape(v));
            assert!(check_url(&rendered).is_err(), "{value:?} in a segment of its own");
        }
        // Next to text, a dot is no segment of its own.
        let t =
            crate::template::Template::parse("https://auth.example/login/v{{DEVICENAME}}?q={{DEVICENAME}}")
                .unwrap();
        let url = check_url(&t.render(|_| "..".into(), |v| Escaper::Url.escape(v))).unwrap();
        assert_eq!((url.path(), url.query()), ("/login/v..", Some("q=..")));
    }

    #[test]
    fn a_url_the_parser_would_rewrite_is_refused() {
        assert!(check_url("https://auth.example/a/../b").is_err());
        assert!(check_url("https://auth.example/a/%2E%2e/b").is_err());
        assert!(check_url("https://auth.example/a b").is_err(), "a raw space is re-encoded");
        assert!(check_url("https://auth.example/a?b=c d").is_err());
        assert!(check_url("https://auth.example").is_ok());
        assert!(check_url("https://auth.example/").is_ok());
        assert!(check_url("https://auth.example/a/b?c=d&e=%2F#frag").is_ok());
    }

    #[test]
    fn xml_checks_refuse_doctypes_and_broken_documents() {
        assert!(check_xml("<a><b/></a>").is_ok());
        assert!(check_xml("<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>").is_err());
        assert!(check_xml("<a></b>").is_err());
        assert!(check_xml("<a/><b/>").is_err());
    }
}
