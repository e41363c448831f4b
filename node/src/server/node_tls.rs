//! The node certificate on the gRPC port: the server's mutual TLS, its clients' identity, and
//! the check that the cluster CA issued it (and the replication certificate) for this region.

use std::time::Duration;

use anyhow::Context;

use crate::config::NodeConfig;

/// The node certificate's two uses on the gRPC port: the server's mutual TLS and its clients'.
pub(super) struct NodeTls {
    pub server: Option<tonic::transport::ServerTlsConfig>,
    pub transport: arca_raft::PeerTransport,
}

/// Loads the node certificate for the gRPC port (`[cluster]`), checking that the cluster CA
/// issued it for this node's region; and the replication certificate's region likewise.
pub(super) fn node_tls(config: &NodeConfig) -> anyhow::Result<NodeTls> {
    let of_region = |files: &arca_replication::TlsFiles, what: &str| -> anyhow::Result<()> {
        let holder = arca_replication::tls::own_holder(files)?;
        anyhow::ensure!(
            holder.region() == Some(config.region.as_str()),
            "the {what} certificate {} is for {holder:?}, not a node of region {:?}: issue one \
             with `arca certs issue --region {}`",
            files.cert.display(),
            config.region,
            config.region
        );
        Ok(())
    };
    if let Some(files) = config.replication.tls_files()? {
        of_region(&files, "replication")?;
    }
    let Some(files) = config.cluster.tls_files()? else {
        return Ok(NodeTls {
            server: None,
            transport: arca_raft::PeerTransport::plaintext(),
        });
    };
    of_region(&files, "cluster")?;
    let read = |path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("read {}", path.display()))
    };
    let (ca, cert, key) = (read(&files.ca_cert)?, read(&files.cert)?, read(&files.key)?);
    let server = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(&cert, &key))
        .client_ca_root(tonic::transport::Certificate::from_pem(&ca))
        // A client without a certificate still completes the handshake (an operator with a
        // token); which methods it may call is the guard's decision.
        .client_auth_optional(true)
        .timeout(Duration::from_secs(5));
    Ok(NodeTls {
        server: Some(server),
        transport: arca_raft::PeerTransport::mutual_tls(&ca, &cert, &key),
    })
}
