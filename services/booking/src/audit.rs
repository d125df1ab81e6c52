//! The reconciliation audit (`booking-service audit`, `make audit`): reads every booking, each
//! booking's payments (from the payment service) and the seats of their showtimes (from the
//! cinema service), and reports every inconsistency between them, with the sums. The tests use
//! it as their oracle.
//!
//! A booking is consistent when it is in a final state with matching money and seats —
//! CONFIRMED with its seats sold and one net charge of its amount, or CANCELLED / EXPIRED /
//! REFUNDED with a net charge of 0 and none of its seats sold unless another CONFIRMED booking
//! bought them since — or in flight (PENDING_PAYMENT, PAYING, PAYMENT_FAILED), which the
//! sweeper and reconciler drive to one of those.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::{StreamExt, TryStreamExt};

use crate::{
    clients::Transaction, domain::BookingStatus, error::Result, service::Booker, store::Booking,
};

/// What the audit found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    /// One line per inconsistency: `<booking or seat>: <what>`.
    pub inconsistencies: Vec<String>,
    /// Bookings per status.
    pub by_status: BTreeMap<&'static str, usize>,
    /// Bookings not in a final state yet (the reconciler's work in progress).
    pub in_flight: usize,
    pub charged: f64,
    pub refunded: f64,
    /// The sum of the CONFIRMED bookings' amounts: what the net charge must be.
    pub confirmed_total: f64,
}

impl Report {
    pub fn net(&self) -> f64 {
        self.charged - self.refunded
    }

    /// The report as printed: the inconsistencies, then the sums.
    pub fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .inconsistencies
            .iter()
            .map(|i| format!("INCONSISTENT {i}"))
            .collect();
        let statuses: Vec<String> = self
            .by_status
            .iter()
            .map(|(s, n)| format!("{s}={n}"))
            .collect();
        out.push(format!(
            "bookings: {} ({}), in flight {}",
            self.by_status.values().sum::<usize>(),
            statuses.join(" "),
            self.in_flight
        ));
        out.push(format!(
            "money: charged {:.2}, refunded {:.2}, net {:.2}; confirmed bookings total {:.2}",
            self.charged,
            self.refunded,
            self.net(),
            self.confirmed_total
        ));
        out.push(format!("inconsistencies: {}", self.inconsistencies.len()));
        out
    }
}

fn money_eq(a: f64, b: f64) -> bool {
    (a - b).abs() < 0.005
}

