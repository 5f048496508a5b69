//! A SAML connection as the admin writes it, and its validated form.

use std::str::FromStr;

use gatehouse_core::{AccountPolicy, AccountSettings, InvalidField};
use samael::metadata::EntityDescriptor;
use serde::{Deserialize, Serialize};
use url::Url;

const REDIRECT_BINDING: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";
const EMAIL_FORMAT: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress";
/// The largest IdP metadata document taken.
pub const MAX_METADATA: usize = 512 * 1024;

/// Which signatures a response must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SignedParts {
    /// The assertion (Ping's default).
    #[default]
    Assertion,
    Response,
    Both,
}

/// A connection as the admin writes it: the IdP by metadata (a URL, fetched
/// and refreshed, or the XML) or by hand (entity id, SSO URL, certificates).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SamlConfig {
    /// `ping`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp_metadata_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp_metadata_xml: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp_entity_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp_sso_url: Option<String>,
    /// PEM or bare base64 DER.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub idp_certificates: Vec<String>,
    /// [default: assertion]
    #[serde(default)]
    pub signed: SignedParts,
    /// Sign our AuthnRequests.
    #[serde(default)]
    pub sign_authn_requests: bool,
    /// Accept RSA-SHA1 signatures (never by default).
    #[serde(default)]
    pub allow_sha1: bool,
    /// [default: 120]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew_secs: Option<u32>,
    /// The attribute holding the email [default: the NameID when its format
    /// is emailAddress, else `email`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_attribute: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name_attribute: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name_attribute: Option<String>,
    /// [default: groups]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_attribute: Option<String>,
    /// Asked for in AuthnRequests [default: emailAddress].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_id_format: Option<String>,
    /// Accept responses the IdP sends unasked (IdP-initiated sign-in).
    #[serde(default)]
    pub allow_idp_initiated: bool,
    /// Where an IdP-initiated sign-in may send the browser (its RelayState).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_relay_states: Vec<String>,
    // The account fields, as in every kind's configuration (see the OIDC
    // crate's `ConnectionConfig`), become one `AccountPolicy`.
    #[serde(default)]
    pub jit_provisioning: bool,
    #[serde(default)]
    pub link_by_email: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_email_domains: Vec<String>,
    /// Believe the IdP's email for linking and creating users outside the
    /// organization's verified domains too.
    #[serde(default)]
    pub trust_unverified_email_domains: bool,
    /// Create users just in time even though the organization provisions by
    /// SCIM.
    #[serde(default)]
    pub jit_alongside_scim: bool,
    /// The groups access tokens carry: `idp` (the groups attribute), `scim`,
    /// or `both` [default: both].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_source: Option<String>,
    /// The IdP group whose members are the organization's admins (the
    /// group's name, or its object id for Azure AD); everyone else who
    /// signs in through the connection is a member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_group: Option<String>,
    /// The attribute that holds what SCIM sends as `externalId`, so that
    /// users provisioned by SCIM are matched by it before their email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id_attribute: Option<String>,
}

/// A configuration problem, naming the field at fault.
pub type InvalidSamlConnection = InvalidField;

fn invalid(field: &'static str, message: impl Into<String>) -> InvalidSamlConnection {
    InvalidField::new(field, message)
}

/// The IdP as its metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpDescriptor {
    pub entity_id: String,
    /// Where AuthnRequests go (HTTP-Redirect binding).
    pub sso_url: String,
    /// DER certificates that may sign responses; never empty.
    pub signing_certs: Vec<Vec<u8>>,
    /// The metadata document, as samael reads it.
    pub metadata_xml: String,
}

/// A validated connection, without its IdP when that comes from a URL not
/// yet fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamlConnection {
    pub signed: SignedParts,
    pub sign_authn_requests: bool,
    pub allow_sha1: bool,
    pub clock_skew: chrono::Duration,
    pub email_attribute: Option<String>,
    pub first_name_attribute: String,
    pub last_name_attribute: String,
    pub groups_attribute: String,
    /// The attribute matched against SCIM `externalId`, if any.
    pub external_id_attribute: Option<String>,
    pub name_id_format: String,
    pub allow_idp_initiated: bool,
    pub allowed_relay_states: Vec<String>,
    pub account: AccountPolicy,
    pub metadata_url: Option<Url>,
    /// From the XML or the manual fields; `None` when it comes from
    /// `metadata_url`.
    pub idp: Option<IdpDescriptor>,
}

