//! RabbitMQ connection and the shared topology.
//!
//! Everyone declares the topology through [`declare_topology`] so the arguments always match
//! (RabbitMQ refuses a redeclaration with different arguments). The names are those the broker
//! grants of `moviebook-grants` allow.

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
    unrouted_args.insert("x-max-length".into(), AMQPValue::LongLongInt(1_000_000));
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
/// poison messages dead-lettered to `<queue>.dlq`. Used by consumers (and tests).
pub async fn declare_consumer_queue(
    channel: &Channel,
    queue: &str,
    patterns: &[&str],
) -> lapin::Result<()> {
    declare_topology(channel).await?;
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
/// an event use durable queues instead. Declares the topology first.
pub async fn private_queue(
    channel: &lapin::Channel,
    routing_key: &str,
    consumer_tag: &str,
) -> lapin::Result<lapin::Consumer> {
    use lapin::options::BasicConsumeOptions;
    declare_topology(channel).await?;
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
    /// events published before this returns are not seen.
    pub async fn bind(url: &str, routing_key: &str) -> lapin::Result<Self> {
        let conn = connect(url, "moviebook-event-tap").await?;
        let channel = conn.create_channel().await?;
        let consumer = private_queue(&channel, routing_key, "moviebook-event-tap").await?;
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
