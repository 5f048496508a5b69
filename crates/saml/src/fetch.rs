//! Fetching an IdP's metadata from its URL, through the guarded outbound
//! client (no redirects, no internal addresses, a size cap), beside OIDC
//! discovery in the OIDC crate.

use std::time::Duration;

use gatehouse_outbound::{FetchError, OutboundClient};
use url::Url;

use crate::config::{IdpDescriptor, MAX_METADATA, parse_metadata};

const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Fetches and reads IdP metadata; the error says what went wrong, for an
/// admin.
pub async fn fetch_metadata(client: &OutboundClient, url: &Url) -> Result<IdpDescriptor, String> {
    let request = http::Request::get(url.as_str())
        .header(http::header::ACCEPT, "application/samlmetadata+xml, application/xml, text/xml")
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    let response = client.exchange(request, FETCH_TIMEOUT, MAX_METADATA).await.map_err(|e| match e {
        FetchError::TooLarge(n) => format!("the metadata is larger than {n} bytes"),
        other => format!("cannot fetch the metadata: {other}"),
    })?;
    if response.status() != http::StatusCode::OK {
        return Err(format!("cannot fetch the metadata: HTTP {}", response.status().as_u16()));
    }
    let text = String::from_utf8(response.into_body()).map_err(|_| "the metadata is not UTF-8".to_owned())?;
    parse_metadata(&text)
}
