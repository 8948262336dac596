//! Compiles host/proto/*.proto with protox (pure Rust: no protoc binary needed) and prost-build.
fn main() {
    let protos = ["proto/ring.proto"];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"]).expect("proto files compile");
    prost_build::Config::new().compile_fds(fds).expect("prost code generation");
}