impl SamlConfig {
    /// Checks everything that can be checked without the network.
    pub fn validate(&self, allow_loopback_http: bool) -> Result<SamlConnection, InvalidSamlConnection> {
        if self.kind != "ping" {
            return Err(invalid("kind", "must be ping"));
        }
        let manual =
            self.idp_entity_id.is_some() || self.idp_sso_url.is_some() || !self.idp_certificates.is_empty();
        let sources = [self.idp_metadata_url.is_some(), self.idp_metadata_xml.is_some(), manual];
        if sources.iter().filter(|s| **s).count() != 1 {
            return Err(invalid(
                "idp_metadata_url",
                "give exactly one of idp_metadata_url, idp_metadata_xml, or idp_entity_id with idp_sso_url and idp_certificates",
            ));
        }
        let metadata_url = self
            .idp_metadata_url
            .as_deref()
            .map(|u| web_url("idp_metadata_url", u, allow_loopback_http))
            .transpose()?;
        let idp = if let Some(xml) = &self.idp_metadata_xml {
            Some(parse_metadata(xml).map_err(|m| invalid("idp_metadata_xml", m))?)
        } else if manual {
            let entity_id = self.idp_entity_id.as_deref().filter(|e| !e.trim().is_empty());
            let entity_id = entity_id.ok_or_else(|| invalid("idp_entity_id", "is required"))?;
            let sso = self.idp_sso_url.as_deref().ok_or_else(|| invalid("idp_sso_url", "is required"))?;
            web_url("idp_sso_url", sso, allow_loopback_http)?;
            if self.idp_certificates.is_empty() {
                return Err(invalid("idp_certificates", "at least one signing certificate is required"));
            }
            let mut certs = Vec::new();
            for pem in &self.idp_certificates {
                certs.push(certificate_base64(pem).map_err(|m| invalid("idp_certificates", m))?);
            }
            Some(
                parse_metadata(&manual_metadata(entity_id, sso, &certs))
                    .map_err(|m| invalid("idp_certificates", m))?,
            )
        } else {
            None
        };
        let skew = self.clock_skew_secs.unwrap_or(120);
        if skew > 600 {
            return Err(invalid("clock_skew_secs", "must be at most 600"));
        }
        for r in &self.allowed_relay_states {
            web_url("allowed_relay_states", r, true)?;
        }
        let name = |field: &'static str,
                    v: &Option<String>,
                    default: &str|
         -> Result<String, InvalidSamlConnection> {
            match v {
                Some(v) if v.trim().is_empty() || v.len() > 256 => {
                    Err(invalid(field, "must be 1 to 256 characters"))
                }
                Some(v) => Ok(v.trim().to_owned()),
                None => Ok(default.to_owned()),
            }
        };
        let account = AccountPolicy::new(AccountSettings {
            jit_provisioning: self.jit_provisioning,
            link_by_email: self.link_by_email,
            allowed_email_domains: &self.allowed_email_domains,
            trust_unverified_email_domains: self.trust_unverified_email_domains,
            jit_alongside_scim: self.jit_alongside_scim,
            groups_source: self.groups_source.as_deref(),
            admin_group: self.admin_group.as_deref(),
        })?;
        Ok(SamlConnection {
            signed: self.signed,
            sign_authn_requests: self.sign_authn_requests,
            allow_sha1: self.allow_sha1,
            clock_skew: chrono::Duration::seconds(i64::from(skew)),
            email_attribute: self
                .email_attribute
                .as_ref()
                .map(|_| name("email_attribute", &self.email_attribute, ""))
                .transpose()?,
            first_name_attribute: name("first_name_attribute", &self.first_name_attribute, "firstName")?,
            last_name_attribute: name("last_name_attribute", &self.last_name_attribute, "lastName")?,
            groups_attribute: name("groups_attribute", &self.groups_attribute, "groups")?,
            external_id_attribute: self
                .external_id_attribute
                .as_ref()
                .map(|_| name("external_id_attribute", &self.external_id_attribute, ""))
                .transpose()?,
            name_id_format: name("name_id_format", &self.name_id_format, EMAIL_FORMAT)?,
            allow_idp_initiated: self.allow_idp_initiated,
            allowed_relay_states: self.allowed_relay_states.clone(),
            account,
            metadata_url,
            idp,
        })
    }
}

