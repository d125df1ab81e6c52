//! RabbitMQ: one user per service, allowed the exchanges and queues that service declares,
//! publishes to and consumes, and only the routing keys of its own events.
//!
//! RabbitMQ checks three regular expressions per user and virtual host against the name of
//! the exchange or queue an operation touches (`configure`: declare and delete; `write`:
//! publish to an exchange, bind *to* a queue; `read`: consume a queue, bind *from* an
//! exchange), and, for a topic exchange, two more against routing keys (`write`: the key of a
//! publish; `read`: the pattern of a binding). A few operations touch two names: declaring an
//! exchange with an alternate exchange needs `read` on it and `write` on the alternate one;
//! declaring a queue with a dead-letter exchange needs `read` on the queue and `write` on the
//! dead-letter exchange.
//!
//! The shared topology (the events exchange, its alternate exchange and queue for unrouted
//! messages, the dead-letter exchange) is the broker's: [`definitions`] declares it, the
//! broker loads it at boot, and the services only check that it is there (passive declares,
//! which RabbitMQ allows without any permission; `RABBITMQ_TOPOLOGY=existing`). So no grant
//! has `configure` on a shared name, and no service can delete or redefine the exchange the
//! others publish to and consume from (`configure` is the right to declare *and* to delete).
//! On that: booking publishes `booking.*` and watches `booking.*` on queues the server names
//! for it (the live seat map); payment publishes `payment.*`; notification declares, binds and
//! consumes its durable queue and its dead-letter queue, bound to the events of booking and
//! payment, and publishes nothing. Nobody but the administrator reads the unrouted queue.

use regex::Regex;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::Service;

/// The events exchange (topic, durable); the routing key is the event's type.
pub const EXCHANGE: &str = "movie_app_events";
/// The alternate exchange of [`EXCHANGE`] (fanout) and the queue behind it: an event no queue
/// wanted yet is kept there instead of being dropped. Both have this name.
pub const UNROUTED: &str = "movie_app_events.unrouted";
/// Most messages the unrouted queue keeps (`x-max-length`).
pub const UNROUTED_MAX_LENGTH: i64 = 1_000_000;
/// The dead-letter exchange consumers' `.dlq` queues are bound to.
pub const DEAD_LETTER_EXCHANGE: &str = "movie_app_events.dlx";
/// Notification's durable queue in an installation (tests give it other names).
pub const NOTIFICATION_QUEUE: &str = "notification.events";
/// The virtual host everything lives in.
pub const VHOST: &str = "/";
/// Names the broker gives the queues a client declares without a name (`amq.gen-…`): booking's
/// live seat map consumes from such queues, exclusive to its connection.
const SERVER_NAMED_QUEUE: &str = r"amq\.gen-.*";
/// The regular expression RabbitMQ reads as "nothing".
const NOTHING: &str = "^$";

/// A user's permissions in [`VHOST`], and its topic permissions on [`EXCHANGE`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub configure: String,
    pub write: String,
    pub read: String,
    /// Routing keys the user may publish to [`EXCHANGE`] with.
    pub topic_write: String,
    /// Binding patterns the user may bind queues to [`EXCHANGE`] with.
    pub topic_read: String,
}

/// `^(a|b|…)$` over escaped names and already-written patterns.
fn any_of(names: &[&str], patterns: &[&str]) -> String {
    let alternatives: Vec<String> = names
        .iter()
        .map(|n| regex::escape(n))
        .chain(patterns.iter().map(|p| (*p).to_string()))
        .collect();
    if alternatives.is_empty() {
        return NOTHING.to_string();
    }
    format!("^({})$", alternatives.join("|"))
}

/// The shared topology as the broker's definitions declare it: the exchanges, the unrouted
/// queue and its binding, with the arguments `moviebook_common::amqp::declare_topology` uses
/// (RabbitMQ refuses a declaration whose arguments differ from the existing ones).
pub fn topology() -> Value {
    let exchange = |name: &str, kind: &str, arguments: Value| {
        json!({"name": name, "vhost": VHOST, "type": kind, "durable": true,
               "auto_delete": false, "internal": false, "arguments": arguments})
    };
    json!({
        "exchanges": [
            exchange(UNROUTED, "fanout", json!({})),
            exchange(EXCHANGE, "topic", json!({"alternate-exchange": UNROUTED})),
            exchange(DEAD_LETTER_EXCHANGE, "topic", json!({})),
        ],
        "queues": [{"name": UNROUTED, "vhost": VHOST, "durable": true, "auto_delete": false,
                    "arguments": {"x-max-length": UNROUTED_MAX_LENGTH}}],
        "bindings": [{"source": UNROUTED, "vhost": VHOST, "destination": UNROUTED,
                      "destination_type": "queue", "routing_key": "", "arguments": {}}],
    })
}

/// Routing keys of the events a service publishes: `<service>.<event>`.
fn own_events(svc: Service) -> String {
    format!(r"^{}\.[a-z_]+$", regex::escape(svc.name()))
}

