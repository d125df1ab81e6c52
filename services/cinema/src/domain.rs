//! The decisions of the cinema service as plain functions and types, with no I/O: validating
//! requests, seat layouts and prices, lock durations.

use std::collections::{BTreeSet, HashSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};

/// Lock duration when the caller passes 0 (docs/architecture.md: a hold lasts 300 s by default).
pub const DEFAULT_LOCK_SECONDS: i32 = 300;
/// The longest hold a caller may ask for: one hour. Longer holds would take seats off sale for
/// an unpaid booking.
pub const MAX_LOCK_SECONDS: i32 = 3600;
/// Seats one request may name. A booking of more than 50 seats is a group sale, not a ticket
/// purchase, and a bound keeps a single request from locking a whole auditorium.
pub const MAX_SEATS_PER_REQUEST: usize = 50;
/// The longest booking id accepted (UUIDs and ObjectIds are far shorter).
pub const MAX_BOOKING_ID_LEN: usize = 128;

/// A seat's class; its price is the showtime's base price times the class multiplier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeatType {
    Standard,
    Premium,
    Vip,
}

impl SeatType {
    /// Price multiplier in percent: standard ×1.0, premium ×1.5, vip ×2.0.
    pub fn multiplier_percent(self) -> i64 {
        match self {
            Self::Standard => 100,
            Self::Premium => 150,
            Self::Vip => 200,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::Premium => "premium",
            Self::Vip => "vip",
        }
    }

    /// The price of a seat of this type, in cents, rounded half up.
    pub fn price_cents(self, base_price_cents: i64) -> i64 {
        (base_price_cents * self.multiplier_percent() + 50) / 100
    }
}

/// One row of a screen: a label (`A`, `B`, ... `AA`), how many seats, and their type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowSpec {
    pub label: String,
    pub seats: u32,
    pub seat_type: SeatType,
}

/// A screen's seat plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub rows: Vec<RowSpec>,
}

/// Limits of a layout: large enough for any real auditorium.
pub const MAX_ROWS: usize = 40;
pub const MAX_SEATS_PER_ROW: u32 = 80;

impl Layout {
    /// A layout of `rows` rows of `per_row` seats; the last `vip_rows` rows are vip and the
    /// `premium_rows` rows before them premium (the back of the room is the best).
    pub fn simple(rows: usize, per_row: u32, premium_rows: usize, vip_rows: usize) -> Self {
        let rows = (0..rows)
            .map(|i| RowSpec {
                label: row_label(i),
                seats: per_row,
                seat_type: if i + vip_rows >= rows {
                    SeatType::Vip
                } else if i + vip_rows + premium_rows >= rows {
                    SeatType::Premium
                } else {
                    SeatType::Standard
                },
            })
            .collect();
        Self { rows }
    }

    /// Checks the plan: 1..=40 rows with distinct labels of 1-2 capital letters, 1..=80 seats
    /// each.
    pub fn validate(&self) -> Result<()> {
        if self.rows.is_empty() {
            return Err(Error::invalid("layout.rows must not be empty"));
        }
        if self.rows.len() > MAX_ROWS {
            return Err(Error::invalid(format!(
                "layout has {} rows; at most {MAX_ROWS} are allowed",
                self.rows.len()
            )));
        }
        let mut seen = HashSet::new();
        for row in &self.rows {
            let ok = (1..=2).contains(&row.label.len())
                && row.label.bytes().all(|b| b.is_ascii_uppercase());
            if !ok {
                return Err(Error::invalid(format!(
                    "row label {:?} must be one or two capital letters",
                    row.label
                )));
            }
            if !seen.insert(row.label.as_str()) {
                return Err(Error::invalid(format!(
                    "row label {:?} appears twice",
                    row.label
                )));
            }
            if row.seats == 0 || row.seats > MAX_SEATS_PER_ROW {
                return Err(Error::invalid(format!(
                    "row {} has {} seats; each row needs 1 to {MAX_SEATS_PER_ROW}",
                    row.label, row.seats
                )));
            }
        }
        Ok(())
    }

    pub fn total_seats(&self) -> i32 {
        self.rows.iter().map(|r| r.seats as i32).sum()
    }

    /// Every seat of the plan, priced from `base_price_cents`.
    pub fn seats(&self, base_price_cents: i64) -> Vec<SeatSpec> {
        self.rows
            .iter()
            .flat_map(|row| {
                (1..=row.seats).map(move |n| SeatSpec {
                    seat_number: format!("{}{}", row.label, n),
                    row: row.label.clone(),
                    number: n as i32,
                    seat_type: row.seat_type,
                    price_cents: row.seat_type.price_cents(base_price_cents),
                })
            })
            .collect()
    }
}

/// `A`..`Z`, then `AA`, `AB`, ...
pub fn row_label(i: usize) -> String {
    if i < 26 {
        ((b'A' + i as u8) as char).to_string()
    } else {
        let first = (b'A' + ((i / 26 - 1) % 26) as u8) as char;
        let second = (b'A' + (i % 26) as u8) as char;
        format!("{first}{second}")
    }
}

