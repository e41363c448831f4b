//! How a node's gRPC clients reach the other nodes of its region: plaintext (a region on one
//! machine's loopback) or mutual TLS with the node's certificate from the cluster CA. Every
//! client of a node (Raft, chunk transfer, forwarding, joining) builds its channels here, so
//! none of them can forget the certificate.

use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// Plaintext or mutual TLS; clones are cheap.
#[derive(Clone, Default)]
pub struct PeerTransport {
    tls: Option<ClientTlsConfig>,
}

impl std::fmt::Debug for PeerTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.tls.is_some() {
            "PeerTransport(mutual TLS)"
        } else {
            "PeerTransport(plaintext)"
        })
    }
}

impl PeerTransport {
    /// Plaintext: only for a region whose nodes listen on loopback addresses.
    pub fn plaintext() -> Self {
        Self::default()
    }

    /// Mutual TLS: servers must present a certificate of the CA in `ca_pem`; this node presents
    /// `cert_pem` (with its key).
    pub fn mutual_tls(ca_pem: &[u8], cert_pem: &[u8], key_pem: &[u8]) -> Self {
        Self {
            tls: Some(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(ca_pem))
                    .identity(Identity::from_pem(cert_pem, key_pem))
                    .timeout(Duration::from_secs(5)),
            ),
        }
    }

    /// An endpoint for `addr` (`host:port`): `https` with this node's certificate, or `http`.
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| format!("invalid address {addr:?}: {e}"))?;
        match &self.tls {
            Some(tls) => endpoint
                .tls_config(tls.clone())
                .map_err(|e| format!("TLS for {addr}: {e}")),
            None => Ok(endpoint),
        }
    }
}
