//! Desired objects of a validated tunnel, built without any API call: the TunnelConfig, the config
//! Secret that carries it, the generated PSK Secret, and the endpoint pods.
//!
//! The PSK never enters the TunnelConfig or the config Secret: each IPsec pod mounts the PSK
//! Secret (generated or adopted) as a volume of its own, and the TunnelConfig names the file
//! (`ipsec.pskFile`). The pod reads that file for each new IKE SA, so a rotated Secret reaches it
//! when the kubelet refreshes the volume, with no restart.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    HostPathVolumeSource, KeyToPath, ObjectFieldSelector, PodAffinityTerm, PodAntiAffinity,
    PodSpec, Probe, ResourceRequirements, SeccompProfile, Secret, SecretVolumeSource,
    SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use magictunnel_types::config::{
    API_VERSION, HttpConfig, IpsecConfig, KIND, MAX_PSK_BYTES, MIN_PSK_LEN, Psk, TunnelConfig,
    TunnelType,
};
use sha2::{Digest, Sha256};

use crate::psk;
use crate::reason::Reason;
use crate::settings::Settings;
use crate::validate::{Invalid, PskSource, ValidatedTunnel};

pub const FIELD_MANAGER: &str = "magictunnel-operator";
pub const TUNNEL_LABEL: &str = "magictunnel.dev/tunnel";
pub const REPLICA_LABEL: &str = "magictunnel.dev/replica";
pub const MANAGED_BY: &str = "magictunnel-operator";
pub const CONFIG_HASH_ANNOTATION: &str = "magictunnel.dev/config-hash";
/// On the config Secret: the tunnel generation its config was built from. The Secret is written
/// only with a deployable config, so this is the generation of the last good config.
pub const GENERATION_ANNOTATION: &str = "magictunnel.dev/generation";
pub const CONFIG_KEY: &str = "tunnel.yaml";
pub const CONFIG_DIR: &str = "/etc/magictunnel";
/// Where an IPsec pod mounts its PSK Secret. Beside the config, not inside it: a mount point
/// under a read-only Secret volume must be pre-created by the kubelet, which not every runtime
/// (e.g. Kata) copes with.
pub const PSK_DIR: &str = "/etc/magictunnel-psk";
/// The file name of the PSK in [`PSK_DIR`], whatever the Secret's key is called.
pub const PSK_FILE_NAME: &str = "psk";
pub const PSK_VOLUME: &str = "psk";
pub const TUN_DEVICE: &str = "/dev/net/tun";
/// The environment variable a sync replica finds its identity (its pod name) in.
pub const POD_NAME_ENV: &str = "POD_NAME";

pub fn config_secret_name(tunnel: &str) -> String {
    format!("{tunnel}-config")
}

