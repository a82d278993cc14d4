//! Compiles the control-plane protos with protox (pure Rust: no system protoc needed).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/weft.proto", "proto/demo.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Ordered maps encode deterministically, so a resource's version can be a content hash.
        .btree_map(".")
        .compile_fds(fds)?;
    Ok(())
}
