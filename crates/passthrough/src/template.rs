//! `{{PLACEHOLDER}}` templates.
//!
//! A template is parsed once, when the configuration is saved, into literal
//! text and placeholders. Rendering walks those parts and writes each value
//! through an escaper chosen for where it lands, in a single pass: a value
//! that itself contains `{{…}}` is written as text and never expanded again.

use std::fmt;

/// The values a template can refer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Placeholder {
    UserId,
    UserEmail,
    UserPassword,
    UserExternalId,
    OrgId,
    DeviceOs,
    DeviceName,
    DeviceIp,
}

impl Placeholder {
    pub const ALL: [Placeholder; 8] = [
        Self::UserId,
        Self::UserEmail,
        Self::UserPassword,
        Self::UserExternalId,
        Self::OrgId,
        Self::DeviceOs,
        Self::DeviceName,
        Self::DeviceIp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::UserId => "USERID",
            Self::UserEmail => "USEREMAIL",
            Self::UserPassword => "USERPASSWORD",
            Self::UserExternalId => "USEREXTERNALID",
            Self::OrgId => "ORGID",
            Self::DeviceOs => "DEVICEOS",
            Self::DeviceName => "DEVICENAME",
            Self::DeviceIp => "DEVICEIP",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }
}

impl fmt::Display for Placeholder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{{{}}}}}", self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Text(String),
    Value(Placeholder),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error(
        "unknown placeholder {{{{{0}}}}}; known: USERID, USEREMAIL, USERPASSWORD, USEREXTERNALID, ORGID, DEVICEOS, DEVICENAME, DEVICEIP"
    )]
    Unknown(String),
    #[error("unclosed placeholder: \"{{{{\" without \"}}}}\"")]
    Unclosed,
}

impl Template {
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or(TemplateError::Unclosed)?;
            let name = after[..end].trim();
            let placeholder =
                Placeholder::from_name(name).ok_or_else(|| TemplateError::Unknown(name.to_owned()))?;
            parts.push(Part::Value(placeholder));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self { source: source.to_owned(), parts })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    pub fn uses(&self, placeholder: Placeholder) -> bool {
        self.parts.contains(&Part::Value(placeholder))
    }

    /// Writes the template with every value passed through `escape`.
    pub fn render(&self, value: impl Fn(Placeholder) -> String, escape: impl Fn(&str) -> String) -> String {
        let mut out = String::with_capacity(self.source.len() + 64);
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Value(p) => out.push_str(&escape(&value(*p))),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_text_and_placeholders() {
        let t = Template::parse("a={{USEREMAIL}}&b={{ USERPASSWORD }}").unwrap();
        assert_eq!(
            t.parts(),
            [
                Part::Text("a=".into()),
                Part::Value(Placeholder::UserEmail),
                Part::Text("&b=".into()),
                Part::Value(Placeholder::UserPassword)
            ]
        );
        assert!(t.uses(Placeholder::UserPassword));
        assert!(!t.uses(Placeholder::OrgId));
    }

    #[test]
    fn unknown_and_unclosed_placeholders_are_refused() {
        assert_eq!(Template::parse("{{PASSWORD}}"), Err(TemplateError::Unknown("PASSWORD".into())));
        assert_eq!(Template::parse("{{userid}}"), Err(TemplateError::Unknown("userid".into())));
        assert_eq!(Template::parse("x {{USERID"), Err(TemplateError::Unclosed));
    }

    #[test]
    fn values_are_never_expanded_twice() {
        let t = Template::parse("{{USERPASSWORD}}/{{USEREMAIL}}").unwrap();
        let out = t.render(
            |p| if p == Placeholder::UserPassword { "{{USEREMAIL}}".into() } else { "e@x".into() },
            str::to_owned,
        );
        assert_eq!(out, "{{USEREMAIL}}/e@x");
    }
}
