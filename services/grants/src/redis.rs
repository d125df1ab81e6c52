//! Redis: notification is the one service that uses it (idempotency claims and short-lived
//! caches, every key under its prefix). It gets a user of its own that may run only the
//! commands it sends, only on keys under that prefix, and no Pub/Sub channels; the `default`
//! user keeps every right for the installation's administrator and the server's probes.

use sha2::{Digest, Sha256};

/// The user notification connects as.
pub const NOTIFICATION_USER: &str = "notification";
/// Notification's key prefix in an installation (`NOTIFICATION_REDIS_PREFIX`).
pub const NOTIFICATION_PREFIX: &str = "notification";

/// What notification sends: the connection's hand-shake (the client authenticates and may
/// select the database), `SETEX` marks and caches, `GET`, `DEL`, and its scripts (the claim,
/// its release, the epoch) by `EVALSHA`, or `EVAL` when the server does not know them yet. The
/// commands a script calls are checked against the same rights: `GET`, `SET`, `TIME` (one
/// clock for every worker's claim deadlines) and `INFO` with the `server` and `memory` sections
/// only (whether the server restarted, whether it may evict keys). No `KEYS`, `SCAN`, `FLUSH*`,
/// `CONFIG`, `DEBUG`, `CLIENT`, `SCRIPT`, other `INFO` sections, ... The client library also
/// sends `CLIENT SETINFO` and ignores its answer; it is not granted, because Redis 7.0 (the
/// node's stand-in) does not know it and would refuse to load an ACL file that names it.
pub const NOTIFICATION_COMMANDS: [&str; 13] = [
    "auth",
    "hello",
    "select",
    "ping",
    "get",
    "set",
    "setex",
    "del",
    "eval",
    "evalsha",
    "time",
    "info|server",
    "info|memory",
];

/// Redis's form of a stored password: `#` and the hex SHA-256 of it (so the ACL file holds no
/// password).
pub fn password_hash(password: &str) -> String {
    format!("#{}", hex::encode(Sha256::digest(password.as_bytes())))
}

/// A key prefix as a Redis glob that matches only itself (its `*`, `?`, `[`, `]` and `\`
/// escaped).
fn glob_literal(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Notification's rules after `user <name> on <password>`: `ACL SETUSER` takes the same words.
pub fn notification_rules(prefix: &str) -> Vec<String> {
    let mut rules = vec![
        "resetkeys".to_string(),
        format!("~{}:*", glob_literal(prefix)),
        "resetchannels".to_string(),
        "-@all".to_string(),
    ];
    rules.extend(NOTIFICATION_COMMANDS.iter().map(|c| format!("+{c}")));
    rules
}

/// The ACL file the managed Redis starts with (`--aclfile`): `default` with every right and
/// the administrator password, notification as [`notification_rules`] on `prefix`
/// ([`NOTIFICATION_PREFIX`] unless the installation sets another).
pub fn acl_file(admin_password: &str, notification_password: &str, prefix: &str) -> String {
    format!(
        "user default on {} ~* &* +@all\nuser {NOTIFICATION_USER} on {} {}\n",
        password_hash(admin_password),
        password_hash(notification_password),
        notification_rules(prefix).join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_file_holds_hashes_and_confines_notification_to_its_prefix() {
        let file = acl_file("admin-pw", "note-pw", NOTIFICATION_PREFIX);
        assert!(!file.contains("admin-pw") && !file.contains("note-pw"));
        let lines: Vec<&str> = file.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("user default on #"));
        assert!(lines[1].contains(" resetkeys ~notification:* resetchannels -@all +auth"));
        assert!(
            !lines[1].contains("@all +@"),
            "no whole category comes back"
        );
        assert_eq!(password_hash("note-pw").len(), 1 + 64);
    }

    #[test]
    fn a_prefix_with_glob_characters_matches_only_itself() {
        assert_eq!(notification_rules("a*b?[c]")[1], r"~a\*b\?\[c\]:*");
    }
}
