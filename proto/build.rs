//! Compiles `alertsync/v1/*.proto` with protox (pure Rust), so building needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["alertsync/v1/messages.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, ["."])?;
    prost_build::Config::new()
        // The alert itself (a few KiB) as `Bytes`: the enricher hands over the body it got
        // and the forwarder decodes it as a slice of the message, neither copying it.
        .bytes([".alertsync.v1.EnrichedAlert.alert_json"])
        .compile_fds(descriptors)?;
    Ok(())
}
