//! Compiles `proto/ca.proto` (the certificate service) with `protox`, a protobuf compiler in
//! Rust, so no system `protoc` is needed. Does nothing without the `ca-service` feature.

fn main() {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "ca-service")]
    if let Err(e) = proto::compile() {
        eprintln!("error: compiling proto/ca.proto: {e}");
        std::process::exit(1);
    }
}

#[cfg(feature = "ca-service")]
mod proto {
    use std::path::PathBuf;

    pub fn compile() -> Result<(), Box<dyn std::error::Error>> {
        let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
        let file = dir.join("ca.proto");
        let fds = protox::compile([&file], [&dir])?;
        tonic_prost_build::configure()
            .build_server(true)
            .build_client(true)
            .compile_fds(fds)?;
        Ok(())
    }
}
