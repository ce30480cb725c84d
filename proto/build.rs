fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=shoal.proto");
    tonic_prost_build::configure()
        // serde lets the CLI print `inspect` output as JSON straight from the wire types.
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        // Messages that carry a join token, the CA key, the unlock key or a secret's data: their
        // `Debug` is written by hand (`redact.rs`) so that no log line can print one.
        .skip_debug(crate_redacted())
        .compile_protos(&["shoal.proto"], &["."])?;
    Ok(())
}

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