/// The audit's decisions over what was read: `payments` by booking id, `seats` by showtime id
/// (seat number → status as the cinema reports it).
pub fn check(
    bookings: &[Booking],
    payments: &HashMap<String, Vec<Transaction>>,
    seats: &HashMap<String, HashMap<String, String>>,
) -> Report {
    let mut r = Report::default();
    // Seats each showtime's CONFIRMED bookings bought, and those in-flight bookings may be
    // confirming right now (sold seats of either are expected).
    let mut bought: HashMap<(&str, &str), Vec<&str>> = HashMap::new();
    let mut in_flight_seats: HashSet<(&str, &str)> = HashSet::new();
    for b in bookings {
        for s in &b.seats {
            let key = (b.showtime_id.as_str(), s.as_str());
            match b.status {
                BookingStatus::Confirmed => bought.entry(key).or_default().push(&b.id),
                status if !status.is_terminal() => {
                    in_flight_seats.insert(key);
                }
                _ => {}
            }
        }
    }
    for ((showtime, seat), ids) in &bought {
        if ids.len() > 1 {
            r.inconsistencies.push(format!(
                "seat {seat} of showtime {showtime}: sold to {} CONFIRMED bookings ({})",
                ids.len(),
                ids.join(", ")
            ));
        }
    }
    for b in bookings {
        *r.by_status.entry(b.status.as_str()).or_default() += 1;
        let mut charged = 0.0;
        let mut refunded = 0.0;
        for t in payments.get(&b.id).into_iter().flatten() {
            if t.status == "SUCCESS" {
                charged += t.amount;
                refunded += t.refunded_amount;
            }
        }
        r.charged += charged;
        r.refunded += refunded;
        let net = charged - refunded;
        let seat_status = |s: &str| {
            seats
                .get(&b.showtime_id)
                .and_then(|m| m.get(s))
                .map_or("UNKNOWN", String::as_str)
        };
        let id = &b.id;
        match b.status {
            // A cancellation under way (the sweeper finishes it): refunded, seats going back.
            BookingStatus::Confirmed if b.cancel_requested_at.is_some() => r.in_flight += 1,
            BookingStatus::Confirmed => {
                r.confirmed_total += b.total_amount;
                if !money_eq(net, b.total_amount) {
                    r.inconsistencies.push(format!(
                        "booking {id} CONFIRMED: net charge {net:.2}, its amount is {:.2}",
                        b.total_amount
                    ));
                }
                for s in &b.seats {
                    let st = seat_status(s);
                    if st != "BOOKED" {
                        r.inconsistencies
                            .push(format!("booking {id} CONFIRMED: seat {s} is {st}"));
                    }
                }
            }
            s if s.is_terminal() => {
                if !money_eq(net, 0.0) {
                    r.inconsistencies
                        .push(format!("booking {id} {s}: net charge {net:.2}, must be 0"));
                }
                for seat in &b.seats {
                    let key = (b.showtime_id.as_str(), seat.as_str());
                    if seat_status(seat) == "BOOKED"
                        && !bought.contains_key(&key)
                        && !in_flight_seats.contains(&key)
                    {
                        r.inconsistencies.push(format!(
                            "booking {id} {s}: seat {seat} is still sold and no CONFIRMED booking has it"
                        ));
                    }
                }
            }
            _ => r.in_flight += 1,
        }
    }
    r.inconsistencies.sort();
    r
}

