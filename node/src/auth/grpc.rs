//! Who may call which method of the intra-region gRPC port.
//!
//! Every method is in [`METHODS`] with what it needs; a method missing from it is refused, so a
//! new RPC cannot be reachable by accident (a test walks every method of every service).
//!
//! - **Peer** methods (Raft, chunk transfer, proposals, read barriers) come from the region's
//!   own nodes: with mutual TLS, a node certificate of this region from the cluster CA. A
//!   certificate of another region, an operator's, or none is refused, so a forged `Propose`
//!   never reaches Raft.
//! - **Operator** methods (membership, promotion, divergent writes, verify, the write gate) need
//!   a `cluster-admin` credential: an access or session token in `authorization` metadata, or
//!   an operator certificate. A node that forwards one to its leader forwards the caller's
//!   `authorization` with it, so the leader decides on the operator's identity, not the node's.
//! - **Peer or operator** methods are what a joining node asks (status, adding itself) and the
//!   status the CLI shows.
//!
//! Plaintext mode (no node certificate, loopback only) has no node identity: every local
//! process counts as a peer, and operator methods still need a `cluster-admin` token.
//! Denials are counted in `arca_auth_denied_total{route="grpc",reason}` and audited.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arca_replication::tls::Holder;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::Status;

use super::{Auth, Denial};

/// What a method needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Peer,
    PeerOrOperator,
    Operator,
}

/// Every method served on the gRPC port, by path.
pub const METHODS: &[(&str, Need)] = &[
    ("/arca.v1.RaftService/AppendEntries", Need::Peer),
    ("/arca.v1.RaftService/Vote", Need::Peer),
    ("/arca.v1.RaftService/InstallSnapshot", Need::Peer),
    ("/arca.v1.ChunkService/HasChunks", Need::Peer),
    ("/arca.v1.ChunkService/PutChunks", Need::Peer),
    ("/arca.v1.ChunkService/GetChunk", Need::Peer),
    ("/arca.v1.ClusterService/Propose", Need::Peer),
    ("/arca.v1.ClusterService/ReadIndex", Need::Peer),
    ("/arca.v1.ClusterService/CheckChunks", Need::Peer),
    ("/arca.v1.ClusterService/Mirrors", Need::Peer),
    ("/arca.v1.ClusterService/NodeStatus", Need::PeerOrOperator),
    (
        "/arca.v1.ClusterService/ClusterStatus",
        Need::PeerOrOperator,
    ),
    ("/arca.v1.ClusterService/AddNode", Need::PeerOrOperator),
    ("/arca.v1.ClusterService/RemoveNode", Need::Operator),
    ("/arca.v1.ClusterService/Promote", Need::Operator),
    ("/arca.v1.ClusterService/Divergent", Need::Operator),
    ("/arca.v1.ClusterService/Verify", Need::Operator),
    ("/arca.v1.ClusterService/AckDivergent", Need::Operator),
    ("/arca.v1.ClusterService/Unfence", Need::Operator),
];

pub fn need_of(path: &str) -> Option<Need> {
    METHODS
        .iter()
        .find(|(method, _)| *method == path)
        .map(|(_, need)| *need)
}

/// Who a gRPC call was admitted as (a request extension the handlers read for the audit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `user:alice`, `operator:alice` (a certificate), `node:n2@eu`, or `peer` (plaintext).
    pub principal: String,
    pub token_id: Option<String>,
    pub source: String,
    /// Admitted on an operator's credential.
    pub operator: bool,
}

impl Caller {
    /// The caller of a request, for handlers (a request that did not pass the guard, as in a
    /// unit test, is `unknown`).
    pub fn of<T>(request: &tonic::Request<T>) -> Caller {
        request
            .extensions()
            .get::<Caller>()
            .cloned()
            .unwrap_or_else(|| Caller {
                principal: "unknown".into(),
                token_id: None,
                source: String::new(),
                operator: false,
            })
    }

    /// Audits an operator action this node carried out.
    pub fn audit<R, E: std::fmt::Display>(
        &self,
        auth: &Auth,
        action: &str,
        resource: String,
        result: &Result<R, E>,
    ) {
        auth.audit.record(super::audit::Event {
            principal: self.principal.clone(),
            token_id: self.token_id.clone(),
            source: self.source.clone(),
            action: action.to_string(),
            resource,
            repo: None,
            outcome: match result {
                Ok(_) => "ok".to_string(),
                Err(e) => format!("error:{}", first_words(&e.to_string())),
            },
            request_id: String::new(),
        });
    }
}

