//! Payment rules as plain functions: input validation, the simulated gateway's decision by test
//! card, card masking, the idempotency fingerprint and the refund decision. No I/O here.

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// A rule a request broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub code: &'static str,
    pub message: String,
}

fn invalid(code: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        code,
        message: message.into(),
    }
}

/// Largest amount one payment may carry, in major units.
pub const MAX_AMOUNT_CENTS: i64 = 100_000 * 100;
/// ISO 4217 currencies accepted (all with two minor digits).
pub const CURRENCIES: &[&str] = &[
    "USD", "EUR", "GBP", "CAD", "AUD", "NZD", "CHF", "SEK", "NOK", "DKK", "PLN", "CZK", "INR",
    "SGD", "HKD", "MXN", "BRL", "ZAR",
];
/// Methods that charge a card (and read `payment_details.card_number`).
pub const CARD_METHODS: &[&str] = &["credit_card", "debit_card"];
/// Wallet-style methods the simulator approves without card details.
pub const WALLET_METHODS: &[&str] = &["paypal", "apple_pay", "google_pay", "bank_transfer"];
/// The card used when a card payment comes without details (existing clients rely on it).
pub const DEFAULT_TEST_CARD: &str = "4242424242424242";
const ID_MAX_CHARS: usize = 128;
const REASON_MAX_CHARS: usize = 500;

#[derive(Debug, Clone, Deserialize)]
pub struct PaymentRequest {
    pub booking_id: String,
    pub user_id: String,
    pub amount: f64,
    #[serde(default)]
    pub currency: Option<String>,
    pub payment_method: String,
    #[serde(default)]
    pub payment_details: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RefundRequest {
    pub transaction_id: String,
    #[serde(default)]
    pub amount: Option<f64>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// What the simulated gateway answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Approved,
    Declined {
        code: &'static str,
        reason: &'static str,
    },
}

/// What is kept of a card: never the number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskedCard {
    pub last4: String,
    pub brand: &'static str,
}

/// A payment that passed validation, with the gateway's deterministic decision.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidPayment {
    pub booking_id: String,
    pub user_id: String,
    pub amount_cents: i64,
    pub currency: String,
    pub payment_method: String,
    pub card: Option<MaskedCard>,
    pub outcome: Outcome,
}

impl ValidPayment {
    /// What makes two requests "the same payment" for idempotency: everything that changes the
    /// charge. The card enters only by its masked form, so no card number is ever hashed or kept.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            self.booking_id.as_str(),
            self.user_id.as_str(),
            &self.amount_cents.to_string(),
            &self.currency,
            &self.payment_method,
            self.card.as_ref().map_or("", |c| c.last4.as_str()),
        ] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        hex::encode(h.finalize())
    }
}

/// Major units with at most two decimals → cents.
pub fn amount_to_cents(amount: f64) -> Result<i64, Invalid> {
    if !amount.is_finite() || amount <= 0.0 {
        return Err(invalid(
            "INVALID_AMOUNT",
            "amount must be a number greater than 0",
        ));
    }
    let scaled = amount * 100.0;
    let cents = scaled.round();
    if (scaled - cents).abs() > 1e-6 {
        return Err(invalid(
            "INVALID_AMOUNT",
            "amount must have at most 2 decimal places",
        ));
    }
    // Bounded above, so the cast cannot overflow.
    if cents > MAX_AMOUNT_CENTS as f64 {
        return Err(invalid(
            "INVALID_AMOUNT",
            format!("amount must be at most {}", MAX_AMOUNT_CENTS / 100),
        ));
    }
    Ok(cents as i64)
}

/// Cents → major units for JSON (`1999` → `19.99`).
pub fn cents_to_amount(cents: i64) -> f64 {
    cents as f64 / 100.0
}

pub fn normalize_currency(currency: Option<&str>) -> Result<String, Invalid> {
    let c = currency.map_or("USD", str::trim).to_ascii_uppercase();
    if CURRENCIES.contains(&c.as_str()) {
        Ok(c)
    } else {
        Err(invalid(
            "INVALID_CURRENCY",
            format!("currency must be one of {}", CURRENCIES.join(", ")),
        ))
    }
}

