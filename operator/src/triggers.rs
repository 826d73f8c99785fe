//! Which tunnels to reconcile when something else changes.
//!
//! A tunnel is reconciled for its own events by the controller. Other tunnels hear of it only
//! through [`Tracker::observe`], which feeds each MagicTunnel watch event into the
//! [`TunnelIndex`] and returns the tunnels whose cross-object verdict the event changed: the
//! younger GRE twin, IPsec tunnel on the same peer or tunnel routing the same prefix with the
//! same metric when its older counterpart appears, changes or goes away (never the older one:
//! a younger arrival changes nothing for it), the tunnels whose HTTP port assignment moves. An event
//! that changes no [`Facts`] (a status write of conditions or endpoints, a label) triggers
//! nobody. A Secret event triggers the tunnels whose `ipsec.pskSecretRef` names it, from the
//! index's Secret map.
//!
//! The same index answers the cross-object questions of every reconcile, under a read lock, so
//! no reconcile copies the cache.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock, RwLockReadGuard};

use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::Event;

use crate::crd::MagicTunnel;
use crate::index::{Facts, ObjectKey, TunnelIndex};
use crate::settings::Settings;

/// The index shared by the watch stream (writer) and the reconciles (readers).
#[derive(Debug)]
pub struct Tracker {
    index: RwLock<TunnelIndex>,
    /// Tunnels of a relist in progress (between `Init` and `InitDone`).
    relist: Mutex<Option<HashMap<ObjectKey, Facts>>>,
}

/// The key of an object of the watch: from its metadata even when its spec did not decode.
fn key_of(obj: &DeserializeGuard<MagicTunnel>) -> Option<ObjectKey> {
    match &obj.0 {
        Ok(mt) => Some(ObjectKey::of(mt)),
        Err(e) => Some(ObjectKey {
            namespace: e.metadata.namespace.clone()?,
            name: e.metadata.name.clone()?,
        }),
    }
}

pub fn reference<K: kube::Resource<DynamicType = ()>>(key: &ObjectKey) -> ObjectRef<K> {
    ObjectRef::new(&key.name).within(&key.namespace)
}

impl Tracker {
    pub fn new(settings: &Settings) -> Self {
        Tracker::with(TunnelIndex::new(settings))
    }

    pub fn with(index: TunnelIndex) -> Self {
        Tracker {
            index: RwLock::new(index),
            relist: Mutex::new(None),
        }
    }

