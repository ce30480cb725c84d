//! Round trips of the CA and node credentials, and real mutual-TLS gRPC calls on 127.0.0.1
//! through a small Dispatcher service whose handlers use the role checks.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use shoal_proto::dispatcher_client::DispatcherClient;
use shoal_proto::dispatcher_server::{Dispatcher, DispatcherServer};
use shoal_proto::{
    Empty, HeartbeatRequest, HeartbeatResponse, SessionMessage, SessionRequest,
    UpdateTaskStatusRequest,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::server::Router;
use tonic::transport::Server;
use tonic::{Code, Request, Response, Status};

use crate::*;

const HOUR: Duration = Duration::from_secs(3600);

fn ca(cluster: &str) -> RootCa {
    RootCa::generate(cluster).expect("generate CA")
}

fn issue(ca: &RootCa, node_id: &str, role: Role) -> NodeCert {
    ca.issue(node_id, role, DEFAULT_CERT_EXPIRY)
        .expect("issue node certificate")
}

// ---------------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------------

#[test]
fn signed_csr_carries_node_id_role_and_cluster() {
    let ca = ca("cluster1");
    let key = NodeKey::generate().unwrap();
    let csr = key.csr_pem().unwrap();
    let before = SystemTime::now();
    let cert_pem = ca
        .sign_csr(&csr, "node1abc", Role::Worker, DEFAULT_CERT_EXPIRY)
        .unwrap();
    let cert = key
        .into_node_cert(cert_pem, ca.cert_pem().to_string())
        .unwrap();
    assert_eq!(cert.node_id(), "node1abc");
    assert_eq!(cert.role(), Role::Worker);
    assert_eq!(cert.cluster_id(), "cluster1");
    assert_eq!(cert.ca_digest(), ca.digest());
    assert!(cert.not_before() <= before, "backdated for clock skew");
    let lifetime_left = cert.not_after().duration_since(before).unwrap();
    assert!(lifetime_left > DEFAULT_CERT_EXPIRY - Duration::from_secs(60));
    assert!(lifetime_left <= DEFAULT_CERT_EXPIRY + Duration::from_secs(60));
    assert!(!cert.is_expired(SystemTime::now()));

    let manager = issue(&ca, "node2abc", Role::Manager);
    assert_eq!(manager.role(), Role::Manager);
}

#[test]
fn names_in_the_csr_are_ignored() {
    let ca = ca("cluster1");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["swarm-manager".to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "someone-else");
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationalUnitName, "swarm-manager");
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let cert_pem = ca
        .sign_csr(&csr, "node1abc", Role::Worker, DEFAULT_CERT_EXPIRY)
        .unwrap();
    let cert = NodeCert::new(cert_pem, key.serialize_pem(), ca.cert_pem().to_string()).unwrap();
    assert_eq!(cert.node_id(), "node1abc");
    assert_eq!(cert.role(), Role::Worker);
}

#[test]
fn sign_csr_refuses_bad_input() {
    let ca = ca("cluster1");
    let csr = NodeKey::generate().unwrap().csr_pem().unwrap();
    let err = ca
        .sign_csr("not a csr", "node1", Role::Worker, HOUR)
        .unwrap_err();
    assert!(matches!(err, TlsError::InvalidCsr(_)), "{err}");
    assert!(err
        .to_string()
        .contains("invalid certificate signing request"));

    for bad in ["", "Node1", "node 1", "node/1", &"a".repeat(65)] {
        let err = ca.sign_csr(&csr, bad, Role::Worker, HOUR).unwrap_err();
        assert!(matches!(err, TlsError::InvalidNodeId(_)), "{bad:?}: {err}");
    }

    // Only ECDSA P-256 keys.
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let ed_csr = params.serialize_request(&ed).unwrap().pem().unwrap();
    let err = ca
        .sign_csr(&ed_csr, "node1", Role::Worker, HOUR)
        .unwrap_err();
    assert!(err.to_string().contains("ECDSA P-256"), "{err}");

    assert!(matches!(
        RootCa::generate("bad cluster"),
        Err(TlsError::InvalidClusterId(_))
    ));
}

