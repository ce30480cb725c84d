//! The swarm's trust, end to end: who may join, and who may call a manager.
//!
//! - `swarm join` with a garbage token, a well-formed token with a wrong secret, a token that
//!   names another swarm's CA, and a token that was rotated away is refused with an error that
//!   says so, and the swarm's node list does not change; the rotated-in token works.
//! - On a manager's mutual-TLS port (2377), the test itself calls the control API as a tonic
//!   client with chosen certificates: a manager's certificate may (the control case that shows
//!   the client works), a worker's certificate is refused with PERMISSION_DENIED (reads,
//!   writes, join tokens), no certificate is refused, a certificate of another swarm's CA is
//!   refused, and so is an expired certificate signed by this swarm's own CA. Nothing any
//!   refused caller asked for happens.
//!
//! The expired certificate: the cluster CA's key lives only in the replicated store (the
//! `Cluster` object), which no API hands out. The test reads it the way someone holding a
//! manager's whole disk could: it decrypts the manager's Raft log with the key files beside it
//! (`shoal_manager::raft::storage::decrypted_records`; the log is sealed at rest), scans the
//! records for PEM private keys and keeps the one that matches the CA certificate
//! (`certificates/root-ca.crt`). With that CA it issues
//! a manager certificate valid for one second, waits for it to expire, and also a fresh one
//! (which must be accepted, so that expiry is the only difference).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use shoal_proto::{ContainerSpec, CreateServiceRequest, Empty, JoinTokenRequest, ServiceSpec};
use shoal_tests::cluster::{ClusterHost, TestCluster};
use shoal_tests::daemon::words;
use shoal_tests::listing::{by_node_id, service_names};
use shoal_tests::mtls::{certs_dir, control, node_cert, node_client_config, runtime};
use shoal_tls::{Role, RootCa};
use tonic::{Code, Status};

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

/// The node IDs `host`'s `node ls` lists, with their status.
fn node_list(host: &ClusterHost) -> BTreeSet<(String, String)> {
    by_node_id(&host.nodes(), "Status").into_iter().collect()
}

/// `swarm join` of `joiner` with `token` to `manager`, expected to fail; returns the error.
fn join_refused(joiner: &ClusterHost, token: &str, manager: &ClusterHost) -> String {
    let err = join_refused_inner(joiner, token, manager);
    eprintln!("join with {token:?} refused: {}", err.trim());
    err
}

fn join_refused_inner(joiner: &ClusterHost, token: &str, manager: &ClusterHost) -> String {
    let err = joiner.swarm_join_err(token, &manager.swarm_addr());
    // The refused node is in no swarm.
    let info = joiner.info();
    assert_eq!(
        info["node_id"].as_str().unwrap_or_default(),
        "",
        "a refused join left the node in a swarm: {info}"
    );
    assert_ne!(info["is_manager"], Value::Bool(true), "{info}");
    err
}

fn join_token(host: &ClusterHost, args: &str) -> String {
    host.shoal_ok(&words(&format!("swarm join-token -q {args}")))
        .trim()
        .to_string()
}

/// A token with its last part (the secret) replaced by `secret`.
fn with_secret(token: &str, secret: &str) -> String {
    let (head, _) = token.rsplit_once('-').expect("a join token has dashes");
    format!("{head}-{secret}")
}

/// The same token with another CA digest: its last base-36 digit changed (downwards, or up
/// from 0, so that it still is a 256-bit number), i.e. the digest of some other swarm's CA.
fn with_other_digest(token: &str) -> String {
    let parts: Vec<&str> = token.split('-').collect();
    assert_eq!(parts.len(), 4, "SHOAL-1-DIGEST-SECRET: {token}");
    let mut digest = parts[2].to_string();
    let last = digest.pop().expect("a digest");
    digest.push(if last == '0' { '1' } else { '0' });
    format!("{}-{}-{}-{}", parts[0], parts[1], digest, parts[3])
}

