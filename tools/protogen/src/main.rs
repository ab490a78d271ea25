//! Generates the gRPC code of `proto/dvsp/v1/dvsp.proto` with tonic-prost-build and the
//! vendored protoc into a temporary folder, then either checks that
//! `crates/dvsp-server/src/grpc/generated/` holds exactly that (`--check`, exit 1 otherwise)
//! or writes it there (`--write`).
use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let write = match std::env::args().nth(1).as_deref() {
        Some("--check") => false,
        Some("--write") => true,
        _ => {
            eprintln!("usage: dvsp-protogen --check|--write");
            return ExitCode::from(2);
        }
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let proto = root.join("proto");
    let kept = root.join("crates/dvsp-server/src/grpc/generated");
    let out = tempfile::tempdir().expect("a temporary folder");
    std::env::set_var(
        "PROTOC",
        protoc_bin_vendored::protoc_bin_path().expect("the vendored protoc"),
    );
    if let Err(e) = tonic_prost_build::configure()
        .bytes(".")
        // Parse errors are the client's (INVALID_ARGUMENT), see crates/dvsp-server/src/grpc/codec.rs.
        .codec_path("crate::grpc::codec::StrictCodec")
        .out_dir(out.path())
        .file_descriptor_set_path(out.path().join("dvsp_descriptor.bin"))
        .compile_protos(
            &[proto.join("dvsp/v1/dvsp.proto")],
            std::slice::from_ref(&proto),
        )
    {
        eprintln!("protogen: compiling proto/dvsp/v1/dvsp.proto: {e}");
        return ExitCode::FAILURE;
    }
    let mut stale = Vec::new();
    for file in ["dvsp.v1.rs", "dvsp_descriptor.bin"] {
        let fresh = std::fs::read(out.path().join(file)).expect("the generated file");
        if write {
            std::fs::write(kept.join(file), &fresh).expect("writing the generated file");
        } else if std::fs::read(kept.join(file)).ok().as_deref() != Some(&fresh[..]) {
            stale.push(file);
        }
    }
    if !stale.is_empty() {
        eprintln!(
            "protogen: {} differ from what proto/dvsp/v1/dvsp.proto generates: run `make protogen`",
            stale.join(", ")
        );
        return ExitCode::FAILURE;
    }
    println!("protogen: crates/dvsp-server/src/grpc/generated/ is {}", if write { "written" } else { "up to date" });
    ExitCode::SUCCESS
}
