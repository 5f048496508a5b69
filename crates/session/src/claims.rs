use serde::{Deserialize, Serialize};

/// The claims of a platform access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    /// Who the token is for: the platform's apps check it
    /// (`GATEHOUSE_TOKEN_AUDIENCE`, the issuer by default).
    pub aud: String,
    /// The platform user id.
    pub sub: String,
    /// The user's organization id.
    pub org: String,
    /// Absent for a user an IdP provisioned without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The session id; refresh tokens and revocation hang off it.
    pub sid: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    /// How the user authenticated (`password`, `external_rest`, ...).
    pub auth_method: String,
    /// The display names of the user's groups: those SCIM provisioned,
    /// those the identity provider asserted at sign-in, or both, as the
    /// connection chose.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The identity provider had more groups than it sent (Azure AD's
    /// overage): `groups` is not the whole list.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub groups_overage: bool,
}
