//! A short-lived copy of showtimes' seat boards in this process, so that CheckSeatAvailability
//! is answered without a PostgreSQL round trip.
//!
//! **Why it cannot make a booking wrong.** Only CheckSeatAvailability reads it. LockSeats,
//! ConfirmSeatBooking, the releases and GetSeatMap never do: they decide in PostgreSQL under
//! row locks, as without the copy. So the worst a stale copy does is answer "available" for a
//! seat taken moments ago (LockSeats then refuses it, naming the seat) or "taken" for one just
//! freed. Availability is advice to a client; the lock is the decision.
//!
//! **How stale.** A board is at most `ttl` old (`SEAT_CACHE_MS`, 200 ms by default; 0 turns the
//! copy off). The writes this process makes (LockSeats, and the releases and confirmations of
//! bookings seen on a board) drop the boards they touch at once, so a client sees its own lock
//! in its next check on the same pod; other pods' writes show within `ttl`. A hold that lapses
//! needs no write: a seat's expiry is compared with the clock on every answer.
//!
//! **Cost.** A miss is answered from PostgreSQL exactly as without the copy, and starts one
//! background load of the whole board (one query per showtime, never two at once); nobody
//! waits for it. A load that a write of this process overtook is thrown away. At most
//! [`MAX_BOARDS`] boards of at most [`MAX_SEATS`] seats are kept (a few MB).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::store;

/// Most showtimes kept; the oldest board goes first.
pub const MAX_BOARDS: usize = 64;
/// Larger showtimes are never copied (they are read from PostgreSQL every time).
pub const MAX_SEATS: usize = 20_000;

/// One seat as stored, its hold's expiry not yet applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSeat {
    pub status: String,
    pub booking_id: Option<String>,
    pub locked_until: Option<DateTime<Utc>>,
}

/// A seat's status as CheckSeatAvailability answers it at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSeat<'a> {
    pub status: &'a str,
    /// The booking holding the seat, only while its hold is live.
    pub locked_by: Option<&'a str>,
    pub locked_until: Option<DateTime<Utc>>,
}

/// The live status of a stored seat: a hold whose time has passed is free again, with or
/// without the sweeper. The rule of `store::seats`' query, applied here with this clock.
pub fn live(seat: &StoredSeat, now: DateTime<Utc>) -> LiveSeat<'_> {
    let held = seat.status == "LOCKED";
    match seat.locked_until {
        Some(until) if held && until > now => LiveSeat {
            status: "LOCKED",
            locked_by: seat.booking_id.as_deref(),
            locked_until: Some(until),
        },
        Some(_) if held => LiveSeat {
            status: "AVAILABLE",
            locked_by: None,
            locked_until: None,
        },
        _ => LiveSeat {
            status: &seat.status,
            locked_by: None,
            locked_until: None,
        },
    }
}

/// A showtime's seats as read at `loaded`.
#[derive(Debug)]
pub struct Board {
    loaded: Instant,
    seats: HashMap<String, StoredSeat>,
    /// Every booking with a seat on the board (held or sold), to find the boards a release or
    /// confirmation of that booking changes.
    bookings: HashSet<String>,
}

impl Board {
    pub fn new(rows: Vec<(String, StoredSeat)>) -> Self {
        let bookings = rows
            .iter()
            .filter_map(|(_, s)| s.booking_id.clone())
            .collect();
        Self {
            loaded: Instant::now(),
            seats: rows.into_iter().collect(),
            bookings,
        }
    }

    /// The requested seats, in the order asked; `None` when one is not on the board (the
    /// caller then asks PostgreSQL, which explains what is wrong).
    pub fn get<'a>(&'a self, numbers: &[String]) -> Option<Vec<(&'a str, &'a StoredSeat)>> {
        numbers
            .iter()
            .map(|n| self.seats.get_key_value(n).map(|(k, s)| (k.as_str(), s)))
            .collect()
    }
}

#[derive(Debug)]
enum Slot {
    /// A load is running; `ticket` tells it whether it is still wanted when it ends.
    Loading {
        ticket: u64,
    },
    Ready(Arc<Board>),
}

#[derive(Debug, Default)]
struct Boards {
    slots: HashMap<Uuid, Slot>,
    next_ticket: u64,
}

/// What [`SeatBoards::lookup`] found.
#[derive(Debug)]
pub enum Lookup {
    Hit(Arc<Board>),
    /// Not copied (or too old): read PostgreSQL. `load` is the ticket of a load the caller
    /// should start, when no other is running.
    Miss {
        load: Option<u64>,
    },
}

