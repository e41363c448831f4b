//! Mutual TLS between regions: a cluster CA, node certificates it signs, and the QUIC
//! configurations that require them on both ends.
//!
//! `arca certs init` creates the CA (`ca.pem`, `ca.key`); `arca certs issue` creates a node
//! certificate signed by it, valid for the names and IP addresses the node is reached by. A peer
//! without a certificate from the cluster CA is refused during the handshake, in both
//! directions.
//!
//! Every certificate also says what its holder is ([`Holder`]): a node of one region (URI SAN
//! `urn:arca:node:<region>`) or an operator (`urn:arca:operator`). The CA signs that claim, so a
//! node certificate issued for `eu` cannot speak for `us`: replication checks the region a peer
//! names against its certificate, and the intra-region gRPC port admits only node certificates
//! of its own region to Raft and chunk RPCs.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

use crate::error::{Error, Result};

/// ALPN protocol id of the replication stream.
pub const ALPN: &[u8] = b"arca-replication/1";

const CA_COMMON_NAME: &str = "Arca cluster CA";

const NODE_URI: &str = "urn:arca:node:";
const OPERATOR_URI: &str = "urn:arca:operator";

/// What a certificate is issued for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role<'a> {
    /// A node of `region`: server and client authentication, for the names it is reached by.
    Node { region: &'a str },
    /// An operator: client authentication only, for the admin RPCs.
    Operator,
}

/// What a certificate of the cluster CA says its holder is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    Node { region: String, name: String },
    Operator { name: String },
}

impl Holder {
    /// The region of a node certificate.
    pub fn region(&self) -> Option<&str> {
        match self {
            Holder::Node { region, .. } => Some(region),
            Holder::Operator { .. } => None,
        }
    }
}

/// A region name a certificate can carry: what region names are (lowercase letters, digits,
/// `-`, `_`, `.`), at most 64 bytes.
fn check_region(region: &str) -> Result<()> {
    let valid = !region.is_empty()
        && region.len() <= 64
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(Error::Tls(format!("invalid region name {region:?}")))
    }
}

/// The holder a certificate (DER) names, or `None` when it names none or more than one.
/// Call it only on certificates the TLS handshake verified against the cluster CA.
pub fn holder(der: &[u8]) -> Option<Holder> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_string();
    let sans = cert.subject_alternative_name().ok()??;
    let mut found = None;
    for general in &sans.value.general_names {
        let GeneralName::URI(uri) = general else {
            continue;
        };
        let claim = if let Some(region) = uri.strip_prefix(NODE_URI) {
            check_region(region).ok()?;
            Holder::Node {
                region: region.to_string(),
                name: name.clone(),
            }
        } else if *uri == OPERATOR_URI {
            Holder::Operator { name: name.clone() }
        } else {
            continue;
        };
        if found.replace(claim).is_some() {
            return None;
        }
    }
    found
}

/// The holder of this node's own certificate (its first), checked at start-up.
pub fn own_holder(files: &TlsFiles) -> Result<Holder> {
    let loaded = load(files)?;
    holder(&loaded.chain[0]).ok_or_else(|| {
        Error::Tls(format!(
            "{} names no Arca role (issued before certificates carried one?): issue it again \
             with `arca certs issue --region …`",
            files.cert.display()
        ))
    })
}

/// The region the peer of a QUIC connection holds a node certificate for.
pub fn peer_region(connection: &quinn::Connection) -> Option<String> {
    let certs = connection
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    match holder(certs.first()?)? {
        Holder::Node { region, .. } => Some(region),
        Holder::Operator { .. } => None,
    }
}

