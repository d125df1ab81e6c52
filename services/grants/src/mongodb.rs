//! MongoDB users: each service that stores documents gets a user of its own database with
//! `readWrite` there and nothing elsewhere (no other service's database, no user or cluster
//! administration); the installation's administrator (`root` on `admin`) is the one the
//! replica-set probe and a person at `mongosh` use.
//!
//! MongoDB cannot load users from a file the way RabbitMQ and Redis do, and SecantusDB has no
//! localhost exception, so the operator renders the users into a file that an init container of
//! the MongoDB pod applies at every start, to a private server it runs on 127.0.0.1 with
//! authentication off, before the real server starts with `--auth`. That also covers data
//! written before authentication existed, and new passwords after a reinstall. The file holds
//! the passwords themselves (MongoDB's `createUser` takes the password, not a hash), so it
//! lives in a Secret only that init container mounts.

use serde_json::{Value, json};

/// A role on one database, as `createUser` takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Role {
    pub role: &'static str,
    pub db: String,
}

/// One MongoDB user: its name, the database it is defined in (its `authSource`), its password
/// and its roles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub user: String,
    pub db: String,
    pub password: String,
    pub roles: Vec<Role>,
}

impl User {
    /// A service's user: defined in the service's own database, `readWrite` on it alone
    /// (documents, indexes, transactions and change streams there; nothing else).
    pub fn service(name: &str, database: &str, password: &str) -> User {
        User {
            user: name.to_string(),
            db: database.to_string(),
            password: password.to_string(),
            roles: vec![Role {
                role: "readWrite",
                db: database.to_string(),
            }],
        }
    }

    /// The installation's administrator: `root`, defined in `admin`.
    pub fn administrator(name: &str, password: &str) -> User {
        User {
            user: name.to_string(),
            db: "admin".to_string(),
            password: password.to_string(),
            roles: vec![Role {
                role: "root",
                db: "admin".to_string(),
            }],
        }
    }
}

/// The users file: `{"users": [{"user", "db", "pwd", "roles": [{"role", "db"}]}]}`, the shape
/// of `createUser`'s arguments, read by the stand-in image's `moviebook-mongo-users`.
pub fn users_file(users: &[User]) -> Value {
    json!({
        "users": users
            .iter()
            .map(|u| json!({
                "user": u.user,
                "db": u.db,
                "pwd": u.password,
                "roles": u.roles.iter().map(|r| json!({"role": r.role, "db": r.db})).collect::<Vec<_>>(),
            }))
            .collect::<Vec<_>>(),
    })
}

/// The same users as a `mongosh` script for the official image: creates each user, or sets the
/// password and roles of one that exists, so that applying it again changes nothing.
pub fn mongosh_script(users: &[User]) -> String {
    format!(
        "const spec = {};\n\
         for (const u of spec.users) {{\n\
         \x20 const d = db.getSiblingDB(u.db);\n\
         \x20 if (d.getUser(u.user)) {{ d.updateUser(u.user, {{pwd: u.pwd, roles: u.roles}}); }}\n\
         \x20 else {{ d.createUser({{user: u.user, pwd: u.pwd, roles: u.roles}}); }}\n\
         \x20 print(u.user + '@' + u.db + ': ' + u.roles.map(r => r.role + '@' + r.db).join(', '));\n\
         }}\n",
        users_file(users)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_user_may_only_read_and_write_its_own_database() {
        let u = User::service("booking", "moviebook_booking", "pw");
        assert_eq!(u.db, "moviebook_booking", "authSource is its own database");
        assert_eq!(
            u.roles,
            vec![Role {
                role: "readWrite",
                db: "moviebook_booking".into()
            }]
        );
    }

    #[test]
    fn the_file_and_the_script_carry_the_same_users() {
        let users = [
            User::administrator("moviebook", "admin-pw"),
            User::service("payment", "moviebook_payment", "p\"w'"),
        ];
        let file = users_file(&users);
        assert_eq!(file["users"][0]["roles"][0]["role"], "root");
        assert_eq!(file["users"][1]["pwd"], "p\"w'");
        assert_eq!(file["users"][1]["roles"][0]["db"], "moviebook_payment");
        let script = mongosh_script(&users);
        // The JSON literal is the script's data, escaped as JSON (so valid JavaScript).
        assert!(
            script.starts_with(&format!("const spec = {file};")),
            "{script}"
        );
        assert!(script.contains("updateUser") && script.contains("createUser"));
    }
}
