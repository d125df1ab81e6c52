//! The five services: Deployment, ClusterIP Service, PodDisruptionBudget and (when
//! autoscaling is set) a HorizontalPodAutoscaler each; cinema's headless gRPC Service.
//!
//! Rolling updates drop no request: a pod is only Ready (and so in a Service's endpoints) once
//! its `/ready` answers, and a pod being stopped first sleeps [`PRESTOP_SECONDS`] in `preStop`
//! while still serving, long enough for kube-proxy to stop sending it new connections and for
//! booking to resolve cinema's headless Service again, before it gets SIGTERM and drains.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    ConfigMapEnvSource, Container, ContainerPort, EmptyDirVolumeSource, EnvFromSource, EnvVar,
    HTTPGetAction, Lifecycle, LifecycleHandler, PodSpec, PodTemplateSpec, Probe, Service,
    ServicePort, ServiceSpec, SleepAction, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config::{
    CINEMA_RESOLVE_SECONDS, POSTGRES_CONNECTION_BUDGET, cinema_grpc_service_name, config_map_name,
    plain_env, pod_ceiling, pool_size, service_token_public_keys_env,
    service_token_signing_key_env, store_url_env, ticket_key_env, user_token_public_keys_env,
    user_token_signing_key_env,
};
use super::{
    CONFIG_HASH_ANNOTATION, Instance, ServiceKind, StoreKind, default_resources, pull_secrets,
    restricted_container, restricted_pod,
};
use crate::crd::MovieBookingSystemSpec;

/// Non-root UID the service images run as (the `nonroot` user of the Dockerfile's runtime
/// images); set explicitly so a pod never runs as root even with another image.
pub const SERVICE_UID: i64 = 65532;

/// How long a stopping pod keeps serving before it gets SIGTERM: booking's re-resolve interval
/// of cinema's pods plus CoreDNS's 5 s cache plus a few seconds for the endpoint change to
/// reach kube-proxy and DNS. The images have no shell, so this is the kubelet's `sleep` action.
pub const PRESTOP_SECONDS: i64 = CINEMA_RESOLVE_SECONDS as i64 + 5 + 5;
/// The preStop delay plus the services' own drain (they finish in-flight requests on SIGTERM).
pub const TERMINATION_GRACE_SECONDS: i64 = PRESTOP_SECONDS + 30;

/// Environment of a service (and of its migration Job): ports, store URLs and the JWT
/// secret, then the spec's extra variables, which replace same-named ones (Kubernetes rejects
/// duplicate names in an applied list, so overriding must happen here).
pub fn service_env(
    svc: ServiceKind,
    spec: &MovieBookingSystemSpec,
    inst: &Instance,
) -> Vec<EnvVar> {
    let mut env = vec![plain_env("PORT", svc.http_port().to_string())];
    if let Some(grpc) = svc.grpc_port() {
        env.push(plain_env("GRPC_PORT", grpc.to_string()));
    }
    for store in svc.stores() {
        env.push(store_url_env(svc, *store, spec, inst));
    }
    // The managed broker declares the shared topology from its definitions, and the services'
    // users may not change it: they only check that it is there.
    if svc.stores().contains(&StoreKind::Rabbitmq) && spec.rabbitmq.managed.is_some() {
        env.push(plain_env("RABBITMQ_TOPOLOGY", "existing"));
    }
    if svc == ServiceKind::Cinema {
        // replicas x pool within what PostgreSQL accepts
        let pool = pool_size(POSTGRES_CONNECTION_BUDGET, pod_ceiling(svc.spec(spec)));
        env.push(plain_env("DB_MAX_CONNECTIONS", pool.to_string()));
    }
    // No pod gets `JWT_SECRET`: every token is ES256, each private key goes to the one
    // service that signs with it, and the others get public keys only. (A service given no
    // key variable at all would derive development keys from the public default secret.)
    env.push(user_token_public_keys_env(inst));
    match svc {
        ServiceKind::User => env.push(user_token_signing_key_env(spec, inst)),
        ServiceKind::Booking => {
            env.push(ticket_key_env(inst));
            env.push(service_token_signing_key_env(inst));
        }
        _ => {}
    }
    // The services booking calls verify its tokens; the others accept no service token.
    if matches!(svc, ServiceKind::Cinema | ServiceKind::Payment) {
        env.push(service_token_public_keys_env(inst));
    }
    for extra in &svc.spec(spec).env {
        env.retain(|e| e.name != extra.name);
        env.push(extra.clone());
    }
    env
}

