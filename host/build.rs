//! Compiles host/proto/*.proto with protox (pure Rust: no protoc binary needed) and prost-build.
fn main() {
    let protos = ["proto/ring.proto", "proto/ctl.proto"];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"]).expect("proto files compile");
    prost_build::Config::new()
        // These carry secrets (the ctl secret, a ring key file, a join string): their Debug is written by hand.
        .skip_debug([".warren.ctl.Handshake", ".warren.ctl.RingKeyInstall", ".warren.ctl.AdmitTokenCreated"])
        .compile_fds(fds)
        .expect("prost code generation");
}
