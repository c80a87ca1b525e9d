//! Local stand-ins for the outside world, speaking the documented wire formats. Used by
//! `alertsync demo`, the end-to-end tests and the benchmark; never by the services.
//!
//! - [`sekoia`]: a fake Sekoia.io API (Get Alert, the alert list, comments, the workflow, the
//!   events search jobs, `GET /v1/me`, the LiveAPI socket) with Bearer key checks, alert state
//!   changed as an analyst would, and scriptable answers.
//! - [`receiver`]: a destination that records every request and answers from a script.
//! - [`alerts`]: realistic alert bodies (the shape of `GET /v1/sic/alerts/{uuid}`).
//! - [`otlp`]: a trace collector that decodes OTLP/HTTP protobuf and keeps every span.

pub mod alerts;
pub mod otlp;
pub mod receiver;
pub mod sekoia;

pub use receiver::{Receiver, Recorded, Reply};
pub use sekoia::{EventsJob, FakeSekoia};

/// Binds `addr` (port 0 picks a free one) and serves `router` in the background; returns the
/// bound address.
async fn serve_on(
    addr: std::net::SocketAddr,
    router: axum::Router,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        // With the peer address in each request's extensions: the receiver records it, so
        // tests can tell whether a client reused its connection.
        let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
        let _ = axum::serve(listener, service).await;
    });
    Ok(addr)
}

/// A free loopback port, for tests and the demo.
fn loopback() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 0))
}
