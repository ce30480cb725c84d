fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=shoal.proto");
    let mut builder = tonic_prost_build::configure()
        // serde lets the CLI print `inspect` output as JSON straight from the wire types.
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        // Messages that carry a join token, the CA key, the unlock key or a secret's data: their
        // `Debug` is written by hand (`redact.rs`) so that no log line can print one.
        .skip_debug(crate_redacted());
    for kind in BOXED_ACTIONS {
        builder = builder.boxed(format!(".shoal.v1.StoreAction.action.{kind}"));
    }
    for field in BOXED_SPECS {
        builder = builder.boxed(field);
    }
    builder.compile_protos(&["shoal.proto"], &["."])?;
    Ok(())
}

/// A `StoreAction` was as large as its largest kind (a service, two specs inline: 2.8 KB), so
/// every action of every entry, a task's assignment or status among them (~100 bytes of
/// data), took that much in each `Vec` it went through: the scheduler's, the status batcher's,
/// a decoded entry's. These kinds, the large ones, are boxed.
const BOXED_ACTIONS: [&str; 9] = [
    "put_node",
    "create_service",
    "update_service",
    "create_task",
    "put_cluster",
    "node_status",
    "create_network",
    "create_secret",
    "create_config",
];

/// A service spec is 1.3 KB inline (its task template and container spec with it), a service
/// with its previous spec 2.8 KB: every move of a service, or of a future holding one, copied
/// that much. A control API write moved several through the futures of its call (20 KB of
/// them), a third of the leader's CPU for that call went to `memmove`. Boxed, a move copies a
/// pointer.
const BOXED_SPECS: [&str; 5] = [
    ".shoal.v1.Service.spec",
    ".shoal.v1.Service.previous_spec",
    ".shoal.v1.CreateServiceRequest.spec",
    ".shoal.v1.UpdateServiceRequest.spec",
    // A task's container spec (0.8 KB of its 1.3): tasks are made, assigned, reported and
    // copied by the hundred thousand.
    ".shoal.v1.Task.spec",
];

/// The messages `src/redact.rs` gives a redacting `Debug`.
fn crate_redacted() -> Vec<String> {
    [
        "Cluster",
        "JoinTokenResponse",
        "IssueCertificateRequest",
        "SwarmJoinRequest",
        "SwarmInitResponse",
        "SwarmUnlockRequest",
        "UnlockKeyResponse",
        "SecretSpec",
        "RegistryAuth",
    ]
    .iter()
    .map(|m| format!(".shoal.v1.{m}"))
    .collect()
}