/// Booking: publishes its events and watches them on server-named queues (declared by it,
/// bound from the events exchange: write on the queue, read on the exchange).
pub fn booking() -> Grant {
    Grant {
        configure: any_of(&[], &[SERVER_NAMED_QUEUE]),
        write: any_of(&[EXCHANGE], &[SERVER_NAMED_QUEUE]),
        read: any_of(&[EXCHANGE], &[SERVER_NAMED_QUEUE]),
        topic_write: own_events(Service::Booking),
        topic_read: format!(r"^{}\.", regex::escape(Service::Booking.name())),
    }
}

/// Payment: publishes its events, consumes nothing.
pub fn payment() -> Grant {
    Grant {
        configure: NOTHING.to_string(),
        write: any_of(&[EXCHANGE], &[]),
        read: NOTHING.to_string(),
        topic_write: own_events(Service::Payment),
        topic_read: NOTHING.to_string(),
    }
}

/// Notification: consumes `queue` (and dead-letters into `<queue>.dlq`), bound to the events
/// of booking and payment; publishes nothing.
pub fn notification(queue: &str) -> Grant {
    let dlq = format!("{queue}.dlq");
    let own = [queue, dlq.as_str()];
    Grant {
        configure: any_of(&own, &[]),
        // The queue is declared with the dead-letter exchange, and the dead-letter queue is
        // bound from it: write on the exchange, read below; the queue is bound from the events
        // exchange: read on it.
        write: any_of(&[&own[..], &[DEAD_LETTER_EXCHANGE]].concat(), &[]),
        read: any_of(&[&own[..], &[DEAD_LETTER_EXCHANGE, EXCHANGE]].concat(), &[]),
        topic_write: NOTHING.to_string(),
        topic_read: format!(
            r"^({}|{})\.",
            regex::escape(Service::Booking.name()),
            regex::escape(Service::Payment.name())
        ),
    }
}

/// The grant of a service in an installation (notification on [`NOTIFICATION_QUEUE`]).
pub fn for_service(svc: Service) -> Grant {
    match svc {
        Service::Booking => booking(),
        Service::Payment => payment(),
        Service::Notification => notification(NOTIFICATION_QUEUE),
    }
}

/// What an account may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// Everything, with the management tag: the installation's operator account.
    Administrator,
    Granted(Grant),
}

/// A user of the broker and its password (kept in the generated Secret; only its salted hash
/// goes into the definitions).
#[derive(Clone, Debug)]
pub struct Account {
    pub user: String,
    pub password: String,
    pub access: Access,
}

/// RabbitMQ's `rabbit_password_hashing_sha256`: base64 of a 4-byte salt followed by
/// SHA-256(salt ‖ password). The salt is derived from user and password rather than drawn at
/// random so that every reconcile renders the same file (a new salt would change the Secret's
/// hash and roll the broker each time); the passwords are 32 random characters, so a salt that
/// only repeats with the password costs nothing.
pub fn password_hash(user: &str, password: &str) -> String {
    let mut seed = Sha256::new();
    seed.update(b"moviebook-rabbitmq-salt\0");
    seed.update(user.as_bytes());
    seed.update(b"\0");
    seed.update(password.as_bytes());
    let salt: [u8; 4] = {
        let digest = seed.finalize();
        [digest[0], digest[1], digest[2], digest[3]]
    };
    let mut hash = Sha256::new();
    hash.update(salt);
    hash.update(password.as_bytes());
    let mut bytes = salt.to_vec();
    bytes.extend_from_slice(&hash.finalize());
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)
}

/// The definitions file a broker imports at boot (`load_definitions`): the virtual host, the
/// shared [`topology`], the accounts with their hashed passwords, their permissions and topic
/// permissions. Imported on every start, so a changed password or grant takes effect when the
/// broker restarts.
pub fn definitions(accounts: &[Account]) -> Value {
    let mut users = Vec::new();
    let mut permissions = Vec::new();
    let mut topic_permissions = Vec::new();
    for account in accounts {
        let tags: Vec<&str> = match account.access {
            Access::Administrator => vec!["administrator"],
            Access::Granted(_) => vec![],
        };
        users.push(json!({
            "name": account.user,
            "password_hash": password_hash(&account.user, &account.password),
            "hashing_algorithm": "rabbit_password_hashing_sha256",
            "tags": tags,
        }));
        let (configure, write, read) = match &account.access {
            Access::Administrator => (".*", ".*", ".*"),
            Access::Granted(g) => (g.configure.as_str(), g.write.as_str(), g.read.as_str()),
        };
        permissions.push(json!({
            "user": account.user, "vhost": VHOST,
            "configure": configure, "write": write, "read": read,
        }));
        if let Access::Granted(g) = &account.access {
            topic_permissions.push(json!({
                "user": account.user, "vhost": VHOST, "exchange": EXCHANGE,
                "write": g.topic_write, "read": g.topic_read,
            }));
        }
    }
    let topology = topology();
    json!({
        "vhosts": [{"name": VHOST}],
        "users": users,
        "permissions": permissions,
        "topic_permissions": topic_permissions,
        "exchanges": topology["exchanges"],
        "queues": topology["queues"],
        "bindings": topology["bindings"],
    })
}

