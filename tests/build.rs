//! Compiles every `.proto` file in `proto/` (the echo service of `mesh-httpapp`) into Rust (prost
//! messages + tonic client and server), as `mesh-common/build.rs` does: with `protox` (a protobuf
//! compiler in Rust), so no system `protoc` is needed.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=build.rs");
    if let Err(e) = compile() {
        // A build script reports failure by exiting non-zero; the message goes to cargo's output.
        eprintln!("error: compiling proto/*.proto: {e}");
        std::process::exit(1);
    }
}

fn compile() -> Result<(), Box<dyn std::error::Error>> {
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
        .compile_fds(fds)?;
    Ok(())
}
