//! Compiles the service's `proto/` (shared with the server) into client stubs, with a
//! pure-Rust protobuf compiler: no system `protoc` needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "../proto/atomix/primitive/primitive.proto",
        "../proto/atomix/primitive/meta/timestamp.proto",
        "../proto/atomix/primitive/election/election.proto",
        "../proto/electiond/session/v1/session.proto",
        "../proto/electiond/admin/v1/admin.proto",
    ];
    println!("cargo:rerun-if-changed=../proto");
    let fds = protox::compile(files, ["../proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}