/// The copies of this process.
#[derive(Debug, Clone)]
pub struct SeatBoards {
    ttl: Duration,
    boards: Arc<Mutex<Boards>>,
}

impl SeatBoards {
    /// Copies of at most `ttl`; `Duration::ZERO` copies nothing.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            boards: Arc::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    fn lock(&self) -> MutexGuard<'_, Boards> {
        // The map holds no invariant a panic could break half-way: keep using it.
        self.boards.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The board of `showtime` if it is fresh; otherwise a miss, with a load ticket for the
    /// first caller to miss.
    pub fn lookup(&self, showtime: Uuid) -> Lookup {
        if !self.enabled() {
            return Lookup::Miss { load: None };
        }
        let mut boards = self.lock();
        match boards.slots.get(&showtime) {
            Some(Slot::Ready(board)) if board.loaded.elapsed() < self.ttl => {
                return Lookup::Hit(board.clone());
            }
            Some(Slot::Loading { .. }) => return Lookup::Miss { load: None },
            _ => {}
        }
        boards.next_ticket += 1;
        let ticket = boards.next_ticket;
        boards.slots.insert(showtime, Slot::Loading { ticket });
        Lookup::Miss { load: Some(ticket) }
    }

    /// Stores a finished load if it is still wanted (no write of this process dropped the
    /// showtime meanwhile); a failed or oversized load just frees the slot.
    pub fn finish(&self, showtime: Uuid, ticket: u64, board: Option<Board>) {
        let mut boards = self.lock();
        if !matches!(boards.slots.get(&showtime), Some(Slot::Loading { ticket: t }) if *t == ticket)
        {
            return;
        }
        match board {
            Some(board) if !board.seats.is_empty() && board.seats.len() <= MAX_SEATS => {
                boards.slots.insert(showtime, Slot::Ready(Arc::new(board)));
                evict_oldest(&mut boards.slots);
            }
            _ => {
                boards.slots.remove(&showtime);
            }
        }
    }

    /// Whether a fresh board of `showtime` is held (for tests and diagnostics).
    pub fn holds(&self, showtime: Uuid) -> bool {
        matches!(self.lock().slots.get(&showtime),
            Some(Slot::Ready(board)) if board.loaded.elapsed() < self.ttl)
    }

    /// Drops the board of a showtime this process just changed.
    pub fn forget_showtime(&self, showtime: Uuid) {
        if self.enabled() {
            self.lock().slots.remove(&showtime);
        }
    }

    /// Drops the boards a change to `booking_id`'s seats may concern: those it has seats on,
    /// and every load still running (it may have read them before the change).
    pub fn forget_booking(&self, booking_id: &str) {
        if self.enabled() {
            self.lock().slots.retain(|_, slot| match slot {
                Slot::Ready(board) => !board.bookings.contains(booking_id),
                Slot::Loading { .. } => false,
            });
        }
    }

    /// Loads and stores a showtime's board; run in the background after a miss.
    pub async fn load(self, pool: PgPool, showtime: Uuid, ticket: u64) {
        let board = match store::seat_board(&pool, showtime).await {
            Ok(rows) if rows.len() <= MAX_SEATS => Some(Board::new(rows)),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(error = %e, %showtime, "could not load a seat board");
                None
            }
        };
        self.finish(showtime, ticket, board);
    }
}

