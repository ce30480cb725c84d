fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=shoal.proto");
    tonic_prost_build::configure()
        // serde lets the CLI print `inspect` output as JSON straight from the wire types.
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        .compile_protos(&["shoal.proto"], &["."])?;
    Ok(())
}