/// The broker configuration line that imports `path` at boot (a `conf.d` file).
pub fn load_definitions_conf(path: &str) -> String {
    format!("load_definitions = {path}\n")
}

/// Whether `pattern` (a grant's regular expression, as RabbitMQ reads it) lets `name` through.
/// For tests and for explaining a refusal; the broker decides.
pub fn allows(pattern: &str, name: &str) -> bool {
    Regex::new(pattern).is_ok_and(|r| r.is_match(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_publisher_may_publish_its_own_events_only() {
        let b = booking();
        let p = payment();
        let n = notification(NOTIFICATION_QUEUE);
        for key in ["booking.confirmed", "booking.pending_payment"] {
            assert!(allows(&b.topic_write, key), "{key}");
            assert!(!allows(&p.topic_write, key), "{key}");
            assert!(!allows(&n.topic_write, key), "{key}");
        }
        for key in ["payment.success", "payment.refund"] {
            assert!(allows(&p.topic_write, key), "{key}");
            assert!(!allows(&b.topic_write, key), "{key}");
        }
        for key in [
            "booking.",
            "booking.a.b",
            "bookingX.confirmed",
            "xbooking.confirmed",
        ] {
            assert!(!allows(&b.topic_write, key), "{key}");
        }
    }

    #[test]
    fn only_notification_may_touch_its_queues() {
        let n = notification("notification.events");
        for name in ["notification.events", "notification.events.dlq"] {
            assert!(allows(&n.configure, name) && allows(&n.read, name));
            for other in [booking(), payment()] {
                assert!(!allows(&other.configure, name), "{name}");
                assert!(!allows(&other.read, name), "{name}");
                assert!(!allows(&other.write, name), "{name}");
            }
        }
        // The queue name is escaped: its dot is no wildcard.
        assert!(!allows(&n.read, "notificationXevents"));
        assert!(
            !allows(&n.write, EXCHANGE),
            "notification publishes nothing"
        );
        assert!(allows(&n.topic_read, "booking.*") && allows(&n.topic_read, "payment.*"));
        assert!(!allows(&n.topic_read, "#"));
    }

    #[test]
    fn the_shared_topology_is_the_brokers_and_no_client_may_change_it() {
        for g in [booking(), payment(), notification("q")] {
            for name in [EXCHANGE, UNROUTED, DEAD_LETTER_EXCHANGE] {
                assert!(!allows(&g.configure, name), "{name}: declare and delete");
            }
            assert!(
                !allows(&g.read, UNROUTED),
                "nobody consumes the unrouted queue"
            );
            assert!(!allows(&g.write, UNROUTED));
        }
        let t = topology();
        let names: Vec<&str> = t["exchanges"]
            .as_array()
            .expect("exchanges")
            .iter()
            .filter_map(|e| e["name"].as_str())
            .collect();
        assert_eq!(names, [UNROUTED, EXCHANGE, DEAD_LETTER_EXCHANGE]);
        assert_eq!(
            t["exchanges"][1]["arguments"]["alternate-exchange"],
            UNROUTED
        );
        assert_eq!(t["queues"][0]["arguments"]["x-max-length"], 1_000_000);
        let defs = definitions(&[]);
        assert_eq!(defs["exchanges"], t["exchanges"]);
        assert_eq!(defs["bindings"][0]["destination"], UNROUTED);
        assert!(allows(&booking().read, "amq.gen-Zx1"));
        assert!(!allows(&payment().read, "amq.gen-Zx1"));
        assert!(!allows(&payment().configure, "amq.gen-Zx1"));
    }

    #[test]
    fn password_hash_is_rabbitmqs_salted_sha256_and_stable() {
        let h = password_hash("booking", "secret");
        assert_eq!(h, password_hash("booking", "secret"));
        assert_ne!(h, password_hash("payment", "secret"));
        let bytes =
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &h).expect("base64");
        assert_eq!(bytes.len(), 4 + 32);
        let mut check = Sha256::new();
        check.update(&bytes[..4]);
        check.update(b"secret");
        assert_eq!(&bytes[4..], &check.finalize()[..]);
    }

    #[test]
    fn definitions_carry_hashes_never_passwords() {
        let defs = definitions(&[
            Account {
                user: "admin".into(),
                password: "p-admin".into(),
                access: Access::Administrator,
            },
            Account {
                user: "booking".into(),
                password: "p-booking".into(),
                access: Access::Granted(booking()),
            },
        ]);
        let text = defs.to_string();
        assert!(!text.contains("p-admin") && !text.contains("p-booking"));
        assert_eq!(defs["users"][0]["tags"][0], "administrator");
        assert_eq!(defs["permissions"][1]["read"], booking().read);
        assert_eq!(defs["topic_permissions"].as_array().map(Vec::len), Some(1));
        assert_eq!(defs["topic_permissions"][0]["exchange"], EXCHANGE);
    }
}