    /// The index as of now, for one validation. Do not hold it across an `.await`.
    pub fn read(&self) -> RwLockReadGuard<'_, TunnelIndex> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, TunnelIndex> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Apply one watch event; returns the other tunnels to reconcile. Objects that do not decode
    /// are left out of the index, as if absent.
    pub fn observe(&self, event: &Event<DeserializeGuard<MagicTunnel>>) -> Vec<ObjectKey> {
        let mut relist = self.relist.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            Event::Apply(obj) => match &obj.0 {
                Ok(mt) => self.write().upsert(Facts::of(mt)),
                Err(_) => key_of(obj)
                    .map(|k| self.write().remove(&k))
                    .unwrap_or_default(),
            },
            Event::Delete(obj) => key_of(obj)
                .map(|k| self.write().remove(&k))
                .unwrap_or_default(),
            Event::Init => {
                *relist = Some(HashMap::new());
                Vec::new()
            }
            Event::InitApply(obj) => {
                if let (Some(buffer), Ok(mt)) = (relist.as_mut(), &obj.0) {
                    let f = Facts::of(mt);
                    buffer.insert(f.age.key.clone(), f);
                }
                Vec::new()
            }
            Event::InitDone => match relist.take() {
                Some(buffer) => self.write().replace_all(buffer.into_values()),
                None => Vec::new(),
            },
        }
    }

    /// Tunnels whose `ipsec.pskSecretRef` names the Secret `namespace/name` (it appeared,
    /// changed or went away).
    pub fn referencing_secret(&self, namespace: Option<&str>, name: &str) -> Vec<ObjectKey> {
        match namespace {
            Some(ns) => self.read().referencing_secret(ns, name),
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{IpsecSpec, MagicTunnelStatus, SecretKeyRef};
    use crate::fixtures::{gre_tunnel, ipsec_tunnel};

    fn guard(mt: &MagicTunnel) -> DeserializeGuard<MagicTunnel> {
        DeserializeGuard(Ok(mt.clone()))
    }
    fn names(keys: Vec<ObjectKey>) -> Vec<String> {
        keys.into_iter().map(|k| k.name).collect()
    }
    fn tracker_with(tunnels: &[&MagicTunnel]) -> Tracker {
        let t = Tracker::new(&Settings::example());
        t.observe(&Event::Init);
        for mt in tunnels {
            t.observe(&Event::InitApply(guard(mt)));
        }
        assert!(t.observe(&Event::InitDone).is_empty());
        t
    }
    fn with_port(mut t: MagicTunnel, port: u16) -> MagicTunnel {
        t.status = Some(MagicTunnelStatus {
            http_port: Some(port),
            ..Default::default()
        });
        t
    }

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
        let t = tracker_with(&[&a, &b]);
        assert_eq!(
            names(t.referencing_secret(Some("default"), "shared")),
            ["a"]
        );
        assert!(t.referencing_secret(Some("other"), "shared").is_empty());
        assert!(t.referencing_secret(Some("default"), "b-psk").is_empty());
        // The reference goes when the tunnel goes.
        t.observe(&Event::Delete(guard(&a)));
        assert!(t.referencing_secret(Some("default"), "shared").is_empty());
    }

    #[test]
    fn distinct_neighbours_on_one_endpoint_trigger_nobody() {
        // 50 GRE tunnels on one local endpoint, distinct customers: none affects another,
        // except through the port assignment of tunnels that have not recorded a port.
        let tunnels: Vec<MagicTunnel> = (0..50)
            .map(|i| with_port(gre_tunnel(&format!("t{i:02}"), i), 9180 + i as u16))
            .collect();
        let refs: Vec<&MagicTunnel> = tunnels.iter().collect();
        let t = tracker_with(&refs);
        let newcomer = gre_tunnel("new", 100);
        assert!(t.observe(&Event::Apply(guard(&newcomer))).is_empty());
        // Its status write records the port it was given: nobody else moves.
        let port = t.read().http_port(&newcomer);
        assert_eq!(port, 9230);
        let mut written = with_port(newcomer.clone(), port);
        assert!(t.observe(&Event::Apply(guard(&written))).is_empty());
        // A status write of conditions only changes no fact.
        if let Some(s) = written.status.as_mut() {
            s.observed_generation = Some(1);
        }
        assert!(t.observe(&Event::Apply(guard(&written))).is_empty());
        assert!(t.observe(&Event::Delete(guard(&written))).is_empty());
    }

    #[test]
    fn a_gre_conflict_triggers_the_younger_twin_when_it_appears_and_disappears() {
        let young = gre_tunnel("young", 2);
        let mut old = gre_tunnel("old", 1);
        old.spec.customer_endpoint = young.spec.customer_endpoint.clone();
        let t = tracker_with(&[&young]);
        assert_eq!(names(t.observe(&Event::Apply(guard(&old)))), ["young"]);
        assert_eq!(
            t.read()
                .verdict(&ObjectKey::of(&young))
                .and_then(|v| v.older_twin),
            Some(ObjectKey::of(&old))
        );
        // The older one's status write (the port it was handed) does not matter to the younger.
        let port = t.read().http_port(&old);
        assert!(
            t.observe(&Event::Apply(guard(&with_port(old.clone(), port))))
                .is_empty()
        );
        // A third, youngest twin changes nothing for the others.
        let mut third = gre_tunnel("third", 3);
        third.spec.customer_endpoint = young.spec.customer_endpoint.clone();
        assert!(names(t.observe(&Event::Apply(guard(&third)))).is_empty());
        // Deleted (the event carries the last state): the younger becomes deployable, and
        // the third now names the younger as its twin.
        assert_eq!(
            names(t.observe(&Event::Delete(guard(&with_port(old.clone(), port))))),
            ["third", "young"]
        );
        assert_eq!(
            t.read()
                .verdict(&ObjectKey::of(&young))
                .and_then(|v| v.older_twin),
            None
        );
    }

    #[test]
    fn a_deletion_timestamp_ends_a_conflict_before_the_object_goes() {
        let young = gre_tunnel("young", 2);
        let mut old = gre_tunnel("old", 1);
        old.spec.customer_endpoint = young.spec.customer_endpoint.clone();
        let t = tracker_with(&[&old, &young]);
        old.metadata.deletion_timestamp = old.metadata.creation_timestamp.clone();
        assert_eq!(names(t.observe(&Event::Apply(guard(&old)))), ["young"]);
    }

    #[test]
    fn a_gre_key_edit_moves_a_tunnel_between_groups() {
        let a = gre_tunnel("a", 1);
        let mut b = gre_tunnel("b", 2);
        b.spec.customer_endpoint = a.spec.customer_endpoint.clone();
        b.spec.gre = Some(magictunnel_types::config::GreOptions { key: Some(7) });
        let t = tracker_with(&[&a, &b]);
        // a's key moves to 7: a is older, so b now conflicts.
        let mut a2 = a.clone();
        a2.spec.gre = b.spec.gre;
        assert_eq!(names(t.observe(&Event::Apply(guard(&a2)))), ["b"]);
        // And back.
        assert_eq!(names(t.observe(&Event::Apply(guard(&a)))), ["b"]);
    }

    #[test]
    fn an_ambiguous_ipsec_peer_triggers_the_younger_only() {
        let a = ipsec_tunnel("a", 1, Some("198.51.100.9"));
        let b = ipsec_tunnel("b", 2, Some("198.51.100.9"));
        let c = ipsec_tunnel("c", 3, Some("198.51.100.9"));
        let older_peer = |t: &Tracker, mt: &MagicTunnel| {
            t.read()
                .verdict(&ObjectKey::of(mt))
                .and_then(|v| v.older_peer)
                .map(|k| k.name)
        };
        let t = tracker_with(&[&b]);
        // The older one appears: the younger is not deployable any more.
        assert_eq!(names(t.observe(&Event::Apply(guard(&a)))), ["b"]);
        assert_eq!(older_peer(&t, &b).as_deref(), Some("a"));
        // A third, youngest: nothing changes for the older two.
        assert!(t.observe(&Event::Apply(guard(&c))).is_empty());
        assert_eq!(older_peer(&t, &c).as_deref(), Some("a"));
        // The oldest moves to another customer: b is deployable, c now names b.
        let mut a2 = a.clone();
        a2.spec.customer_endpoint = Some("198.51.100.10".into());
        assert_eq!(names(t.observe(&Event::Apply(guard(&a2)))), ["b", "c"]);
        assert_eq!(older_peer(&t, &b), None);
        assert_eq!(older_peer(&t, &c).as_deref(), Some("b"));
        // b deleted: c is deployable.
        assert_eq!(names(t.observe(&Event::Delete(guard(&b)))), ["c"]);
        assert_eq!(older_peer(&t, &c), None);
        // Two tunnels without customerEndpoint on one local endpoint are ambiguous too; one
        // without beside ones with is not.
        let d = ipsec_tunnel("d", 4, None);
        let e = ipsec_tunnel("e", 5, None);
        assert!(t.observe(&Event::Apply(guard(&e))).is_empty());
        assert_eq!(older_peer(&t, &e), None);
        assert_eq!(names(t.observe(&Event::Apply(guard(&d)))), ["e"]);
        assert_eq!(older_peer(&t, &e).as_deref(), Some("d"));
        assert_eq!(older_peer(&t, &d), None);
    }

    #[test]
    fn a_route_conflict_triggers_the_younger_holder_when_it_appears_and_goes() {
        let route = |metric: Option<u32>| crate::crd::RouteSpec {
            prefix: "10.50.0.0/16".into(),
            metric,
        };
        let mut old = gre_tunnel("old", 1);
        old.spec.routes = vec![route(None)];
        let mut young = ipsec_tunnel("young", 2, None);
        young.spec.routes = vec![route(None)];
        let conflict = |t: &Tracker| {
            t.read()
                .verdict(&ObjectKey::of(&young))
                .and_then(|v| v.route_conflict)
                .map(|((prefix, metric), k)| format!("{prefix} {metric} {}", k.name))
        };
        let t = tracker_with(&[&young]);
        assert_eq!(conflict(&t), None);
        assert_eq!(names(t.observe(&Event::Apply(guard(&old)))), ["young"]);
        assert_eq!(conflict(&t).as_deref(), Some("10.50.0.0/16 0 old"));
        // The older one's route gets another metric: both can be on one node.
        let mut backup = old.clone();
        backup.spec.routes = vec![route(Some(3))];
        assert_eq!(names(t.observe(&Event::Apply(guard(&backup)))), ["young"]);
        assert_eq!(conflict(&t), None);
        // Explicit metric 0 is no metric.
        let mut zero = old.clone();
        zero.spec.routes = vec![route(Some(0))];
        assert_eq!(names(t.observe(&Event::Apply(guard(&zero)))), ["young"]);
        assert_eq!(conflict(&t).as_deref(), Some("10.50.0.0/16 0 old"));
        // Deleted: the younger is deployable.
        assert_eq!(names(t.observe(&Event::Delete(guard(&zero)))), ["young"]);
        assert_eq!(conflict(&t), None);
    }

    #[test]
    fn ports_handed_out_stay_when_an_older_tunnel_arrives_late() {
        let y = gre_tunnel("y", 5);
        let z = gre_tunnel("z", 6);
        let t = tracker_with(&[&y, &z]);
        assert_eq!(t.read().http_port(&y), 9180);
        assert_eq!(t.read().http_port(&z), 9181);
        // An older tunnel created in the same burst is seen after y and z were handed ports
        // but before they recorded them: nobody moves, it takes the next free one.
        let x = gre_tunnel("x", 1);
        assert!(t.observe(&Event::Apply(guard(&x))).is_empty());
        assert_eq!(t.read().http_port(&x), 9182);
        // y records its port; x goes away: its port is free, nobody moves.
        assert!(
            t.observe(&Event::Apply(guard(&with_port(y.clone(), 9180))))
                .is_empty()
        );
        assert!(t.observe(&Event::Delete(guard(&x))).is_empty());
        assert_eq!(t.read().http_port(&z), 9181);
        // A port recorded by an older tunnel wins over the one handed to a younger: z moves.
        let w = with_port(gre_tunnel("w", 0), 9181);
        assert_eq!(names(t.observe(&Event::Apply(guard(&w)))), ["z"]);
        assert_eq!(t.read().http_port(&w), 9181);
        assert_eq!(t.read().http_port(&z), 9182);
        // w goes: z does not come back (it holds 9182 now), nobody moves.
        assert!(t.observe(&Event::Delete(guard(&w))).is_empty());
        assert_eq!(t.read().http_port(&z), 9182);
    }

    #[test]
    fn a_recorded_port_beats_an_older_tunnels_provisional_one() {
        // This replica's index handed 9180 to x (older) and 9181 to y before it led. The
        // leader that then died recorded 9180 for y and created y's pod with it (write-ahead),
        // x got nothing yet. Taking over, this replica must keep y's pod: x moves, y stays.
        let x = gre_tunnel("x", 1);
        let y = gre_tunnel("y", 2);
        let t = tracker_with(&[&x, &y]);
        assert_eq!(t.read().http_port(&x), 9180);
        assert_eq!(t.read().http_port(&y), 9181);
        assert_eq!(
            names(t.observe(&Event::Apply(guard(&with_port(y.clone(), 9180))))),
            ["x"]
        );
        assert_eq!(t.read().http_port(&y), 9180);
        assert_eq!(t.read().http_port(&x), 9181);
    }

    #[test]
    fn a_relist_triggers_what_changed_while_the_watch_was_down() {
        let young = gre_tunnel("young", 2);
        let mut old = gre_tunnel("old", 1);
        old.spec.customer_endpoint = young.spec.customer_endpoint.clone();
        let t = tracker_with(&[&old, &young]);
        // The older twin was deleted while the watch was down: only the relist shows it.
        t.observe(&Event::Init);
        t.observe(&Event::InitApply(guard(&young)));
        assert_eq!(names(t.observe(&Event::InitDone)), ["young"]);
    }

    #[test]
    fn a_relist_frees_ipsec_peers_and_routes_of_tunnels_gone_meanwhile() {
        let old = ipsec_tunnel("old", 1, Some("198.51.100.9"));
        let peer = ipsec_tunnel("peer", 2, Some("198.51.100.9"));
        let mut route = gre_tunnel("route", 3);
        route.spec.routes = old.spec.routes.clone();
        let other = gre_tunnel("other", 4);
        let t = tracker_with(&[&old, &peer, &route, &other]);
        let verdict = |k: &MagicTunnel| t.read().verdict(&ObjectKey::of(k));
        assert!(verdict(&peer).and_then(|v| v.older_peer).is_some());
        assert!(verdict(&route).and_then(|v| v.route_conflict).is_some());
        t.observe(&Event::Init);
        for mt in [&peer, &route, &other] {
            t.observe(&Event::InitApply(guard(mt)));
        }
        assert_eq!(names(t.observe(&Event::InitDone)), ["peer", "route"]);
        assert!(verdict(&peer).and_then(|v| v.older_peer).is_none());
        assert!(verdict(&route).and_then(|v| v.route_conflict).is_none());
    }
}