#[test]
fn root_ca_round_trips_through_disk() {
    let dir = tempfile::tempdir().unwrap();
    let original = ca("cluster1");
    original.save(dir.path()).unwrap();
    let key_mode = std::fs::metadata(dir.path().join("root-ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);

    let loaded = RootCa::load(dir.path()).unwrap();
    assert_eq!(loaded.cluster_id(), "cluster1");
    assert_eq!(loaded.digest(), original.digest());
    assert_eq!(loaded.cert_pem(), original.cert_pem());
    // A certificate from the reloaded CA chains to the original CA certificate.
    let cert = issue(&loaded, "node1", Role::Manager);
    NodeCert::new(
        cert.cert_pem().into(),
        cert.key_pem().into(),
        original.cert_pem().into(),
    )
    .unwrap();

    // A key that is not the CA's is refused.
    let other = ca("cluster1");
    let err = RootCa::from_pem(original.cert_pem(), other.key_pem()).unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    let err = RootCa::load(&dir.path().join("missing")).unwrap_err();
    assert!(err.to_string().contains("could not read"), "{err}");
}

#[test]
fn node_cert_round_trips_through_disk_and_checks_its_parts() {
    let dir = tempfile::tempdir().unwrap();
    let ca1 = ca("cluster1");
    let cert = issue(&ca1, "node1", Role::Worker);
    cert.save(dir.path()).unwrap();
    let loaded = NodeCert::load(dir.path()).unwrap();
    assert_eq!(loaded.node_id(), "node1");
    assert_eq!(loaded.role(), Role::Worker);
    assert_eq!(loaded.not_after(), cert.not_after());
    let mode = std::fs::metadata(dir.path().join("node.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // Another CA's certificate.
    let ca2 = ca("cluster1");
    let err = NodeCert::new(
        cert.cert_pem().into(),
        cert.key_pem().into(),
        ca2.cert_pem().into(),
    )
    .unwrap_err();
    assert!(matches!(err, TlsError::NotSignedByCa(_)), "{err}");

    // Another key.
    let other_key = NodeKey::generate().unwrap().key_pem();
    let err = NodeCert::new(cert.cert_pem().into(), other_key, ca1.cert_pem().into()).unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");

    // A node certificate given as the CA.
    let err = NodeCert::new(
        cert.cert_pem().into(),
        cert.key_pem().into(),
        cert.cert_pem().into(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("not a CA certificate"), "{err}");
}

#[test]
fn renewal_falls_between_half_and_four_fifths_of_the_lifetime() {
    let ca = ca("cluster1");
    let start = SystemTime::now() - HOUR;
    let end = start + 100 * HOUR;
    let mut points = Vec::new();
    for i in 0..8 {
        let cert = ca
            .issue_between(&format!("node{i}"), Role::Worker, start, end)
            .unwrap();
        let at = cert.renew_at();
        assert!(at >= start + 50 * HOUR && at <= start + 80 * HOUR);
        assert!(!cert.needs_renewal(start + 49 * HOUR));
        assert!(cert.needs_renewal(start + 81 * HOUR));
        assert!(cert.needs_renewal(end));
        assert_eq!(cert.renew_at(), at, "stable for a certificate");
        points.push(at);
    }
    points.dedup();
    assert!(points.len() > 1, "spread across certificates");
}

#[test]
fn digest_checks_the_ca_pem() {
    let ca1 = ca("cluster1");
    let ca2 = ca("cluster1");
    ca1.digest().check_pem(ca1.cert_pem()).unwrap();
    let err = ca1.digest().check_pem(ca2.cert_pem()).unwrap_err();
    assert!(matches!(err, TlsError::CaDigestMismatch { .. }), "{err}");
    assert!(ca1.digest().to_string().starts_with("sha256:"));
    assert!(CaDigest::of_pem("garbage").is_err());
}

#[test]
fn live_cert_refuses_a_certificate_of_another_ca() {
    let ca1 = ca("cluster1");
    let live = LiveCert::new(issue(&ca1, "node1", Role::Worker)).unwrap();
    live.replace(issue(&ca1, "node1", Role::Manager)).unwrap();
    assert_eq!(live.node_cert().role(), Role::Manager);
    let ca2 = ca("cluster2");
    let err = live
        .replace(issue(&ca2, "node1", Role::Manager))
        .unwrap_err();
    assert!(matches!(err, TlsError::CaChanged), "{err}");
}

#[test]
fn role_names() {
    assert_eq!(Role::Manager.ou(), "swarm-manager");
    assert_eq!(Role::from_ou("swarm-worker"), Some(Role::Worker));
    assert_eq!(Role::from_ou("swarm-admin"), None);
    assert_eq!("manager".parse::<Role>().unwrap(), Role::Manager);
    assert!("boss".parse::<Role>().is_err());
}

// ---------------------------------------------------------------------------------------------
// gRPC over mutual TLS
// ---------------------------------------------------------------------------------------------

/// Heartbeat reports who called (1 manager, 2 worker, 3 local) and checks the request's node ID
/// against the certificate, as the real dispatcher must; an empty node ID is the stand-in for
/// the join call that needs no certificate. UpdateTaskStatus is manager-only.
struct TestDispatcher;

#[tonic::async_trait]
impl Dispatcher for TestDispatcher {
    type SessionStream = futures::stream::Empty<Result<SessionMessage, Status>>;

    async fn session(
        &self,
        _: Request<SessionRequest>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        if request.get_ref().node_id.is_empty() {
            return Ok(Response::new(HeartbeatResponse { period_ms: 0 }));
        }
        let period_ms = match require_node(&request)? {
            Caller::Local => 3,
            Caller::Node(id) => {
                if id.node_id != request.get_ref().node_id {
                    return Err(Status::permission_denied(
                        "node ID is not the certificate's",
                    ));
                }
                match id.role {
                    Role::Manager => 1,
                    Role::Worker => 2,
                }
            }
        };
        Ok(Response::new(HeartbeatResponse { period_ms }))
    }

    async fn report_usage(
        &self,
        _request: Request<shoal_proto::UsageReport>,
    ) -> Result<Response<Empty>, Status> {
        Ok(Response::new(Empty {}))
    }

    async fn update_task_status(
        &self,
        request: Request<UpdateTaskStatusRequest>,
    ) -> Result<Response<Empty>, Status> {
        require_role(&request, Role::Manager)?;
        Ok(Response::new(Empty {}))
    }
}

/// Serves `router` on 127.0.0.1 with `config` until the returned sender is dropped.
async fn serve(router: Router, config: ServerConfig) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let incoming = TlsIncoming::new(listener, Arc::new(config));
    let addr = incoming.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = router
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await;
    });
    (addr, stop)
}

async fn serve_dispatcher(cert: &NodeCert, auth: ClientAuth) -> (SocketAddr, oneshot::Sender<()>) {
    let router = Server::builder().add_service(DispatcherServer::new(TestDispatcher));
    serve(router, server_config(cert, auth).unwrap()).await
}

use rustls::{ClientConfig, ServerConfig};

/// Why a call failed: at connecting (TLS refused) or with a status from the handler.
#[derive(Debug)]
enum Failure {
    Connect(String),
    Status(Status),
}

impl Failure {
    /// Asserts that TLS refused the connection (nothing reached a handler) for the reason that
    /// `needle` names: our side's verdict, or the alert the server sent.
    #[track_caller]
    fn assert_refused(&self, needle: &str) {
        let text = match self {
            Failure::Connect(msg) => msg.clone(),
            Failure::Status(s) => {
                assert!(
                    matches!(s.code(), Code::Unavailable | Code::Unknown),
                    "expected a refused connection, got {s:?}"
                );
                format!("{s:?}")
            }
        };
        assert!(text.contains(needle), "expected {needle:?} in: {text}");
    }
}

async fn heartbeat(
    addr: SocketAddr,
    config: ClientConfig,
    server_name: &str,
    node_id: &str,
) -> Result<u64, Failure> {
    let channel = connect(&addr.to_string(), Arc::new(config), server_name)
        .await
        .map_err(|e| Failure::Connect(e.to_string()))?;
    DispatcherClient::new(channel)
        .heartbeat(HeartbeatRequest {
            node_id: node_id.into(),
            session_id: String::new(),
        })
        .await
        .map(|r| r.into_inner().period_ms)
        .map_err(Failure::Status)
}

async fn update_status(addr: SocketAddr, cert: &NodeCert) -> Result<(), Failure> {
    let config = client_config(cert).unwrap();
    let channel = connect(
        &addr.to_string(),
        Arc::new(config),
        Role::Manager.server_name(),
    )
    .await
    .map_err(|e| Failure::Connect(e.to_string()))?;
    DispatcherClient::new(channel)
        .update_task_status(UpdateTaskStatusRequest::default())
        .await
        .map(|_| ())
        .map_err(Failure::Status)
}

const MANAGER: &str = "swarm-manager";

/// A client that trusts `trusted`'s CA (so it accepts the server) but presents `cert`, whose
/// CA may be another: what a node of another cluster, or a forger, would present.
fn foreign_client(trusted: &RootCa, cert: &NodeCert) -> ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(crate::pem::one_cert(trusted.cert_pem(), "CA").unwrap())
        .unwrap();
    let key = crate::pem::key(cert.key_pem(), "key").unwrap();
    let mut config = ClientConfig::builder_with_provider(crate::config::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![cert.cert_der.clone(), cert.ca_der.clone()], key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

#[tokio::test]
async fn mutual_tls_call_names_the_caller() {
    let ca = ca("cluster1");
    let server = issue(&ca, "mgr1", Role::Manager);
    let (addr, _stop) = serve_dispatcher(&server, ClientAuth::Required).await;

    let worker = issue(&ca, "wrk1", Role::Worker);
    let period = heartbeat(addr, client_config(&worker).unwrap(), MANAGER, "wrk1")
        .await
        .unwrap();
    assert_eq!(period, 2);
    let manager = issue(&ca, "mgr2", Role::Manager);
    let period = heartbeat(addr, client_config(&manager).unwrap(), MANAGER, "mgr2")
        .await
        .unwrap();
    assert_eq!(period, 1);

    // A node cannot speak for another node.
    let err = heartbeat(addr, client_config(&worker).unwrap(), MANAGER, "mgr2")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Failure::Status(s) if s.code() == Code::PermissionDenied),
        "{err:?}"
    );

    // The server may also be addressed as exactly the node it is.
    heartbeat(addr, client_config(&worker).unwrap(), "mgr1", "wrk1")
        .await
        .unwrap();
    let err = heartbeat(addr, client_config(&worker).unwrap(), "mgr9", "wrk1")
        .await
        .unwrap_err();
    err.assert_refused("not valid for name \"mgr9\"");
}

#[tokio::test]
async fn worker_certificate_cannot_call_a_manager_only_method() {
    let ca = ca("cluster1");
    let (addr, _stop) =
        serve_dispatcher(&issue(&ca, "mgr1", Role::Manager), ClientAuth::Required).await;

    let err = update_status(addr, &issue(&ca, "wrk1", Role::Worker))
        .await
        .unwrap_err();
    match err {
        Failure::Status(s) => {
            assert_eq!(s.code(), Code::PermissionDenied);
            assert!(
                s.message()
                    .contains("a worker certificate cannot call the control API"),
                "{}",
                s.message()
            );
            assert!(s.message().contains("wrk1"));
        }
        other => panic!("expected a refusal from the handler, got {other:?}"),
    }
    update_status(addr, &issue(&ca, "mgr2", Role::Manager))
        .await
        .unwrap();
}

#[tokio::test]
async fn require_role_interceptor_guards_a_whole_service() {
    let ca = ca("cluster1");
    let router = Server::builder().add_service(DispatcherServer::with_interceptor(
        TestDispatcher,
        RequireRole(Role::Manager),
    ));
    let config = server_config(&issue(&ca, "mgr1", Role::Manager), ClientAuth::Required).unwrap();
    let (addr, _stop) = serve(router, config).await;

    let worker = issue(&ca, "wrk1", Role::Worker);
    let err = heartbeat(addr, client_config(&worker).unwrap(), MANAGER, "wrk1")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Failure::Status(s) if s.code() == Code::PermissionDenied),
        "{err:?}"
    );
    let manager = issue(&ca, "mgr2", Role::Manager);
    heartbeat(addr, client_config(&manager).unwrap(), MANAGER, "mgr2")
        .await
        .unwrap();
}

