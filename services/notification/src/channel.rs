//! Where notifications go: SMTP through lettre when `SMTP_URL` is set, otherwise the log.
//!
//! The worker only sees the [`Channel`] trait, so tests substitute a recording or failing
//! channel and the delivery logic is exercised without a mail server.

use async_trait::async_trait;
use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message as MailMessage, Tokio1Executor,
    message::{Mailbox, header::ContentType},
    transport::smtp::authentication::Credentials,
};

use crate::domain::Message;

/// One notification ready to leave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub event_id: String,
    pub event_type: String,
    /// The user's e-mail address, when known.
    pub recipient: Option<String>,
    pub message: Message,
}

/// Why a send failed. Transient failures are retried with backoff; permanent ones are
/// dead-lettered at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("transient send failure: {0}")]
    Transient(String),
    #[error("permanent send failure: {0}")]
    Permanent(String),
}

/// A way of delivering a notification.
#[async_trait]
pub trait Channel: Send + Sync {
    /// A short name stored with each notification (`log`, `smtp`, ...).
    fn name(&self) -> &'static str;
    async fn send(&self, outgoing: &Outgoing) -> Result<(), SendError>;
}

/// Writes each notification to the structured log: the default in development.
#[derive(Debug, Default)]
pub struct LogChannel;

#[async_trait]
impl Channel for LogChannel {
    fn name(&self) -> &'static str {
        "log"
    }

    async fn send(&self, o: &Outgoing) -> Result<(), SendError> {
        tracing::info!(
            event_id = %o.event_id,
            event_type = %o.event_type,
            recipient = o.recipient.as_deref().unwrap_or("<unknown>"),
            subject = %o.message.subject,
            body = %o.message.body,
            "notification"
        );
        Ok(())
    }
}

/// Sends e-mail through an SMTP relay.
pub struct SmtpChannel {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl SmtpChannel {
    /// `url` is `smtp://[user:password@]host[:port]` (plain SMTP to a relay; see
    /// [`parse_smtp_url`]).
    pub fn new(url: &str, from: &str) -> anyhow::Result<Self> {
        let target = parse_smtp_url(url).map_err(|e| anyhow::anyhow!("SMTP_URL: {e}"))?;
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(target.host).port(target.port);
        if let Some((user, password)) = target.credentials {
            builder = builder.credentials(Credentials::new(user, password));
        }
        let transport = builder.build();
        let from: Mailbox = from
            .parse()
            .map_err(|e| anyhow::anyhow!("SMTP_FROM {from:?} is not an address: {e}"))?;
        Ok(Self { transport, from })
    }
}

#[async_trait]
impl Channel for SmtpChannel {
    fn name(&self) -> &'static str {
        "smtp"
    }

    async fn send(&self, o: &Outgoing) -> Result<(), SendError> {
        let Some(recipient) = &o.recipient else {
            return Err(SendError::Permanent(
                "no e-mail address is known for this user".into(),
            ));
        };
        let to: Mailbox = recipient
            .parse()
            .map_err(|e| SendError::Permanent(format!("bad recipient {recipient:?}: {e}")))?;
        let mail = MailMessage::builder()
            .from(self.from.clone())
            .to(to)
            .subject(o.message.subject.clone())
            .header(ContentType::TEXT_PLAIN)
            .body(o.message.body.clone())
            .map_err(|e| SendError::Permanent(format!("cannot build the e-mail: {e}")))?;
        self.transport.send(mail).await.map(|_| ()).map_err(|e| {
            // 5xx answers are the server refusing this message for good; everything else
            // (connection refused, timeouts, 4xx) may succeed later.
            if e.is_permanent() {
                SendError::Permanent(e.to_string())
            } else {
                SendError::Transient(e.to_string())
            }
        })
    }
}

/// Where [`SmtpChannel`] connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpTarget {
    pub host: String,
    pub port: u16,
    pub credentials: Option<(String, String)>,
}

/// Parses `smtp://[user:password@]host[:port]` (port 25 by default). Only plain SMTP: the
/// workspace builds lettre without a TLS backend, so the relay is expected on a trusted network
/// (a local catcher in development, an in-cluster relay in Kubernetes). Pure.
pub fn parse_smtp_url(url: &str) -> Result<SmtpTarget, String> {
    let rest = url
        .strip_prefix("smtp://")
        .ok_or_else(|| "expected smtp://[user:password@]host[:port]".to_owned())?;
    let rest = rest.trim_end_matches('/');
    let (userinfo, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("port {p:?} is not a number"))?,
        ),
        None => (hostport, 25),
    };
    if host.is_empty() || host.contains('/') {
        return Err(format!("host {host:?} is not valid"));
    }
    let credentials = userinfo.map(|u| match u.split_once(':') {
        Some((user, password)) => (user.to_owned(), password.to_owned()),
        None => (u.to_owned(), String::new()),
    });
    Ok(SmtpTarget {
        host: host.to_owned(),
        port,
        credentials,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls_parse() {
        assert_eq!(
            parse_smtp_url("smtp://127.0.0.1:1025").unwrap(),
            SmtpTarget {
                host: "127.0.0.1".into(),
                port: 1025,
                credentials: None
            }
        );
        let t = parse_smtp_url("smtp://ann:s3cr:et@mail.local").unwrap();
        assert_eq!(t.port, 25);
        assert_eq!(t.host, "mail.local");
        assert_eq!(t.credentials, Some(("ann".into(), "s3cr:et".into())));
        assert!(parse_smtp_url("smtps://mail.local").is_err());
        assert!(parse_smtp_url("smtp://mail.local:x").is_err());
        assert!(parse_smtp_url("smtp://:25").is_err());
    }

    #[tokio::test]
    async fn smtp_without_a_recipient_fails_permanently() {
        let channel = SmtpChannel::new("smtp://127.0.0.1:1", "a@b.c").unwrap();
        let out = Outgoing {
            event_id: "e".into(),
            event_type: "booking.confirmed".into(),
            recipient: None,
            message: Message {
                subject: "s".into(),
                body: "b".into(),
            },
        };
        assert!(matches!(
            channel.send(&out).await,
            Err(SendError::Permanent(_))
        ));
        // An unreachable relay is worth retrying.
        let out = Outgoing {
            recipient: Some("ann@example.com".into()),
            ..out
        };
        assert!(matches!(
            channel.send(&out).await,
            Err(SendError::Transient(_))
        ));
    }
}
