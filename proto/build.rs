//! Generates the gRPC code from `proto/` with protox (pure Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/arca/v1/raft.proto",
        "proto/arca/v1/cluster.proto",
        "proto/arca/v1/chunks.proto",
    ];
    // The whole directory: a new .proto file must regenerate too.
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=build.rs");
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
