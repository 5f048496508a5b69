//! Looking up a domain's TXT records, for domain verification, through the
//! system's resolver or one named by `GATEHOUSE_DNS_RESOLVER` (tests point it
//! at a real DNS server they start on loopback).

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};

/// Which resolver to ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsResolver {
    /// The system's (`/etc/resolv.conf`).
    System,
    /// This server, over UDP and TCP.
    At(SocketAddr),
}

/// Why a lookup gave no answer to check.
#[derive(Debug, thiserror::Error)]
#[error("the DNS lookup failed: {0}")]
pub(crate) struct DnsError(String);

/// The TXT strings published at `name` (each record's strings joined, as
/// RFC 7208 reads them); none when the name has no TXT record.
pub(crate) async fn txt(resolver: DnsResolver, name: &str) -> Result<Vec<String>, DnsError> {
    let mut options = ResolverOpts::default();
    options.timeout = Duration::from_secs(3);
    options.attempts = 2;
    // Each verification asks afresh: a record just published must be seen.
    options.cache_size = 0;
    let builder = match resolver {
        DnsResolver::System => TokioResolver::builder_tokio().map_err(|e| DnsError(e.to_string()))?,
        DnsResolver::At(addr) => {
            let mut server = NameServerConfig::udp_and_tcp(addr.ip());
            for connection in &mut server.connections {
                connection.port = addr.port();
            }
            Resolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![server]),
                TokioRuntimeProvider::default(),
            )
        }
    };
    let resolver = builder.with_options(options).build().map_err(|e| DnsError(e.to_string()))?;
    // A fully qualified name: no search domains appended.
    let fqdn = format!("{}.", name.trim_end_matches('.'));
    match resolver.txt_lookup(fqdn).await {
        Ok(lookup) => Ok(lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::TXT(txt) => {
                    Some(txt.txt_data.iter().map(|part| String::from_utf8_lossy(part)).collect::<String>())
                }
                _ => None,
            })
            .collect()),
        Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(Vec::new()),
        Err(e) => Err(DnsError(e.to_string())),
    }
}