fn web_url(field: &'static str, text: &str, allow_loopback_http: bool) -> Result<Url, InvalidSamlConnection> {
    let url = Url::parse(text.trim()).map_err(|e| invalid(field, format!("{text:?} is not a URL: {e}")))?;
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    match url.scheme() {
        "https" if url.host().is_some() => {}
        "http" if allow_loopback_http && loopback => {}
        _ => return Err(invalid(field, format!("{text:?} must be an https URL"))),
    }
    if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        return Err(invalid(field, format!("{text:?} must have no credentials or fragment")));
    }
    Ok(url)
}

/// The base64 DER of a certificate given as PEM or bare base64, checked to
/// be an X.509 certificate.
fn certificate_base64(text: &str) -> Result<String, String> {
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .flat_map(|l| l.chars())
        .filter(|c| !c.is_whitespace())
        .collect();
    use base64::Engine as _;
    let der = base64::engine::general_purpose::STANDARD
        .decode(&body)
        .map_err(|_| "a certificate is not PEM or base64".to_owned())?;
    openssl::x509::X509::from_der(&der)
        .map_err(|_| "a certificate is not an X.509 certificate".to_owned())?;
    Ok(body)
}

pub(crate) fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// IdP metadata for an IdP configured by hand.
fn manual_metadata(entity_id: &str, sso_url: &str, certs_base64: &[String]) -> String {
    let keys: String = certs_base64
        .iter()
        .map(|c| {
            format!(
                r#"<md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{c}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>"#
            )
        })
        .collect();
    format!(
        r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="{}"><md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">{keys}<md:SingleSignOnService Binding="{REDIRECT_BINDING}" Location="{}"/></md:IDPSSODescriptor></md:EntityDescriptor>"#,
        xml_escape(entity_id),
        xml_escape(sso_url)
    )
}

