//! Desired objects of a validated tunnel, built without any API call: the TunnelConfig, the config
//! Secret that carries it, the generated PSK Secret, and the endpoint pods.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, HTTPGetAction, HostPathVolumeSource,
    PodAffinityTerm, PodAntiAffinity, PodSpec, Probe, ResourceRequirements, SeccompProfile, Secret,
    SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use magictunnel_types::config::{
    API_VERSION, HttpConfig, IpsecConfig, KIND, Psk, TunnelConfig, TunnelType,
};
use sha2::{Digest, Sha256};

use crate::psk;
use crate::settings::Settings;
use crate::validate::{Invalid, ValidatedTunnel};

pub const FIELD_MANAGER: &str = "magictunnel-operator";
pub const TUNNEL_LABEL: &str = "magictunnel.dev/tunnel";
pub const REPLICA_LABEL: &str = "magictunnel.dev/replica";
pub const MANAGED_BY: &str = "magictunnel-operator";
pub const CONFIG_HASH_ANNOTATION: &str = "magictunnel.dev/config-hash";
pub const CONFIG_KEY: &str = "tunnel.yaml";
pub const CONFIG_DIR: &str = "/etc/magictunnel";
pub const TUN_DEVICE: &str = "/dev/net/tun";
pub const IKE_PORT: i32 = 500;
pub const NAT_T_PORT: i32 = 4500;

pub fn config_secret_name(tunnel: &str) -> String {
    format!("{tunnel}-config")
}

pub fn pod_name(tunnel: &str, replica: i32) -> String {
    format!("{tunnel}-{replica}")
}

/// Labels of every object the operator creates for a tunnel.
pub fn labels(tunnel: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "magictunnel-tunnel".into()),
        ("app.kubernetes.io/instance".into(), tunnel.into()),
        ("app.kubernetes.io/managed-by".into(), MANAGED_BY.into()),
        (TUNNEL_LABEL.into(), tunnel.into()),
    ])
}

/// Selector of a tunnel's pods.
pub fn pod_selector(tunnel: &str) -> String {
    format!("{TUNNEL_LABEL}={tunnel},app.kubernetes.io/managed-by={MANAGED_BY}")
}

/// The TunnelConfig the pod runs, checked with the same rules the pod applies on start.
pub fn tunnel_config(v: &ValidatedTunnel, psk: Option<&Psk>) -> Result<TunnelConfig, Invalid> {
    let ipsec = match (&v.ipsec, v.tunnel_type) {
        (Some(i), TunnelType::Ipsec) => Some(IpsecConfig {
            psk: psk.cloned(),
            psk_file: None,
            accepted_ids: i.identities.accepted(&i.accepted_id_types),
            local_id: None,
            replay_protection: i.replay_protection,
            replay_window: magictunnel_types::config::DEFAULT_REPLAY_WINDOW,
            allow_null_cipher: i.allow_null_cipher,
            proposals: i.proposals.clone(),
            lifetimes: i.lifetimes,
            static_sa: None,
        }),
        _ => None,
    };
    let config = TunnelConfig {
        api_version: API_VERSION.into(),
        kind: KIND.into(),
        name: format!("{}/{}", v.namespace, v.name),
        tunnel_id: Some(v.tunnel_id.clone()),
        tunnel_type: v.tunnel_type,
        local_endpoint: v.local_endpoint,
        customer_endpoint: v.customer_endpoint,
        interface_address: v.interface_address,
        mtu: v.mtu,
        ttl: v.ttl,
        mss_clamp: v.mss_clamp,
        routes: v.routes.clone(),
        health_check: v.health_check,
        gre: v.gre,
        ipsec,
        http: HttpConfig {
            listen: std::net::SocketAddr::from(([0, 0, 0, 0], v.http_port)),
        },
    };
    config.validate().map_err(|e| Invalid {
        reason: "InvalidSpec",
        message: e.to_string(),
    })?;
    Ok(config)
}