/// A client config that trusts `server_ca_pem` and presents `client` (certificate chain and
/// key PEMs), or no certificate. Built with rustls directly, so that it can present a
/// certificate that `shoal_tls::NodeCert` would refuse to pair with the server's CA.
fn raw_client_config(
    server_ca_pem: &str,
    client: Option<(&[&str], &str)>,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(server_ca_pem.as_bytes()).expect("CA PEM"))
        .expect("CA as root");
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("TLS 1.3")
    .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => {
            let chain = chain
                .iter()
                .map(|pem| CertificateDer::from_pem_slice(pem.as_bytes()).expect("cert PEM"))
                .collect();
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key PEM");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client certificate")
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// `Control.ListServices` on `addr` with `config`: the service names, or the refusal.
fn list_services(
    rt: &tokio::runtime::Runtime,
    addr: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<BTreeSet<String>, Status> {
    rt.block_on(async {
        let resp = tokio::time::timeout(Duration::from_secs(30), async {
            control(addr, config).await?.list_services(Empty {}).await
        })
        .await
        .map_err(|_| Status::deadline_exceeded("no answer within 30 s"))??;
        Ok(resp
            .into_inner()
            .services
            .into_iter()
            .filter_map(|s| s.service?.spec.map(|sp| sp.name))
            .collect())
    })
}

fn create_service(
    rt: &tokio::runtime::Runtime,
    addr: &str,
    config: Arc<rustls::ClientConfig>,
    name: &str,
) -> Result<(), Status> {
    create_service_labelled(rt, addr, config, name, "")
}

/// `Control.CreateService` of an empty busybox service, with one label of value `label`.
fn create_service_labelled(
    rt: &tokio::runtime::Runtime,
    addr: &str,
    config: Arc<rustls::ClientConfig>,
    name: &str,
    label: &str,
) -> Result<(), Status> {
    let spec = ServiceSpec {
        name: name.to_string(),
        container: Some(ContainerSpec {
            image: "docker.io/library/busybox:latest".into(),
            ..Default::default()
        }),
        replicas: 0,
        labels: [("big".to_string(), label.to_string())]
            .into_iter()
            .collect(),
        ..Default::default()
    };
    rt.block_on(async {
        control(addr, config)
            .await?
            .create_service(CreateServiceRequest {
                spec: Some(Box::new(spec)),
            })
            .await
            .map(|_| ())
    })
}

fn manager_token(
    rt: &tokio::runtime::Runtime,
    addr: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<String, Status> {
    rt.block_on(async {
        control(addr, config)
            .await?
            .get_join_token(JoinTokenRequest {
                role: "manager".into(),
                rotate: false,
            })
            .await
            .map(|r| r.into_inner().token)
    })
}

/// The cluster CA, recovered from a manager's Raft log (see the module docs).
fn cluster_ca_from_disk(manager: &ClusterHost) -> RootCa {
    let ca_pem = std::fs::read_to_string(certs_dir(manager).join("root-ca.crt"))
        .expect("the manager's root-ca.crt");
    let raft_dir = manager.data_dir().join("raft");
    let records = shoal_manager::raft::storage::decrypted_records(&raft_dir, None)
        .unwrap_or_else(|e| panic!("read the raft log in {}: {e}", raft_dir.display()));
    let mut candidates = Vec::new();
    for record in &records {
        collect_pem_keys(&String::from_utf8_lossy(record), &mut candidates);
    }
    assert!(
        !candidates.is_empty(),
        "no PEM private key found in {}",
        raft_dir.display()
    );
    candidates
        .iter()
        .find_map(|key| RootCa::from_pem(&ca_pem, key).ok())
        .unwrap_or_else(|| {
            panic!(
                "none of the {} private keys in {} belongs to the cluster CA",
                candidates.len(),
                raft_dir.display()
            )
        })
}

fn collect_pem_keys(text: &str, out: &mut Vec<String>) {
    const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
    const END: &str = "-----END PRIVATE KEY-----";
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let pem = &rest[start..start + len + END.len()];
        out.push(format!("{pem}\n"));
        rest = &rest[start + len + END.len()..];
    }
}

/// How many TLS handshakes `host`'s daemon logged as refused for `reason`.
fn handshake_refusals(host: &ClusterHost, reason: &str) -> usize {
    host.daemon_log()
        .lines()
        .filter(|l| l.contains("TLS handshake refused") && l.contains(reason))
        .count()
}

/// Waits until `host` has logged more than `before` handshakes refused for `reason`: the
/// refusal was the server's, for that reason (in TLS 1.3 the client only sees the connection
/// break after its own side of the handshake is done).
fn assert_server_refused(host: &ClusterHost, reason: &str, before: usize, what: &str) {
    let logged = shoal_tests::daemon::wait_until(Duration::from_secs(10), || {
        handshake_refusals(host, reason) > before
    });
    assert!(
        logged,
        "{what}: the manager logged no TLS handshake refused for {reason:?}; its log:\n{}",
        shoal_tests::daemon::tail(&host.daemon_log(), 20)
    );
}

fn assert_refused(what: &str, result: Result<impl std::fmt::Debug, Status>) -> Status {
    match result {
        Ok(v) => panic!("{what} was accepted: {v:?}"),
        Err(status) => {
            eprintln!(
                "{what}: refused with {:?}: {}",
                status.code(),
                status.message()
            );
            status
        }
    }
}

// ---------------------------------------------------------------------------------------------
// tests
// ---------------------------------------------------------------------------------------------

/// Wrong tokens: garbage, a wrong secret, another swarm's CA digest, a rotated-away token.
/// Each is refused with an error that says what is wrong, and the swarm does not change; the
/// token rotated in works.
#[test]
fn joins_with_wrong_or_rotated_tokens_are_refused_and_change_nothing() {
    let cluster = TestCluster::new(3);
    let (manager, joiner, other) = (cluster.host(0), cluster.host(1), cluster.host(2));
    manager.swarm_init();
    let before = node_list(manager);
    assert_eq!(before.len(), 1);
    let worker = join_token(manager, "worker");
    let mgr = join_token(manager, "manager");

    let err = join_refused(joiner, "not-a-token", manager);
    assert!(
        err.contains("invalid join token") && err.contains("SHOAL-1-"),
        "garbage token: {err}"
    );
    assert_eq!(node_list(manager), before);

    // Well-formed, this swarm's CA, but a secret nobody issued.
    let secret_len = worker.rsplit('-').next().unwrap().len();
    let forged = with_secret(&worker, &"7".repeat(secret_len));
    assert_ne!(forged, worker);
    assert_ne!(forged, mgr);
    let err = join_refused(joiner, &forged, manager);
    assert!(
        err.contains("invalid join token") && err.contains("not this swarm's current"),
        "wrong secret: {err}"
    );
    assert_eq!(node_list(manager), before);

    // The right secret, but the CA digest of a swarm this manager is not.
    let err = join_refused(joiner, &with_other_digest(&worker), manager);
    assert!(
        err.contains("did not present the CA named by the join token"),
        "other swarm's digest: {err}"
    );
    assert_eq!(node_list(manager), before);

    // Rotation: the old worker token stops working, the new one works, the manager token
    // is untouched.
    let rotated = join_token(manager, "--rotate worker");
    assert_ne!(rotated, worker);
    assert_eq!(join_token(manager, "worker"), rotated);
    assert_eq!(
        join_token(manager, "manager"),
        mgr,
        "rotating the worker token changed the manager token"
    );
    let err = join_refused(joiner, &worker, manager);
    assert!(
        err.contains("invalid join token") && err.contains("rotated"),
        "rotated-away token: {err}"
    );
    assert_eq!(node_list(manager), before);

    joiner.swarm_join(&rotated, &manager.swarm_addr());
    let joined_id = joiner.node_id();
    assert!(!joined_id.is_empty());
    assert_eq!(
        joiner.info()["is_manager"],
        false,
        "the worker token made a manager"
    );
    manager.wait_for(Duration::from_secs(60), "the new worker Ready", || {
        node_list(manager).contains(&(joined_id.clone(), "Ready".to_string()))
    });
    assert_eq!(node_list(manager).len(), 2);

    // The manager token rotates on its own too.
    let new_mgr = join_token(manager, "--rotate manager");
    assert_ne!(new_mgr, mgr);
    let err = join_refused(other, &mgr, manager);
    assert!(
        err.contains("invalid join token"),
        "rotated manager token: {err}"
    );
    assert_eq!(node_list(manager).len(), 2);
}

/// Who may call the control API on a manager's port: see the module docs.
#[test]
fn only_valid_manager_certificates_of_this_swarm_may_call_the_control_api() {
    let cluster = TestCluster::new(2);
    cluster.form(1, 1);
    let other_swarm = TestCluster::new(1);
    other_swarm.host(0).swarm_init();

    let manager = cluster.host(0);
    manager.shoal_ok(&words(
        "service create -d --name probe --replicas 0 busybox",
    ));
    let nodes_before = node_list(manager);
    let services_before = service_names(manager);
    let addr = manager.swarm_addr();
    let rt = runtime();

    let manager_cert = node_cert(manager);
    assert_eq!(manager_cert.role(), Role::Manager);
    let worker_cert = node_cert(cluster.host(1));
    assert_eq!(worker_cert.role(), Role::Worker);
    let ca_pem = manager_cert.ca_pem().to_string();

    // The control case: a manager's certificate is let in, through both client builders.
    let listed = list_services(&rt, &addr, node_client_config(&manager_cert))
        .unwrap_or_else(|e| panic!("the manager's own certificate was refused: {e:?}"));
    assert_eq!(listed, services_before);
    let raw = raw_client_config(
        &ca_pem,
        Some((&[manager_cert.cert_pem()], manager_cert.key_pem())),
    );
    assert_eq!(
        list_services(&rt, &addr, raw).expect("the raw client config with a manager cert"),
        services_before
    );

    // A worker's certificate: authenticated, but not allowed.
    let worker_config = node_client_config(&worker_cert);
    for (what, status) in [
        (
            "ListServices with a worker certificate",
            assert_refused(
                "ListServices with a worker certificate",
                list_services(&rt, &addr, worker_config.clone()),
            ),
        ),
        (
            "CreateService with a worker certificate",
            assert_refused(
                "CreateService with a worker certificate",
                create_service(&rt, &addr, worker_config.clone(), "by-worker"),
            ),
        ),
        (
            "GetJoinToken(manager) with a worker certificate",
            assert_refused(
                "GetJoinToken(manager) with a worker certificate",
                manager_token(&rt, &addr, worker_config.clone()),
            ),
        ),
    ] {
        assert_eq!(status.code(), Code::PermissionDenied, "{what}: {status:?}");
        assert!(
            status.message().contains("worker certificate"),
            "{what}: {}",
            status.message()
        );
    }

    // No certificate at all.
    let status = assert_refused(
        "ListServices without a certificate",
        list_services(&rt, &addr, raw_client_config(&ca_pem, None)),
    );
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // A manager certificate of another swarm (its own CA), presented to this swarm's manager.
    let foreign = node_cert(other_swarm.host(0));
    assert_eq!(foreign.role(), Role::Manager);
    assert_ne!(foreign.ca_pem(), ca_pem, "the two swarms share a CA");
    let foreign_config = raw_client_config(
        &ca_pem,
        Some((&[foreign.cert_pem(), foreign.ca_pem()], foreign.key_pem())),
    );
    let unknown_before = handshake_refusals(manager, "UnknownIssuer");
    assert_refused(
        "ListServices with another swarm's manager certificate",
        list_services(&rt, &addr, foreign_config.clone()),
    );
    assert_refused(
        "CreateService with another swarm's manager certificate",
        create_service(&rt, &addr, foreign_config, "by-foreigner"),
    );
    assert_server_refused(
        manager,
        "UnknownIssuer",
        unknown_before,
        "another swarm's cert",
    );

    // An expired manager certificate signed by this swarm's CA.
    let ca = cluster_ca_from_disk(manager);
    assert_eq!(ca.cluster_id(), manager_cert.cluster_id());
    let own_id = manager_cert.node_id().to_string();
    let fresh = ca
        .issue(&own_id, Role::Manager, Duration::from_secs(3600))
        .expect("issue a certificate");
    let short = ca
        .issue(&own_id, Role::Manager, Duration::from_secs(1))
        .expect("issue a certificate");
    // Accepted while valid: the CA is the real one and the node is a manager in the store…
    assert_eq!(
        list_services(&rt, &addr, node_client_config(&fresh)).expect("a fresh CA-signed cert"),
        services_before
    );
    // …but a CA-signed manager certificate for a node the store has never seen is not: the
    // store, not the certificate, says who is a member.
    let stranger = ca
        .issue("forgedmanager1", Role::Manager, Duration::from_secs(3600))
        .expect("issue a certificate");
    let status = assert_refused(
        "ListServices with a CA-signed certificate of an unknown node",
        list_services(&rt, &addr, node_client_config(&stranger)),
    );
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("not a member of this swarm"),
        "{}",
        status.message()
    );
    // …and refused once expired (X.509 times have whole seconds).
    std::thread::sleep(Duration::from_millis(2500));
    assert!(short.is_expired(std::time::SystemTime::now()));
    let expired_config = node_client_config(&short);
    let expired_before = handshake_refusals(manager, "certificate expired");
    assert_refused(
        "ListServices with an expired certificate",
        list_services(&rt, &addr, expired_config.clone()),
    );
    assert_refused(
        "CreateService with an expired certificate",
        create_service(&rt, &addr, expired_config, "by-expired"),
    );
    assert_server_refused(
        manager,
        "certificate expired",
        expired_before,
        "expired cert",
    );

    // A manager's certificate, but a request larger than any server decodes.
    let huge = "x".repeat(shoal_proto::MAX_REQUEST_BYTES + 1);
    let status = assert_refused(
        "CreateService of more than MAX_REQUEST_BYTES",
        create_service_labelled(&rt, &addr, node_client_config(&manager_cert), "huge", &huge),
    );
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains("too large"),
        "{}",
        status.message()
    );

    // Nothing a refused caller asked for happened.
    assert_eq!(node_list(manager), nodes_before);
    assert_eq!(service_names(manager), services_before);
    // And the manager still serves its own nodes.
    manager.shoal_ok(&words(
        "service create -d --name after --replicas 0 busybox",
    ));
    assert!(service_names(manager).contains("after"));
}
