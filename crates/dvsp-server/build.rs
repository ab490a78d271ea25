//! Compiles `proto/dvsp/v1/dvsp.proto` (tonic + prost) with the vendored `protoc`, and writes
//! its descriptor set for gRPC reflection; the generated code uses the service's own codec
//! (`src/grpc/codec.rs`).
fn main() {
    // An rpath to libtorch's `lib` folder for this crate's test binaries (LIBTORCH comes from
    // .cargo/config.toml), as the root build script does for `dvsp` and its tests.
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(dir) = std::env::var("LIBTORCH") {
        let lib = std::path::Path::new(&dir).join("lib");
        let lib = lib.canonicalize().unwrap_or(lib);
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    }
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("the vendored protoc");
    std::env::set_var("PROTOC", protoc);
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    tonic_prost_build::configure()
        .bytes(".")
        // Parse errors are the client's (INVALID_ARGUMENT), see src/grpc/codec.rs.
        .codec_path("crate::grpc::codec::StrictCodec")
        .file_descriptor_set_path(out.join("dvsp_descriptor.bin"))
        .compile_protos(&["../../proto/dvsp/v1/dvsp.proto"], &["../../proto"])
        .expect("compiling proto/dvsp/v1/dvsp.proto");
}
