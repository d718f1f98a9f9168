//! Compiles the client for etcd's election API (the comparison) from a trimmed copy of etcd's
//! published proto, with a pure-Rust protobuf compiler: no system `protoc` needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let etcd = protox::compile(["proto/etcd/v3election.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(etcd)?;
    Ok(())
}
