//! Compiles the control-plane protos with protox (pure Rust: no system protoc needed).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The control plane's streams use small codec buffers (src/codec.rs); the demo keeps tonic's.
    for (file, codec) in
        [("proto/weft.proto", "crate::codec::SmallCodec"), ("proto/demo.proto", "tonic_prost::ProstCodec")]
    {
        println!("cargo:rerun-if-changed={file}");
        let fds = protox::compile([file], ["proto"])?;
        tonic_prost_build::configure()
            .build_server(true)
            .build_client(true)
            // Ordered maps encode deterministically, so a resource's version can be a content hash.
            .btree_map(".")
            .codec_path(codec)
            .compile_fds(fds)?;
    }
    Ok(())
}
