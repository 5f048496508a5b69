//! Extractors that turn bad input into [`ApiError`]s, never into axum's
//! plain-text rejections.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use bytes::Bytes;
use gatehouse_core::Device;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use crate::audit::Actor;
use crate::error::ApiError;
use crate::state::AppState;

/// A JSON body. Wrong content type is 415, too large is 413, and anything that
/// does not deserialise is 400 naming the field at fault.
pub(crate) struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::Invalid { field: None, message: "could not read the request body".into() }
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// A JSON body that may be left out: no body at all is `None`; one that is
/// there is read as [`ApiJson`] reads it.
pub(crate) struct OptionalJson<T>(pub Option<T>);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let empty = req.headers().get(header::CONTENT_LENGTH).is_some_and(|v| v == "0")
            || (req.headers().get(header::CONTENT_LENGTH).is_none()
                && req.headers().get(header::TRANSFER_ENCODING).is_none());
        if empty {
            return Ok(Self(None));
        }
        ApiJson::from_request(req, state).await.map(|ApiJson(body)| Self(Some(body)))
    }
}

/// Deserialises `bytes`, reporting the path of the offending field.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let message = inner.to_string();
        // serde reports a missing field on its parent; name the field itself.
        let field = match message.strip_prefix("missing field `").and_then(|m| m.split('`').next()) {
            Some(missing) if path == "." => Some(missing.to_owned()),
            Some(missing) => Some(format!("{path}.{missing}")),
            None if path == "." => None,
            None => Some(path),
        };
        ApiError::Invalid { field, message: strip_position(&message) }
    })
}

/// serde_json appends "at line 1 column 12"; the field name says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// A path parameter; malformed ids are 400.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub(crate) struct ApiPath<T>(pub T);

/// A query string; malformed values are 400.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub(crate) struct ApiQuery<T>(pub T);

/// The bearer token of the request, if it has one.
pub(crate) fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// A platform administrator: the bootstrap `GATEHOUSE_ADMIN_TOKEN`, or a
/// stored admin token; which one is the actor of the changes it makes.
pub(crate) struct PlatformAdmin(pub Actor);

impl FromRequestParts<AppState> for PlatformAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        const DENIED: ApiError = ApiError::Unauthorized {
            code: "unauthorized",
            message: "a valid admin bearer token is required",
        };
        let token = bearer(&parts.headers).ok_or(DENIED)?;
        platform_admin(state, token).await?.map(Self).ok_or(DENIED)
    }
}

/// Who an admin token is: the bootstrap token, a stored one, or nobody.
pub(crate) async fn platform_admin(state: &AppState, token: &str) -> Result<Option<Actor>, ApiError> {
    let presented = gatehouse_session::hash_opaque_token(token);
    if let Some(bootstrap) = state.admin_token_hash()
        && bool::from(presented.as_bytes().ct_eq(bootstrap.as_bytes()))
    {
        return Ok(Some(Actor::BootstrapAdmin));
    }
    Ok(state.store().find_admin_token(&presented).await?.map(|record| Actor::AdminToken(record.id)))
}

/// The client's IP: the peer address, or, when the peer is a trusted proxy,
/// the right-most address in `X-Forwarded-For` that is not itself a trusted
/// proxy (addresses further left are the client's own claims).
pub(crate) struct ClientIp(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let trusted = &state.settings().trusted_proxies;
        let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
        let Some(peer) = peer else { return Ok(Self(None)) };
        if !is_trusted(&peer) {
            return Ok(Self(Some(peer)));
        }
        let forwarded: Vec<IpAddr> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        let client = forwarded.iter().rev().find(|ip| !is_trusted(ip)).copied();
        Ok(Self(Some(client.unwrap_or(peer))))
    }
}

/// The device a user signs in from, as the app describes it.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub(crate) struct DeviceInfo {
    /// At most 128 characters.
    pub os: Option<String>,
    /// At most 128 characters.
    pub name: Option<String>,
}

const DEVICE_FIELD_MAX: usize = 128;

impl DeviceInfo {
    pub(crate) fn into_device(self, ip: ClientIp) -> Result<Device, ApiError> {
        let check = |field: &str, v: Option<String>| match v {
            Some(v) if v.chars().count() > DEVICE_FIELD_MAX => {
                Err(ApiError::invalid(field, format!("must be at most {DEVICE_FIELD_MAX} characters")))
            }
            Some(v) if v.chars().any(char::is_control) => {
                Err(ApiError::invalid(field, "must not contain control characters"))
            }
            other => Ok(other.filter(|v| !v.is_empty())),
        };
        Ok(Device { os: check("device.os", self.os)?, name: check("device.name", self.name)?, ip: ip.0 })
    }
}
