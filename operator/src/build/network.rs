//! `spec.networkPolicies`: who may open a connection to whom inside an installation.
//!
//! [`allowed`] is the whole matrix as data (a pure function of the spec, so it is tested and
//! documented as one table); [`policies`] turns it into NetworkPolicies: one that denies all
//! ingress to every pod of the installation, and one per component that lets its callers in
//! on the ports they use. Policies only add permissions to each other, so the deny-all plus
//! the allow rules is exactly the matrix.
//!
//! Ingress only: every callee lists its callers, which is enough to keep a compromised pod
//! away from the stores and internal APIs it has no business with. Outgoing traffic (DNS, the
//! API server, an external store) is not restricted, so the policies never break a
//! resolution or a store outside the cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Instance, MANAGED_BY, ServiceKind, StoreKind, gateway, migrations, sample};
use crate::crd::{GatewayType, MovieBookingSystemSpec};

/// Kong's proxy port (the container port its Service targets).
const KONG_PROXY_PORT: i32 = 8000;

/// Who may connect to a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum From {
    /// Any source, in the cluster or outside it: a public port (Kong's proxy, or a service's
    /// HTTP port when no Kong stands in front of it).
    Anyone,
    /// Only the pods of these components (`app.kubernetes.io/name`) of this installation.
    Components(Vec<String>),
}

/// One permission: `from` may connect to the pods of `to` on `port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allow {
    pub to: String,
    pub port: i32,
    pub from: From,
}

/// The components that run a service's code against its stores: the service, its migration
/// Jobs and, for cinema, the sample-data Job.
fn runs_code_of(svc: ServiceKind) -> Vec<String> {
    let mut c = vec![svc.name().to_string(), migrations::component(svc)];
    if svc == ServiceKind::Cinema {
        c.push(sample::COMPONENT.to_string());
    }
    c
}

/// Whether the gateway routes users to this service's HTTP port (Kong's routes; the payment
/// API is reachable through Kong for reads only, and not at all without Kong).
fn public(svc: ServiceKind, gateway: GatewayType) -> bool {
    let routed = gateway::PUBLIC_ROUTES.iter().any(|(s, _)| *s == svc);
    routed || (svc == ServiceKind::Payment && gateway == GatewayType::Kong)
}

/// Every permitted connection of the installation, by target. Pure: the table of
/// operator/README.md is this function.
pub fn allowed(spec: &MovieBookingSystemSpec) -> Vec<Allow> {
    let gw = spec.gateway.type_;
    let mut out = Vec::new();
    // The stores the operator runs: only the code that uses them.
    for store in StoreKind::ALL {
        if store.spec(spec).managed.is_none() {
            continue;
        }
        let from = ServiceKind::ALL
            .into_iter()
            .filter(|svc| svc.stores().contains(&store))
            .flat_map(runs_code_of)
            .collect();
        out.push(Allow {
            to: store.name().to_string(),
            port: store.port(),
            from: From::Components(from),
        });
    }
    for svc in ServiceKind::ALL {
        // Internal callers: booking calls user (who is this), payment (charges, refunds) and
        // cinema (seats, over gRPC only).
        let mut callers: Vec<String> = match svc {
            ServiceKind::User | ServiceKind::Payment => vec![ServiceKind::Booking.name().into()],
            _ => Vec::new(),
        };
        let from = if public(svc, gw) {
            match gw {
                GatewayType::Kong => {
                    callers.push(gateway::COMPONENT.into());
                    From::Components(callers)
                }
                // An ingress controller (wherever it runs) or a NodePort: the port is public.
                GatewayType::Ingress | GatewayType::None => From::Anyone,
            }
        } else {
            From::Components(callers)
        };
        out.push(Allow {
            to: svc.name().to_string(),
            port: svc.http_port(),
            from,
        });
        if let Some(grpc) = svc.grpc_port() {
            out.push(Allow {
                to: svc.name().to_string(),
                port: grpc,
                from: From::Components(vec![ServiceKind::Booking.name().into()]),
            });
        }
    }
    if gw == GatewayType::Kong {
        out.push(Allow {
            to: gateway::COMPONENT.into(),
            port: KONG_PROXY_PORT,
            from: From::Anyone,
        });
    }
    out
}

