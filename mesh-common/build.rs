//! Compiles every `.proto` file in `proto/` into Rust (prost messages + tonic client and server)
//! when the `api` feature is on. Uses `protox` (a protobuf compiler in Rust), so no system
//! `protoc` is needed. Without `api` (e.g. the eBPF build) this does nothing.

fn main() {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "api")]
    if let Err(e) = api::compile() {
        // A build script reports failure by exiting non-zero; the message goes to cargo's output.
        eprintln!("error: compiling proto/*.proto: {e}");
        std::process::exit(1);
    }
}

#[cfg(feature = "api")]
mod api {
    use std::path::PathBuf;

    pub fn compile() -> Result<(), Box<dyn std::error::Error>> {
        let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|ext| ext == "proto"))
            .collect();
        files.sort();
        for file in &files {
            println!("cargo:rerun-if-changed={}", file.display());
        }
        let fds = protox::compile(&files, [&dir])?;
        tonic_prost_build::configure()
            .build_server(true)
            .build_client(true)
            .include_file("_includes.rs")
            // Resource payloads are shared between many client streams: cheap clones.
            .bytes(".mesh.config.v1.Resource.json")
            .compile_fds(fds)?;
        Ok(())
    }
}