/// Paths of a node's TLS material.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, CA_COMMON_NAME);
    name.push(DnType::OrganizationName, "Arca");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn write_private(path: &Path, contents: &str) -> Result<()> {
    fs::write(path, contents).map_err(|e| Error::Tls(format!("write {}: {e}", path.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::Tls(format!("restrict {}: {e}", path.display())))?;
    }
    Ok(())
}

/// Creates a new cluster CA in `dir` (`ca.pem`, `ca.key`), refusing to overwrite one.
pub fn init_ca(dir: &Path, valid_for: Duration) -> Result<(PathBuf, PathBuf)> {
    fs::create_dir_all(dir).map_err(|e| Error::Tls(format!("create {}: {e}", dir.display())))?;
    let cert_path = dir.join("ca.pem");
    let key_path = dir.join("ca.key");
    if cert_path.exists() || key_path.exists() {
        return Err(Error::Tls(format!(
            "a CA already exists in {}",
            dir.display()
        )));
    }
    let key = KeyPair::generate().map_err(|e| Error::Tls(format!("generate CA key: {e}")))?;
    let mut params = ca_params();
    let now = time_now();
    params.not_before = now;
    params.not_after = now + valid_for;
    let cert = params
        .self_signed(&key)
        .map_err(|e| Error::Tls(format!("self-sign CA: {e}")))?;
    fs::write(&cert_path, cert.pem())
        .map_err(|e| Error::Tls(format!("write {}: {e}", cert_path.display())))?;
    write_private(&key_path, &key.serialize_pem())?;
    Ok((cert_path, key_path))
}

/// Issues a certificate signed by the CA in `ca_dir` for `role`, valid for `names` (DNS names
/// or IP addresses), written as `{out}.pem` and `{out}.key`.
pub fn issue(
    ca_dir: &Path,
    node_name: &str,
    role: Role<'_>,
    names: &[String],
    out: &Path,
    valid_for: Duration,
) -> Result<(PathBuf, PathBuf)> {
    let ca_key_pem = fs::read_to_string(ca_dir.join("ca.key"))
        .map_err(|e| Error::Tls(format!("read {}: {e}", ca_dir.join("ca.key").display())))?;
    let ca_key =
        KeyPair::from_pem(&ca_key_pem).map_err(|e| Error::Tls(format!("parse CA key: {e}")))?;
    let issuer = Issuer::new(ca_params(), ca_key);

    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, node_name);
    name.push(DnType::OrganizationName, "Arca");
    params.distinguished_name = name;
    for entry in names {
        let san = match entry.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                entry
                    .clone()
                    .try_into()
                    .map_err(|e| Error::Tls(format!("invalid DNS name {entry:?}: {e}")))?,
            ),
        };
        params.subject_alt_names.push(san);
    }
    let claim = match role {
        Role::Node { region } => {
            check_region(region)?;
            if names.is_empty() {
                return Err(Error::Tls(
                    "a node certificate needs the names or addresses it is reached by".into(),
                ));
            }
            format!("{NODE_URI}{region}")
        }
        Role::Operator => OPERATOR_URI.to_string(),
    };
    params.subject_alt_names.push(SanType::URI(
        claim
            .try_into()
            .map_err(|e| Error::Tls(format!("role URI: {e}")))?,
    ));
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = match role {
        Role::Node { .. } => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Role::Operator => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    let now = time_now();
    params.not_before = now;
    params.not_after = now + valid_for;
    let key = KeyPair::generate().map_err(|e| Error::Tls(format!("generate node key: {e}")))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| Error::Tls(format!("sign node certificate: {e}")))?;
    let cert_path = out.with_extension("pem");
    let key_path = out.with_extension("key");
    if let Some(parent) = cert_path.parent() {
        fs::create_dir_all(parent)
            .map_err(|e| Error::Tls(format!("create {}: {e}", parent.display())))?;
    }
    fs::write(&cert_path, cert.pem())
        .map_err(|e| Error::Tls(format!("write {}: {e}", cert_path.display())))?;
    write_private(&key_path, &key.serialize_pem())?;
    Ok((cert_path, key_path))
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