fn first_words(text: &str) -> String {
    text.chars().take(48).collect()
}

/// The gRPC port's admission check.
pub struct GrpcGuard {
    auth: Arc<Auth>,
    region: String,
    tls: bool,
}

impl GrpcGuard {
    /// `tls`: the port requires the cluster CA (peers are known by their certificates).
    pub fn new(auth: Arc<Auth>, region: String, tls: bool) -> Arc<Self> {
        Arc::new(Self { auth, region, tls })
    }

    /// Admits a call from `remote`, whose certificate names `holder`, or says why not.
    pub async fn admit(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        remote: Option<SocketAddr>,
        holder: &Option<Holder>,
    ) -> Result<Caller, Refusal> {
        let need = need_of(path).ok_or(Refusal::UnknownMethod)?;
        let source = remote.map(|a| a.to_string()).unwrap_or_default();
        let peer = match (holder, self.tls) {
            (_, false) => Some("peer".to_string()),
            (Some(Holder::Node { region, name }), true) if *region == self.region => {
                Some(format!("node:{name}@{region}"))
            }
            _ => None,
        };
        let caller = |principal: String, token_id: Option<String>, operator: bool| Caller {
            principal,
            token_id,
            source: source.clone(),
            operator,
        };
        if need == Need::Peer {
            return match peer {
                Some(principal) => Ok(caller(principal, None, false)),
                None => Err(Refusal::NotAPeer(holder.clone())),
            };
        }
        // The operator's credential comes first: a node forwarding an operator's call sends it.
        if headers.contains_key(http::header::AUTHORIZATION) {
            let identity = self
                .auth
                .authenticate(headers, remote.map(|a| a.ip()))
                .await
                .map_err(Refusal::Credential)?;
            if !self.auth.is_cluster_admin(&identity) {
                return Err(Refusal::NotClusterAdmin(identity.name().to_string()));
            }
            return Ok(caller(identity.name().to_string(), identity.token_id, true));
        }
        if let (Some(Holder::Operator { name }), true) = (holder, self.tls) {
            return Ok(caller(format!("operator:{name}"), None, true));
        }
        match (need, peer) {
            (Need::PeerOrOperator, Some(principal)) => Ok(caller(principal, None, false)),
            _ => Err(Refusal::Credential(Denial::NoCredential)),
        }
    }
}

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    UnknownMethod,
    /// A peer method from a caller without a node certificate of this region.
    NotAPeer(Option<Holder>),
    Credential(Denial),
    NotClusterAdmin(String),
}

impl Refusal {
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::UnknownMethod => "unknown_method",
            Refusal::NotAPeer(None) => "no_node_certificate",
            Refusal::NotAPeer(Some(Holder::Node { .. })) => "other_region",
            Refusal::NotAPeer(Some(Holder::Operator { .. })) => "not_a_node",
            Refusal::Credential(denial) => denial.reason(),
            Refusal::NotClusterAdmin(_) => "forbidden",
        }
    }

    pub fn status(&self) -> Status {
        match self {
            Refusal::UnknownMethod => Status::unimplemented("no such method"),
            Refusal::NotAPeer(holder) => Status::permission_denied(match holder {
                None => "this method is for the region's nodes: present a node certificate of this region".to_string(),
                Some(Holder::Node { region, .. }) => format!(
                    "this method is for the region's nodes; the certificate is a node certificate of region {region:?}"
                ),
                Some(Holder::Operator { .. }) => {
                    "this method is for the region's nodes, not operators".to_string()
                }
            }),
            Refusal::Credential(Denial::NoCredential) => Status::unauthenticated(
                "an operator credential is required: sign in (arca login) or pass --token with a cluster-admin token",
            ),
            Refusal::Credential(Denial::RateLimited { retry_after_secs }) => {
                Status::resource_exhausted(format!(
                    "too many failed attempts; retry in {retry_after_secs} s"
                ))
            }
            Refusal::Credential(denial) => {
                Status::unauthenticated(format!("the credential was refused ({})", denial.reason()))
            }
            Refusal::NotClusterAdmin(principal) => Status::permission_denied(format!(
                "{principal} is not a cluster-admin"
            )),
        }
    }
}