/// Name of the deny-all policy.
pub fn deny_all_name(inst: &Instance) -> String {
    inst.child("deny-ingress")
}

/// The NetworkPolicies of the installation (none when `networkPolicies.enabled` is false).
pub fn policies(spec: &MovieBookingSystemSpec, inst: &Instance) -> Vec<NetworkPolicy> {
    if !spec.network_policies.enabled {
        return Vec::new();
    }
    let mut out = vec![NetworkPolicy {
        metadata: inst.meta(deny_all_name(inst), "network-policy"),
        spec: Some(NetworkPolicySpec {
            // Every pod the operator creates for this installation (stores, services, Jobs,
            // Kong), and nothing else in the namespace.
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([
                    ("app.kubernetes.io/instance".into(), inst.name.clone()),
                    ("app.kubernetes.io/managed-by".into(), MANAGED_BY.into()),
                ])),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: None,
            ..NetworkPolicySpec::default()
        }),
    }];
    let mut by_target: BTreeMap<String, Vec<Allow>> = BTreeMap::new();
    for a in allowed(spec) {
        by_target.entry(a.to.clone()).or_default().push(a);
    }
    for (target, allows) in by_target {
        let rules: Vec<NetworkPolicyIngressRule> =
            allows.iter().filter_map(|a| rule(a, inst)).collect();
        if rules.is_empty() {
            continue; // nobody may call it: the deny-all policy says so already
        }
        out.push(NetworkPolicy {
            metadata: inst.meta(inst.child(&format!("allow-{target}")), "network-policy"),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(LabelSelector {
                    match_labels: Some(inst.selector(&target)),
                    ..LabelSelector::default()
                }),
                policy_types: Some(vec!["Ingress".into()]),
                ingress: Some(rules),
                ..NetworkPolicySpec::default()
            }),
        });
    }
    out
}

