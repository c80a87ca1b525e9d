//! Local stand-ins for the outside world, speaking the documented wire formats. Used by
//! `alertsync demo`, the end-to-end tests and the benchmark; never by the services.
//!
//! - [`sekoia`]: a fake Sekoia.io API (`GET /v1/sic/alerts/{uuid}`, `GET /v1/me`) with Bearer
//!   key checks and scriptable answers per alert.
//! - [`receiver`]: a destination that records every request and answers from a script.
//! - [`alerts`]: realistic alert bodies (the shape of `GET /v1/sic/alerts/{uuid}`).

pub mod alerts;
pub mod receiver;
pub mod sekoia;

pub use receiver::{Receiver, Recorded, Reply};
pub use sekoia::FakeSekoia;

/// Binds `127.0.0.1:0` and serves `router` in the background; returns the address.
async fn serve(router: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding a loopback port");
    let addr = listener.local_addr().expect("bound address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}