struct Loaded {
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn load(files: &TlsFiles) -> Result<Loaded> {
    let read_certs = |path: &Path| -> Result<Vec<CertificateDer<'static>>> {
        let certs: std::result::Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
            .map_err(|e| Error::Tls(format!("read {}: {e}", path.display())))?
            .collect();
        let certs = certs.map_err(|e| Error::Tls(format!("parse {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(Error::Tls(format!("no certificate in {}", path.display())));
        }
        Ok(certs)
    };
    let mut roots = RootCertStore::empty();
    for ca in read_certs(&files.ca_cert)? {
        roots
            .add(ca)
            .map_err(|e| Error::Tls(format!("CA certificate {}: {e}", files.ca_cert.display())))?;
    }
    let chain = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| Error::Tls(format!("read key {}: {e}", files.key.display())))?;
    Ok(Loaded {
        roots: Arc::new(roots),
        chain,
        key,
    })
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    // Sized for a fast WAN link (~1 Gbit/s at 100 ms): the defaults assume 100 Mbit/s.
    transport.stream_receive_window(quinn::VarInt::from_u32(16 << 20));
    transport.receive_window(quinn::VarInt::from_u32(64 << 20));
    transport.send_window(64 << 20);
    transport.max_concurrent_bidi_streams(quinn::VarInt::from_u32(256));
    transport.keep_alive_interval(Some(Duration::from_secs(2)));
    transport.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
        10_000,
    ))));
    Arc::new(transport)
}

/// A QUIC server configuration that requires a client certificate from the cluster CA.
pub fn server_config(files: &TlsFiles) -> Result<quinn::ServerConfig> {
    let loaded = load(files)?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        loaded.roots.clone(),
        provider(),
    )
    .build()
    .map_err(|e| Error::Tls(format!("client verifier: {e}")))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(loaded.chain, loaded.key)
        .map_err(|e| Error::Tls(format!("server certificate: {e}")))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| Error::Tls(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport());
    Ok(config)
}

/// A QUIC client configuration that presents this node's certificate and accepts only servers
/// with a certificate from the cluster CA.
pub fn client_config(files: &TlsFiles) -> Result<quinn::ClientConfig> {
    let loaded = load(files)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(loaded.roots)
        .with_client_auth_cert(loaded.chain, loaded.key)
        .map_err(|e| Error::Tls(format!("client certificate: {e}")))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| Error::Tls(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport());
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn der(path: &Path) -> Vec<u8> {
        CertificateDer::from_pem_file(path)
            .expect("certificate")
            .as_ref()
            .to_vec()
    }

    #[test]
    fn a_certificate_names_exactly_the_role_it_was_issued_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        init_ca(dir.path(), DAY).expect("ca");
        let hosts = ["127.0.0.1".to_string()];
        let (node, _) = issue(
            dir.path(),
            "eu-1",
            Role::Node { region: "eu" },
            &hosts,
            &dir.path().join("eu-1"),
            DAY,
        )
        .expect("node");
        assert_eq!(
            holder(&der(&node)),
            Some(Holder::Node {
                region: "eu".into(),
                name: "eu-1".into()
            })
        );
        let (operator, _) = issue(
            dir.path(),
            "alice",
            Role::Operator,
            &[],
            &dir.path().join("alice"),
            DAY,
        )
        .expect("operator");
        assert_eq!(
            holder(&der(&operator)),
            Some(Holder::Operator {
                name: "alice".into()
            })
        );
        // The CA's own certificate names no role.
        assert_eq!(holder(&der(&dir.path().join("ca.pem"))), None);
        assert_eq!(holder(b"not a certificate"), None);
        // Region names are what regions are called, and a node certificate needs a host.
        for bad in ["", "EU", "e u", "eu:1", &"x".repeat(65)] {
            assert!(
                issue(
                    dir.path(),
                    "bad",
                    Role::Node { region: bad },
                    &hosts,
                    &dir.path().join("bad"),
                    DAY
                )
                .is_err(),
                "{bad:?}"
            );
        }
        assert!(issue(
            dir.path(),
            "hostless",
            Role::Node { region: "eu" },
            &[],
            &dir.path().join("hostless"),
            DAY
        )
        .is_err());
    }
}