/// Hash of everything in the config but the PSK: a change rolls the pods, a PSK rotation does not
/// (the pod re-reads the mounted file for new IKE SAs; established SAs keep their keys).
pub fn config_hash(config: &TunnelConfig) -> String {
    let mut without_key = config.clone();
    if let Some(i) = without_key.ipsec.as_mut() {
        i.psk = None;
    }
    let digest = Sha256::digest(without_key.to_yaml().as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Everything the operator applies for a tunnel.
#[derive(Clone, Debug)]
pub struct Desired {
    pub config_secret: Secret,
    pub pods: Vec<Pod>,
    pub config_hash: String,
}

pub fn desired(
    v: &ValidatedTunnel,
    owner: &OwnerReference,
    psk: Option<&Psk>,
    settings: &Settings,
) -> Result<Desired, Invalid> {
    let config = tunnel_config(v, psk)?;
    let hash = config_hash(&config);
    let yaml = zeroize::Zeroizing::new(config.to_yaml());
    let config_secret = Secret {
        metadata: ObjectMeta {
            name: Some(config_secret_name(&v.name)),
            namespace: Some(v.namespace.clone()),
            labels: Some(labels(&v.name)),
            annotations: Some(BTreeMap::from([(
                CONFIG_HASH_ANNOTATION.into(),
                hash.clone(),
            )])),
            owner_references: Some(vec![owner.clone()]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            CONFIG_KEY.to_string(),
            ByteString(yaml.as_bytes().to_vec()),
        )])),
        ..Default::default()
    };
    let pods = (0..v.replicas)
        .map(|i| pod(v, i, owner, &hash, settings))
        .collect();
    Ok(Desired {
        config_secret,
        pods,
        config_hash: hash,
    })
}

/// The owned Secret holding a generated PSK.
pub fn generated_psk_secret(
    v: &ValidatedTunnel,
    owner: &OwnerReference,
    psk: &Psk,
    now_rfc3339: &str,
    rotation: Option<&str>,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(psk::generated_secret_name(&v.name)),
            namespace: Some(v.namespace.clone()),
            labels: Some(labels(&v.name)),
            annotations: Some(psk::generated_annotations(now_rfc3339, rotation)),
            owner_references: Some(vec![owner.clone()]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(psk::secret_data(psk)),
        ..Default::default()
    }
}

fn port(name: &str, number: i32, protocol: &str, host_ip: Option<String>) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: number,
        // On the host network the host port is the container port; declaring it lets the
        // scheduler keep two pods that need the same port off the same node.
        host_port: Some(number),
        host_ip,
        protocol: Some(protocol.into()),
    }
}

fn http_probe(path: &str, port: u16, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(i32::from(port)),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Default::default()
    }
}

