//! The objects through which the replicas of an anycast IPsec tunnel share their SAs (issue
//! #11), built without any API call:
//!
//! - the ServiceAccount `<tunnel>-tunnel-pod`, the identity of the tunnel's pods;
//! - the Role and RoleBinding `<tunnel>-sa-sync`, granting that ServiceAccount exactly get, watch
//!   and update of one Secret, and nothing else;
//! - that Secret, `<tunnel>-sa` (type `magictunnel.dev/sa-state`), created empty: only the
//!   tunnel's pods write its data (`state.json`, `summary.json`, `acks.json`); the operator
//!   never overwrites it and reads only `summary.json` and `acks.json` ([`crate::sa_state`]).
//!
//! They exist for an IPsec tunnel with two replicas or more that negotiates its SAs with IKE
//! (the operator never builds static SAs, which are in every replica's config already). Every
//! other tunnel has none of them, and its pods no ServiceAccount token.

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use magictunnel_types::config::{SaSync, TunnelType};

use crate::build::labels;
use crate::validate::ValidatedTunnel;

/// The type of the SA-state Secret: it marks the Secret as the tunnel pods' store, not a PSK.
pub const SA_STATE_TYPE: &str = "magictunnel.dev/sa-state";
/// The verbs the tunnel pods hold on their one Secret: read it, follow it, write it with the
/// resourceVersion they read (optimistic concurrency). No list, create or delete.
pub const POD_VERBS: [&str; 3] = ["get", "watch", "update"];

/// The ServiceAccount of an anycast IPsec tunnel's pods.
pub fn service_account_name(tunnel: &str) -> String {
    format!("{tunnel}-tunnel-pod")
}

/// The Role and the RoleBinding that let the pods use the SA-state Secret.
pub fn role_name(tunnel: &str) -> String {
    format!("{tunnel}-sa-sync")
}

/// The Secret the replicas share their SA state through.
pub fn sa_secret_name(tunnel: &str) -> String {
    format!("{tunnel}-sa")
}

/// Whether the replicas of `v` share their SAs: IPsec (always with IKE when built by the
/// operator: it sets no `staticSa`) with at least two replicas.
pub fn applies(v: &ValidatedTunnel) -> bool {
    v.tunnel_type == TunnelType::Ipsec && v.ipsec.is_some() && v.replicas >= 2
}

/// The TunnelConfig's `ipsec.sync` of `v`, if its replicas share SAs.
pub fn sa_sync(v: &ValidatedTunnel) -> Option<SaSync> {
    applies(v).then(|| SaSync {
        namespace: v.namespace.clone(),
        secret: sa_secret_name(&v.name),
    })
}

/// The objects of one tunnel whose replicas share SAs.
#[derive(Clone, Debug, PartialEq)]
pub struct SyncObjects {
    pub service_account: ServiceAccount,
    pub role: Role,
    pub role_binding: RoleBinding,
    /// Created if absent, never written afterwards.
    pub secret: Secret,
}

fn meta(v: &ValidatedTunnel, name: String, owner: &OwnerReference) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(v.namespace.clone()),
        labels: Some(labels(&v.name)),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    }
}

/// The one rule of the pods' Role: get, watch and update of the tunnel's SA-state Secret.
pub fn pod_rule(tunnel: &str) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["secrets".into()]),
        resource_names: Some(vec![sa_secret_name(tunnel)]),
        verbs: POD_VERBS.iter().map(|v| (*v).to_string()).collect(),
        non_resource_urls: None,
    }
}

/// The sync objects of `v`; `None` when its replicas do not share SAs.
pub fn build(v: &ValidatedTunnel, owner: &OwnerReference) -> Option<SyncObjects> {
    if !applies(v) {
        return None;
    }
    let sa = service_account_name(&v.name);
    let role = role_name(&v.name);
    Some(SyncObjects {
        service_account: ServiceAccount {
            metadata: meta(v, sa.clone(), owner),
            // The pods ask for their token themselves (automountServiceAccountToken on the
            // pod); nothing else in the namespace gets one through this account.
            automount_service_account_token: Some(false),
            ..Default::default()
        },
        role: Role {
            metadata: meta(v, role.clone(), owner),
            rules: Some(vec![pod_rule(&v.name)]),
        },
        role_binding: RoleBinding {
            metadata: meta(v, role.clone(), owner),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "Role".into(),
                name: role,
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: sa,
                namespace: Some(v.namespace.clone()),
                api_group: None,
            }]),
        },
        secret: Secret {
            metadata: meta(v, sa_secret_name(&v.name), owner),
            type_: Some(SA_STATE_TYPE.into()),
            data: None,
            ..Default::default()
        },
    })
}

