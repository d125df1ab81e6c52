//! The gateway, by `spec.gateway.type`:
//! - `Kong`: Kong in DB-less mode: a Secret with the declarative config (it contains the JWT
//!   secret), a Deployment that mounts it, a Service exposing the proxy and an optional Ingress
//!   in front of it;
//! - `Ingress`: an Ingress (with its class) routing the public paths straight to the services,
//!   for any ingress controller, Kong's included;
//! - `None`: the public Services `<name>-public-{graphql,user,catalogue}` only (NodePort by
//!   default), as the local node without Kong uses them.
//!
//! The public paths are the same in all three ([`PUBLIC_ROUTES`]); without Kong the services'
//! own token checks guard what needs a token, and there is no edge rate limit or CORS.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, HTTPGetAction, PodSpec, PodTemplateSpec, Probe,
    Secret, SecretVolumeSource, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::ServiceKind;
use super::config::plain_env;
use super::{
    CONFIG_HASH_ANNOTATION, Instance, Resolved, default_resources, pull_secrets,
    restricted_container, restricted_pod,
};
use crate::crd::{GatewayServiceType, GatewayType, MovieBookingSystemSpec};
use crate::kong;

pub const COMPONENT: &str = "gateway";
/// Key of the declarative config in its Secret.
pub const CONFIG_KEY: &str = "kong.yml";
const PROXY_PORT: i32 = 8000;
const STATUS_PORT: i32 = 8100;
/// UID of the `kong` user in the official image.
const KONG_UID: i64 = 1000;

pub fn name(inst: &Instance) -> String {
    inst.child(COMPONENT)
}

/// The paths users reach, by the service that serves them (Kong's routes without Kong; the
/// payment API is internal).
pub const PUBLIC_ROUTES: [(ServiceKind, &[&str]); 3] = [
    // `/`: the storefront booking serves (the longest prefix wins, so the API paths keep theirs)
    (ServiceKind::Booking, &["/graphql", "/"]),
    (
        ServiceKind::User,
        &[
            "/api/v1/register",
            "/api/v1/login",
            "/api/v1/users",
            "/api/v1/profile",
        ],
    ),
    (
        ServiceKind::Cinema,
        &[
            "/api/v1/movies",
            "/api/v1/showtimes",
            "/api/v1/cinemas",
            "/api/v1/screens",
        ],
    ),
];

/// The public Services of `type: None`, in this order (GraphQL first: its address is the
/// endpoint in status): suffix, service, fixed node port.
pub fn public_services_of(
    spec: &MovieBookingSystemSpec,
) -> [(&'static str, ServiceKind, Option<i32>); 3] {
    let ports = spec
        .gateway
        .direct
        .as_ref()
        .and_then(|d| d.node_ports.clone())
        .unwrap_or_default();
    [
        ("public-graphql", ServiceKind::Booking, ports.graphql),
        ("public-user", ServiceKind::User, ports.user),
        ("public-catalogue", ServiceKind::Cinema, ports.catalogue),
    ]
}

/// The Service whose node port or load balancer is the GraphQL endpoint: Kong's, or the public
/// GraphQL Service without Kong.
pub fn endpoint_service_name(spec: &MovieBookingSystemSpec, inst: &Instance) -> String {
    match spec.gateway.type_ {
        GatewayType::None => inst.child("public-graphql"),
        _ => name(inst),
    }
}

/// Service type of the public Services (NodePort unless the spec says otherwise).
pub fn direct_service_type(spec: &MovieBookingSystemSpec) -> GatewayServiceType {
    spec.gateway
        .direct
        .as_ref()
        .and_then(|d| d.service_type)
        .unwrap_or(GatewayServiceType::NodePort)
}

/// `<name>-public-graphql`, `<name>-public-user`, `<name>-public-catalogue`: each selects the
/// pods of its service and exposes its HTTP port as port 80 (and its node port).
pub fn public_services(spec: &MovieBookingSystemSpec, inst: &Instance) -> Vec<Service> {
    let type_ = direct_service_type(spec);
    public_services_of(spec)
        .into_iter()
        .map(|(suffix, svc, node_port)| Service {
            metadata: inst.meta(inst.child(suffix), COMPONENT),
            spec: Some(ServiceSpec {
                type_: Some(type_.as_str().into()),
                selector: Some(inst.selector(svc.name())),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    target_port: Some(IntOrString::String("http".into())),
                    node_port: if type_ == GatewayServiceType::ClusterIP {
                        None
                    } else {
                        node_port
                    },
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        })
        .collect()
}

pub fn config_secret_name(inst: &Instance) -> String {
    inst.child("kong-config")
}

pub fn render_kong_config(
    spec: &MovieBookingSystemSpec,
    inst: &Instance,
    res: &Resolved,
) -> String {
    kong::render(spec, inst, &res.user_token_keys, &res.jwt_secret)
}

/// The Secret holding `kong.yml`.
pub fn kong_config_secret(
    spec: &MovieBookingSystemSpec,
    inst: &Instance,
    res: &Resolved,
) -> Secret {
    Secret {
        metadata: inst.meta(config_secret_name(inst), COMPONENT),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            CONFIG_KEY.to_string(),
            ByteString(render_kong_config(spec, inst, res).into_bytes()),
        )])),
        ..Secret::default()
    }
}

