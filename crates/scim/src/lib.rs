//! SCIM 2.0 (RFC 7643/7644) as Okta and Entra ID speak it: filters, the
//! PATCH engine, and the error shape. No HTTP and no storage here; the
//! server maps resources to platform users and groups.
//!
//! We parse filters ourselves rather than through `scim_v2`: the grammar is
//! small, and owning it lets case-insensitive names and operators, value
//! paths and the unquoted values Entra documents be handled in one place,
//! with `invalidFilter` errors that say what was wrong.

pub mod filter;
pub mod patch;

/// A SCIM error (RFC 7644 §3.12): the HTTP status, the `scimType`, and a
/// detail for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct ScimError {
    pub status: u16,
    pub scim_type: Option<&'static str>,
    pub detail: String,
    /// For 429 and 503: when to try again, in seconds (`Retry-After`).
    pub retry_after: Option<u64>,
}

impl ScimError {
    /// An error with no `scimType`, such as 403, 405 or 500.
    pub fn new(status: u16, scim_type: Option<&'static str>, detail: impl Into<String>) -> Self {
        Self { status, scim_type, detail: detail.into(), retry_after: None }
    }

    /// 503: the service cannot answer now; try again in `retry_after` seconds.
    pub fn unavailable(detail: impl Into<String>, retry_after: u64) -> Self {
        Self { retry_after: Some(retry_after), ..Self::new(503, None, detail) }
    }

    /// 429: too many attempts; the limit lifts in `retry_after` seconds.
    pub fn too_many_requests(retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after.max(1)),
            ..Self::new(429, None, "too many attempts; try again later")
        }
    }

    pub fn invalid_syntax(detail: impl Into<String>) -> Self {
        Self::new(400, Some("invalidSyntax"), detail)
    }

    pub fn invalid_path(detail: impl Into<String>) -> Self {
        Self::new(400, Some("invalidPath"), detail)
    }

    pub fn invalid_value(detail: impl Into<String>) -> Self {
        Self::new(400, Some("invalidValue"), detail)
    }

    pub fn invalid_filter(detail: impl Into<String>) -> Self {
        Self::new(400, Some("invalidFilter"), detail)
    }

    pub fn no_target(detail: impl Into<String>) -> Self {
        Self::new(400, Some("noTarget"), detail)
    }

    pub fn mutability(detail: impl Into<String>) -> Self {
        Self::new(400, Some("mutability"), detail)
    }

    /// The request asked for more results than the server will compute.
    pub fn too_many(detail: impl Into<String>) -> Self {
        Self::new(400, Some("tooMany"), detail)
    }

    /// The `cursor` is not one this server gave (RFC 9865 §2.3).
    pub fn invalid_cursor(detail: impl Into<String>) -> Self {
        Self::new(400, Some("invalidCursor"), detail)
    }

    /// The request is for a SCIM version other than 2.0.
    pub fn invalid_vers(detail: impl Into<String>) -> Self {
        Self::new(400, Some("invalidVers"), detail)
    }

    pub fn uniqueness(detail: impl Into<String>) -> Self {
        Self::new(409, Some("uniqueness"), detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(404, None, detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(401, None, detail)
    }

    pub fn precondition_failed(detail: impl Into<String>) -> Self {
        Self::new(412, None, detail)
    }

    /// The RFC 7644 §3.12 body; `status` is a string, as the RFC has it.
    pub fn body(&self) -> serde_json::Value {
        let mut body = serde_json::json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": self.status.to_string(),
            "detail": self.detail,
        });
        if let Some(t) = self.scim_type {
            body["scimType"] = t.into();
        }
        body
    }
}