/// The ingress rule of one permission; `None` when it permits no one.
fn rule(a: &Allow, inst: &Instance) -> Option<NetworkPolicyIngressRule> {
    let from = match &a.from {
        From::Anyone => None,
        From::Components(c) if c.is_empty() => return None,
        From::Components(c) => Some(
            c.iter()
                .map(|component| NetworkPolicyPeer {
                    pod_selector: Some(LabelSelector {
                        match_labels: Some(inst.selector(component)),
                        ..LabelSelector::default()
                    }),
                    ..NetworkPolicyPeer::default()
                })
                .collect(),
        ),
    };
    Some(NetworkPolicyIngressRule {
        from,
        ports: Some(vec![NetworkPolicyPort {
            port: Some(IntOrString::Int(a.port)),
            protocol: Some("TCP".into()),
            ..NetworkPolicyPort::default()
        }]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::test_support::{instance, sample};

    fn from(allows: &[Allow], to: &str, port: i32) -> From {
        allows
            .iter()
            .find(|a| a.to == to && a.port == port)
            .unwrap_or_else(|| panic!("no rule for {to}:{port}"))
            .from
            .clone()
    }

    fn names(v: &[&str]) -> From {
        From::Components(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn each_store_is_reached_only_by_the_code_that_uses_it() {
        let a = allowed(&sample().spec);
        assert_eq!(
            from(&a, "postgres", 5432),
            names(&["cinema", "cinema-migration", "cinema-seed"])
        );
        assert_eq!(
            from(&a, "redis", 6379),
            names(&["notification", "notification-migration"])
        );
        let From::Components(mongo) = from(&a, "mongodb", 27017) else {
            panic!("mongodb is not public")
        };
        assert!(!mongo.iter().any(|c| c.starts_with("cinema")), "{mongo:?}");
        assert!(!mongo.contains(&"gateway".to_string()), "{mongo:?}");
        // user and cinema publish and consume nothing.
        assert_eq!(
            from(&a, "rabbitmq", 5672),
            names(&[
                "payment",
                "payment-migration",
                "notification",
                "notification-migration",
                "booking",
                "booking-migration"
            ])
        );
    }

    #[test]
    fn internal_apis_are_reached_only_by_booking() {
        let a = allowed(&sample().spec);
        assert_eq!(from(&a, "cinema", 9090), names(&["booking"]));
        // payment: booking writes, Kong reads (its route is GET only)
        assert_eq!(from(&a, "payment", 8003), names(&["booking", "gateway"]));
        assert_eq!(from(&a, "user", 8001), names(&["booking", "gateway"]));
        assert_eq!(from(&a, "cinema", 8002), names(&["gateway"]));
        assert_eq!(from(&a, "booking", 8010), names(&["gateway"]));
        assert_eq!(from(&a, "notification", 8004), names(&[]));
        assert_eq!(from(&a, "gateway", 8000), From::Anyone);
    }

    #[test]
    fn without_kong_the_public_ports_are_open_and_payment_stays_internal() {
        for gw in [GatewayType::Ingress, GatewayType::None] {
            let mut mbs = sample();
            mbs.spec.gateway.type_ = gw;
            let a = allowed(&mbs.spec);
            assert_eq!(from(&a, "booking", 8010), From::Anyone, "{gw:?}");
            assert_eq!(from(&a, "user", 8001), From::Anyone, "{gw:?}");
            assert_eq!(from(&a, "payment", 8003), names(&["booking"]), "{gw:?}");
            assert_eq!(from(&a, "cinema", 9090), names(&["booking"]), "{gw:?}");
            assert!(a.iter().all(|x| x.to != "gateway"), "{gw:?}");
        }
    }

    #[test]
    fn external_stores_get_no_policy() {
        let mut mbs = sample();
        mbs.spec.redis.managed = None;
        assert!(allowed(&mbs.spec).iter().all(|a| a.to != "redis"));
    }

    #[test]
    fn one_deny_all_and_one_allow_per_reachable_component() {
        let inst = instance();
        let p = policies(&sample().spec, &inst);
        let names: Vec<String> = p.iter().filter_map(|p| p.metadata.name.clone()).collect();
        assert_eq!(names[0], "demo-deny-ingress");
        for want in [
            "demo-allow-postgres",
            "demo-allow-mongodb",
            "demo-allow-redis",
            "demo-allow-rabbitmq",
            "demo-allow-user",
            "demo-allow-cinema",
            "demo-allow-payment",
            "demo-allow-booking",
            "demo-allow-gateway",
        ] {
            assert!(names.contains(&want.to_string()), "{want} in {names:?}");
        }
        // Nobody calls notification: the deny-all covers it and no allow policy exists.
        assert!(!names.contains(&"demo-allow-notification".to_string()));
        let deny = p[0].spec.as_ref().expect("spec");
        assert_eq!(deny.ingress, None);
        assert_eq!(deny.policy_types, Some(vec!["Ingress".to_string()]));

        let cinema = p
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some("demo-allow-cinema"))
            .and_then(|p| p.spec.clone())
            .expect("cinema policy");
        let rules = cinema.ingress.expect("rules");
        assert_eq!(rules.len(), 2, "HTTP from Kong, gRPC from booking");
        let grpc = rules
            .iter()
            .find(|r| r.ports.as_ref().expect("ports")[0].port == Some(IntOrString::Int(9090)))
            .expect("gRPC rule");
        let peers = grpc.from.as_ref().expect("peers");
        assert_eq!(peers.len(), 1);
        let labels = peers[0]
            .pod_selector
            .as_ref()
            .and_then(|s| s.match_labels.clone())
            .expect("labels");
        assert_eq!(labels["app.kubernetes.io/name"], "booking");
        assert_eq!(labels["app.kubernetes.io/instance"], "demo");
    }

    #[test]
    fn switched_off_there_are_none() {
        let mut mbs = sample();
        mbs.spec.network_policies.enabled = false;
        assert!(policies(&mbs.spec, &instance()).is_empty());
    }
}