/// The PSK file as the pod sees it; the TunnelConfig's `ipsec.pskFile`.
pub fn psk_file_path() -> String {
    format!("{PSK_DIR}/{PSK_FILE_NAME}")
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

/// The Secret key an IPsec tunnel's pods mount as the PSK file; `None` for GRE.
fn psk_source(v: &ValidatedTunnel) -> Option<&PskSource> {
    match (&v.ipsec, v.tunnel_type) {
        (Some(i), TunnelType::Ipsec) => Some(&i.psk),
        _ => None,
    }
}

/// The TunnelConfig the pod runs, checked with the same rules the pod applies on start. It names
/// the mounted PSK file and holds no key.
pub fn tunnel_config(v: &ValidatedTunnel) -> Result<TunnelConfig, Invalid> {
    let ipsec = match (&v.ipsec, v.tunnel_type) {
        (Some(i), TunnelType::Ipsec) => Some(IpsecConfig {
            psk: None,
            psk_file: Some(psk_file_path().into()),
            accepted_ids: i.identities.accepted(&i.accepted_id_types),
            local_id: i.local_id.clone(),
            replay_protection: i.replay_protection,
            replay_window: magictunnel_types::config::DEFAULT_REPLAY_WINDOW,
            allow_null_cipher: i.allow_null_cipher,
            proposals: i.proposals.clone(),
            lifetimes: i.lifetimes,
            static_sa: None,
            initiate: i.initiate,
            // Anycast replicas share their SAs through `<tunnel>-sa` (crate::sync_objects).
            sync: crate::sync_objects::sa_sync(v),
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
        replicas: sender_slots(v),
    };
    config.validate().map_err(|e| Invalid {
        reason: Reason::InvalidSpec,
        message: e.to_string(),
    })?;
    Ok(config)
}

/// The TunnelConfig's `replicas`: how many replicas send on one SA (each in its own slot of
/// the IV and sequence spaces). The spec's replicas for IPsec; 1 for GRE, which has no SA.
fn sender_slots(v: &ValidatedTunnel) -> u8 {
    match v.tunnel_type {
        TunnelType::Ipsec => u8::try_from(v.replicas.max(1)).unwrap_or(u8::MAX),
        TunnelType::Gre => 1,
    }
}

/// Hash of what a pod is started with: the config (which holds no key) and which Secret key is
/// mounted as the PSK. A change rolls the pods (pod volumes are immutable, so another Secret
/// needs a new pod); a PSK rotation changes neither and rolls nothing: the kubelet refreshes the
/// mounted file and the pod reads it for its next new IKE SA (established SAs keep their keys).
pub fn config_hash(config: &TunnelConfig, psk: Option<&PskSource>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(config.to_yaml().as_bytes());
    if let Some(source) = psk {
        // Separated so that no config text can imitate these fields.
        for part in [source.secret_name(), source.key()] {
            hasher.update([0u8]);
            hasher.update(part.as_bytes());
        }
    }
    let digest = hasher.finalize();
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// NET_ADMIN (TUN, addresses, routes) and NET_RAW (GRE raw socket, ICMP probes) for every tunnel;
/// IPsec also NET_BIND_SERVICE: IKE listens on UDP 500 (RFC 7296 §2), below the host's
/// unprivileged port range, and a hostNetwork pod cannot lower `ip_unprivileged_port_start`.
pub fn capabilities(tunnel_type: TunnelType) -> Vec<String> {
    let mut caps = vec!["NET_ADMIN".to_string(), "NET_RAW".to_string()];
    if tunnel_type == TunnelType::Ipsec {
        caps.push("NET_BIND_SERVICE".into());
    }
    caps
}

/// Everything the operator applies for a tunnel.
#[derive(Clone, Debug)]
pub struct Desired {
    pub config_secret: Secret,
    pub pods: Vec<Pod>,
    pub config_hash: String,
    /// The objects through which the replicas share their SAs; `None` unless IPsec with two
    /// replicas or more.
    pub sync: Option<crate::sync_objects::SyncObjects>,
}

impl Desired {
    /// Record on the config Secret the tunnel generation this was built from.
    pub fn with_generation(mut self, generation: Option<i64>) -> Self {
        if let Some(g) = generation {
            self.config_secret
                .metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(GENERATION_ANNOTATION.into(), g.to_string());
        }
        self
    }
}

/// What a config Secret's annotations say about the last good config.
pub fn last_good(annotations: Option<&BTreeMap<String, String>>) -> crate::rollout::LastGood<'_> {
    let get = |k: &str| annotations.and_then(|a| a.get(k)).map(String::as_str);
    crate::rollout::LastGood {
        generation: get(GENERATION_ANNOTATION).and_then(|g| g.parse().ok()),
        config_hash: get(CONFIG_HASH_ANNOTATION),
    }
}

/// The objects of a tunnel. `psk` is the key the operator read from the PSK Secret and checked
/// ([`crate::psk::read`]): an IPsec tunnel is only built with one, so no pod is started against a
/// missing or weak key. It is not written anywhere: the pod mounts the Secret itself.
pub fn desired(
    v: &ValidatedTunnel,
    owner: &OwnerReference,
    psk: Option<&Psk>,
    settings: &Settings,
) -> Result<Desired, Invalid> {
    let psk_source = psk_source(v);
    if psk_source.is_some() {
        match psk.map(Psk::len) {
            None => {
                return Err(Invalid {
                    reason: Reason::InvalidSpec,
                    message: "ipsec.psk: an IPsec tunnel needs a checked PSK".into(),
                });
            }
            Some(len) if !(MIN_PSK_LEN..=MAX_PSK_BYTES).contains(&len) => {
                return Err(Invalid {
                    reason: Reason::InvalidSpec,
                    message: format!(
                        "ipsec.psk: {len} bytes, {MIN_PSK_LEN} to {MAX_PSK_BYTES} are required"
                    ),
                });
            }
            Some(_) => {}
        }
    }
    let config = tunnel_config(v)?;
    let hash = config_hash(&config, psk_source);
    let yaml = config.to_yaml();
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
        sync: crate::sync_objects::build(v, owner),
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

/// The one port a pod declares: its HTTP port, distinct per tunnel (see
/// [`crate::index::assign_ports`]). On the host network the host port is the container port;
/// declaring it lets the scheduler keep two pods that need the same port off the same node
/// (tunnels that share the base port once the range is exhausted). IKE's UDP 500 and 4500 are
/// not declared: every IPsec pod on a node shares them on its local endpoint (SO_REUSEPORT,
/// each socket connected to its own peer), and a declared host port would let only one such
/// pod per endpoint address onto a node.
fn port(name: &str, number: i32, protocol: &str) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: number,
        host_port: Some(number),
        host_ip: None,
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
    let ports = vec![port("http", i32::from(v.http_port), "TCP")];
    let mut mounts = vec![
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
    ];
    let mut volumes = vec![
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
    ];
    if let Some(source) = psk_source(v) {
        // The whole directory is mounted, never one file by subPath: the kubelet refreshes a
        // Secret volume by swapping its `..data` symlink, and a subPath mount is pinned to the
        // file it resolved at start and never sees a rotation. `items` only renames the key.
        mounts.push(VolumeMount {
            name: PSK_VOLUME.into(),
            mount_path: PSK_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
        volumes.push(Volume {
            name: PSK_VOLUME.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(source.secret_name().into()),
                items: Some(vec![KeyToPath {
                    key: source.key().into(),
                    path: PSK_FILE_NAME.into(),
                    ..Default::default()
                }]),
                default_mode: Some(0o400),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let sync = crate::sync_objects::applies(v);
    let mut args = vec![
        "run".to_string(),
        "--config".into(),
        format!("{CONFIG_DIR}/{CONFIG_KEY}"),
    ];
    // A sync replica sends in its own slot (the replica index of its name) and names itself
    // by its pod name in the shared state.
    let env = sync.then(|| {
        args.extend(["--replica".into(), replica.to_string()]);
        vec![EnvVar {
            name: POD_NAME_ENV.into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    api_version: None,
                }),
                ..Default::default()
            }),
            value: None,
        }]
    });
    let res = &settings.tunnel_resources;
    let container = Container {
        name: "tunnel".into(),
        image: Some(settings.tunnel_image.clone()),
        image_pull_policy: Some(settings.tunnel_image_pull_policy.clone()),
        args: Some(args),
        env,
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
            // Root user, but with every capability dropped except those the dataplane needs.
            run_as_user: Some(0),
            capabilities: Some(Capabilities {
                add: Some(capabilities(v.tunnel_type)),
                drop: Some(vec!["ALL".into()]),
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
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
            // Only a sync replica talks to the API server (its one Secret); every other pod
            // runs without a token.
            service_account_name: sync.then(|| crate::sync_objects::service_account_name(&v.name)),
            automount_service_account_token: Some(sync),
            enable_service_links: Some(false),
            termination_grace_period_seconds: Some(10),
            node_selector: (!v.node_selector.is_empty()).then(|| v.node_selector.clone()),
            tolerations: (!v.tolerations.is_empty()).then(|| v.tolerations.clone()),
            affinity: Some(Affinity {
                pod_anti_affinity: Some(anti_affinity),
                ..Default::default()
            }),
            containers: vec![container],
            volumes: Some(volumes),
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{gre_tunnel, ipsec_tunnel};
    use crate::index::TunnelIndex;
    use crate::validate::validate;
    use base64::Engine as _;
    use kube::Resource;

    fn owner(mt: &crate::crd::MagicTunnel) -> OwnerReference {
        mt.controller_owner_ref(&()).expect("owner ref")
    }

    fn built(mt: &crate::crd::MagicTunnel, psk: Option<&Psk>) -> Desired {
        let s = Settings::example();
        let v = validate(mt, &TunnelIndex::of([mt], &s), &s).expect("valid");
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
    fn ipsec_pods_declare_no_ike_ports() {
        let s = Settings::example();
        let a = ipsec_tunnel("a", 1, Some("198.51.100.9"));
        let b = ipsec_tunnel("b", 2, Some("198.51.100.10"));
        let index = TunnelIndex::of([&a, &b], &s);
        let ports_of = |t: &crate::crd::MagicTunnel| {
            let v = validate(t, &index, &s).expect("valid");
            let d = desired(&v, &owner(t), Some(&psk()), &s).expect("built");
            d.pods[0].spec.as_ref().expect("spec").containers[0]
                .ports
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|p| (p.protocol, p.container_port, p.host_port, p.host_ip))
                .collect::<Vec<_>>()
        };
        // Only the HTTP port, distinct per tunnel: two IPsec pods on one local endpoint fit on
        // one node (the API server would default a UDP 500 hostPort to the container port).
        let tcp = |port: i32| (Some("TCP".to_string()), port, Some(port), None);
        assert_eq!(ports_of(&a), [tcp(9180)]);
        assert_eq!(ports_of(&b), [tcp(9181)]);
        let d = built(&ipsec_tunnel("v", 1, None), Some(&psk()));
        // IKE's port 500 is privileged; GRE pods do not get the capability.
        let caps = d.pods[0].spec.as_ref().expect("spec").containers[0]
            .security_context
            .as_ref()
            .and_then(|sc| sc.capabilities.as_ref())
            .and_then(|c| c.add.clone())
            .unwrap_or_default();
        assert_eq!(caps, ["NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE"]);
    }

    fn adopting(name: &str, secret: &str, key: Option<&str>) -> crate::crd::MagicTunnel {
        let mut t = ipsec_tunnel(name, 1, None);
        t.spec.ipsec = Some(crate::crd::IpsecSpec {
            psk_secret_ref: Some(crate::crd::SecretKeyRef {
                name: secret.into(),
                key: key.map(str::to_string),
            }),
            ..Default::default()
        });
        t
    }

    /// The PSK volume and its mount in the tunnel container, if any.
    fn psk_mount(pod: &Pod) -> Option<(SecretVolumeSource, VolumeMount)> {
        let spec = pod.spec.as_ref()?;
        let volume = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == PSK_VOLUME)?;
        let mount = spec.containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == PSK_VOLUME)?;
        Some((volume.secret.clone()?, mount.clone()))
    }

    fn config_of(d: &Desired) -> TunnelConfig {
        let data = d.config_secret.data.as_ref().expect("data");
        let yaml = std::str::from_utf8(&data[CONFIG_KEY].0).expect("utf8");
        TunnelConfig::from_yaml(yaml).expect("the pod accepts it")
    }

    /// Checks a PSK volume: the named Secret key as the file `psk`, read-only for the owner,
    /// mounted as a directory (no subPath) where the TunnelConfig's pskFile points.
    fn assert_psk_volume(d: &Desired, secret: &str, key: &str) {
        for pod in &d.pods {
            let (volume, mount) = psk_mount(pod).expect("a PSK volume");
            assert_eq!(volume.secret_name.as_deref(), Some(secret));
            assert_eq!(volume.default_mode, Some(0o400));
            let items = volume.items.expect("items");
            assert_eq!(items.len(), 1);
            assert_eq!(items[0].key, key);
            assert_eq!(items[0].path, PSK_FILE_NAME);
            assert_eq!(items[0].mode, None);
            assert_eq!(volume.optional, None, "the pod must wait for the Secret");
            assert_eq!(mount.read_only, Some(true));
            assert_eq!(mount.sub_path, None, "a subPath mount is never refreshed");
            assert_eq!(mount.sub_path_expr, None);
            let file = std::path::Path::new(&mount.mount_path).join(&items[0].path);
            let config = config_of(d);
            let ipsec = config.ipsec.expect("ipsec");
            assert_eq!(ipsec.psk_file.as_deref(), Some(file.as_path()));
            assert!(ipsec.psk.is_none(), "the key is never inline");
        }
    }

    #[test]
    fn generated_psk_secret_is_mounted_as_the_psk_file() {
        let mut t = ipsec_tunnel("v", 1, None);
        t.spec.replicas = Some(2);
        let d = built(&t, Some(&psk()));
        assert_eq!(d.pods.len(), 2);
        assert_psk_volume(&d, "v-psk", "psk");
        assert_eq!(psk_file_path(), "/etc/magictunnel-psk/psk");
    }

    #[test]
    fn adopted_psk_secret_is_mounted_under_its_own_key() {
        assert_psk_volume(
            &built(
                &adopting("corp", "corp-keys", Some("ike-key")),
                Some(&psk()),
            ),
            "corp-keys",
            "ike-key",
        );
        assert_psk_volume(
            &built(&adopting("corp", "corp-keys", None), Some(&psk())),
            "corp-keys",
            "psk",
        );
    }

    #[test]
    fn gre_pods_mount_no_psk() {
        let d = built(&gre_tunnel("g", 1), None);
        assert!(psk_mount(&d.pods[0]).is_none());
        let volumes = d.pods[0]
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .map(Vec::len);
        assert_eq!(volumes, Some(2));
    }

    #[test]
    fn the_config_secret_holds_no_key() {
        // Distinctive bytes, so a match cannot be a coincidence.
        let key = b"Zq8-psk-must-not-leak-7Yw";
        let d = built(
            &ipsec_tunnel("v", 1, Some("198.51.100.9")),
            Some(&Psk::new(key.to_vec())),
        );
        let encoded = base64::engine::general_purpose::STANDARD.encode(key);
        let encoded_url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key);
        let rendered = [
            serde_json::to_vec(&d.config_secret).expect("json"),
            serde_yaml::to_string(&d.config_secret)
                .expect("yaml")
                .into_bytes(),
            d.config_secret.data.as_ref().expect("data")[CONFIG_KEY]
                .0
                .clone(),
            serde_json::to_vec(&d.pods).expect("pods"),
        ];
        for bytes in &rendered {
            for needle in [&key[..], encoded.as_bytes(), encoded_url.as_bytes()] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "the PSK appears in a rendered object"
                );
            }
        }
        // The search can find it: the rendered bytes do hold the rest of the config.
        assert!(rendered[2].windows(9).any(|w| w == b"pskFile: "));
    }

    #[test]
    fn config_secret_holds_a_config_the_pod_accepts() {
        let d = built(&ipsec_tunnel("v", 1, Some("198.51.100.9")), Some(&psk()));
        let config = config_of(&d);
        let ipsec = config.clone().ipsec.expect("ipsec");
        assert!(ipsec.psk.is_none());
        assert_eq!(
            ipsec.psk_file.as_deref(),
            Some(std::path::Path::new("/etc/magictunnel-psk/psk"))
        );
        assert_eq!(ipsec.accepted_ids.len(), 4);
        assert_eq!(config.tunnel_id.as_deref().map(str::len), Some(32));
        assert_eq!(config.http.listen.port(), 9180);
    }

    #[test]
    fn initiate_reaches_the_pods_config_and_needs_the_customer_endpoint() {
        let initiator = |customer: Option<&str>| {
            let mut t = ipsec_tunnel("v", 1, customer);
            if let Some(i) = t.spec.ipsec.as_mut() {
                i.initiate = Some(true);
            }
            t
        };
        let d = built(&initiator(Some("198.51.100.9")), Some(&psk()));
        assert!(config_of(&d).ipsec.expect("ipsec").initiate);
        let responder = built(&ipsec_tunnel("v", 1, Some("198.51.100.9")), Some(&psk()));
        assert!(!config_of(&responder).ipsec.expect("ipsec").initiate);
        assert_ne!(
            d.config_hash, responder.config_hash,
            "a change rolls the pods"
        );
        // The CEL rule refuses this at the API server; the pure path refuses it too.
        let t = initiator(None);
        let s = Settings::example();
        let v = validate(&t, &TunnelIndex::of([&t], &s), &s).expect("valid");
        assert!(v.ipsec.as_ref().is_some_and(|i| i.initiate));
        let err = desired(&v, &owner(&t), Some(&psk()), &s).expect_err("no customer endpoint");
        assert_eq!(err.reason, Reason::InvalidSpec);
        assert!(err.message.contains("customerEndpoint"), "{}", err.message);
    }

    #[test]
    fn ipsec_without_psk_is_refused() {
        let t = ipsec_tunnel("v", 1, None);
        let s = Settings::example();
        let v = validate(&t, &TunnelIndex::of([&t], &s), &s).expect("valid");
        let err = desired(&v, &owner(&t), None, &s).expect_err("no psk");
        assert!(err.message.contains("psk"), "{}", err.message);
        let weak = Psk::new(b"short".to_vec());
        let err = desired(&v, &owner(&t), Some(&weak), &s).expect_err("weak psk");
        assert!(err.message.contains("5 bytes"), "{}", err.message);
        assert!(!err.message.contains("short"), "{}", err.message);
    }

    #[test]
    fn the_config_secret_records_the_generation_of_the_last_good_config() {
        let d = built(&gre_tunnel("t", 1), None).with_generation(Some(6));
        let lg = last_good(d.config_secret.metadata.annotations.as_ref());
        assert_eq!(lg.generation, Some(6));
        assert_eq!(lg.config_hash, Some(d.config_hash.as_str()));
        let unrecorded = built(&gre_tunnel("t", 1), None).with_generation(None);
        assert_eq!(
            last_good(unrecorded.config_secret.metadata.annotations.as_ref()).generation,
            None
        );
    }

    #[test]
    fn hash_follows_the_spec_but_not_the_psk() {
        let t = ipsec_tunnel("v", 1, None);
        let a = built(&t, Some(&psk()));
        let b = built(&t, Some(&Psk::new(b"another-key-of-16+bytes".to_vec())));
        assert_eq!(a.config_hash, b.config_hash);
        assert_eq!(a.pods, b.pods, "a rotation changes no pod");
        assert_eq!(a.config_secret, b.config_secret, "nor the config Secret");
        // Another Secret or key needs another volume, hence new pods.
        let adopted = built(&adopting("v", "corp-keys", None), Some(&psk()));
        let other_key = built(&adopting("v", "corp-keys", Some("k2")), Some(&psk()));
        let other_secret = built(&adopting("v", "corp-keys-2", None), Some(&psk()));
        assert_eq!(config_of(&a), config_of(&adopted), "same config file");
        assert_ne!(a.config_hash, adopted.config_hash);
        assert_ne!(adopted.config_hash, other_key.config_hash);
        assert_ne!(adopted.config_hash, other_secret.config_hash);
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

    fn env_of(pod: &Pod) -> Vec<k8s_openapi::api::core::v1::EnvVar> {
        pod.spec.as_ref().expect("spec").containers[0]
            .env
            .clone()
            .unwrap_or_default()
    }

    #[test]
    fn replicas_that_share_sas_get_their_account_token_identity_and_slot() {
        let mut t = ipsec_tunnel("edge", 1, Some("198.51.100.9"));
        t.spec.replicas = Some(3);
        let d = built(&t, Some(&psk()));
        assert!(d.sync.is_some());
        for (i, pod) in d.pods.iter().enumerate() {
            let spec = pod.spec.as_ref().expect("spec");
            assert_eq!(
                spec.service_account_name.as_deref(),
                Some("edge-tunnel-pod")
            );
            assert_eq!(spec.automount_service_account_token, Some(true));
            let env = env_of(pod);
            assert_eq!(env.len(), 1);
            assert_eq!(env[0].name, "POD_NAME");
            assert!(env[0].value.is_none());
            let field = env[0]
                .value_from
                .as_ref()
                .and_then(|v| v.field_ref.as_ref())
                .map(|f| f.field_path.as_str());
            assert_eq!(field, Some("metadata.name"));
            let args = spec.containers[0].args.clone().unwrap_or_default();
            assert_eq!(
                args,
                [
                    "run",
                    "--config",
                    "/etc/magictunnel/tunnel.yaml",
                    "--replica",
                    &i.to_string()
                ]
            );
            // The slot is the index of the pod's name and replica label.
            assert_eq!(pod.metadata.name, Some(format!("edge-{i}")));
            assert_eq!(
                pod.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(REPLICA_LABEL)),
                Some(&i.to_string())
            );
        }
        let config = config_of(&d);
        assert_eq!(config.replicas, 3);
        let sync = config.ipsec.expect("ipsec").sync.expect("sync");
        assert_eq!(sync.namespace, "default");
        assert_eq!(sync.secret, "edge-sa");
        // Sharing changes the config, hence the pods.
        t.spec.replicas = Some(1);
        let single = built(&t, Some(&psk()));
        assert!(single.sync.is_none());
        assert_ne!(single.config_hash, d.config_hash);
        let config = config_of(&single);
        assert_eq!(config.replicas, 1);
        assert!(config.ipsec.expect("ipsec").sync.is_none());
        t.spec.replicas = Some(2);
        assert_ne!(built(&t, Some(&psk())).config_hash, d.config_hash);
    }

    #[test]
    fn other_pods_stay_token_free() {
        let mut gre = gre_tunnel("g", 1);
        gre.spec.replicas = Some(3);
        let single = ipsec_tunnel("v", 2, None);
        for d in [built(&gre, None), built(&single, Some(&psk()))] {
            assert!(d.sync.is_none());
            assert_eq!(config_of(&d).replicas, 1);
            for pod in &d.pods {
                let spec = pod.spec.as_ref().expect("spec");
                assert_eq!(spec.automount_service_account_token, Some(false));
                assert!(spec.service_account_name.is_none());
                assert!(env_of(pod).is_empty());
                let args = spec.containers[0].args.clone().unwrap_or_default();
                assert!(!args.iter().any(|a| a == "--replica"), "{args:?}");
            }
        }
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
        let v = validate(&t, &TunnelIndex::of([&t], &s), &s).expect("valid");
        let err = desired(&v, &owner(&t), None, &s).expect_err("mss too large");
        assert_eq!(err.reason, Reason::InvalidSpec);
        assert!(err.message.contains("mssClamp.value"), "{}", err.message);
    }
}