/// The caller's address and, on a TLS connection, the holder its certificate names (the
/// handshake already verified it against the cluster CA).
fn connection(extensions: &http::Extensions) -> (Option<SocketAddr>, Option<Holder>) {
    if let Some(info) = extensions.get::<TlsConnectInfo<TcpConnectInfo>>() {
        let holder = info
            .peer_certs()
            .and_then(|certs| certs.first().and_then(|c| arca_replication::tls::holder(c)));
        return (info.get_ref().remote_addr(), holder);
    }
    let remote = extensions
        .get::<TcpConnectInfo>()
        .and_then(|info| info.remote_addr());
    (remote, None)
}

/// The tower layer that runs [`GrpcGuard::admit`] in front of every service.
#[derive(Clone)]
pub struct GuardLayer(pub Arc<GrpcGuard>);

impl<S> tower::Layer<S> for GuardLayer {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Guarded {
            inner,
            guard: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    guard: Arc<GrpcGuard>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Guarded<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone that was polled ready serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let guard = self.guard.clone();
        Box::pin(async move {
            let path = request.uri().path().to_string();
            let (remote, holder) = connection(request.extensions());
            match guard.admit(&path, request.headers(), remote, &holder).await {
                Ok(caller) => {
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                Err(refusal) => {
                    guard.refused(&path, remote, &holder, &refusal);
                    Ok(refusal.status().into_http())
                }
            }
        })
    }
}

impl GrpcGuard {
    fn refused(
        &self,
        path: &str,
        remote: Option<SocketAddr>,
        holder: &Option<Holder>,
        refusal: &Refusal,
    ) {
        let reason = refusal.reason();
        metrics::counter!("arca_auth_denied_total", "route" => "grpc", "reason" => reason)
            .increment(1);
        let principal = match (holder, refusal) {
            (_, Refusal::NotClusterAdmin(principal)) => principal.clone(),
            (Some(Holder::Node { region, name }), _) => format!("node:{name}@{region}"),
            (Some(Holder::Operator { name }), _) => format!("operator:{name}"),
            (None, _) => "anonymous".to_string(),
        };
        let source = remote.map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(reason, %principal, %source, method = path, "refused a gRPC call");
        self.auth.audit.record(super::audit::Event {
            principal,
            source,
            action: format!("grpc {}", path.rsplit('/').next().unwrap_or(path)),
            resource: path.to_string(),
            outcome: format!("denied:{reason}"),
            ..Default::default()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every method of every service in the protocol files, as `/arca.v1.Service/Method`.
    fn served_methods() -> Vec<String> {
        let mut methods = Vec::new();
        for proto in [
            include_str!("../../../proto/proto/arca/v1/raft.proto"),
            include_str!("../../../proto/proto/arca/v1/cluster.proto"),
            include_str!("../../../proto/proto/arca/v1/chunks.proto"),
        ] {
            let mut service = None;
            for line in proto.lines().map(str::trim) {
                if let Some(rest) = line.strip_prefix("service ") {
                    service = rest.split_whitespace().next().map(str::to_string);
                }
                if let (Some(rest), Some(service)) = (line.strip_prefix("rpc "), &service) {
                    let name = rest.split('(').next().unwrap_or_default().trim();
                    methods.push(format!("/arca.v1.{service}/{name}"));
                }
            }
        }
        methods
    }

    #[test]
    fn every_method_of_every_service_says_who_may_call_it() {
        let served = served_methods();
        assert_eq!(served.len(), METHODS.len(), "{served:?}");
        for method in &served {
            assert!(need_of(method).is_some(), "{method} is not in METHODS");
        }
        for (method, _) in METHODS {
            assert!(served.iter().any(|m| m == method), "{method} is not served");
        }
        assert_eq!(need_of("/arca.v1.ClusterService/Nothing"), None);
        for admin in [
            "RemoveNode",
            "Promote",
            "Divergent",
            "Verify",
            "AckDivergent",
            "Unfence",
        ] {
            assert_eq!(
                need_of(&format!("/arca.v1.ClusterService/{admin}")),
                Some(Need::Operator),
                "{admin}"
            );
        }
    }
}
