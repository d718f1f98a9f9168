//! Compiles `proto/` with a pure-Rust protobuf compiler (`protox`), so a fresh machine builds
//! with `cargo` alone: no system `protoc` needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/atomix/primitive/primitive.proto",
        "proto/atomix/primitive/meta/timestamp.proto",
        "proto/atomix/primitive/election/election.proto",
        "proto/electiond/session/v1/session.proto",
        "proto/electiond/admin/v1/admin.proto",
    ];
    println!("cargo:rerun-if-changed=proto");

    let fds = protox::compile(files, ["proto"])?;

    // Server reflection serves this set, so `grpcurl list` works without local .proto files.
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("electiond_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Decode errors (for example a non-UTF-8 string) become INVALID_ARGUMENT, not INTERNAL.
        .codec_path("crate::grpc::codec::ProtoCodec")
        .compile_fds(fds.clone())?;

    // The election service once more, server side only, for what it sends: an Events message
    // is encoded once per change and the same bytes go to every stream of the election, and a
    // GetTerm answer on a big election is encoded once per state (`grpc::encoded`). Every
    // other message is the type compiled above.
    let served = out_dir.join("served");
    std::fs::create_dir_all(&served)?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .codec_path("crate::grpc::codec::ProtoCodec")
        .extern_path(
            ".atomix.primitive.election.EventsResponse",
            "crate::grpc::encoded::Encoded",
        )
        .extern_path(
            ".atomix.primitive.election.GetTermResponse",
            "crate::grpc::encoded::Encoded",
        )
        .extern_path(".atomix", "crate::proto::atomix")
        .out_dir(&served)
        .compile_fds(fds)?;

    Ok(())
}
