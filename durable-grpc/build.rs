//! Compiles `proto/task_hub_sidecar.proto` with `protox` (pure Rust, no
//! system `protoc`) and generates the prost messages and tonic stubs.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/task_hub_sidecar.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    // Kept for the wire-compatibility test, which compares it with the
    // upstream definition as another SDK compiled it.
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("task_hub_sidecar.descriptors"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        // The server half is used by the crate's own tests (a scripted
        // sidecar); it costs nothing at run time when unused.
        .build_server(true)
        .generate_default_stubs(true)
        .compile_fds(descriptors)?;
    Ok(())
}
