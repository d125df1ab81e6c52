//! What each MovieBook service may do in the stores it shares with the others, in one place.
//!
//! The operator turns these grants into the files the managed servers load (a RabbitMQ
//! definitions file, a Redis ACL file); the services' own tests load the very same grants into
//! real servers and run the services' real calls under them, so a grant too narrow for what a
//! service does fails a test, and a grant wider than intended fails the tests that try what
//! the service must not do. Nothing here does I/O.
//!
//! MongoDB users are here too ([`mongodb`]): each MongoDB service a user of its own database.
//! PostgreSQL is not: it has one client (cinema). See docs/cluster.md, *Store credentials*.

pub mod mongodb;
pub mod rabbitmq;
pub mod redis;

/// The services that hold credentials for a shared store, by the name they run under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    Booking,
    Payment,
    Notification,
}

impl Service {
    /// Every service that talks to RabbitMQ.
    pub const BROKER_CLIENTS: [Service; 3] =
        [Service::Booking, Service::Payment, Service::Notification];

    /// The service's name: its user name in the stores and the first word of the events it
    /// publishes (`booking.confirmed`, `payment.success`).
    pub fn name(self) -> &'static str {
        match self {
            Service::Booking => "booking",
            Service::Payment => "payment",
            Service::Notification => "notification",
        }
    }
}
