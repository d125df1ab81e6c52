//! RabbitMQ connection and the shared topology.
//!
//! The shared topology (the events exchange, its alternate exchange and unrouted queue, the
//! dead-letter exchange) is either declared by every client through [`declare_topology`], so
//! that no start order matters and the arguments always match (RabbitMQ refuses a
//! redeclaration with different arguments), or already there because the broker loaded it from
//! its definitions at boot ([`Topology::Existing`]: the managed broker of the operator). Then a
//! client only checks it with passive declares, which need no `configure` right, and no service
//! can delete or redefine what the others depend on. The names are those the broker grants of
//! `moviebook-grants` allow.

use lapin::{
    Channel, Connection, ConnectionProperties, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, ShortString},
};

use crate::events::EXCHANGE;

/// Where messages that no queue wanted end up, instead of being dropped by the broker: an event
/// published before its consumers declared their queues is kept, not lost.
pub const UNROUTED_EXCHANGE: &str = moviebook_grants::rabbitmq::UNROUTED;
pub const UNROUTED_QUEUE: &str = moviebook_grants::rabbitmq::UNROUTED;
/// Dead-letter exchange for poison messages; consumers bind their `.dlq` queues to it.
pub const DEAD_LETTER_EXCHANGE: &str = moviebook_grants::rabbitmq::DEAD_LETTER_EXCHANGE;

/// Opens a connection named after the service (visible in the management UI).
pub async fn connect(url: &str, name: &str) -> lapin::Result<Connection> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect(url, props).await
}

/// Who brings up the shared topology (`RABBITMQ_TOPOLOGY`: `declare` or `existing`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Topology {
    /// This client declares it, idempotently: local development, the tests, and a broker whose
    /// users may configure the shared names.
    #[default]
    Declare,
    /// The broker has it already (its definitions declare it): the client checks that it is
    /// there and fails clearly if not, without the right to change it.
    Existing,
}

impl std::str::FromStr for Topology {
    type Err = &'static str;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "declare" => Ok(Topology::Declare),
            "existing" => Ok(Topology::Existing),
            _ => Err("expected `declare` or `existing`"),
        }
    }
}

/// Declares the shared topology, or checks that the broker has it (see [`Topology`]).
pub async fn ensure_topology(channel: &Channel, topology: Topology) -> lapin::Result<()> {
    match topology {
        Topology::Declare => declare_topology(channel).await,
        Topology::Existing => {
            let passive = ExchangeDeclareOptions {
                passive: true,
                ..ExchangeDeclareOptions::default()
            };
            for name in [UNROUTED_EXCHANGE, EXCHANGE, DEAD_LETTER_EXCHANGE] {
                // The kind is not compared in a passive declare: a missing exchange is 404.
                channel
                    .exchange_declare(
                        name.into(),
                        ExchangeKind::Topic,
                        passive,
                        FieldTable::default(),
                    )
                    .await?;
            }
            Ok(())
        }
    }
}

fn durable() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

