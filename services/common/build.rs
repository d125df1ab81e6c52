//! Compiles proto/cinema.proto with protox (a pure-Rust protobuf compiler), so building needs
//! no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time, not with env!(): clones at different paths share one target
    // directory and the same build-script binary, so a path baked in at compile time can
    // name another clone (seen: a CI clone's path, since deleted, broke the next build here).
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let proto_dir = std::path::Path::new(&manifest_dir).join("../../proto");
    let proto = proto_dir.join("cinema.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let descriptors = protox::compile([&proto], [&proto_dir])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