fn pod(
    v: &ValidatedTunnel,
    replica: i32,
    owner: &OwnerReference,
    hash: &str,
    settings: &Settings,
) -> Pod {
    let mut pod_labels = labels(&v.name);
    pod_labels.insert(REPLICA_LABEL.into(), replica.to_string());
    let mut ports = vec![port("http", i32::from(v.http_port), "TCP", None)];
    if v.tunnel_type == TunnelType::Ipsec {
        let local = Some(v.local_endpoint.to_string());
        ports.push(port("ike", IKE_PORT, "UDP", local.clone()));
        ports.push(port("nat-t", NAT_T_PORT, "UDP", local));
    }
    let res = &settings.tunnel_resources;
    let container = Container {
        name: "tunnel".into(),
        image: Some(settings.tunnel_image.clone()),
        image_pull_policy: Some(settings.tunnel_image_pull_policy.clone()),
        args: Some(vec![
            "run".into(),
            "--config".into(),
            format!("{CONFIG_DIR}/{CONFIG_KEY}"),
        ]),
        ports: Some(ports),
        readiness_probe: Some(http_probe("/readyz", v.http_port, 5, 3)),
        liveness_probe: Some(http_probe("/healthz", v.http_port, 10, 6)),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), Quantity(res.cpu_request.clone())),
                ("memory".into(), Quantity(res.memory_request.clone())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".into(),
                Quantity(res.memory_limit.clone()),
            )])),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            privileged: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            // Root user, but with every capability dropped except the two the dataplane needs:
            // NET_ADMIN (TUN, addresses, routes) and NET_RAW (GRE raw socket, ICMP probes).
            run_as_user: Some(0),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]),
                drop: Some(vec!["ALL".into()]),
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "config".into(),
                mount_path: CONFIG_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: "tun".into(),
                mount_path: TUN_DEVICE.into(),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let anti_affinity = PodAntiAffinity {
        required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
            label_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(TUNNEL_LABEL.into(), v.name.clone())])),
                ..Default::default()
            }),
            topology_key: "kubernetes.io/hostname".into(),
            ..Default::default()
        }]),
        ..Default::default()
    };
    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(&v.name, replica)),
            namespace: Some(v.namespace.clone()),
            labels: Some(pod_labels),
            annotations: Some(BTreeMap::from([
                (CONFIG_HASH_ANNOTATION.into(), hash.into()),
                ("prometheus.io/scrape".into(), "true".into()),
                ("prometheus.io/port".into(), v.http_port.to_string()),
                ("prometheus.io/path".into(), "/metrics".into()),
            ])),
            owner_references: Some(vec![owner.clone()]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            host_network: Some(true),
            dns_policy: Some("ClusterFirstWithHostNet".into()),
            restart_policy: Some("Always".into()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            termination_grace_period_seconds: Some(10),
            node_selector: (!v.node_selector.is_empty()).then(|| v.node_selector.clone()),
            tolerations: (!v.tolerations.is_empty()).then(|| v.tolerations.clone()),
            affinity: Some(Affinity {
                pod_anti_affinity: Some(anti_affinity),
                ..Default::default()
            }),
            containers: vec![container],
            volumes: Some(vec![
                Volume {
                    name: "config".into(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(config_secret_name(&v.name)),
                        default_mode: Some(0o400),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                Volume {
                    name: "tun".into(),
                    host_path: Some(HostPathVolumeSource {
                        path: TUN_DEVICE.into(),
                        type_: Some("CharDevice".into()),
                    }),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{gre_tunnel, ipsec_tunnel};
    use crate::validate::validate;
    use kube::Resource;

    fn owner(mt: &crate::crd::MagicTunnel) -> OwnerReference {
        mt.controller_owner_ref(&()).expect("owner ref")
    }

    fn built(mt: &crate::crd::MagicTunnel, psk: Option<&Psk>) -> Desired {
        let s = Settings::example();
        let v = validate(mt, &[mt], &s).expect("valid");
        desired(&v, &owner(mt), psk, &s).expect("built")
    }

    fn psk() -> Psk {
        Psk::new(b"0123456789abcdef0123".to_vec())
    }

    #[test]
    fn pod_is_host_network_with_only_net_admin_and_net_raw() {
        let d = built(&gre_tunnel("branch", 1), None);
        assert_eq!(d.pods.len(), 1);
        let pod = &d.pods[0];
        assert_eq!(pod.metadata.name.as_deref(), Some("branch-0"));
        let spec = pod.spec.as_ref().expect("spec");
        assert_eq!(spec.host_network, Some(true));
        assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
        let c = &spec.containers[0];
        let sc = c.security_context.as_ref().expect("security context");
        assert_eq!(sc.privileged, Some(false));
        let caps = sc.capabilities.as_ref().expect("caps");
        assert_eq!(
            caps.add.as_deref(),
            Some(&["NET_ADMIN".to_string(), "NET_RAW".to_string()][..])
        );
        assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
        let mount = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == "config")
            .expect("mount");
        assert_eq!(mount.read_only, Some(true));
        let probe = c
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("probe");
        assert_eq!(probe.path.as_deref(), Some("/readyz"));
        assert!(
            c.resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .is_some()
        );
        // Only the secret volume and the TUN device; no token, no env.
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert!(c.env.is_none());
        let owners = pod.metadata.owner_references.as_ref().expect("owner");
        assert_eq!(owners[0].kind, "MagicTunnel");
        assert_eq!(owners[0].controller, Some(true));
    }

    #[test]
    fn replicas_get_one_pod_per_node() {
        let mut t = gre_tunnel("anycast", 1);
        t.spec.replicas = Some(3);
        let d = built(&t, None);
        let names: Vec<_> = d
            .pods
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        assert_eq!(names, ["anycast-0", "anycast-1", "anycast-2"]);
        let term = d.pods[2]
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|t| t[0].topology_key.clone());
        assert_eq!(term.as_deref(), Some("kubernetes.io/hostname"));
    }

    #[test]
    fn ipsec_pods_reserve_ike_ports_on_the_local_endpoint() {
        let d = built(&ipsec_tunnel("v", 1, None), Some(&psk()));
        let ports = d.pods[0].spec.as_ref().expect("spec").containers[0]
            .ports
            .clone()
            .unwrap_or_default();
        let udp: Vec<_> = ports
            .iter()
            .filter(|p| p.protocol.as_deref() == Some("UDP"))
            .map(|p| (p.host_port, p.host_ip.clone()))
            .collect();
        assert_eq!(
            udp,
            [
                (Some(500), Some("192.0.2.1".to_string())),
                (Some(4500), Some("192.0.2.1".to_string()))
            ]
        );
    }

    #[test]
    fn config_secret_holds_a_config_the_pod_accepts() {
        let d = built(&ipsec_tunnel("v", 1, Some("198.51.100.9")), Some(&psk()));
        let data = d.config_secret.data.as_ref().expect("data");
        let yaml = std::str::from_utf8(&data[CONFIG_KEY].0).expect("utf8");
        let config = TunnelConfig::from_yaml(yaml).expect("the pod accepts it");
        let ipsec = config.ipsec.expect("ipsec");
        assert_eq!(
            ipsec.psk.as_ref().map(Psk::as_bytes),
            Some(&b"0123456789abcdef0123"[..])
        );
        assert_eq!(ipsec.accepted_ids.len(), 4);
        assert_eq!(config.tunnel_id.as_deref().map(str::len), Some(32));
        assert_eq!(config.http.listen.port(), 9180);
    }

    #[test]
    fn ipsec_without_psk_is_refused() {
        let t = ipsec_tunnel("v", 1, None);
        let s = Settings::example();
        let v = validate(&t, &[&t], &s).expect("valid");
        let err = desired(&v, &owner(&t), None, &s).expect_err("no psk");
        assert!(err.message.contains("psk"), "{}", err.message);
    }

    #[test]
    fn hash_follows_the_spec_but_not_the_psk() {
        let t = ipsec_tunnel("v", 1, None);
        let a = built(&t, Some(&psk()));
        let b = built(&t, Some(&Psk::new(b"another-key-of-16+bytes".to_vec())));
        assert_eq!(a.config_hash, b.config_hash);
        let mut changed = t.clone();
        changed.spec.mtu = Some(1300);
        let c = built(&changed, Some(&psk()));
        assert_ne!(a.config_hash, c.config_hash);
        let annotation = |p: &Pod| {
            p.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(CONFIG_HASH_ANNOTATION).cloned())
        };
        assert_eq!(annotation(&c.pods[0]), Some(c.config_hash.clone()));
    }

    #[test]
    fn mss_beyond_the_default_mtu_is_reported() {
        // CEL can only compare with an explicit mtu; the default (1476) is checked here.
        let mut t = gre_tunnel("g", 1);
        t.spec.mss_clamp = Some(magictunnel_types::config::MssClamp {
            mode: magictunnel_types::config::MssClampMode::Fixed,
            value: Some(1450),
        });
        let s = Settings::example();
        let v = validate(&t, &[&t], &s).expect("valid");
        let err = desired(&v, &owner(&t), None, &s).expect_err("mss too large");
        assert_eq!(err.reason, "InvalidSpec");
        assert!(err.message.contains("mssClamp.value"), "{}", err.message);
    }
}