/// The Deployment of a service running `image`.
pub fn deployment(
    svc: ServiceKind,
    spec: &MovieBookingSystemSpec,
    inst: &Instance,
    image: &str,
    config_hash: &str,
) -> Deployment {
    let component = svc.name();
    let sspec = svc.spec(spec);
    let mut ports = vec![ContainerPort {
        name: Some("http".into()),
        container_port: svc.http_port(),
        ..ContainerPort::default()
    }];
    if let Some(grpc) = svc.grpc_port() {
        ports.push(ContainerPort {
            name: Some("grpc".into()),
            container_port: grpc,
            ..ContainerPort::default()
        });
    }
    let container = Container {
        name: component.into(),
        image: Some(image.into()),
        image_pull_policy: Some(spec.image_pull_policy.as_str().into()),
        env: Some(service_env(svc, spec, inst)),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: config_map_name(inst),
                optional: Some(false),
            }),
            ..EnvFromSource::default()
        }]),
        ports: Some(ports),
        liveness_probe: Some(http_probe("/health", 10, 10, 3)),
        readiness_probe: Some(http_probe("/ready", 2, 2, 2)),
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction {
                    seconds: PRESTOP_SECONDS,
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        startup_probe: Some(http_probe("/health", 2, 2, 30)),
        resources: Some(
            sspec
                .resources
                .clone()
                .unwrap_or_else(|| default_resources("100m", "128Mi", "1", "512Mi")),
        ),
        security_context: Some(restricted_container()),
        volume_mounts: Some(vec![VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };
    let annotations = BTreeMap::from([
        (CONFIG_HASH_ANNOTATION.to_string(), config_hash.to_string()),
        ("prometheus.io/scrape".to_string(), "true".to_string()),
        (
            "prometheus.io/port".to_string(),
            svc.http_port().to_string(),
        ),
        ("prometheus.io/path".to_string(), "/metrics".to_string()),
    ]);
    Deployment {
        metadata: inst.meta(inst.child(component), component),
        spec: Some(DeploymentSpec {
            // With autoscaling the HPA owns the replica count; applying one here would fight it.
            replicas: if sspec.autoscaling.is_some() {
                None
            } else {
                Some(sspec.replicas.unwrap_or(1))
            },
            selector: LabelSelector {
                match_labels: Some(inst.selector(component)),
                ..LabelSelector::default()
            },
            // Never below the desired capacity during a rollout.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            revision_history_limit: Some(5),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(inst.labels(component)),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(vec![Volume {
                        name: "tmp".into(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Volume::default()
                    }]),
                    security_context: Some(restricted_pod(SERVICE_UID)),
                    image_pull_secrets: pull_secrets(spec),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

fn http_probe(path: &str, initial_delay: i32, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(initial_delay),
        period_seconds: Some(period),
        timeout_seconds: Some(3),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

/// ClusterIP Service of a service (HTTP, plus gRPC for cinema).
pub fn service(svc: ServiceKind, inst: &Instance) -> Service {
    let component = svc.name();
    let mut ports = vec![ServicePort {
        name: Some("http".into()),
        port: svc.http_port(),
        target_port: Some(IntOrString::String("http".into())),
        ..ServicePort::default()
    }];
    if let Some(grpc) = svc.grpc_port() {
        ports.push(ServicePort {
            name: Some("grpc".into()),
            port: grpc,
            target_port: Some(IntOrString::String("grpc".into())),
            app_protocol: Some("kubernetes.io/h2c".into()),
            ..ServicePort::default()
        });
    }
    Service {
        metadata: inst.meta(inst.child(component), component),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(inst.selector(component)),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Cinema's headless gRPC Service: its DNS name answers with one address per READY cinema pod
/// (no ClusterIP), which booking resolves every few seconds to spread its calls over all pods.
pub fn cinema_grpc_service(inst: &Instance) -> Service {
    let component = ServiceKind::Cinema.name();
    Service {
        metadata: inst.meta(cinema_grpc_service_name(inst), component),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(false),
            selector: Some(inst.selector(component)),
            ports: Some(vec![ServicePort {
                name: Some("grpc".into()),
                port: 9090,
                target_port: Some(IntOrString::String("grpc".into())),
                app_protocol: Some("kubernetes.io/h2c".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// PodDisruptionBudget: voluntary disruptions (node drains) take at most one pod at a time.
pub fn pdb(svc: ServiceKind, inst: &Instance) -> PodDisruptionBudget {
    let component = svc.name();
    PodDisruptionBudget {
        metadata: inst.meta(inst.child(component), component),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(inst.selector(component)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

/// HorizontalPodAutoscaler on CPU utilisation, when the service asks for autoscaling.
pub fn hpa(
    svc: ServiceKind,
    spec: &MovieBookingSystemSpec,
    inst: &Instance,
) -> Option<HorizontalPodAutoscaler> {
    let auto = svc.spec(spec).autoscaling.as_ref()?;
    let component = svc.name();
    Some(HorizontalPodAutoscaler {
        metadata: inst.meta(inst.child(component), component),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: inst.child(component),
            },
            min_replicas: Some(auto.min_replicas),
            max_replicas: auto.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(auto.target_cpu_utilization_percentage),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            ..HorizontalPodAutoscalerSpec::default()
        }),
        ..HorizontalPodAutoscaler::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::test_support::*;
    use crate::crd::AutoscalingSpec;

    fn pod(d: &Deployment) -> &PodSpec {
        d.spec
            .as_ref()
            .expect("spec")
            .template
            .spec
            .as_ref()
            .expect("pod")
    }

    #[test]
    fn deployment_has_probes_labels_security_and_config_hash() {
        let mbs = sample();
        for svc in ServiceKind::ALL {
            let d = deployment(svc, &mbs.spec, &instance(), "img:1", "hash-1");
            let spec = d.spec.as_ref().expect("spec");
            let labels = d.metadata.labels.as_ref().expect("labels");
            assert_eq!(labels["app.kubernetes.io/name"], svc.name());
            assert_eq!(labels["app.kubernetes.io/instance"], "demo");
            assert_eq!(labels["app.kubernetes.io/managed-by"], "moviebook-operator");
            assert_eq!(labels["app.kubernetes.io/part-of"], "moviebook");
            let tmpl = spec.template.metadata.as_ref().expect("meta");
            assert_eq!(
                tmpl.annotations.as_ref().expect("ann")[CONFIG_HASH_ANNOTATION],
                "hash-1"
            );
            let c = &pod(&d).containers[0];
            let path = |p: &Option<Probe>| {
                p.as_ref()
                    .and_then(|p| p.http_get.as_ref())
                    .and_then(|h| h.path.clone())
            };
            assert_eq!(path(&c.liveness_probe).as_deref(), Some("/health"));
            assert_eq!(path(&c.readiness_probe).as_deref(), Some("/ready"));
            let sec = c.security_context.as_ref().expect("sec");
            assert_eq!(sec.read_only_root_filesystem, Some(true));
            assert_eq!(sec.run_as_non_root, Some(true));
            assert_eq!(
                sec.capabilities.as_ref().and_then(|c| c.drop.clone()),
                Some(vec!["ALL".into()])
            );
            assert_eq!(
                c.ports.as_ref().expect("ports")[0].container_port,
                svc.http_port()
            );
            assert!(
                c.resources
                    .as_ref()
                    .and_then(|r| r.limits.as_ref())
                    .is_some()
            );
            let env = c.env.as_ref().expect("env");
            let port = env
                .iter()
                .find(|e| e.name == "PORT")
                .and_then(|e| e.value.clone());
            assert_eq!(port, Some(svc.http_port().to_string()));
        }
        let booking = deployment(ServiceKind::Booking, &mbs.spec, &instance(), "img:1", "h");
        assert_eq!(booking.spec.and_then(|s| s.replicas), Some(2));
    }

    #[test]
    fn service_env_follows_design_contract() {
        let mbs = sample();
        let names = |svc| -> Vec<String> {
            service_env(svc, &mbs.spec, &instance())
                .into_iter()
                .map(|e| e.name)
                .collect()
        };
        assert_eq!(
            names(ServiceKind::Cinema),
            [
                "PORT",
                "GRPC_PORT",
                "DATABASE_URL",
                "DB_MAX_CONNECTIONS",
                "USER_TOKEN_PUBLIC_KEYS",
                "SERVICE_TOKEN_PUBLIC_KEYS"
            ]
        );
        assert_eq!(
            names(ServiceKind::Notification),
            [
                "PORT",
                "MONGODB_URL",
                "REDIS_URL",
                "RABBITMQ_URL",
                "RABBITMQ_TOPOLOGY",
                "USER_TOKEN_PUBLIC_KEYS"
            ]
        );
        assert_eq!(
            names(ServiceKind::Booking),
            [
                "PORT",
                "MONGODB_URL",
                "RABBITMQ_URL",
                "RABBITMQ_TOPOLOGY",
                "USER_TOKEN_PUBLIC_KEYS",
                "TICKET_SIGNING_KEY",
                "SERVICE_TOKEN_SIGNING_KEY"
            ]
        );
        let user = names(ServiceKind::User);
        assert_eq!(
            user[user.len() - 2..],
            ["USER_TOKEN_PUBLIC_KEYS", "USER_TOKEN_SIGNING_KEY"]
        );
        // Each service reads MongoDB, RabbitMQ and Redis as its own user: its own key of the
        // Secret.
        for svc in ServiceKind::ALL {
            for e in service_env(svc, &mbs.spec, &instance()) {
                if ["MONGODB_URL", "RABBITMQ_URL", "REDIS_URL"].contains(&e.name.as_str()) {
                    assert!(e.value.is_none(), "{svc:?}: {} is a literal", e.name);
                    let key = e
                        .value_from
                        .and_then(|v| v.secret_key_ref)
                        .map(|r| r.key)
                        .unwrap_or_default();
                    assert_eq!(key, format!("{}.{}", svc.name(), e.name), "{svc:?}");
                }
            }
        }
        for svc in ServiceKind::ALL {
            let has = |var: &str| names(svc).iter().any(|n| n == var);
            assert_eq!(
                has("USER_TOKEN_SIGNING_KEY"),
                svc == ServiceKind::User,
                "only the user service holds the user-token key ({svc:?})"
            );
            assert_eq!(
                has("SERVICE_TOKEN_SIGNING_KEY"),
                svc == ServiceKind::Booking,
                "only booking holds the service-token key ({svc:?})"
            );
            // The services booking calls verify its tokens with its public key; no pod holds
            // the old shared secret, and every pod has a key variable set, so none derives
            // development keys from a default secret.
            assert_eq!(
                has("SERVICE_TOKEN_PUBLIC_KEYS"),
                matches!(svc, ServiceKind::Cinema | ServiceKind::Payment),
                "{svc:?}"
            );
            assert!(has("USER_TOKEN_PUBLIC_KEYS"), "{svc:?}");
            assert!(!has("JWT_SECRET"), "{svc:?}");
        }
    }

    #[test]
    fn extra_env_overrides_without_duplicates() {
        let mut mbs = sample();
        mbs.spec.services.user.env = vec![plain_env("PORT", "9999"), plain_env("FEATURE_X", "on")];
        let env = service_env(ServiceKind::User, &mbs.spec, &instance());
        assert_eq!(env.iter().filter(|e| e.name == "PORT").count(), 1);
        assert_eq!(
            env.iter()
                .find(|e| e.name == "PORT")
                .and_then(|e| e.value.as_deref()),
            Some("9999")
        );
        assert!(env.iter().any(|e| e.name == "FEATURE_X"));
    }

    #[test]
    fn autoscaling_creates_hpa_and_leaves_replicas_to_it() {
        let mut mbs = sample();
        assert!(hpa(ServiceKind::Booking, &mbs.spec, &instance()).is_none());
        mbs.spec.services.booking.autoscaling = Some(AutoscalingSpec {
            min_replicas: 2,
            max_replicas: 6,
            target_cpu_utilization_percentage: 70,
        });
        let h = hpa(ServiceKind::Booking, &mbs.spec, &instance())
            .expect("hpa")
            .spec
            .expect("spec");
        assert_eq!((h.min_replicas, h.max_replicas), (Some(2), 6));
        assert_eq!(h.scale_target_ref.name, "demo-booking");
        let m = &h.metrics.expect("metrics")[0];
        assert_eq!(
            m.resource
                .as_ref()
                .and_then(|r| r.target.average_utilization),
            Some(70)
        );
        let d = deployment(ServiceKind::Booking, &mbs.spec, &instance(), "img", "h");
        assert_eq!(d.spec.and_then(|s| s.replicas), None);
    }

    #[test]
    fn cinema_service_exposes_grpc() {
        let s = service(ServiceKind::Cinema, &instance())
            .spec
            .expect("spec");
        let ports: Vec<i32> = s.ports.expect("ports").iter().map(|p| p.port).collect();
        assert_eq!(ports, [8002, 9090]);
        let p = pdb(ServiceKind::Cinema, &instance()).spec.expect("spec");
        assert_eq!(p.max_unavailable, Some(IntOrString::Int(1)));
    }

    #[test]
    fn stopping_pods_keep_serving_until_traffic_has_moved() {
        let mbs = sample();
        for svc in ServiceKind::ALL {
            let d = deployment(svc, &mbs.spec, &instance(), "img:1", "h");
            let pod = pod(&d);
            let c = &pod.containers[0];
            let sleep = c
                .lifecycle
                .as_ref()
                .and_then(|l| l.pre_stop.as_ref())
                .and_then(|p| p.sleep.as_ref())
                .map(|s| s.seconds);
            // booking re-resolves cinema every CINEMA_RESOLVE_SECONDS, CoreDNS caches 5 s
            assert!(
                sleep >= Some(i64::from(CINEMA_RESOLVE_SECONDS) + 5),
                "{svc:?}: {sleep:?}"
            );
            assert!(pod.termination_grace_period_seconds > sleep, "{svc:?}");
            let rollout = d
                .spec
                .as_ref()
                .and_then(|s| s.strategy.as_ref())
                .and_then(|s| s.rolling_update.as_ref())
                .expect("rolling update");
            assert_eq!(rollout.max_unavailable, Some(IntOrString::Int(0)));
        }
    }

    #[test]
    fn cinema_grpc_is_headless_over_ready_pods_and_pools_fit_postgres() {
        let s = cinema_grpc_service(&instance());
        assert_eq!(s.metadata.name.as_deref(), Some("demo-cinema-grpc"));
        let spec = s.spec.expect("spec");
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(false));
        assert_eq!(spec.ports.expect("ports")[0].port, 9090);
        let mut mbs = sample();
        let pool = |spec: &MovieBookingSystemSpec| {
            service_env(ServiceKind::Cinema, spec, &instance())
                .into_iter()
                .find(|e| e.name == "DB_MAX_CONNECTIONS")
                .and_then(|e| e.value)
        };
        assert_eq!(pool(&mbs.spec).as_deref(), Some("20"));
        mbs.spec.services.cinema.replicas = Some(8);
        assert_eq!(pool(&mbs.spec).as_deref(), Some("10"));
    }
}