/// One seat of a showtime's inventory, before it is inserted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatSpec {
    pub seat_number: String,
    pub row: String,
    pub number: i32,
    pub seat_type: SeatType,
    pub price_cents: i64,
}

/// Parses a required UUID field, naming the field in the error.
pub fn parse_id(field: &str, value: &str) -> Result<Uuid> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Error::invalid(format!("{field} is required")));
    }
    Uuid::parse_str(value)
        .map_err(|_| Error::invalid(format!("{field} {value:?} is not a valid UUID")))
}

/// A seat number is a row label (1-3 letters) followed by a seat number (1-3 digits): `A1`,
/// `AA12`. Case and surrounding spaces are forgiven.
pub fn normalize_seat_number(raw: &str) -> Result<String> {
    let s = raw.trim().to_ascii_uppercase();
    let letters = s.bytes().take_while(u8::is_ascii_uppercase).count();
    let digits = &s[letters..];
    let ok = (1..=3).contains(&letters)
        && (1..=3).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if ok {
        Ok(s)
    } else {
        Err(Error::invalid(format!(
            "seat number {raw:?} is malformed (expected a row and a number, like \"A7\")"
        )))
    }
}

/// Validates a request's seat list: not empty, at most [`MAX_SEATS_PER_REQUEST`], well-formed,
/// no duplicates. Returns the normalised numbers sorted, which is also the order rows are
/// locked in.
pub fn seat_list(raw: &[String]) -> Result<Vec<String>> {
    if raw.is_empty() {
        return Err(Error::invalid("seat_numbers must not be empty"));
    }
    if raw.len() > MAX_SEATS_PER_REQUEST {
        return Err(Error::invalid(format!(
            "{} seats requested; at most {MAX_SEATS_PER_REQUEST} per request",
            raw.len()
        )));
    }
    let mut set = BTreeSet::new();
    let mut dups = BTreeSet::new();
    for s in raw {
        let n = normalize_seat_number(s)?;
        if !set.insert(n.clone()) {
            dups.insert(n);
        }
    }
    if !dups.is_empty() {
        return Err(Error::invalid(format!(
            "duplicate seat numbers: {}",
            dups.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(set.into_iter().collect())
}

/// Validates a booking id: the idempotency key of a hold.
pub fn booking_id(raw: &str) -> Result<String> {
    let s = raw.trim();
    if s.is_empty() {
        return Err(Error::invalid("booking_id is required"));
    }
    if s.len() > MAX_BOOKING_ID_LEN {
        return Err(Error::invalid(format!(
            "booking_id is longer than {MAX_BOOKING_ID_LEN} characters"
        )));
    }
    if s.chars().any(char::is_control) {
        return Err(Error::invalid("booking_id contains control characters"));
    }
    Ok(s.to_owned())
}

/// The hold duration for a requested `lock_duration_seconds`: 0 means the default, 1..=3600 is
/// taken as is, anything else is refused.
pub fn lock_seconds(requested: i32) -> Result<i32> {
    match requested {
        0 => Ok(DEFAULT_LOCK_SECONDS),
        1..=MAX_LOCK_SECONDS => Ok(requested),
        n if n < 0 => Err(Error::invalid(format!(
            "lock_duration_seconds must not be negative (got {n})"
        ))),
        n => Err(Error::invalid(format!(
            "lock_duration_seconds {n} exceeds the maximum of {MAX_LOCK_SECONDS}"
        ))),
    }
}

/// The requested seats that are not in `got`, in request order.
pub fn missing<'a>(requested: &'a [String], got: &[String]) -> Vec<&'a str> {
    let got: HashSet<&str> = got.iter().map(String::as_str).collect();
    requested
        .iter()
        .map(String::as_str)
        .filter(|s| !got.contains(s))
        .collect()
}

/// A price in currency units (as JSON and gRPC carry it) to cents; refuses negative, NaN,
/// absurd values and fractions of a cent.
pub fn price_to_cents(field: &str, price: f64) -> Result<i64> {
    if !price.is_finite() || !(0.0..=100_000.0).contains(&price) {
        return Err(Error::invalid(format!(
            "{field} must be between 0 and 100000"
        )));
    }
    let cents = (price * 100.0).round();
    if ((price * 100.0) - cents).abs() > 1e-6 {
        return Err(Error::invalid(format!(
            "{field} has more than two decimals"
        )));
    }
    Ok(cents as i64)
}

pub fn cents_to_price(cents: i64) -> f64 {
    cents as f64 / 100.0
}

/// Trims a required text field and bounds its length.
pub fn required_text(field: &str, value: &str, max: usize) -> Result<String> {
    let v = value.trim();
    if v.is_empty() {
        return Err(Error::invalid(format!("{field} is required")));
    }
    if v.chars().count() > max {
        return Err(Error::invalid(format!(
            "{field} is longer than {max} characters"
        )));
    }
    Ok(v.to_owned())
}

/// Page size and offset from query parameters: default 20, at most 100.
pub fn page(limit: Option<i64>, offset: Option<i64>) -> Result<(i64, i64)> {
    let limit = limit.unwrap_or(20);
    let offset = offset.unwrap_or(0);
    if !(1..=100).contains(&limit) {
        return Err(Error::invalid("limit must be between 1 and 100"));
    }
    if offset < 0 {
        return Err(Error::invalid("offset must not be negative"));
    }
    Ok((limit, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn seat_lists_are_normalised_sorted_and_checked() {
        assert_eq!(
            seat_list(&strings(&["b2", " A10 ", "A2"])).unwrap(),
            strings(&["A10", "A2", "B2"])
        );
        assert!(seat_list(&[]).is_err());
        let dup = seat_list(&strings(&["A1", "a1"])).unwrap_err();
        assert!(
            dup.to_string().contains("duplicate seat numbers: A1"),
            "{dup}"
        );
        for bad in ["", "1A", "A", "A0", "ABCD1", "A1234", "A-1", "Ä1"] {
            assert!(seat_list(&strings(&[bad])).is_err(), "{bad:?} accepted");
        }
        let many: Vec<String> = (1..=51).map(|i| format!("A{i}")).collect();
        assert!(
            seat_list(&many)
                .unwrap_err()
                .to_string()
                .contains("at most 50")
        );
    }

    #[test]
    fn lock_durations() {
        assert_eq!(lock_seconds(0).unwrap(), 300);
        assert_eq!(lock_seconds(1).unwrap(), 1);
        assert_eq!(lock_seconds(3600).unwrap(), 3600);
        assert!(lock_seconds(3601).is_err());
        assert!(lock_seconds(-1).is_err());
        assert!(lock_seconds(i32::MIN).is_err());
        assert!(lock_seconds(i32::MAX).is_err());
    }

    #[test]
    fn ids_and_booking_ids() {
        assert!(
            parse_id("showtime_id", "")
                .unwrap_err()
                .to_string()
                .contains("required")
        );
        assert!(
            parse_id("showtime_id", "xyz")
                .unwrap_err()
                .to_string()
                .contains("UUID")
        );
        assert!(parse_id("showtime_id", &Uuid::new_v4().to_string()).is_ok());
        assert!(booking_id("  ").is_err());
        assert!(booking_id(&"x".repeat(129)).is_err());
        assert!(booking_id("a\nb").is_err());
        assert_eq!(booking_id(" b-1 ").unwrap(), "b-1");
    }

    #[test]
    fn layouts_price_and_label_seats() {
        let l = Layout::simple(5, 10, 1, 1);
        l.validate().unwrap();
        assert_eq!(l.total_seats(), 50);
        let seats = l.seats(1000);
        assert_eq!(seats.len(), 50);
        assert_eq!(seats[0].seat_number, "A1");
        assert_eq!(seats[0].price_cents, 1000);
        assert_eq!(seats[49].seat_number, "E10");
        assert_eq!(seats[49].seat_type, SeatType::Vip);
        assert_eq!(seats[49].price_cents, 2000);
        assert_eq!(seats[30].seat_type, SeatType::Premium);
        assert_eq!(seats[30].price_cents, 1500);
        assert_eq!(SeatType::Premium.price_cents(999), 1499);
    }

    #[test]
    fn bad_layouts() {
        let mut l = Layout::simple(2, 10, 0, 0);
        l.rows[1].label = "A".into();
        assert!(l.validate().unwrap_err().to_string().contains("twice"));
        let mut l = Layout::simple(2, 10, 0, 0);
        l.rows[0].seats = 0;
        assert!(l.validate().is_err());
        assert!(Layout { rows: vec![] }.validate().is_err());
        assert!(Layout::simple(41, 1, 0, 0).validate().is_err());
    }

    #[test]
    fn row_labels() {
        assert_eq!(row_label(0), "A");
        assert_eq!(row_label(25), "Z");
        assert_eq!(row_label(26), "AA");
        assert_eq!(row_label(27), "AB");
    }

    #[test]
    fn prices() {
        assert_eq!(price_to_cents("p", 12.5).unwrap(), 1250);
        assert_eq!(price_to_cents("p", 0.1).unwrap(), 10);
        assert!(price_to_cents("p", -1.0).is_err());
        assert!(price_to_cents("p", f64::NAN).is_err());
        assert!(price_to_cents("p", 1.005).is_err());
        assert!(price_to_cents("p", 1e9).is_err());
    }

    #[test]
    fn missing_seats_keep_request_order() {
        let req = strings(&["A1", "A2", "A3"]);
        assert_eq!(missing(&req, &strings(&["A2"])), vec!["A1", "A3"]);
        assert!(missing(&req, &req).is_empty());
    }

    #[test]
    fn pages() {
        assert_eq!(page(None, None).unwrap(), (20, 0));
        assert!(page(Some(0), None).is_err());
        assert!(page(Some(101), None).is_err());
        assert!(page(None, Some(-1)).is_err());
    }
}