/// Reads IdP metadata: the entity id, the redirect-binding SSO URL and the
/// signing certificates, at least one (metadata without one would make
/// samael accept unsigned responses).
pub fn parse_metadata(xml: &str) -> Result<IdpDescriptor, String> {
    if xml.len() > MAX_METADATA {
        return Err(format!("the metadata is larger than {MAX_METADATA} bytes"));
    }
    if crate::acs::has_dtd(xml) {
        return Err("the metadata has a DOCTYPE; it is refused".into());
    }
    let entity = EntityDescriptor::from_str(xml).map_err(|e| format!("not SAML metadata: {e}"))?;
    let entity_id =
        entity.entity_id.clone().filter(|e| !e.is_empty()).ok_or("the metadata has no entityID")?;
    let idp = entity
        .idp_sso_descriptors
        .as_ref()
        .and_then(|d| d.first())
        .ok_or("the metadata describes no IdP (IDPSSODescriptor)")?;
    let sso_url = idp
        .single_sign_on_services
        .iter()
        .find(|s| s.binding == REDIRECT_BINDING)
        .map(|s| s.location.clone())
        .ok_or("the IdP offers no HTTP-Redirect SingleSignOnService")?;
    use base64::Engine as _;
    let mut signing_certs = Vec::new();
    // Keys without a `use` serve both purposes (SAML metadata §2.4.1.1).
    for key in idp.key_descriptors.iter().filter(|k| k.key_use.as_deref().is_none_or(|u| u == "signing")) {
        for cert in key.key_info.x509_data.iter().flat_map(|d| d.certificates.iter()) {
            let clean: String = cert.chars().filter(|c| !c.is_whitespace()).collect();
            let der = base64::engine::general_purpose::STANDARD
                .decode(clean)
                .map_err(|_| "a signing certificate is not base64")?;
            openssl::x509::X509::from_der(&der).map_err(|_| "a signing certificate is not X.509")?;
            signing_certs.push(der);
        }
    }
    if signing_certs.is_empty() {
        return Err("the metadata has no signing certificate; responses could not be verified".into());
    }
    Ok(IdpDescriptor { entity_id, sso_url, signing_certs, metadata_xml: xml.to_owned() })
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use serde_json::json;

    use super::*;

    fn cert() -> String {
        let keys = crate::SpKeys::generate("https://idp.test").unwrap();
        base64::engine::general_purpose::STANDARD.encode(keys.certificate.to_der().unwrap())
    }

    fn config(v: serde_json::Value) -> SamlConfig {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn an_idp_by_hand_becomes_metadata() {
        let c = config(json!({ "kind": "ping", "idp_entity_id": "https://idp.test/e", "idp_sso_url": "https://idp.test/sso",
            "idp_certificates": [cert()] }))
        .validate(false)
        .unwrap();
        let idp = c.idp.unwrap();
        assert_eq!(
            (idp.entity_id.as_str(), idp.sso_url.as_str(), idp.signing_certs.len()),
            ("https://idp.test/e", "https://idp.test/sso", 1)
        );
        assert_eq!(c.clock_skew, chrono::Duration::seconds(120));
        assert_eq!(c.signed, SignedParts::Assertion);
    }

    #[test]
    fn problems_name_their_field() {
        let cert = cert();
        for (v, field) in [
            (json!({ "kind": "okta", "idp_metadata_url": "https://idp.test/md" }), "kind"),
            (json!({ "kind": "ping" }), "idp_metadata_url"),
            (
                json!({ "kind": "ping", "idp_metadata_url": "https://idp.test/md", "idp_metadata_xml": "<x/>" }),
                "idp_metadata_url",
            ),
            (json!({ "kind": "ping", "idp_metadata_url": "http://idp.test/md" }), "idp_metadata_url"),
            (json!({ "kind": "ping", "idp_metadata_xml": "<x/>" }), "idp_metadata_xml"),
            (
                json!({ "kind": "ping", "idp_entity_id": "e", "idp_sso_url": "https://idp.test/sso" }),
                "idp_certificates",
            ),
            (
                json!({ "kind": "ping", "idp_entity_id": "e", "idp_sso_url": "https://idp.test/sso", "idp_certificates": ["bm90IGEgY2VydA=="] }),
                "idp_certificates",
            ),
            (
                json!({ "kind": "ping", "idp_entity_id": "e", "idp_sso_url": "https://idp.test/sso", "idp_certificates": [cert], "clock_skew_secs": 3600 }),
                "clock_skew_secs",
            ),
            (
                json!({ "kind": "ping", "idp_metadata_url": "https://idp.test/md", "allowed_relay_states": ["javascript:alert(1)"] }),
                "allowed_relay_states",
            ),
        ] {
            let shown = v.to_string();
            assert_eq!(config(v).validate(false).unwrap_err().field, field, "{shown}");
        }
    }

    #[test]
    fn metadata_without_a_signing_certificate_is_refused() {
        let only_encryption = format!(
            r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="e"><md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"><md:KeyDescriptor use="encryption"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor><md:SingleSignOnService Binding="{REDIRECT_BINDING}" Location="https://idp.test/sso"/></md:IDPSSODescriptor></md:EntityDescriptor>"#,
            cert()
        );
        assert!(parse_metadata(&only_encryption).unwrap_err().contains("no signing certificate"));
        let with_dtd = format!("<!DOCTYPE x>{only_encryption}");
        assert!(parse_metadata(&with_dtd).unwrap_err().contains("DOCTYPE"));
        let use_less = only_encryption.replace(r#" use="encryption""#, "");
        assert_eq!(parse_metadata(&use_less).unwrap().signing_certs.len(), 1, "a key without use signs too");
    }
}
