//! DataLoaders: many showtime lookups in one request become one BatchGetShowtimes call.

use std::collections::HashMap;

use async_graphql::dataloader::Loader;

use crate::{clients::CinemaClient, error::gql, graphql::types::Showtime};

pub struct ShowtimeLoader {
    pub cinema: CinemaClient,
}

impl Loader<String> for ShowtimeLoader {
    type Value = Showtime;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Showtime>, Self::Error> {
        metrics::counter!("cinema_batch_calls_total", "method" => "BatchGetShowtimes").increment(1);
        let found = self
            .cinema
            .batch_get_showtimes(keys.to_vec())
            .await
            .map_err(gql)?;
        Ok(found
            .into_iter()
            .filter_map(Showtime::from_details)
            .map(|s| (s.info.id.clone(), s))
            .collect())
    }
}