/// A client that presents no certificate: refused by a server that requires one; let in by
/// one that makes it optional, where it reaches only what needs no certificate.
#[tokio::test]
async fn client_without_certificate() {
    let ca = ca("cluster1");
    let server = issue(&ca, "mgr1", Role::Manager);
    let no_cert = || bootstrap_client_config(ca.digest()).unwrap();

    let (required, _stop1) = serve_dispatcher(&server, ClientAuth::Required).await;
    let err = heartbeat(required, no_cert(), MANAGER, "")
        .await
        .unwrap_err();
    err.assert_refused("CertificateRequired");

    let (optional, _stop2) = serve_dispatcher(&server, ClientAuth::Optional).await;
    assert_eq!(
        heartbeat(optional, no_cert(), MANAGER, "").await.unwrap(),
        0
    );
    let err = heartbeat(optional, no_cert(), MANAGER, "wrk1")
        .await
        .unwrap_err();
    match err {
        Failure::Status(s) => {
            assert_eq!(s.code(), Code::Unauthenticated);
            assert!(
                s.message().contains("join the swarm first"),
                "{}",
                s.message()
            );
        }
        other => panic!("expected UNAUTHENTICATED, got {other:?}"),
    }
    // Optional does not mean "any certificate": a certificate must still be valid.
    let stranger = issue(&self::ca("cluster2"), "wrk1", Role::Worker);
    let err = heartbeat(optional, foreign_client(&ca, &stranger), MANAGER, "wrk1")
        .await
        .unwrap_err();
    err.assert_refused("UnknownCA");
}

