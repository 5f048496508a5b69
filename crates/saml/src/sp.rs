//! Gatehouse as the service provider of one connection: its key and
//! certificate, its metadata, and its AuthnRequests.

use std::str::FromStr;

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::{X509, X509NameBuilder};
use samael::crypto::AllowedSignatureAlgorithm;
use samael::metadata::EntityDescriptor;
use samael::service_provider::{ServiceProvider, ServiceProviderBuilder};
use url::Url;

use crate::config::{IdpDescriptor, SamlConnection};

/// Our key pair for one connection: signs AuthnRequests, decrypts
/// assertions. Kept sealed (PEM) by the caller.
pub struct SpKeys {
    pub key: PKey<Private>,
    pub certificate: X509,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpError(pub String);

fn err(e: impl std::fmt::Display) -> SpError {
    SpError(e.to_string())
}

impl SpKeys {
    /// A fresh RSA-2048 key and a self-signed certificate for ten years,
    /// named after the SP's entity id.
    pub fn generate(entity_id: &str) -> Result<Self, SpError> {
        let key = PKey::from_rsa(Rsa::generate(2048).map_err(err)?).map_err(err)?;
        let mut name = X509NameBuilder::new().map_err(err)?;
        let cn: String = entity_id.chars().take(64).collect();
        name.append_entry_by_text("CN", &cn).map_err(err)?;
        let name = name.build();
        let mut builder = X509::builder().map_err(err)?;
        builder.set_version(2).map_err(err)?;
        let mut serial = BigNum::new().map_err(err)?;
        serial.rand(128, openssl::bn::MsbOption::MAYBE_ZERO, false).map_err(err)?;
        let serial = serial.to_asn1_integer().map_err(err)?;
        builder.set_serial_number(&serial).map_err(err)?;
        builder.set_subject_name(&name).map_err(err)?;
        builder.set_issuer_name(&name).map_err(err)?;
        builder.set_pubkey(&key).map_err(err)?;
        let (from, until) =
            (Asn1Time::days_from_now(0).map_err(err)?, Asn1Time::days_from_now(3650).map_err(err)?);
        builder.set_not_before(&from).map_err(err)?;
        builder.set_not_after(&until).map_err(err)?;
        builder.sign(&key, MessageDigest::sha256()).map_err(err)?;
        Ok(Self { key, certificate: builder.build() })
    }

    /// Key and certificate as one PEM text, for sealing.
    pub fn to_pem(&self) -> Result<Vec<u8>, SpError> {
        let mut pem = self.key.private_key_to_pem_pkcs8().map_err(err)?;
        pem.extend(self.certificate.to_pem().map_err(err)?);
        Ok(pem)
    }

    pub fn from_pem(pem: &[u8]) -> Result<Self, SpError> {
        Ok(Self {
            key: PKey::private_key_from_pem(pem).map_err(err)?,
            certificate: X509::from_pem(pem).map_err(err)?,
        })
    }
}

/// Where this SP lives for one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpEndpoints {
    /// Also the URL of our metadata.
    pub entity_id: String,
    pub acs_url: String,
}

/// A ready service provider. samael's makes our AuthnRequests; responses
/// are verified by xmlsec through samael and judged by `acs.rs`, with every
/// fail-open default closed.
pub struct Sp {
    pub(crate) inner: ServiceProvider,
    pub(crate) idp_entity_id: String,
    pub(crate) idp_certs: Vec<samael::crypto::CertificateDer>,
    pub(crate) algorithms: Option<Vec<AllowedSignatureAlgorithm>>,
    pub(crate) connection: SamlConnection,
    pub(crate) endpoints: SpEndpoints,
    pub(crate) key: PKey<Private>,
    certificate: X509,
}