/// Whether an existing Secret named `<tunnel>-sa` is this tunnel's SA-state Secret: of the
/// SA-state type and controlled by the tunnel (`owner_uid`). Any other Secret of that name is
/// left alone, and the tunnel's pods are not given access to it.
pub fn is_ours(secret_meta: &ObjectMeta, type_: Option<&str>, owner_uid: &str) -> bool {
    type_ == Some(SA_STATE_TYPE)
        && secret_meta
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.uid == owner_uid && o.controller == Some(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{gre_tunnel, ipsec_tunnel};
    use crate::index::TunnelIndex;
    use crate::settings::Settings;
    use crate::validate::validate;
    use kube::Resource;

    fn validated(mt: &crate::crd::MagicTunnel) -> ValidatedTunnel {
        let s = Settings::example();
        validate(mt, &TunnelIndex::of([mt], &s), &s).expect("valid")
    }

    fn ipsec(replicas: Option<i32>) -> crate::crd::MagicTunnel {
        let mut t = ipsec_tunnel("edge", 1, Some("198.51.100.9"));
        t.spec.replicas = replicas;
        t
    }

    fn objects(mt: &crate::crd::MagicTunnel) -> Option<SyncObjects> {
        let owner = mt.controller_owner_ref(&()).expect("owner");
        build(&validated(mt), &owner)
    }

    #[test]
    fn the_role_grants_exactly_get_watch_update_of_the_one_secret() {
        let o = objects(&ipsec(Some(2))).expect("sync objects");
        let rules = o.role.rules.expect("rules");
        assert_eq!(rules.len(), 1);
        let r = &rules[0];
        assert_eq!(r.api_groups.as_deref(), Some(&[String::new()][..]));
        assert_eq!(r.resources.as_deref(), Some(&["secrets".to_string()][..]));
        assert_eq!(
            r.resource_names.as_deref(),
            Some(&["edge-sa".to_string()][..])
        );
        assert_eq!(r.verbs, ["get", "watch", "update"]);
        assert!(r.non_resource_urls.is_none());
        assert_eq!(o.role.metadata.name.as_deref(), Some("edge-sa-sync"));
    }

    #[test]
    fn the_binding_names_the_role_and_the_pods_service_account() {
        let o = objects(&ipsec(Some(3))).expect("sync objects");
        let b = &o.role_binding;
        assert_eq!(b.metadata.name.as_deref(), Some("edge-sa-sync"));
        assert_eq!(b.role_ref.kind, "Role");
        assert_eq!(b.role_ref.name, "edge-sa-sync");
        assert_eq!(
            b.role_ref.api_group.as_deref(),
            Some("rbac.authorization.k8s.io")
        );
        let subjects = b.subjects.as_ref().expect("subjects");
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0].kind, "ServiceAccount");
        assert_eq!(subjects[0].name, "edge-tunnel-pod");
        assert_eq!(subjects[0].namespace.as_deref(), Some("default"));
        assert_eq!(
            o.service_account.metadata.name.as_deref(),
            Some("edge-tunnel-pod")
        );
        assert_eq!(
            o.service_account.automount_service_account_token,
            Some(false)
        );
    }

    #[test]
    fn the_secret_is_empty_typed_and_every_object_owned_and_labelled() {
        let mt = ipsec(Some(2));
        let o = objects(&mt).expect("sync objects");
        assert_eq!(o.secret.metadata.name.as_deref(), Some("edge-sa"));
        assert_eq!(o.secret.type_.as_deref(), Some(SA_STATE_TYPE));
        assert!(o.secret.data.is_none() && o.secret.string_data.is_none());
        let metas = [
            &o.service_account.metadata,
            &o.role.metadata,
            &o.role_binding.metadata,
            &o.secret.metadata,
        ];
        for m in metas {
            let owners = m.owner_references.as_ref().expect("owner");
            assert_eq!(owners.len(), 1);
            assert_eq!(owners[0].kind, "MagicTunnel");
            assert_eq!(owners[0].uid, mt.metadata.uid.clone().unwrap_or_default());
            assert_eq!(owners[0].controller, Some(true));
            assert_eq!(m.labels.as_ref(), Some(&labels("edge")));
            assert_eq!(m.namespace.as_deref(), Some("default"));
        }
        assert!(is_ours(
            &o.secret.metadata,
            o.secret.type_.as_deref(),
            mt.metadata.uid.as_deref().unwrap_or_default()
        ));
        assert!(!is_ours(&o.secret.metadata, Some("Opaque"), "x"));
        assert!(!is_ours(
            &o.secret.metadata,
            Some(SA_STATE_TYPE),
            "another-uid"
        ));
    }

    #[test]
    fn no_objects_for_gre_one_replica_or_the_default() {
        let mut gre = gre_tunnel("g", 1);
        gre.spec.replicas = Some(3);
        assert!(objects(&gre).is_none());
        assert!(sa_sync(&validated(&gre)).is_none());
        assert!(objects(&ipsec(Some(1))).is_none());
        assert!(objects(&ipsec(None)).is_none());
        assert!(sa_sync(&validated(&ipsec(None))).is_none());
        assert_eq!(
            sa_sync(&validated(&ipsec(Some(2)))),
            Some(SaSync {
                namespace: "default".into(),
                secret: "edge-sa".into()
            })
        );
    }
}