#[tokio::test]
async fn certificates_of_another_ca_are_refused_both_ways() {
    let ca1 = ca("cluster1");
    let ca2 = ca("cluster2");
    let (addr, _stop) =
        serve_dispatcher(&issue(&ca1, "mgr1", Role::Manager), ClientAuth::Required).await;
    let stranger = issue(&ca2, "wrk1", Role::Worker);
    let err = heartbeat(addr, foreign_client(&ca1, &stranger), MANAGER, "wrk1")
        .await
        .unwrap_err();
    err.assert_refused("UnknownCA");

    // A server of another cluster is refused by the client.
    let (other, _stop2) =
        serve_dispatcher(&issue(&ca2, "mgr9", Role::Manager), ClientAuth::Optional).await;
    let member = issue(&ca1, "wrk2", Role::Worker);
    let err = heartbeat(other, client_config(&member).unwrap(), MANAGER, "wrk2")
        .await
        .unwrap_err();
    err.assert_refused("UnknownIssuer");
}

#[tokio::test]
async fn expired_certificate_is_refused() {
    let ca = ca("cluster1");
    let (addr, _stop) =
        serve_dispatcher(&issue(&ca, "mgr1", Role::Manager), ClientAuth::Required).await;
    let now = SystemTime::now();
    let expired = ca
        .issue_between("wrk1", Role::Worker, now - 48 * HOUR, now - 24 * HOUR)
        .unwrap();
    assert!(expired.is_expired(now));
    let err = heartbeat(addr, client_config(&expired).unwrap(), MANAGER, "wrk1")
        .await
        .unwrap_err();
    err.assert_refused("CertificateExpired");

    // Nor does a client accept an expired server.
    let expired_server = ca
        .issue_between("mgr2", Role::Manager, now - 48 * HOUR, now - 24 * HOUR)
        .unwrap();
    let (addr2, _stop2) = serve_dispatcher(&expired_server, ClientAuth::Required).await;
    let worker = issue(&ca, "wrk2", Role::Worker);
    let err = heartbeat(addr2, client_config(&worker).unwrap(), MANAGER, "wrk2")
        .await
        .unwrap_err();
    err.assert_refused("certificate expired");
}

