//! Which tunnels to reconcile when something else changes. Pure: the controller's cache in,
//! object references out.

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::crd::MagicTunnel;

fn reference<K: kube::Resource<DynamicType = ()>>(t: &MagicTunnel) -> Option<ObjectRef<K>> {
    Some(ObjectRef::new(&t.name_any()).within(&t.namespace()?))
}

/// Tunnels whose `ipsec.pskSecretRef` names the Secret `namespace/name` (it appeared, changed or
/// went away).
pub fn referencing_secret<'a, K: kube::Resource<DynamicType = ()>>(
    tunnels: impl IntoIterator<Item = &'a MagicTunnel>,
    namespace: Option<&str>,
    name: &str,
) -> Vec<ObjectRef<K>> {
    tunnels
        .into_iter()
        .filter(|t| {
            t.namespace().as_deref() == namespace
                && t.spec
                    .ipsec
                    .as_ref()
                    .and_then(|i| i.psk_secret_ref.as_ref())
                    .is_some_and(|r| r.name == name)
        })
        .filter_map(reference)
        .collect()
}

/// The other tunnels on the same local endpoint: their conflicts, ID_IPV4_ADDR and HTTP ports
/// may change when `changed` is created, edited or deleted.
pub fn sharing_local_endpoint<'a, K: kube::Resource<DynamicType = ()>>(
    tunnels: impl IntoIterator<Item = &'a MagicTunnel>,
    changed: &MagicTunnel,
) -> Vec<ObjectRef<K>> {
    tunnels
        .into_iter()
        .filter(|t| {
            t.spec.local_endpoint == changed.spec.local_endpoint
                && (t.namespace(), t.name_any()) != (changed.namespace(), changed.name_any())
        })
        .filter_map(reference)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{IpsecSpec, SecretKeyRef};
    use crate::fixtures::{gre_tunnel, ipsec_tunnel};

    #[test]
    fn a_secret_triggers_the_tunnels_that_reference_it() {
        let mut a = ipsec_tunnel("a", 1, None);
        a.spec.ipsec = Some(IpsecSpec {
            psk_secret_ref: Some(SecretKeyRef {
                name: "shared".into(),
                key: None,
            }),
            ..Default::default()
        });
        let b = ipsec_tunnel("b", 2, None);
        let all = [a, b];
        let hits: Vec<ObjectRef<MagicTunnel>> = referencing_secret(&all, Some("default"), "shared");
        assert_eq!(hits, [ObjectRef::new("a").within("default")]);
        assert!(referencing_secret::<MagicTunnel>(&all, Some("other"), "shared").is_empty());
        assert!(referencing_secret::<MagicTunnel>(&all, Some("default"), "b-psk").is_empty());
    }

    #[test]
    fn a_tunnel_triggers_its_neighbours_but_not_itself() {
        let a = gre_tunnel("a", 1);
        let b = gre_tunnel("b", 2);
        let mut c = gre_tunnel("c", 3);
        c.spec.local_endpoint = "192.0.2.99".into();
        let all = [a.clone(), b, c];
        let hits: Vec<ObjectRef<MagicTunnel>> = sharing_local_endpoint(&all, &a);
        assert_eq!(hits, [ObjectRef::new("b").within("default")]);
    }
}
