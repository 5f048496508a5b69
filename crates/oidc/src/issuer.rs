/// What an ID token's `iss` (and, for Azure AD multi-tenant apps, its `tid`)
/// must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssuerRule {
    /// Okta (org or custom authorization server) and single-tenant Azure AD:
    /// exactly this issuer.
    Exact(String),
    /// Azure AD `organizations`/`common`: the issuer is `{authority}/{tid}/v2.0`
    /// for the token's own `tid`, which must be a GUID on the allow list.
    AzureMultiTenant { authority: String, allowed_tenants: Vec<String> },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssuerError {
    #[error("the token's issuer is not the connection's")]
    WrongIssuer,
    #[error("the token has no tid, or it is not a GUID")]
    BadTenant,
    #[error("the token's tenant is not allowed for this connection")]
    TenantNotAllowed,
}

impl IssuerRule {
    /// Checks a token's `iss` (and `tid`).
    pub fn check(&self, iss: &str, tid: Option<&str>) -> Result<(), IssuerError> {
        match self {
            Self::Exact(expected) => (iss == expected).then_some(()).ok_or(IssuerError::WrongIssuer),
            Self::AzureMultiTenant { authority, allowed_tenants } => {
                let tid = tid.filter(|t| is_guid(t)).ok_or(IssuerError::BadTenant)?;
                if !allowed_tenants.iter().any(|a| a.eq_ignore_ascii_case(tid)) {
                    return Err(IssuerError::TenantNotAllowed);
                }
                // The template with the token's own tenant, compared exactly.
                (iss == format!("{authority}/{tid}/v2.0")).then_some(()).ok_or(IssuerError::WrongIssuer)
            }
        }
    }
}

/// `8-4-4-4-12` hexadecimal digits.
pub fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

    #[test]
    fn exact_issuers_match_exactly() {
        let rule = IssuerRule::Exact("https://acme.okta.com/oauth2/default".into());
        assert_eq!(rule.check("https://acme.okta.com/oauth2/default", None), Ok(()));
        for wrong in [
            "https://acme.okta.com",
            "https://acme.okta.com/oauth2/default/",
            "https://evil.okta.com/oauth2/default",
        ] {
            assert_eq!(rule.check(wrong, None), Err(IssuerError::WrongIssuer), "{wrong}");
        }
    }

    #[test]
    fn multi_tenant_issuers_take_the_tokens_tenant_if_allowed() {
        let rule = IssuerRule::AzureMultiTenant {
            authority: "https://login.microsoftonline.com".into(),
            allowed_tenants: vec![TENANT.into()],
        };
        let iss = format!("https://login.microsoftonline.com/{TENANT}/v2.0");
        assert_eq!(rule.check(&iss, Some(TENANT)), Ok(()));
        assert_eq!(
            rule.check(&iss, Some(&TENANT.to_uppercase())),
            Err(IssuerError::WrongIssuer),
            "iss must match exactly"
        );
        let other = "0b3f6a8e-2d1c-4e5f-9a7b-1c2d3e4f5a6b";
        assert_eq!(
            rule.check(&format!("https://login.microsoftonline.com/{other}/v2.0"), Some(other)),
            Err(IssuerError::TenantNotAllowed)
        );
        // The issuer of one allowed tenant with the tid of another.
        assert_eq!(rule.check(&iss.replace(TENANT, other), Some(TENANT)), Err(IssuerError::WrongIssuer));
        assert_eq!(rule.check(&iss, None), Err(IssuerError::BadTenant));
        assert_eq!(
            rule.check("https://login.microsoftonline.com/common/v2.0", Some("common")),
            Err(IssuerError::BadTenant)
        );
        assert_eq!(
            rule.check("https://sts.windows.net/x/", Some(TENANT)),
            Err(IssuerError::WrongIssuer),
            "v1 issuers are not v2"
        );
    }

    #[test]
    fn guids() {
        assert!(is_guid(TENANT));
        for bad in [
            "",
            "common",
            "72f988bf86f141af91ab2d7cd011db47",
            "72f988bf-86f1-41af-91ab-2d7cd011db4g",
            "72f988bf-86f1-41af-91ab-2d7cd011db47-",
        ] {
            assert!(!is_guid(bad), "{bad}");
        }
    }
}