#[tokio::test]
async fn bootstrap_accepts_only_the_pinned_ca() {
    let ca1 = ca("cluster1");
    let (addr, _stop) =
        serve_dispatcher(&issue(&ca1, "mgr1", Role::Manager), ClientAuth::Optional).await;
    let pinned = bootstrap_client_config(ca1.digest()).unwrap();
    assert_eq!(heartbeat(addr, pinned, MANAGER, "").await.unwrap(), 0);

    let wrong = bootstrap_client_config(ca("cluster1").digest()).unwrap();
    let err = heartbeat(addr, wrong, MANAGER, "").await.unwrap_err();
    assert!(matches!(err, Failure::Connect(_)), "{err:?}");
    err.assert_refused("did not present the CA named by the join token");

    // The pinned CA's certificate must also be a manager's: a worker's API is not a join
    // endpoint.
    let (worker_api, _stop2) =
        serve_dispatcher(&issue(&ca1, "wrk1", Role::Worker), ClientAuth::Optional).await;
    let pinned = bootstrap_client_config(ca1.digest()).unwrap();
    let err = heartbeat(worker_api, pinned, MANAGER, "")
        .await
        .unwrap_err();
    err.assert_refused("not valid for name \"swarm-manager\"");
}

#[tokio::test]
async fn renewed_certificate_is_presented_on_new_connections() {
    let ca = ca("cluster1");
    let (addr, _stop) =
        serve_dispatcher(&issue(&ca, "mgr1", Role::Manager), ClientAuth::Required).await;
    let live = LiveCert::new(issue(&ca, "wrk1", Role::Worker)).unwrap();
    let config = client_config_live(live.clone()).unwrap();
    assert_eq!(
        heartbeat(addr, config.clone(), MANAGER, "wrk1")
            .await
            .unwrap(),
        2
    );
    // Promotion: the same node now holds a manager certificate.
    live.replace(issue(&ca, "wrk1", Role::Manager)).unwrap();
    assert_eq!(heartbeat(addr, config, MANAGER, "wrk1").await.unwrap(), 1);
}

/// The local API socket needs no certificate; a TCP listener without TLS gets nothing.
#[tokio::test]
async fn local_socket_is_trusted_and_plain_tcp_is_not() {
    use hyper_util::rt::TokioIo;
    use tokio::net::{UnixListener, UnixStream};
    use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.sock");
    let uds = UnixListener::bind(&path).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        Server::builder()
            .add_service(DispatcherServer::new(TestDispatcher))
            .serve_with_incoming_shutdown(UnixListenerStream::new(uds), async {
                let _ = stopped.await;
            }),
    );
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .unwrap();
    let mut client = DispatcherClient::new(channel);
    let period = client
        .heartbeat(HeartbeatRequest {
            node_id: "self".into(),
            session_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .period_ms;
    assert_eq!(period, 3);
    client
        .update_task_status(UpdateTaskStatusRequest::default())
        .await
        .unwrap();
    drop(stop);

    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        Server::builder()
            .add_service(DispatcherServer::new(TestDispatcher))
            .serve_with_incoming_shutdown(TcpListenerStream::new(tcp), async {
                let _ = stopped.await;
            }),
    );
    let mut client = DispatcherClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let err = client
        .update_task_status(UpdateTaskStatusRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
}