fn validate_id(field: &str, value: &str) -> Result<String, Invalid> {
    let v = value.trim();
    if v.is_empty() || v.chars().count() > ID_MAX_CHARS || v.chars().any(char::is_control) {
        return Err(invalid(
            "INVALID_ID",
            format!("{field} must be a non-empty id of at most {ID_MAX_CHARS} characters"),
        ));
    }
    Ok(v.to_owned())
}

/// Luhn checksum over a string of ASCII digits.
pub fn luhn_valid(digits: &str) -> bool {
    let mut sum = 0u32;
    for (i, c) in digits.bytes().rev().enumerate() {
        let mut d = u32::from(c.wrapping_sub(b'0'));
        if d > 9 {
            return false;
        }
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

fn brand(digits: &str) -> &'static str {
    let two: u32 = digits.get(..2).and_then(|p| p.parse().ok()).unwrap_or(0);
    let four: u32 = digits.get(..4).and_then(|p| p.parse().ok()).unwrap_or(0);
    match () {
        _ if digits.starts_with('4') => "visa",
        _ if (51..=55).contains(&two) || (2221..=2720).contains(&four) => "mastercard",
        _ if two == 34 || two == 37 => "amex",
        _ if four == 6011 || two == 65 => "discover",
        _ => "unknown",
    }
}

/// The documented test cards; any other Luhn-valid number is approved.
pub fn gateway_decision(digits: &str) -> Result<Outcome, Invalid> {
    use Outcome::*;
    Ok(match digits {
        "4111111111111111" | "4242424242424242" => Approved,
        "4000000000000002" => Declined {
            code: "CARD_DECLINED",
            reason: "the card was declined",
        },
        "4000000000009995" => Declined {
            code: "INSUFFICIENT_FUNDS",
            reason: "the card has insufficient funds",
        },
        "4000000000000069" => Declined {
            code: "EXPIRED_CARD",
            reason: "the card has expired",
        },
        "4000000000000119" => Declined {
            code: "PROCESSING_ERROR",
            reason: "the card could not be processed",
        },
        other if luhn_valid(other) => Approved,
        _ => {
            return Err(invalid("INVALID_CARD", "card number fails the Luhn check"));
        }
    })
}

/// The card number in `payment_details` (a JSON object, or a JSON string holding one, as the
/// GraphQL API forwards it), as bare digits.
fn card_digits(details: Option<&serde_json::Value>) -> Result<String, Invalid> {
    let bad_details = || {
        invalid(
            "INVALID_PAYMENT_DETAILS",
            "payment_details must be a JSON object such as {\"card_number\": \"4242424242424242\"}",
        )
    };
    let parsed;
    let object = match details {
        None | Some(serde_json::Value::Null) => return Ok(DEFAULT_TEST_CARD.to_owned()),
        Some(serde_json::Value::Object(o)) => o,
        Some(serde_json::Value::String(s)) if s.trim().is_empty() => {
            return Ok(DEFAULT_TEST_CARD.to_owned());
        }
        Some(serde_json::Value::String(s)) => {
            parsed = serde_json::from_str::<serde_json::Value>(s).map_err(|_| bad_details())?;
            parsed.as_object().ok_or_else(bad_details)?
        }
        Some(_) => return Err(bad_details()),
    };
    let raw = match object
        .get("card_number")
        .or_else(|| object.get("cardNumber"))
    {
        None | Some(serde_json::Value::Null) => return Ok(DEFAULT_TEST_CARD.to_owned()),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        Some(_) => {
            return Err(invalid(
                "INVALID_CARD",
                "card_number must be a string of digits",
            ));
        }
    };
    let digits: String = raw.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    if !(12..=19).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            "INVALID_CARD",
            "card_number must be 12 to 19 digits",
        ));
    }
    Ok(digits)
}

pub fn mask(digits: &str) -> MaskedCard {
    MaskedCard {
        last4: digits[digits.len().saturating_sub(4)..].to_owned(),
        brand: brand(digits),
    }
}

