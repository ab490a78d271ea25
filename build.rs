//! 1. Adds an rpath to libtorch's `lib` folder so `dvsp` and the test binaries find libtorch
//!    at run time without `LD_LIBRARY_PATH` (LIBTORCH comes from .cargo/config.toml).
//! 2. Records the git commit for model cards (`DVSP_GIT_COMMIT`, set into dvsp-core at
//!    start): only the binary is rebuilt when the commit changes.
fn main() {
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
