//! Service credentials on gRPC calls between MovieBook services.
//!
//! The caller puts its own service token (`JwtKeys::service_token`) into the
//! `authorization` metadata of every request ([`ServiceBearer`], a tonic interceptor); the
//! callee lets through only the services it names ([`RequireService`]). Missing, malformed,
//! forged or expired credentials get `UNAUTHENTICATED`; a valid token of anyone else (a user,
//! another service) gets `PERMISSION_DENIED`. Cinema's gRPC API (seat locks, confirmations,
//! releases) takes calls from the booking service alone this way, on top of the NetworkPolicy
//! that keeps other pods from reaching its port at all.

use std::sync::Arc;

use tonic::{Request, Status, metadata::MetadataValue, service::Interceptor};

use crate::auth::{AuthError, JwtKeys};

/// Adds `authorization: Bearer <service token>` to every outgoing request: the caller's own
/// token of [`JwtKeys::service_token`], minted once per two minutes and shared with the
/// caller's REST calls (one signature per two minutes, not one per call).
#[derive(Clone)]
pub struct ServiceBearer {
    keys: Arc<JwtKeys>,
    service: &'static str,
}

impl ServiceBearer {
    pub fn new(keys: Arc<JwtKeys>, service: &'static str) -> Self {
        Self { keys, service }
    }

    fn header(&self) -> Result<MetadataValue<tonic::metadata::Ascii>, Status> {
        let token = self
            .keys
            .service_token(self.service)
            .map_err(|e| Status::internal(format!("cannot mint a service token: {e}")))?;
        format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::internal("a service token is not valid metadata"))
    }
}

impl Interceptor for ServiceBearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let value = self.header()?;
        req.metadata_mut().insert("authorization", value);
        Ok(req)
    }
}

/// A channel whose every request carries the caller's service token.
pub type AuthedChannel =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, ServiceBearer>;

/// Lets through only requests whose `authorization` carries a valid service token of one of
/// `allowed` (a tonic interceptor for the callee's server).
#[derive(Clone)]
pub struct RequireService {
    keys: Arc<JwtKeys>,
    allowed: &'static [&'static str],
}

impl RequireService {
    pub fn new(keys: Arc<JwtKeys>, allowed: &'static [&'static str]) -> Self {
        Self { keys, allowed }
    }
}

impl Interceptor for RequireService {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let header = req
            .metadata()
            .get("authorization")
            .map(|v| v.to_str().map_err(|_| AuthError::Malformed));
        check_service(header, &self.keys, self.allowed)?;
        Ok(req)
    }
}

/// The decision of [`RequireService`], on the raw header value (`None`: absent).
pub fn check_service(
    header: Option<Result<&str, AuthError>>,
    keys: &JwtKeys,
    allowed: &[&str],
) -> Result<(), Status> {
    let unauthenticated = |e: AuthError| {
        Status::unauthenticated(format!(
            "{}: a service token of {} is required",
            e.code(),
            allowed.join(" or ")
        ))
    };
    let value = header.ok_or(AuthError::Missing).and_then(|v| v);
    let token = value
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ').ok_or(AuthError::Malformed)?;
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() {
                Ok(token.trim())
            } else {
                Err(AuthError::Malformed)
            }
        })
        .map_err(unauthenticated)?;
    let claims = keys.verify(token).map_err(unauthenticated)?;
    if allowed.iter().any(|s| claims.is_service_named(s)) {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "FORBIDDEN: only {} may call this API",
            allowed.join(" or ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;
    use crate::auth::{BOOKING_SERVICE, Claims, SERVICE_ROLE};

    fn keys(secret: &str) -> Arc<JwtKeys> {
        Arc::new(JwtKeys::new(
            secret,
            "moviebook",
            std::time::Duration::from_secs(3600),
        ))
    }

    const ALLOWED: &[&str] = &[BOOKING_SERVICE];

    fn code(header: Option<&str>, keys: &JwtKeys) -> Code {
        match check_service(header.map(Ok), keys, ALLOWED) {
            Ok(()) => Code::Ok,
            Err(s) => s.code(),
        }
    }

    #[test]
    fn only_the_named_service_passes() {
        let k = keys("a-secret-of-at-least-32-bytes-length!!");
        let mut bearer = ServiceBearer::new(k.clone(), BOOKING_SERVICE);
        let req = bearer.call(Request::new(())).expect("minted");
        let header = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .expect("header set");
        assert_eq!(code(Some(header), &k), Code::Ok);

        // another service, a user, an admin: valid tokens, wrong caller
        let other = k.issue_service_token("payment-service").expect("token");
        assert_eq!(
            code(Some(&format!("Bearer {other}")), &k),
            Code::PermissionDenied
        );
        let user = k
            .issue("u1", Some("u@example.com"), &["admin".to_owned()])
            .expect("token");
        assert_eq!(
            code(Some(&format!("Bearer {user}")), &k),
            Code::PermissionDenied
        );
        // a user token claiming the booking service's name but without the service role
        let named = k.issue(BOOKING_SERVICE, None, &[]).expect("token");
        assert_eq!(
            code(Some(&format!("Bearer {named}")), &k),
            Code::PermissionDenied
        );
    }

    #[test]
    fn missing_forged_expired_or_malformed_credentials_are_unauthenticated() {
        let k = keys("a-secret-of-at-least-32-bytes-length!!");
        let forged = keys("another-secret-of-at-least-32-bytes!!")
            .issue_service_token(BOOKING_SERVICE)
            .expect("token");
        let now = chrono::Utc::now().timestamp();
        let expired = k
            .sign(&Claims {
                sub: BOOKING_SERVICE.into(),
                iss: "moviebook".into(),
                iat: now - 900,
                exp: now - 600,
                email: None,
                roles: vec![SERVICE_ROLE.into()],
            })
            .expect("token");
        for header in [
            None,
            Some(String::new()),
            Some("Bearer".into()),
            Some("Basic Ym9va2luZzp4".into()),
            Some(format!("Bearer {forged}")),
            Some(format!("Bearer {expired}")),
            Some("Bearer not.a.jwt".into()),
        ] {
            assert_eq!(
                code(header.as_deref(), &k),
                Code::Unauthenticated,
                "{header:?}"
            );
        }
        let err = check_service(None, &k, ALLOWED).expect_err("missing");
        assert!(err.message().contains(BOOKING_SERVICE), "{}", err.message());
    }

    #[test]
    fn the_bearer_reuses_the_callers_own_token() {
        let k = keys("a-secret-of-at-least-32-bytes-length!!");
        let bearer = ServiceBearer::new(k.clone(), BOOKING_SERVICE);
        let first = bearer.header().expect("token");
        assert_eq!(bearer.header().expect("token"), first, "reused");
        let rest = k.service_token(BOOKING_SERVICE).expect("token");
        assert_eq!(first.to_str().ok(), Some(format!("Bearer {rest}").as_str()));
    }
}