/// Declares the events exchange (durable topic), its alternate exchange and unrouted queue, and
/// the dead-letter exchange. Idempotent.
pub async fn declare_topology(channel: &Channel) -> lapin::Result<()> {
    channel
        .exchange_declare(
            UNROUTED_EXCHANGE.into(),
            ExchangeKind::Fanout,
            durable(),
            FieldTable::default(),
        )
        .await?;
    let mut unrouted_args = FieldTable::default();
    unrouted_args.insert(
        "x-max-length".into(),
        AMQPValue::LongLongInt(moviebook_grants::rabbitmq::UNROUTED_MAX_LENGTH),
    );
    channel
        .queue_declare(
            UNROUTED_QUEUE.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            unrouted_args,
        )
        .await?;
    channel
        .queue_bind(
            UNROUTED_QUEUE.into(),
            UNROUTED_EXCHANGE.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut args = FieldTable::default();
    args.insert(
        "alternate-exchange".into(),
        AMQPValue::LongString(UNROUTED_EXCHANGE.into()),
    );
    channel
        .exchange_declare(EXCHANGE.into(), ExchangeKind::Topic, durable(), args)
        .await?;
    channel
        .exchange_declare(
            DEAD_LETTER_EXCHANGE.into(),
            ExchangeKind::Topic,
            durable(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// Declares a durable queue bound to the events exchange for each routing-key pattern, with
/// poison messages dead-lettered to `<queue>.dlq`, after the shared topology
/// ([`ensure_topology`]). Used by consumers (and tests).
pub async fn declare_consumer_queue(
    channel: &Channel,
    topology: Topology,
    queue: &str,
    patterns: &[&str],
) -> lapin::Result<()> {
    ensure_topology(channel, topology).await?;
    let dlq = format!("{queue}.dlq");
    channel
        .queue_declare(
            ShortString::from(dlq.clone()),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            ShortString::from(dlq),
            DEAD_LETTER_EXCHANGE.into(),
            ShortString::from(queue.to_owned()),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(DEAD_LETTER_EXCHANGE.into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(queue.into()),
    );
    channel
        .queue_declare(
            ShortString::from(queue.to_owned()),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await?;
    for pattern in patterns {
        channel
            .queue_bind(
                ShortString::from(queue.to_owned()),
                EXCHANGE.into(),
                ShortString::from((*pattern).to_owned()),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// A consumer of the events of `routing_key` on a queue of this connection alone: exclusive,
/// auto-deleted, not durable, and consumed without acknowledgements, so nothing accumulates
/// for a process that is gone and nothing is redelivered to anyone else. For watchers that
/// only want what happens from now on (the live seat map, tests); workers that must not miss
/// an event use durable queues instead. Ensures the topology first ([`ensure_topology`]).
pub async fn private_queue(
    channel: &lapin::Channel,
    topology: Topology,
    routing_key: &str,
    consumer_tag: &str,
) -> lapin::Result<lapin::Consumer> {
    use lapin::options::BasicConsumeOptions;
    ensure_topology(channel, topology).await?;
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                durable: false,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let name = queue.name().clone();
    channel
        .queue_bind(
            name.clone(),
            EXCHANGE.into(),
            ShortString::from(routing_key.to_owned()),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    channel
        .basic_consume(
            name,
            ShortString::from(consumer_tag.to_owned()),
            BasicConsumeOptions {
                no_ack: true,
                exclusive: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
}

/// A private, exclusive queue bound to the events exchange: what the services really published,
/// seen from the broker's side. Tests use it as their oracle for events (the relays remove an
/// event from its aggregate once the broker confirmed it, so the database no longer shows it),
/// and an operator can use it to watch a routing key.
pub struct EventTap {
    conn: Connection,
    consumer: lapin::Consumer,
}

impl EventTap {
    /// Starts receiving the events of `routing_key` (e.g. `booking.*`, `payment.success`);
    /// events published before this returns are not seen. Declares the topology (a tap is a
    /// tool with the broker's full rights: tests, an operator at a terminal).
    pub async fn bind(url: &str, routing_key: &str) -> lapin::Result<Self> {
        let conn = connect(url, "moviebook-event-tap").await?;
        let channel = conn.create_channel().await?;
        let consumer = private_queue(
            &channel,
            Topology::Declare,
            routing_key,
            "moviebook-event-tap",
        )
        .await?;
        Ok(Self { conn, consumer })
    }

    /// The `event_type`s of the events received within `within` whose `data.<field>` is
    /// `value`, in arrival order (other events, e.g. another test's, are skipped).
    pub async fn types_where(
        &mut self,
        field: &str,
        value: &str,
        within: std::time::Duration,
    ) -> Vec<String> {
        use futures::StreamExt;
        let mut types = vec![];
        let end = tokio::time::Instant::now() + within;
        while let Ok(Some(Ok(delivery))) = tokio::time::timeout_at(end, self.consumer.next()).await
        {
            let Ok(event) = serde_json::from_slice::<serde_json::Value>(&delivery.data) else {
                continue;
            };
            if event["data"][field] == value
                && let Some(t) = event["event_type"].as_str()
            {
                types.push(t.to_owned());
            }
        }
        types
    }

    pub async fn close(self) {
        // Closing is a courtesy: the queue is exclusive and goes with the connection anyway.
        let _ = self.conn.close(200, "tap closed".into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::Topology;

    #[test]
    fn the_topology_setting_is_one_of_two_words() {
        assert_eq!("declare".parse(), Ok(Topology::Declare));
        assert_eq!("existing".parse(), Ok(Topology::Existing));
        assert!("Existing".parse::<Topology>().is_err());
        assert_eq!(Topology::default(), Topology::Declare);
    }
}
