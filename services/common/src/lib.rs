//! What every MovieBook service shares, so that none of them repeats it.
//!
//! - [`config`]: typed environment variables with the local-stack defaults;
//! - [`telemetry`]: `tracing` set-up, human-readable or JSON;
//! - [`ops`]: `/health`, `/ready` and `/metrics` plus the request-metrics middleware;
//! - [`auth`]: HS256 JWT issue and verify with distinct error kinds, and an axum extractor;
//! - [`error`]: the JSON error body every HTTP service answers with, and a JSON extractor whose
//!   rejections are 4xx with a code;
//! - [`events`]: the event envelope of docs/architecture.md;
//! - [`outbox`]: the transactional outbox in MongoDB and the relay that publishes it to RabbitMQ
//!   with publisher confirms;
//! - [`amqp`]: broker connection and topology;
//! - [`mongo`]: MongoDB connection helpers;
//! - [`txn`]: the MongoDB transaction helper with the driver's retry rules;
//! - [`shutdown`]: SIGTERM / SIGINT;
//! - [`proto`]: the cinema gRPC contract (proto/cinema.proto), client and server.
#![forbid(unsafe_code)]

pub mod amqp;
pub mod auth;
pub mod config;
pub mod error;
pub mod events;
pub mod grpc_auth;
pub mod mongo;
pub mod ops;
pub mod outbox;
pub mod shutdown;
pub mod telemetry;
pub mod txn;

/// The cinema gRPC contract, generated from `proto/cinema.proto` at build time.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("cinema");
}