/// Kong's Deployment. `config_hash` is the hash of the rendered config: DB-less Kong reads
/// its file at start, so a new config must roll the pods.
pub fn deployment(spec: &MovieBookingSystemSpec, inst: &Instance, config_hash: &str) -> Deployment {
    let kong = &spec.gateway.kong;
    let mut env = vec![
        plain_env("KONG_DATABASE", "off"),
        plain_env(
            "KONG_DECLARATIVE_CONFIG",
            format!("/kong/declarative/{CONFIG_KEY}"),
        ),
        plain_env("KONG_PREFIX", "/kong_prefix"),
        plain_env("KONG_PROXY_LISTEN", format!("0.0.0.0:{PROXY_PORT}")),
        plain_env("KONG_STATUS_LISTEN", format!("0.0.0.0:{STATUS_PORT}")),
        plain_env("KONG_ADMIN_LISTEN", "off"),
        plain_env("KONG_PROXY_ACCESS_LOG", "/dev/stdout"),
        plain_env("KONG_PROXY_ERROR_LOG", "/dev/stderr"),
        plain_env("KONG_PLUGINS", "bundled"),
        plain_env("KONG_NGINX_WORKER_PROCESSES", "2"),
    ];
    env.extend(real_ip_env(&kong.trusted_proxies));
    let probe = |path: &str, delay: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("status".into()),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(delay),
        period_seconds: Some(10),
        timeout_seconds: Some(3),
        failure_threshold: Some(3),
        ..Probe::default()
    };
    let container = Container {
        name: "kong".into(),
        image: Some(kong.image.clone()),
        image_pull_policy: Some(spec.image_pull_policy.as_str().into()),
        env: Some(env),
        ports: Some(vec![
            ContainerPort {
                name: Some("proxy".into()),
                container_port: PROXY_PORT,
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("status".into()),
                container_port: STATUS_PORT,
                ..ContainerPort::default()
            },
        ]),
        readiness_probe: Some(probe("/status/ready", 5)),
        liveness_probe: Some(probe("/status", 10)),
        resources: Some(
            kong.resources
                .clone()
                .unwrap_or_else(|| default_resources("100m", "256Mi", "1", "512Mi")),
        ),
        security_context: Some(restricted_container()),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "declarative".into(),
                mount_path: "/kong/declarative".into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "prefix".into(),
                mount_path: "/kong_prefix".into(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "tmp".into(),
                mount_path: "/tmp".into(),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    };
    let empty = |name: &str| Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    };
    Deployment {
        metadata: inst.meta(name(inst), COMPONENT),
        spec: Some(DeploymentSpec {
            replicas: Some(kong.replicas),
            selector: LabelSelector {
                match_labels: Some(inst.selector(COMPONENT)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(inst.labels(COMPONENT)),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.to_string(),
                        config_hash.to_string(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(vec![
                        Volume {
                            name: "declarative".into(),
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(config_secret_name(inst)),
                                default_mode: Some(0o440),
                                ..SecretVolumeSource::default()
                            }),
                            ..Volume::default()
                        },
                        empty("prefix"),
                        empty("tmp"),
                    ]),
                    security_context: Some(restricted_pod(KONG_UID)),
                    image_pull_secrets: pull_secrets(spec),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// The client IP that rate limiting keys on. Kong believes `X-Forwarded-For` only from the
/// proxies the resource names (the rightmost address not among them is the client); with none,
/// Kong's default holds: no header is believed and the client is the TCP peer. Trusting whole
/// private ranges would let any pod or, behind a NodePort, any client pick its own IP.
fn real_ip_env(trusted: &[String]) -> Vec<k8s_openapi::api::core::v1::EnvVar> {
    if trusted.is_empty() {
        return Vec::new();
    }
    vec![
        plain_env("KONG_TRUSTED_IPS", trusted.join(",")),
        plain_env("KONG_REAL_IP_HEADER", "X-Forwarded-For"),
        plain_env("KONG_REAL_IP_RECURSIVE", "on"),
    ]
}

/// The proxy Service (NodePort by default, so kind can map it to the host).
pub fn service(spec: &MovieBookingSystemSpec, inst: &Instance) -> Service {
    let kong = &spec.gateway.kong;
    let node_port = match kong.service_type {
        GatewayServiceType::ClusterIP => None,
        _ => kong.node_port,
    };
    Service {
        metadata: inst.meta(name(inst), COMPONENT),
        spec: Some(ServiceSpec {
            type_: Some(kong.service_type.as_str().into()),
            selector: Some(inst.selector(COMPONENT)),
            ports: Some(vec![ServicePort {
                name: Some("proxy".into()),
                port: 80,
                target_port: Some(IntOrString::String("proxy".into())),
                node_port,
                ..ServicePort::default()
            }]),
            // A node that forwarded to a Kong pod elsewhere would replace the client's address
            // by its own (SNAT), and every client behind it would share one rate-limit bucket.
            external_traffic_policy: match kong.service_type {
                GatewayServiceType::ClusterIP => None,
                _ => Some("Local".into()),
            },
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn backend(service: String, port: i32) -> IngressBackend {
    IngressBackend {
        service: Some(IngressServiceBackend {
            name: service,
            port: Some(ServiceBackendPort {
                number: Some(port),
                ..ServiceBackendPort::default()
            }),
        }),
        ..IngressBackend::default()
    }
}

/// The Ingress: with `type: Kong` (and `gateway.ingress` set) everything goes to Kong; with
/// `type: Ingress` each public path goes straight to its service.
pub fn ingress(spec: &MovieBookingSystemSpec, inst: &Instance) -> Option<Ingress> {
    let paths = match spec.gateway.type_ {
        GatewayType::Kong => {
            spec.gateway.ingress.as_ref()?;
            vec![HTTPIngressPath {
                path: Some("/".into()),
                path_type: "Prefix".into(),
                backend: backend(name(inst), 80),
            }]
        }
        GatewayType::Ingress => PUBLIC_ROUTES
            .iter()
            .flat_map(|(svc, paths)| {
                paths.iter().map(move |p| HTTPIngressPath {
                    path: Some((*p).into()),
                    path_type: "Prefix".into(),
                    backend: backend(inst.child(svc.name()), svc.http_port()),
                })
            })
            .collect(),
        GatewayType::None => return None,
    };
    let default_ing = crate::crd::IngressSpec {
        host: None,
        class_name: None,
        tls_secret_name: None,
    };
    let ing = spec.gateway.ingress.as_ref().unwrap_or(&default_ing);
    Some(Ingress {
        metadata: inst.meta(name(inst), COMPONENT),
        spec: Some(IngressSpec {
            ingress_class_name: ing.class_name.clone(),
            tls: ing.tls_secret_name.as_ref().map(|secret| {
                vec![IngressTLS {
                    hosts: ing.host.clone().map(|h| vec![h]),
                    secret_name: Some(secret.clone()),
                }]
            }),
            rules: Some(vec![IngressRule {
                host: ing.host.clone(),
                http: Some(HTTPIngressRuleValue { paths }),
            }]),
            ..IngressSpec::default()
        }),
        ..Ingress::default()
    })
}

/// The GraphQL URL users should call, as far as the operator can know it: the Ingress host,
/// the load balancer's address, `<node>:<nodePort>` (the node address is the user's to know),
/// or the in-cluster name.
pub fn graphql_endpoint(
    spec: &MovieBookingSystemSpec,
    inst: &Instance,
    lb_address: Option<&str>,
    allocated_node_port: Option<i32>,
) -> String {
    match spec.gateway.type_ {
        GatewayType::Kong => {}
        GatewayType::Ingress => {
            return match spec
                .gateway
                .ingress
                .as_ref()
                .and_then(|i| i.host.as_ref().map(|h| (i, h)))
            {
                Some((ing, host)) => {
                    let scheme = if ing.tls_secret_name.is_some() {
                        "https"
                    } else {
                        "http"
                    };
                    format!("{scheme}://{host}/graphql")
                }
                None => format!(
                    "http://{}:{}/graphql",
                    inst.dns(&inst.child(ServiceKind::Booking.name())),
                    ServiceKind::Booking.http_port()
                ),
            };
        }
        GatewayType::None => {
            let fixed = public_services_of(spec)[0].2;
            return match (
                direct_service_type(spec),
                lb_address,
                fixed.or(allocated_node_port),
            ) {
                (GatewayServiceType::LoadBalancer, Some(addr), _) => {
                    format!("http://{addr}/graphql")
                }
                (GatewayServiceType::NodePort, _, Some(port)) => {
                    format!("http://<node>:{port}/graphql")
                }
                _ => format!("http://{}/graphql", inst.dns(&inst.child("public-graphql"))),
            };
        }
    }
    if let Some(ing) = &spec.gateway.ingress {
        let scheme = if ing.tls_secret_name.is_some() {
            "https"
        } else {
            "http"
        };
        if let Some(host) = &ing.host {
            return format!("{scheme}://{host}/graphql");
        }
    }
    let kong = &spec.gateway.kong;
    match (
        kong.service_type,
        lb_address,
        kong.node_port.or(allocated_node_port),
    ) {
        (GatewayServiceType::LoadBalancer, Some(addr), _) => format!("http://{addr}/graphql"),
        (GatewayServiceType::NodePort, _, Some(port)) => format!("http://<node>:{port}/graphql"),
        _ => format!("http://{}/graphql", inst.dns(&name(inst))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::test_support::*;
    use crate::crd::IngressSpec as MbsIngress;

    #[test]
    fn kong_runs_dbless_from_the_rendered_config() {
        let d = deployment(&sample().spec, &instance(), "h");
        let pod = d
            .spec
            .as_ref()
            .expect("spec")
            .template
            .spec
            .as_ref()
            .expect("pod");
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("kong:3.9"));
        let env = |n: &str| {
            c.env
                .as_ref()
                .expect("env")
                .iter()
                .find(|e| e.name == n)
                .and_then(|e| e.value.clone())
        };
        assert_eq!(env("KONG_DATABASE").as_deref(), Some("off"));
        assert_eq!(
            env("KONG_DECLARATIVE_CONFIG").as_deref(),
            Some("/kong/declarative/kong.yml")
        );
        let ready = c
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("probe");
        assert_eq!(ready.path.as_deref(), Some("/status/ready"));
        assert_eq!(ready.port, IntOrString::String("status".into()));
        let vol = &pod.volumes.as_ref().expect("vols")[0];
        assert_eq!(
            vol.secret.as_ref().and_then(|s| s.secret_name.as_deref()),
            Some("demo-kong-config")
        );
        assert_eq!(
            c.security_context
                .as_ref()
                .and_then(|s| s.read_only_root_filesystem),
            Some(true)
        );
    }

    fn kong_env(spec: &MovieBookingSystemSpec) -> BTreeMap<String, String> {
        let d = deployment(spec, &instance(), "h");
        let pod = d.spec.expect("spec").template.spec.expect("pod");
        pod.containers[0]
            .env
            .clone()
            .expect("env")
            .into_iter()
            .map(|e| (e.name, e.value.unwrap_or_default()))
            .collect()
    }

    #[test]
    fn x_forwarded_for_is_believed_only_from_the_named_proxies() {
        let mut mbs = sample();
        let env = kong_env(&mbs.spec);
        for v in [
            "KONG_TRUSTED_IPS",
            "KONG_REAL_IP_HEADER",
            "KONG_REAL_IP_RECURSIVE",
        ] {
            assert!(!env.contains_key(v), "{v} set without trusted proxies");
        }
        mbs.spec.gateway.kong.trusted_proxies = vec!["10.1.0.0/16".into(), "192.0.2.7/32".into()];
        let env = kong_env(&mbs.spec);
        assert_eq!(env["KONG_TRUSTED_IPS"], "10.1.0.0/16,192.0.2.7/32");
        assert_eq!(env["KONG_REAL_IP_HEADER"], "X-Forwarded-For");
        assert_eq!(env["KONG_REAL_IP_RECURSIVE"], "on");
    }

    #[test]
    fn exposed_proxy_keeps_the_client_address() {
        let mut mbs = sample();
        for (t, policy) in [
            (GatewayServiceType::NodePort, Some("Local")),
            (GatewayServiceType::LoadBalancer, Some("Local")),
            (GatewayServiceType::ClusterIP, None),
        ] {
            mbs.spec.gateway.kong.service_type = t;
            let s = service(&mbs.spec, &instance()).spec.expect("spec");
            assert_eq!(s.external_traffic_policy.as_deref(), policy, "{t:?}");
        }
    }

    #[test]
    fn config_secret_contains_the_declarative_config() {
        let s = kong_config_secret(&sample().spec, &instance(), &resolved());
        let yaml = String::from_utf8(s.data.expect("data")[CONFIG_KEY].0.clone()).expect("utf8");
        // Kong gets the public keys, never the HS256 secret of service tokens.
        assert!(!yaml.contains("jwtsecret"));
        assert!(yaml.contains(&resolved().user_token_keys[0].kid));
        assert!(yaml.contains("ES256"));
        assert!(yaml.contains("rate-limiting"));
    }

    #[test]
    fn service_is_nodeport_with_fixed_port() {
        let mut mbs = sample();
        mbs.spec.gateway.kong.node_port = Some(30080);
        let s = service(&mbs.spec, &instance()).spec.expect("spec");
        assert_eq!(s.type_.as_deref(), Some("NodePort"));
        assert_eq!(s.ports.as_ref().expect("ports")[0].node_port, Some(30080));
        assert_eq!(
            graphql_endpoint(&mbs.spec, &instance(), None, None),
            "http://<node>:30080/graphql"
        );
        mbs.spec.gateway.kong.service_type = GatewayServiceType::ClusterIP;
        assert_eq!(
            graphql_endpoint(&mbs.spec, &instance(), None, None),
            "http://demo-gateway.shop.svc/graphql"
        );
    }

    #[test]
    fn ingress_points_at_kong() {
        let mut mbs = sample();
        assert!(ingress(&mbs.spec, &instance()).is_none());
        mbs.spec.gateway.ingress = Some(MbsIngress {
            host: Some("tickets.example".into()),
            class_name: Some("nginx".into()),
            tls_secret_name: None,
        });
        let i = ingress(&mbs.spec, &instance())
            .expect("ingress")
            .spec
            .expect("spec");
        let rule = &i.rules.expect("rules")[0];
        assert_eq!(rule.host.as_deref(), Some("tickets.example"));
        let backend = &rule.http.as_ref().expect("http").paths[0].backend;
        assert_eq!(
            backend.service.as_ref().map(|s| s.name.as_str()),
            Some("demo-gateway")
        );
        assert_eq!(
            graphql_endpoint(&mbs.spec, &instance(), None, None),
            "http://tickets.example/graphql"
        );
    }

    #[test]
    fn no_gateway_exposes_the_public_services_on_their_node_ports() {
        let mut mbs = sample();
        mbs.spec.gateway = serde_json::from_value(serde_json::json!({
            "type": "None",
            "direct": {"nodePorts": {"graphql": 30080, "user": 30081, "catalogue": 30082}}
        }))
        .expect("gateway");
        let svcs = public_services(&mbs.spec, &instance());
        let seen: Vec<(String, String, Option<i32>, String)> = svcs
            .iter()
            .map(|s| {
                let spec = s.spec.as_ref().expect("spec");
                (
                    s.metadata.name.clone().expect("name"),
                    spec.type_.clone().expect("type"),
                    spec.ports.as_ref().expect("ports")[0].node_port,
                    spec.selector.as_ref().expect("sel")["app.kubernetes.io/name"].clone(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (
                    "demo-public-graphql".into(),
                    "NodePort".into(),
                    Some(30080),
                    "booking".into()
                ),
                (
                    "demo-public-user".into(),
                    "NodePort".into(),
                    Some(30081),
                    "user".into()
                ),
                (
                    "demo-public-catalogue".into(),
                    "NodePort".into(),
                    Some(30082),
                    "cinema".into()
                ),
            ]
        );
        assert!(ingress(&mbs.spec, &instance()).is_none());
        assert_eq!(
            graphql_endpoint(&mbs.spec, &instance(), None, None),
            "http://<node>:30080/graphql"
        );
        mbs.spec.gateway.direct = None;
        assert_eq!(
            graphql_endpoint(&mbs.spec, &instance(), None, Some(31234)),
            "http://<node>:31234/graphql",
            "the allocated port when none is fixed"
        );
    }

    #[test]
    fn ingress_type_routes_public_paths_straight_to_the_services() {
        let mut mbs = sample();
        mbs.spec.gateway = serde_json::from_value(serde_json::json!({
            "type": "Ingress",
            "ingress": {"className": "kong", "host": "tickets.example"}
        }))
        .expect("gateway");
        let i = ingress(&mbs.spec, &instance())
            .expect("ingress")
            .spec
            .expect("spec");
        assert_eq!(i.ingress_class_name.as_deref(), Some("kong"));
        let rule = &i.rules.expect("rules")[0];
        let routes: Vec<(String, String, i32)> = rule
            .http
            .as_ref()
            .expect("http")
            .paths
            .iter()
            .map(|p| {
                let b = p.backend.service.as_ref().expect("svc");
                (
                    p.path.clone().expect("path"),
                    b.name.clone(),
                    b.port.as_ref().and_then(|p| p.number).expect("port"),
                )
            })
            .collect();
        assert!(routes.contains(&("/graphql".into(), "demo-booking".into(), 8010)));
        assert!(routes.contains(&("/api/v1/login".into(), "demo-user".into(), 8001)));
        assert!(routes.contains(&("/api/v1/movies".into(), "demo-cinema".into(), 8002)));
        assert!(
            !routes
                .iter()
                .any(|r| r.0.contains("payments") || r.1 == "demo-gateway"),
            "no payment route, no Kong: {routes:?}"
        );
        assert_eq!(
            graphql_endpoint(&mbs.spec, &instance(), None, None),
            "http://tickets.example/graphql"
        );
    }
}