/// Keeps at most [`MAX_BOARDS`] boards: drops the oldest loaded.
fn evict_oldest(slots: &mut HashMap<Uuid, Slot>) {
    while slots.len() > MAX_BOARDS {
        let oldest = slots
            .iter()
            .filter_map(|(id, slot)| match slot {
                Slot::Ready(board) => Some((board.loaded, *id)),
                Slot::Loading { .. } => None,
            })
            .min()
            .map(|(_, id)| id);
        match oldest {
            Some(id) => slots.remove(&id),
            None => return,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seat(status: &str, booking: Option<&str>, until: Option<DateTime<Utc>>) -> StoredSeat {
        StoredSeat {
            status: status.into(),
            booking_id: booking.map(str::to_owned),
            locked_until: until,
        }
    }

    fn board(rows: &[(&str, StoredSeat)]) -> Board {
        Board::new(
            rows.iter()
                .map(|(n, s)| ((*n).to_owned(), s.clone()))
                .collect(),
        )
    }

    /// A miss on `st` and the load it starts, finished with `rows`.
    fn fill(boards: &SeatBoards, st: Uuid, rows: &[(&str, StoredSeat)]) {
        let Lookup::Miss { load: Some(ticket) } = boards.lookup(st) else {
            panic!("a miss that loads");
        };
        boards.finish(st, ticket, Some(board(rows)));
    }

    #[test]
    fn a_lapsed_hold_is_available_without_any_write() {
        let now = Utc::now();
        let later = now + chrono::Duration::seconds(30);
        let held = seat("LOCKED", Some("b1"), Some(later));
        assert_eq!(
            live(&held, now),
            LiveSeat {
                status: "LOCKED",
                locked_by: Some("b1"),
                locked_until: Some(later)
            }
        );
        assert_eq!(live(&held, later).status, "AVAILABLE");
        assert_eq!(live(&held, later).locked_by, None);
        // A hold without an expiry (never written so) stays held, as the query says.
        assert_eq!(
            live(&seat("LOCKED", Some("b1"), None), now).status,
            "LOCKED"
        );
        let sold = seat("BOOKED", Some("b2"), None);
        assert_eq!(live(&sold, now).status, "BOOKED");
        assert_eq!(
            live(&sold, now).locked_by,
            None,
            "only live holds name their booking"
        );
        assert_eq!(
            live(&seat("MAINTENANCE", None, None), now).status,
            "MAINTENANCE"
        );
    }

    #[test]
    fn a_board_answers_only_when_it_has_every_seat() {
        let b = board(&[
            ("A1", seat("AVAILABLE", None, None)),
            ("A2", seat("BOOKED", Some("b2"), None)),
        ]);
        let got = b.get(&["A2".into(), "A1".into()]).expect("both seats");
        assert_eq!(got[0].0, "A2");
        assert_eq!(got[1].0, "A1");
        assert!(b.get(&["A1".into(), "Z9".into()]).is_none());
    }

    #[test]
    fn one_load_at_a_time_and_a_write_discards_a_load_it_overtook() {
        let boards = SeatBoards::new(Duration::from_secs(60));
        let st = Uuid::now_v7();
        let Lookup::Miss { load: Some(ticket) } = boards.lookup(st) else {
            panic!("the first miss loads");
        };
        assert!(matches!(boards.lookup(st), Lookup::Miss { load: None }));
        // This process changes the showtime while the load runs: the load's copy is older.
        boards.forget_showtime(st);
        boards.finish(
            st,
            ticket,
            Some(board(&[("A1", seat("AVAILABLE", None, None))])),
        );
        let Lookup::Miss { load: Some(again) } = boards.lookup(st) else {
            panic!("the overtaken load was not kept");
        };
        boards.finish(
            st,
            again,
            Some(board(&[("A1", seat("AVAILABLE", None, None))])),
        );
        assert!(matches!(boards.lookup(st), Lookup::Hit(_)));
    }

    #[test]
    fn a_release_of_a_booking_drops_the_boards_it_is_on() {
        let boards = SeatBoards::new(Duration::from_secs(60));
        let (on, off) = (Uuid::now_v7(), Uuid::now_v7());
        for (st, booking) in [(on, "b1"), (off, "b9")] {
            fill(&boards, st, &[("A1", seat("LOCKED", Some(booking), None))]);
        }
        boards.forget_booking("b1");
        assert!(matches!(boards.lookup(on), Lookup::Miss { load: Some(_) }));
        assert!(matches!(boards.lookup(off), Lookup::Hit(_)));
    }

    #[test]
    fn boards_expire_are_bounded_and_can_be_turned_off() {
        let boards = SeatBoards::new(Duration::from_millis(30));
        let st = Uuid::now_v7();
        fill(&boards, st, &[("A1", seat("AVAILABLE", None, None))]);
        assert!(matches!(boards.lookup(st), Lookup::Hit(_)));
        std::thread::sleep(Duration::from_millis(40));
        assert!(matches!(boards.lookup(st), Lookup::Miss { load: Some(_) }));

        let many = SeatBoards::new(Duration::from_secs(60));
        for _ in 0..MAX_BOARDS + 10 {
            fill(
                &many,
                Uuid::now_v7(),
                &[("A1", seat("AVAILABLE", None, None))],
            );
        }
        assert!(many.lock().slots.len() <= MAX_BOARDS);

        let off = SeatBoards::new(Duration::ZERO);
        assert!(matches!(off.lookup(st), Lookup::Miss { load: None }));
        // An empty board (an unknown showtime) is never kept.
        fill(&many, st, &[]);
        assert!(matches!(many.lookup(st), Lookup::Miss { load: Some(_) }));
    }
}
