//! Account rules as plain functions: what a valid registration or profile update is.

use serde::Deserialize;

/// A rule a request broke: a code clients can switch on and a message for people.
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

pub const PASSWORD_MIN_CHARS: usize = 8;
/// Bounded so nobody makes the server hash megabytes.
pub const PASSWORD_MAX_CHARS: usize = 128;
const NAME_MAX_CHARS: usize = 100;
const EMAIL_MAX_CHARS: usize = 254;

#[derive(Debug, Clone, Deserialize)]
pub struct RegisterRequest {
    pub email: String,
    pub password: String,
    pub first_name: String,
    pub last_name: String,
    #[serde(default)]
    pub phone: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

/// `PUT /users/:id` and `PUT /profile`: every field optional; a password change needs the
/// current password unless an admin makes it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    /// `null` or `""` clears the phone number.
    #[serde(default, deserialize_with = "double_option")]
    pub phone: Option<Option<String>>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub current_password: Option<String>,
}

fn double_option<'de, D>(d: D) -> Result<Option<Option<String>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Option::<String>::deserialize(d).map(Some)
}

/// A registration that passed every rule, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    pub email: String,
    pub password: String,
    pub first_name: String,
    pub last_name: String,
    pub phone: Option<String>,
}

/// The validated changes of an update.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub phone: Option<Option<String>>,
    pub password: Option<String>,
}