/// Reads everything and checks it. Payments and seat maps are fetched 16 at a time.
pub async fn run(booker: &Booker) -> Result<Report> {
    let bookings = booker.store.all().await?;
    let token = booker
        .keys
        .service_token(crate::SERVICE_NAME)
        .map_err(crate::error::BookingError::internal)?;
    let payments: HashMap<String, Vec<Transaction>> = futures::stream::iter(&bookings)
        .map(|b| {
            let token = &token;
            async move {
                let txs = booker.rest.transactions(token, &b.id).await?;
                Ok::<_, crate::error::BookingError>((b.id.clone(), txs))
            }
        })
        .buffer_unordered(16)
        .try_collect()
        .await?;
    let showtimes: HashSet<&str> = bookings.iter().map(|b| b.showtime_id.as_str()).collect();
    let seats: HashMap<String, HashMap<String, String>> = futures::stream::iter(showtimes)
        .map(|id| async move {
            let map = booker.cinema.seat_map(id).await?;
            let statuses = map
                .seats
                .into_iter()
                .map(|s| {
                    let status = moviebook_common::proto::SeatStatus::try_from(s.status)
                        .map_or("UNKNOWN", |st| st.as_str_name())
                        .to_owned();
                    (s.seat_number, status)
                })
                .collect();
            Ok::<_, crate::error::BookingError>((id.to_owned(), statuses))
        })
        .buffer_unordered(16)
        .try_collect()
        .await?;
    Ok(check(&bookings, &payments, &seats))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn booking(id: &str, status: BookingStatus, seats: &[&str]) -> Booking {
        let now = bson::DateTime::now();
        Booking {
            id: id.into(),
            user_id: "u".into(),
            user_email: None,
            showtime_id: "s".into(),
            movie_title: String::new(),
            cinema_name: String::new(),
            start_time: 0,
            seats: seats.iter().map(|s| (*s).to_owned()).collect(),
            total_amount: 20.0,
            currency: "USD".into(),
            status,
            lock_id: "l".into(),
            hold_expires_at: now,
            transaction_id: None,
            payment_attempt: 0,
            payment_started: false,
            paying_since: None,
            fence: 0,
            release_pending: false,
            refund_intent: false,
            cancel_requested_at: None,
            repair_attempts: 0,
            repair_after: None,
            failure_reason: None,
            refund_id: None,
            created_at: now,
            updated_at: now,
            confirmed_at: None,
            cancelled_at: None,
        }
    }

    fn tx(amount: f64, refunded: f64) -> Transaction {
        Transaction {
            transaction_id: "t".into(),
            status: "SUCCESS".into(),
            failure_code: None,
            failure_reason: None,
            amount,
            refunded_amount: refunded,
        }
    }

    fn seats(list: &[(&str, &str)]) -> HashMap<String, HashMap<String, String>> {
        HashMap::from([(
            "s".to_owned(),
            list.iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect(),
        )])
    }

    #[test]
    fn consistent_bookings_pass_and_the_sums_add_up() {
        let bookings = [
            booking("c", BookingStatus::Confirmed, &["A1"]),
            booking("x", BookingStatus::Cancelled, &["A2"]),
            booking("p", BookingStatus::PendingPayment, &["A3"]),
        ];
        let payments = HashMap::from([
            ("c".to_owned(), vec![tx(20.0, 0.0)]),
            ("x".to_owned(), vec![tx(20.0, 20.0)]),
        ]);
        let r = check(
            &bookings,
            &payments,
            &seats(&[("A1", "BOOKED"), ("A2", "AVAILABLE"), ("A3", "LOCKED")]),
        );
        assert_eq!(r.inconsistencies, Vec::<String>::new());
        assert_eq!(r.in_flight, 1);
        assert!(money_eq(r.net(), 20.0) && money_eq(r.confirmed_total, 20.0));
        assert!(r.lines().last().is_some_and(|l| l == "inconsistencies: 0"));
    }

    #[test]
    fn every_kind_of_loss_is_reported() {
        let bookings = [
            // Issue 12's cases: confirmed but refunded (seats back on sale), refunded but the
            // seats still sold, expired with the money kept, one seat sold twice.
            booking("c1", BookingStatus::Confirmed, &["A1"]),
            booking("r1", BookingStatus::Refunded, &["A2"]),
            booking("e1", BookingStatus::Expired, &["A3"]),
            booking("c2", BookingStatus::Confirmed, &["A4"]),
            booking("c3", BookingStatus::Confirmed, &["A4"]),
        ];
        let payments = HashMap::from([
            ("c1".to_owned(), vec![tx(20.0, 20.0)]),
            ("r1".to_owned(), vec![tx(20.0, 20.0)]),
            ("e1".to_owned(), vec![tx(20.0, 0.0)]),
            ("c2".to_owned(), vec![tx(20.0, 0.0)]),
            ("c3".to_owned(), vec![tx(20.0, 0.0)]),
        ]);
        let r = check(
            &bookings,
            &payments,
            &seats(&[
                ("A1", "AVAILABLE"),
                ("A2", "BOOKED"),
                ("A3", "AVAILABLE"),
                ("A4", "BOOKED"),
            ]),
        );
        let all = r.inconsistencies.join("\n");
        for want in [
            "booking c1 CONFIRMED: net charge 0.00",
            "booking c1 CONFIRMED: seat A1 is AVAILABLE",
            "booking r1 REFUNDED: seat A2 is still sold",
            "booking e1 EXPIRED: net charge 20.00",
            "seat A4 of showtime s: sold to 2 CONFIRMED bookings",
        ] {
            assert!(all.contains(want), "missing {want:?} in\n{all}");
        }
        assert_eq!(r.inconsistencies.len(), 5, "{all}");
    }

    #[test]
    fn a_returned_seat_sold_again_is_not_a_loss() {
        let bookings = [
            booking("x", BookingStatus::Cancelled, &["A1"]),
            booking("c", BookingStatus::Confirmed, &["A1"]),
        ];
        let payments = HashMap::from([
            ("x".to_owned(), vec![tx(20.0, 20.0)]),
            ("c".to_owned(), vec![tx(20.0, 0.0)]),
        ]);
        let r = check(&bookings, &payments, &seats(&[("A1", "BOOKED")]));
        assert_eq!(r.inconsistencies, Vec::<String>::new());
    }
}
