//! 1. Adds an rpath to libtorch's `lib` folder so `dvsp` and the test binaries find libtorch
//!    at run time without `LD_LIBRARY_PATH` (LIBTORCH comes from .cargo/config.toml).
//! 2. Records the git commit for model cards (`DVSP_GIT_COMMIT`).
//! 3. Compiles `proto/dvsp/v1/dvsp.proto` (tonic + prost) with the vendored `protoc`, and
//!    writes its descriptor set for gRPC reflection; the generated code uses the service's
//!    own codec (`src/server/grpc/codec.rs`).
fn main() {
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("the vendored protoc");
    std::env::set_var("PROTOC", protoc);
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    tonic_prost_build::configure()
        .bytes(".")
        // Parse errors are the client's (INVALID_ARGUMENT), see src/server/grpc/codec.rs.
        .codec_path("crate::server::grpc::codec::StrictCodec")
        .file_descriptor_set_path(out.join("dvsp_descriptor.bin"))
        .compile_protos(&["proto/dvsp/v1/dvsp.proto"], &["proto"])
        .expect("compiling proto/dvsp/v1/dvsp.proto");

    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(dir) = std::env::var("LIBTORCH") {
        let lib = std::path::Path::new(&dir).join("lib");
        let lib = lib.canonicalize().unwrap_or(lib);
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    }
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=DVSP_GIT_COMMIT={commit}");
}