/// Validates a payment and decides it (except for chaos, which the caller rolls once).
pub fn validate_payment(req: &PaymentRequest) -> Result<ValidPayment, Invalid> {
    let booking_id = validate_id("booking_id", &req.booking_id)?;
    let user_id = validate_id("user_id", &req.user_id)?;
    let amount_cents = amount_to_cents(req.amount)?;
    let currency = normalize_currency(req.currency.as_deref())?;
    let method = req.payment_method.trim().to_ascii_lowercase();
    let (card, outcome) = if CARD_METHODS.contains(&method.as_str()) {
        let digits = card_digits(req.payment_details.as_ref())?;
        let outcome = gateway_decision(&digits)?;
        (Some(mask(&digits)), outcome)
    } else if WALLET_METHODS.contains(&method.as_str()) {
        (None, Outcome::Approved)
    } else {
        return Err(invalid(
            "INVALID_PAYMENT_METHOD",
            format!(
                "payment_method must be one of {}, {}",
                CARD_METHODS.join(", "),
                WALLET_METHODS.join(", ")
            ),
        ));
    };
    Ok(ValidPayment {
        booking_id,
        user_id,
        amount_cents,
        currency,
        payment_method: method,
        card,
        outcome,
    })
}

/// Chaos: an approved payment fails when the roll (uniform in [0, 1)) is below the rate.
pub fn apply_chaos(outcome: Outcome, failure_rate: f64, roll: f64) -> Outcome {
    if outcome == Outcome::Approved && roll < failure_rate {
        Outcome::Declined {
            code: "PROCESSING_ERROR",
            reason: "simulated gateway failure (chaos testing)",
        }
    } else {
        outcome
    }
}

pub fn validate_reason(reason: Option<&str>) -> Result<Option<String>, Invalid> {
    match reason.map(str::trim) {
        None | Some("") => Ok(None),
        Some(r) if r.chars().count() > REASON_MAX_CHARS => Err(invalid(
            "INVALID_REASON",
            format!("reason must be at most {REASON_MAX_CHARS} characters"),
        )),
        Some(r) => Ok(Some(r.to_owned())),
    }
}

/// Why a refund cannot happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotRefundable(pub String);

/// How much to refund: `requested` (cents) or everything that is left. Only a successful
/// payment with money left can be refunded, and never more than is left.
pub fn refund_amount(
    status_success: bool,
    paid_cents: i64,
    refunded_cents: i64,
    requested: Option<i64>,
) -> Result<i64, NotRefundable> {
    if !status_success {
        return Err(NotRefundable(
            "only a successful payment can be refunded".into(),
        ));
    }
    let left = paid_cents - refunded_cents;
    if left <= 0 {
        return Err(NotRefundable(
            "the payment is already fully refunded".into(),
        ));
    }
    match requested {
        None => Ok(left),
        Some(r) if r <= left => Ok(r),
        Some(_) => Err(NotRefundable(format!(
            "at most {:.2} is left to refund",
            cents_to_amount(left)
        ))),
    }
}

