//! Checks the CRD schema cannot express. Pure, run before anything is built or applied, so a
//! spec that cannot work is reported in status instead of half-applied.
//!
//! The cross-field rules (autoscaling bounds, managed xor external, node port vs. Service
//! type) are CEL rules in the CRD; they are repeated here because a resource created before a
//! CRD upgrade, or with validation disabled, must not make the operator build nonsense.

use crate::build::{ServiceKind, StoreKind};
use crate::crd::{GatewayServiceType, GatewayType, MovieBookingSystem};
use crate::error::Error;

/// Longest resource name whose derived object names stay valid (`<name>-notification`,
/// StatefulSet pods `<name>-rabbitmq-0` and their revision labels fit in 63 characters).
pub const MAX_NAME_LEN: usize = 40;

/// Validates the resource, returning a message fit for a status condition.
pub fn validate(mbs: &MovieBookingSystem) -> Result<(), Error> {
    let name = mbs
        .metadata
        .name
        .as_deref()
        .ok_or(Error::MissingMetadata("name"))?;
    let spec = &mbs.spec;
    let mut problems = Vec::new();
    if name.len() > MAX_NAME_LEN {
        problems.push(format!(
            "metadata.name must be at most {MAX_NAME_LEN} characters (objects are named after it)"
        ));
    }
    if spec.version.trim().is_empty() {
        problems.push("spec.version must not be empty".into());
    }
    if spec.image_registry.trim().is_empty() {
        problems.push("spec.imageRegistry must not be empty".into());
    }
    for svc in ServiceKind::ALL {
        if let Some(a) = &svc.spec(spec).autoscaling
            && a.min_replicas > a.max_replicas
        {
            problems.push(format!(
                "spec.services.{}.autoscaling.minReplicas ({}) exceeds maxReplicas ({})",
                svc.name(),
                a.min_replicas,
                a.max_replicas
            ));
        }
    }
    for store in StoreKind::ALL {
        let s = store.spec(spec);
        if s.managed.is_some() == s.external.is_some() {
            problems.push(format!(
                "spec.{}: exactly one of managed or external must be set",
                store.name()
            ));
        }
    }
    let kong = &spec.gateway.kong;
    if kong.node_port.is_some() && kong.service_type == GatewayServiceType::ClusterIP {
        problems
            .push("spec.gateway.kong.nodePort needs serviceType NodePort or LoadBalancer".into());
    }
    for store in [StoreKind::Postgres, StoreKind::Redis, StoreKind::Rabbitmq] {
        if store
            .spec(spec)
            .managed
            .as_ref()
            .is_some_and(|m| m.topology.is_some())
        {
            problems.push(format!(
                "spec.{}.managed.topology: only MongoDB has a topology",
                store.name()
            ));
        }
    }
    if let Some(direct) = &spec.gateway.direct {
        let ports = direct.node_ports.clone().unwrap_or_default();
        let fixed: Vec<i32> = [ports.graphql, ports.user, ports.catalogue]
            .into_iter()
            .flatten()
            .collect();
        if !fixed.is_empty() && direct.service_type == Some(GatewayServiceType::ClusterIP) {
            problems.push(
                "spec.gateway.direct.nodePorts needs serviceType NodePort or LoadBalancer".into(),
            );
        }
        let mut unique = fixed.clone();
        unique.sort_unstable();
        unique.dedup();
        if unique.len() != fixed.len() {
            problems.push("spec.gateway.direct.nodePorts must differ from each other".into());
        }
        if spec.gateway.type_ != GatewayType::None && !fixed.is_empty() {
            problems.push("spec.gateway.direct.nodePorts applies to gateway type None only".into());
        }
    }
    for cidr in &kong.trusted_proxies {
        if !is_cidr(cidr) {
            problems.push(format!(
                "spec.gateway.kong.trustedProxies: {cidr:?} is not a CIDR (e.g. 10.0.0.0/8)"
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidSpec(problems.join("; ")))
    }
}

/// `ADDRESS/PREFIX` with an IPv4 or IPv6 address and a prefix length that fits it: what Kong's
/// `trusted_ips` accepts (a bare address is refused so that intent is explicit).
fn is_cidr(s: &str) -> bool {
    let Some((addr, len)) = s.split_once('/') else {
        return false;
    };
    let Ok(len) = len.parse::<u8>() else {
        return false;
    };
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => len <= 32,
        Ok(std::net::IpAddr::V6(_)) => len <= 128,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::test_support::sample;

    #[test]
    fn sample_is_valid() {
        validate(&sample()).expect("valid");
    }

    #[test]
    fn reports_every_problem_readably() {
        let mut mbs = sample();
        mbs.metadata.name = Some("x".repeat(41));
        mbs.spec.redis.external = Some(
            serde_json::from_value(serde_json::json!({"secretRef": {"name": "r", "key": "url"}}))
                .expect("ext"),
        );
        mbs.spec.services.cinema.autoscaling = Some(crate::crd::AutoscalingSpec {
            min_replicas: 5,
            max_replicas: 2,
            target_cpu_utilization_percentage: 70,
        });
        let msg = validate(&mbs).expect_err("invalid").to_string();
        assert!(msg.contains("metadata.name"), "{msg}");
        assert!(
            msg.contains("spec.redis: exactly one of managed or external"),
            "{msg}"
        );
        assert!(
            msg.contains("cinema.autoscaling.minReplicas (5) exceeds maxReplicas (2)"),
            "{msg}"
        );
    }

    #[test]
    fn direct_node_ports_and_topology_are_checked() {
        let mut mbs = sample();
        mbs.spec.gateway = serde_json::from_value(serde_json::json!({
            "type": "None",
            "direct": {"nodePorts": {"graphql": 30080, "user": 30080}}
        }))
        .expect("gateway");
        mbs.spec
            .postgres
            .managed
            .as_mut()
            .expect("managed")
            .topology = Some(crate::crd::MongoTopology::Standalone);
        let msg = validate(&mbs).expect_err("invalid").to_string();
        assert!(msg.contains("nodePorts must differ"), "{msg}");
        assert!(msg.contains("spec.postgres.managed.topology"), "{msg}");
        mbs.spec
            .postgres
            .managed
            .as_mut()
            .expect("managed")
            .topology = None;
        mbs.spec.gateway.type_ = GatewayType::Kong;
        let msg = validate(&mbs).expect_err("invalid").to_string();
        assert!(msg.contains("type None only"), "{msg}");
    }

    #[test]
    fn trusted_proxies_must_be_cidrs() {
        for ok in ["10.0.0.0/8", "192.168.1.7/32", "fd00::/8", "0.0.0.0/0"] {
            assert!(is_cidr(ok), "{ok}");
        }
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "fd00::/129",
            "example.com/8",
            "/8",
            "1.2.3.4/x",
        ] {
            assert!(!is_cidr(bad), "{bad}");
        }
        let mut mbs = sample();
        mbs.spec.gateway.kong.trusted_proxies = vec!["10.0.0.0/8".into(), "10.1.2.3".into()];
        let msg = validate(&mbs).expect_err("invalid").to_string();
        assert!(
            msg.contains(r#"trustedProxies: "10.1.2.3" is not a CIDR"#),
            "{msg}"
        );
        assert!(
            !msg.contains(r#""10.0.0.0/8""#),
            "the valid one is not named: {msg}"
        );
    }
}