/// The form emails are stored and looked up in: trimmed and lower-cased, so `A@X.com ` and
/// `a@x.com` are one account (the unique index is on this form).
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// A pragmatic check (one `@`, a non-empty local part, a dotted domain, no spaces); the real
/// proof of an address is mail delivery, not a regex.
pub fn validate_email(email: &str) -> Result<(), Invalid> {
    let bad = || {
        invalid(
            "INVALID_EMAIL",
            format!("{email:?} is not a valid email address"),
        )
    };
    if email.is_empty() || email.chars().count() > EMAIL_MAX_CHARS {
        return Err(bad());
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let (local, domain) = email.split_once('@').ok_or_else(bad)?;
    if local.is_empty() || domain.contains('@') || local.len() > 64 {
        return Err(bad());
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 || labels.iter().any(|l| l.is_empty() || l.starts_with('-')) {
        return Err(bad());
    }
    Ok(())
}

/// NIST SP 800-63B style: length matters, composition rules do not.
pub fn validate_password(password: &str, email: &str) -> Result<(), Invalid> {
    let chars = password.chars().count();
    if chars < PASSWORD_MIN_CHARS {
        return Err(invalid(
            "WEAK_PASSWORD",
            format!("password must be at least {PASSWORD_MIN_CHARS} characters long"),
        ));
    }
    if chars > PASSWORD_MAX_CHARS {
        return Err(invalid(
            "WEAK_PASSWORD",
            format!("password must be at most {PASSWORD_MAX_CHARS} characters long"),
        ));
    }
    if password.trim().is_empty() {
        return Err(invalid("WEAK_PASSWORD", "password must not be only spaces"));
    }
    let mut it = password.chars();
    if let Some(first) = it.next()
        && it.all(|c| c == first)
    {
        return Err(invalid(
            "WEAK_PASSWORD",
            "password must not repeat a single character",
        ));
    }
    if normalize_email(password) == normalize_email(email) {
        return Err(invalid(
            "WEAK_PASSWORD",
            "password must not be the email address",
        ));
    }
    Ok(())
}

fn validate_name(field: &str, value: &str) -> Result<String, Invalid> {
    let v = value.trim();
    if v.is_empty() {
        return Err(invalid(
            "INVALID_NAME",
            format!("{field} must not be empty"),
        ));
    }
    if v.chars().count() > NAME_MAX_CHARS {
        return Err(invalid(
            "INVALID_NAME",
            format!("{field} must be at most {NAME_MAX_CHARS} characters"),
        ));
    }
    if v.chars().any(char::is_control) {
        return Err(invalid(
            "INVALID_NAME",
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(v.to_owned())
}

/// Digits with an optional leading `+` and spaces, dashes, dots or parentheses; 7 to 15 digits
/// (E.164). Returns the trimmed form; an empty value means "no phone".
pub fn validate_phone(phone: &str) -> Result<Option<String>, Invalid> {
    let p = phone.trim();
    if p.is_empty() {
        return Ok(None);
    }
    let bad = || {
        invalid(
            "INVALID_PHONE",
            "phone must be 7 to 15 digits, optionally with a leading + and spaces or dashes",
        )
    };
    let body = p.strip_prefix('+').unwrap_or(p);
    if !body
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')'))
    {
        return Err(bad());
    }
    let digits = body.chars().filter(char::is_ascii_digit).count();
    if !(7..=15).contains(&digits) {
        return Err(bad());
    }
    Ok(Some(p.to_owned()))
}

pub fn validate_registration(req: RegisterRequest) -> Result<NewUser, Invalid> {
    let email = normalize_email(&req.email);
    validate_email(&email)?;
    validate_password(&req.password, &email)?;
    Ok(NewUser {
        first_name: validate_name("first_name", &req.first_name)?,
        last_name: validate_name("last_name", &req.last_name)?,
        phone: match req.phone.as_deref() {
            Some(p) => validate_phone(p)?,
            None => None,
        },
        email,
        password: req.password,
    })
}

/// Validates an update. `email` is the account's, for the password rules.
pub fn validate_update(req: &UpdateRequest, email: &str) -> Result<Changes, Invalid> {
    let changes = Changes {
        first_name: req
            .first_name
            .as_deref()
            .map(|v| validate_name("first_name", v))
            .transpose()?,
        last_name: req
            .last_name
            .as_deref()
            .map(|v| validate_name("last_name", v))
            .transpose()?,
        phone: match &req.phone {
            None => None,
            Some(None) => Some(None),
            Some(Some(p)) => Some(validate_phone(p)?),
        },
        password: match &req.password {
            None => None,
            Some(p) => {
                validate_password(p, email)?;
                Some(p.clone())
            }
        },
    };
    if changes == Changes::default() {
        return Err(invalid("NOTHING_TO_UPDATE", "the request changes nothing"));
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(email: &str, password: &str) -> RegisterRequest {
        RegisterRequest {
            email: email.into(),
            password: password.into(),
            first_name: " Ada ".into(),
            last_name: "Lovelace".into(),
            phone: None,
        }
    }

    #[test]
    fn email_is_normalised() {
        let u = validate_registration(reg("  Ada@Example.COM ", "analytical-engine")).unwrap();
        assert_eq!(u.email, "ada@example.com");
        assert_eq!(u.first_name, "Ada");
    }

    #[test]
    fn bad_emails_are_refused() {
        for e in [
            "", "plain", "a@b", "a@@b.c", "a b@c.d", "@x.com", "a@.com", "a@x..com",
        ] {
            assert_eq!(
                validate_email(&normalize_email(e)).unwrap_err().code,
                "INVALID_EMAIL",
                "{e:?}"
            );
        }
        assert!(validate_email("a.b+c@sub.example.org").is_ok());
    }

    #[test]
    fn password_rules_say_why() {
        let short = validate_password("short", "a@b.co").unwrap_err();
        assert_eq!(short.code, "WEAK_PASSWORD");
        assert!(short.message.contains("at least 8"), "{}", short.message);
        assert!(validate_password(&"x".repeat(129), "a@b.co").is_err());
        assert!(validate_password("aaaaaaaaaa", "a@b.co").is_err());
        assert!(validate_password("        ", "a@b.co").is_err());
        assert!(validate_password("Ada@Example.com", "ada@example.com").is_err());
        assert!(validate_password("correct horse battery", "a@b.co").is_ok());
        // Length counts characters, not bytes.
        assert!(validate_password("ééééééé", "a@b.co").is_err());
    }

    #[test]
    fn names_and_phones() {
        let mut r = reg("a@b.co", "long enough password");
        r.first_name = "   ".into();
        assert_eq!(validate_registration(r).unwrap_err().code, "INVALID_NAME");
        assert_eq!(
            validate_phone(" +1 (555) 010-9999 ").unwrap().as_deref(),
            Some("+1 (555) 010-9999")
        );
        assert_eq!(validate_phone("").unwrap(), None);
        assert!(validate_phone("12345").is_err());
        assert!(validate_phone("call me").is_err());
    }

    #[test]
    fn updates() {
        let empty = UpdateRequest::default();
        assert_eq!(
            validate_update(&empty, "a@b.co").unwrap_err().code,
            "NOTHING_TO_UPDATE"
        );
        let u: UpdateRequest = serde_json::from_str(r#"{"phone": null}"#).unwrap();
        assert_eq!(validate_update(&u, "a@b.co").unwrap().phone, Some(None));
        let u: UpdateRequest =
            serde_json::from_str(r#"{"first_name": "Grace", "password": "tiny"}"#).unwrap();
        assert_eq!(
            validate_update(&u, "a@b.co").unwrap_err().code,
            "WEAK_PASSWORD"
        );
        assert!(serde_json::from_str::<UpdateRequest>(r#"{"email": "x@y.z"}"#).is_err());
    }
}