impl Sp {
    pub fn new(
        connection: SamlConnection,
        idp: &IdpDescriptor,
        endpoints: SpEndpoints,
        keys: SpKeys,
    ) -> Result<Self, SpError> {
        if idp.signing_certs.is_empty() {
            return Err(SpError("the IdP has no signing certificate".into()));
        }
        let metadata = EntityDescriptor::from_str(&idp.metadata_xml).map_err(err)?;
        let algorithms = vec![
            AllowedSignatureAlgorithm::RsaSha256,
            AllowedSignatureAlgorithm::RsaSha384,
            AllowedSignatureAlgorithm::RsaSha512,
            AllowedSignatureAlgorithm::EcdsaSha256,
            AllowedSignatureAlgorithm::EcdsaSha384,
            AllowedSignatureAlgorithm::EcdsaSha512,
        ];
        // samael's allow-list has no SHA-1 entry: allowing SHA-1 means
        // lifting the list, which only a connection that asks for it does.
        let algorithms = (!connection.allow_sha1).then_some(algorithms);
        let certificate = samael::crypto::CertificateDer::from(keys.certificate.to_der().map_err(err)?);
        let inner = ServiceProviderBuilder::default()
            .entity_id(endpoints.entity_id.clone())
            .metadata_url(endpoints.entity_id.clone())
            .acs_url(endpoints.acs_url.clone())
            .slo_url(None)
            .key(keys.key.clone())
            .certificate(certificate)
            .idp_metadata(metadata)
            .authn_name_id_format(connection.name_id_format.clone())
            .build()
            .map_err(err)?;
        Ok(Self {
            inner,
            idp_entity_id: idp.entity_id.clone(),
            idp_certs: idp.signing_certs.iter().cloned().map(samael::crypto::CertificateDer::from).collect(),
            algorithms,
            connection,
            endpoints,
            key: keys.key,
            certificate: keys.certificate,
        })
    }

    pub fn connection(&self) -> &SamlConnection {
        &self.connection
    }

    /// Our metadata: entity id, ACS (HTTP-POST), NameID format, and our
    /// certificate for signing and encryption. Written here rather than by
    /// samael, whose metadata insists on a logout endpoint we do not serve.
    pub fn metadata_xml(&self) -> Result<String, SpError> {
        use base64::Engine as _;
        let cert = base64::engine::general_purpose::STANDARD.encode(self.certificate.to_der().map_err(err)?);
        let key = |usage: &str| {
            format!(
                r#"<md:KeyDescriptor use="{usage}"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>"#
            )
        };
        let wants_assertions_signed = !matches!(self.connection.signed, crate::SignedParts::Response);
        Ok(format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="{entity}"><md:SPSSODescriptor AuthnRequestsSigned="{signed}" WantAssertionsSigned="{wants}" protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">{signing}{encryption}<md:NameIDFormat>{format}</md:NameIDFormat><md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="{acs}" index="0" isDefault="true"/></md:SPSSODescriptor></md:EntityDescriptor>"#,
            entity = crate::config::xml_escape(&self.endpoints.entity_id),
            signed = self.connection.sign_authn_requests,
            wants = wants_assertions_signed,
            signing = key("signing"),
            encryption = key("encryption"),
            format = crate::config::xml_escape(&self.connection.name_id_format),
            acs = crate::config::xml_escape(&self.endpoints.acs_url),
        ))
    }

    /// An AuthnRequest by redirect binding (signed when the connection says
    /// so) with a 128-bit random id; returns the URL and the id to remember.
    pub fn authn_request(&self, sso_url: &str, relay_state: &str) -> Result<(Url, String), SpError> {
        let mut request = self.inner.make_authentication_request(sso_url).map_err(err)?;
        // samael's own id has 32 random bits.
        request.id = format!("_{}", gatehouse_core::hex(&rand::random::<[u8; 16]>()));
        let url = if self.connection.sign_authn_requests {
            request.signed_redirect(relay_state, &self.key).map_err(err)?
        } else {
            request.redirect(relay_state).map_err(err)?
        };
        Ok((url.ok_or_else(|| SpError("the IdP has no SSO URL".into()))?, request.id))
    }
}
