//! An rpath to libtorch's `lib` folder for this crate's test binaries (LIBTORCH comes from
//! .cargo/config.toml), as the root build script does for `dvsp` and its tests.
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(dir) = std::env::var("LIBTORCH") {
        let lib = std::path::Path::new(&dir).join("lib");
        let lib = lib.canonicalize().unwrap_or(lib);
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    }
}