/// The idempotency key of a refund when the client sends none: one full refund per
/// transaction, and one partial refund per amount (so a blind retry never refunds twice).
pub fn default_refund_key(requested: Option<i64>) -> String {
    match requested {
        None => "full".to_owned(),
        Some(c) => format!("amount:{c}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(card: Option<serde_json::Value>) -> PaymentRequest {
        PaymentRequest {
            booking_id: "b-1".into(),
            user_id: "u-1".into(),
            amount: 25.5,
            currency: None,
            payment_method: "credit_card".into(),
            payment_details: card,
        }
    }

    #[test]
    fn amounts() {
        assert_eq!(amount_to_cents(19.99), Ok(1999));
        assert_eq!(amount_to_cents(0.01), Ok(1));
        assert_eq!(amount_to_cents(100_000.0), Ok(10_000_000));
        for bad in [0.0, -1.0, 100_000.01, 1.234, f64::NAN, f64::INFINITY] {
            assert_eq!(
                amount_to_cents(bad).unwrap_err().code,
                "INVALID_AMOUNT",
                "{bad}"
            );
        }
        assert!((cents_to_amount(1999) - 19.99).abs() < 1e-9);
    }

    #[test]
    fn currencies() {
        assert_eq!(normalize_currency(None).unwrap(), "USD");
        assert_eq!(normalize_currency(Some(" eur ")).unwrap(), "EUR");
        assert!(normalize_currency(Some("XYZ")).is_err());
        assert!(normalize_currency(Some("US")).is_err());
    }

    #[test]
    fn test_cards_decide_deterministically() {
        let cases = [
            ("4111111111111111", None),
            ("4242 4242 4242 4242", None),
            ("4000000000000002", Some("CARD_DECLINED")),
            ("4000000000009995", Some("INSUFFICIENT_FUNDS")),
            ("4000000000000069", Some("EXPIRED_CARD")),
            ("4000000000000119", Some("PROCESSING_ERROR")),
            ("5555555555554444", None),
        ];
        for (card, expected) in cases {
            let v = validate_payment(&req(Some(json!({ "card_number": card })))).unwrap();
            let got = match v.outcome {
                Outcome::Approved => None,
                Outcome::Declined { code, .. } => Some(code),
            };
            assert_eq!(got, expected, "{card}");
        }
    }

    #[test]
    fn default_card_and_details_forms() {
        let v = validate_payment(&req(None)).unwrap();
        assert_eq!(v.outcome, Outcome::Approved);
        assert_eq!(v.card.as_ref().unwrap().last4, "4242");
        // The GraphQL API forwards details as a JSON string.
        let v =
            validate_payment(&req(Some(json!("{\"card_number\":\"4000000000000002\"}")))).unwrap();
        assert!(matches!(
            v.outcome,
            Outcome::Declined {
                code: "CARD_DECLINED",
                ..
            }
        ));
        assert_eq!(
            validate_payment(&req(Some(json!([1, 2]))))
                .unwrap_err()
                .code,
            "INVALID_PAYMENT_DETAILS"
        );
    }

    #[test]
    fn bad_cards() {
        for card in ["4111111111111112", "abcd", "4111", "41111111111111111111"] {
            let e = validate_payment(&req(Some(json!({ "card_number": card })))).unwrap_err();
            assert_eq!(e.code, "INVALID_CARD", "{card}");
        }
    }

    #[test]
    fn masking_keeps_only_the_last_four() {
        let m = mask("4111111111111111");
        assert_eq!(m.last4, "1111");
        assert_eq!(m.brand, "visa");
        assert_eq!(mask("5555555555554444").brand, "mastercard");
        let v = validate_payment(&req(Some(json!({"card_number": "4111111111111111"})))).unwrap();
        assert!(!format!("{v:?}").contains("4111111111111111"));
    }

    #[test]
    fn luhn() {
        assert!(luhn_valid("79927398713"));
        assert!(!luhn_valid("79927398710"));
        assert!(!luhn_valid(""));
    }

    #[test]
    fn methods() {
        let mut r = req(None);
        r.payment_method = "paypal".into();
        let v = validate_payment(&r).unwrap();
        assert_eq!(v.card, None);
        r.payment_method = "cash".into();
        assert_eq!(
            validate_payment(&r).unwrap_err().code,
            "INVALID_PAYMENT_METHOD"
        );
    }

    #[test]
    fn fingerprint_changes_with_the_charge() {
        let a = validate_payment(&req(None)).unwrap();
        let mut r = req(None);
        r.amount = 25.51;
        let b = validate_payment(&r).unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(
            a.fingerprint(),
            validate_payment(&req(None)).unwrap().fingerprint()
        );
    }

    #[test]
    fn chaos() {
        assert_eq!(apply_chaos(Outcome::Approved, 0.0, 0.0), Outcome::Approved);
        assert!(matches!(
            apply_chaos(Outcome::Approved, 0.5, 0.2),
            Outcome::Declined {
                code: "PROCESSING_ERROR",
                ..
            }
        ));
        assert_eq!(apply_chaos(Outcome::Approved, 0.5, 0.7), Outcome::Approved);
    }

    #[test]
    fn refunds() {
        assert_eq!(refund_amount(true, 1000, 0, None), Ok(1000));
        assert_eq!(refund_amount(true, 1000, 400, None), Ok(600));
        assert_eq!(refund_amount(true, 1000, 400, Some(600)), Ok(600));
        assert!(refund_amount(true, 1000, 400, Some(601)).is_err());
        assert!(refund_amount(true, 1000, 1000, None).is_err());
        assert!(refund_amount(false, 1000, 0, None).is_err());
        assert_eq!(default_refund_key(None), "full");
        assert_eq!(default_refund_key(Some(5)), "amount:5");
    }
}
