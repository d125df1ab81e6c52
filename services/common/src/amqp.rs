//! RabbitMQ connection and the shared topology.
//!
//! Everyone declares the topology through [`declare_topology`] so the arguments always match
//! (RabbitMQ refuses a redeclaration with different arguments).

use lapin::{
    Channel, Connection, ConnectionProperties, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, ShortString},
};

use crate::events::EXCHANGE;

/// Where messages that no queue wanted end up, instead of being dropped by the broker: an event
/// published before its consumers declared their queues is kept, not lost.
pub const UNROUTED_EXCHANGE: &str = "movie_app_events.unrouted";
pub const UNROUTED_QUEUE: &str = "movie_app_events.unrouted";
/// Dead-letter exchange for poison messages; consumers bind their `.dlq` queues to it.
pub const DEAD_LETTER_EXCHANGE: &str = "movie_app_events.dlx";

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
