//! `seatsChanged` and the WebSocket it runs on (`GET /graphql/ws`, graphql-transport-ws and the
//! older graphql-ws protocol). The feed itself is [`crate::live`].
//!
//! The socket serves subscriptions only. Queries and mutations stay on `POST /graphql`, where
//! the gateway's JWT plugin, rate limit and body limit apply; a socket that executed them would
//! be a way around all three. The one subscription is public (seat statuses, like the seat map
//! query), so the socket needs no token and reads none.

use std::sync::Arc;

use async_graphql::{
    Context, ErrorExtensions, ID, Result, ServerError, ServerResult,
    Subscription as SubscriptionMacro, Variables,
    extensions::{
        Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextPrepareRequest,
    },
    parser::types::{ExecutableDocument, OperationType},
};
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::{
    extract::{State, WebSocketUpgrade},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use futures::stream::BoxStream;

use super::{BookingSchema, loaders::ShowtimeLoader};
use crate::{
    clients::CinemaClient,
    domain::parse_id,
    error::gql,
    live::{ConnectionLimits, SeatFeed, SeatsChanged, StartRefused},
};

pub struct Subscription;

#[SubscriptionMacro]
impl Subscription {
    /// The seats of a showtime as they change: first every seat with its status, then each
    /// change (held → LOCKED, sold → BOOKED, released or returned → AVAILABLE) made by any
    /// replica, within about a second. Public, like the seat map, and it carries seat numbers
    /// and statuses only (never who holds a seat). Only over the WebSocket at /graphql/ws; a
    /// connection may hold a bounded number of these (TOO_MANY_SUBSCRIPTIONS).
    async fn seats_changed(
        &self,
        ctx: &Context<'_>,
        showtime_id: ID,
    ) -> Result<BoxStream<'static, SeatsChanged>> {
        let id = parse_id("showtimeId", &showtime_id).map_err(|e| gql(e.into()))?;
        let feed = ctx.data::<Arc<SeatFeed>>()?;
        let Ok(limits) = ctx.data::<ConnectionLimits>() else {
            return Err(coded(
                "subscriptions are served on the WebSocket at /graphql/ws",
                "BAD_REQUEST",
            ));
        };
        let slot = limits.subscription().map_err(|_| {
            let max = feed.limits.max_subscriptions_per_connection;
            coded(
                format!("at most {max} subscriptions per connection"),
                "TOO_MANY_SUBSCRIPTIONS",
            )
        })?;
        feed.watch(id, slot).await.map_err(gql)
    }
}

fn coded(message: impl Into<String>, code: &'static str) -> async_graphql::Error {
    async_graphql::Error::new(message).extend_with(|_, e| e.set("code", code))
}

fn server_error(message: impl Into<String>, code: &'static str) -> ServerError {
    coded(message, code).into_server_error(async_graphql::Pos::default())
}

/// The schema extension that holds the socket to its rules: every operation sent over it
/// spends one of the connection's starts per minute (`RATE_LIMITED` past them), and only
/// subscriptions are executed (`BAD_REQUEST` otherwise). Requests over HTTP carry no
/// [`ConnectionLimits`] and pass untouched.
pub struct SocketRules;

impl ExtensionFactory for SocketRules {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(SocketRules)
    }
}

#[async_trait::async_trait]
impl Extension for SocketRules {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: async_graphql::Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<async_graphql::Request> {
        if let Some(limits) = ctx.data_opt::<ConnectionLimits>()
            && limits.spend_start() == Err(StartRefused::TooFast)
        {
            return Err(server_error(
                format!(
                    "at most {} operations per minute on one connection",
                    limits.starts_per_minute()
                ),
                "RATE_LIMITED",
            ));
        }
        next.run(ctx, request).await
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await?;
        if ctx.data_opt::<ConnectionLimits>().is_some()
            && doc
                .operations
                .iter()
                .any(|(_, op)| op.node.ty != OperationType::Subscription)
        {
            return Err(server_error(
                "only subscriptions are served on /graphql/ws; send queries and mutations to POST /graphql",
                "BAD_REQUEST",
            ));
        }
        Ok(doc)
    }
}

/// State of the WebSocket endpoint.
#[derive(Clone)]
pub struct WsState {
    pub schema: BookingSchema,
    pub feed: Arc<SeatFeed>,
    pub cinema: CinemaClient,
}

/// `GET /graphql/ws`: upgrades while this pod has a connection slot free (else 503 with a
/// `Retry-After`), then serves subscriptions over the socket until either side closes it.
pub async fn ws(
    State(st): State<WsState>,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some(permit) = st.feed.connection() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "5")],
            "too many live connections on this server; retry",
        )
            .into_response();
    };
    let limits = ConnectionLimits::new(&st.feed.limits);
    upgrade
        .protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
        // A client that stops reading cannot make this server buffer without bound: sends wait
        // for the socket (so its subscriptions are polled less and skip to a full map), and the
        // buffer behind them is capped.
        .write_buffer_size(64 * 1024)
        .max_write_buffer_size(256 * 1024)
        .max_message_size(64 * 1024)
        .max_frame_size(64 * 1024)
        .on_upgrade(move |socket| async move {
            let mut data = async_graphql::Data::default();
            data.insert(limits);
            data.insert(async_graphql::dataloader::DataLoader::new(
                ShowtimeLoader { cinema: st.cinema },
                tokio::spawn,
            ));
            GraphQLWebSocket::new(socket, st.schema, protocol)
                .with_data(data)
                .serve()
                .await;
            drop(permit);
        })
}
