//! What the cross-object rules of [`crate::validate`] need to know about the other tunnels,
//! kept up to date from the watch events instead of scanning (or cloning) the whole cache on
//! every reconcile.
//!
//! Each tunnel is reduced to its [`Facts`]: the few fields that another tunnel's validation
//! reads (age, endpoints, GRE key, routes, adopted Secret, recorded HTTP port). The index groups
//! live tunnels (not being deleted) by GRE triple, by IPsec peer (local endpoint, customer
//! endpoint or none) and by route (prefix, metric), keeps the HTTP port assignment of every live
//! tunnel, and maps each adopted Secret to the tunnels that name it. In every group the oldest
//! tunnel wins and the younger ones are not deployable (see [`Verdict`]). Every change returns
//! the tunnels whose cross-object verdict it changed, so that only they are reconciled: an edit
//! that changes no fact (a status write of conditions or endpoints) triggers nobody, and a
//! younger member joining a group changes nothing for the older ones.
//!
//! Cost per change: O(size of the tunnel's groups) for conflicts, and O(n + port range) for the
//! HTTP port assignment, only when an age, liveness or recorded port changed. Queries are
//! O(log n) or O(1) per group.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use kube::ResourceExt;
use magictunnel_types::config::TunnelType;

use crate::crd::MagicTunnel;
use crate::settings::Settings;

/// A tunnel's namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn of(mt: &MagicTunnel) -> Self {
        ObjectKey {
            namespace: mt.namespace().unwrap_or_default(),
            name: mt.name_any(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Older tunnels win conflicts and keep their ports: creation time, then namespace/name, so the
/// order is total and stable and a new object never takes over from one carrying traffic.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Age {
    /// Nanoseconds since the epoch; `None` (not yet stored) sorts first, as before.
    created: Option<i128>,
    pub key: ObjectKey,
}

impl Age {
    pub fn of(mt: &MagicTunnel) -> Self {
        Age {
            created: mt
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_nanosecond()),
            key: ObjectKey::of(mt),
        }
    }
}

/// (local endpoint, customer endpoint, GRE key): what tells GRE frames apart.
pub type GreTriple = (Ipv4Addr, Option<Ipv4Addr>, Option<u32>);
/// (local endpoint, customer endpoint) of an IPsec tunnel: what tells its IKE and ESP datagrams
/// apart on a node where several tunnels share the local endpoint's UDP 500/4500. `None`: no
/// customer endpoint, the local endpoint's default tunnel (it takes the peers no other tunnel
/// names).
pub type IpsecPeer = (Ipv4Addr, Option<Ipv4Addr>);
/// A route as the kernel keys it in the main table: (network, metric); no metric is metric 0.
/// The kernel refuses a second route with the same key (EEXIST), whatever its device.
pub type RouteKey = (Ipv4Net, u32);

/// The cross-object fingerprint of a tunnel: everything another tunnel's validation reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    pub age: Age,
    /// Not being deleted: deleted tunnels neither conflict nor hold ports.
    pub live: bool,
    /// GRE tunnels whose endpoints parse.
    pub gre: Option<GreTriple>,
    /// IPsec tunnels whose endpoints parse.
    pub ipsec_peer: Option<IpsecPeer>,
    /// The routes, sorted and without repeats; empty if one of them does not parse (the tunnel
    /// is then not deployable and installs none).
    pub routes: Vec<RouteKey>,
    /// The Secret named in `ipsec.pskSecretRef`.
    pub psk_secret: Option<String>,
    /// `status.httpPort`.
    pub http_port: Option<u16>,
}

/// The kernel's key of a route.
pub fn route_key(prefix: Ipv4Net, metric: Option<u32>) -> RouteKey {
    (prefix.trunc(), metric.unwrap_or(0))
}

impl Facts {
    pub fn of(mt: &MagicTunnel) -> Self {
        let spec = &mt.spec;
        let local = spec.local_endpoint.parse::<Ipv4Addr>().ok();
        let customer = match &spec.customer_endpoint {
            Some(c) => c.parse::<Ipv4Addr>().ok().map(Some),
            None => Some(None),
        };
        let (gre, ipsec_peer) = match (spec.tunnel_type, local, customer) {
            (TunnelType::Gre, Some(l), Some(c)) => {
                (Some((l, c, spec.gre.and_then(|g| g.key))), None)
            }
            (TunnelType::Ipsec, Some(l), Some(c)) => (None, Some((l, c))),
            _ => (None, None),
        };
        let mut routes: Vec<RouteKey> = spec
            .routes
            .iter()
            .map(|r| Some(route_key(r.prefix.parse().ok()?, r.metric)))
            .collect::<Option<_>>()
            .unwrap_or_default();
        routes.sort();
        routes.dedup();
        let ipsec = spec.ipsec.as_ref();
        Facts {
            age: Age::of(mt),
            live: mt.metadata.deletion_timestamp.is_none(),
            gre,
            ipsec_peer,
            routes,
            psk_secret: ipsec
                .and_then(|i| i.psk_secret_ref.as_ref())
                .map(|r| r.name.clone()),
            http_port: mt.status.as_ref().and_then(|s| s.http_port),
        }
    }
}

/// What the other tunnels decide for one tunnel. A change that leaves it equal has no effect
/// on that tunnel's reconcile. Each conflict names the oldest live tunnel older than this one
/// in the group (deployed or not: the rule depends on age alone, so that one tunnel's verdict
/// never depends on another's verdict, and a change only reaches the members of its groups).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The oldest older tunnel with the same GRE triple: this one is then not deployable.
    pub older_twin: Option<ObjectKey>,
    /// The oldest older IPsec tunnel with the same peer: this one is then not deployable.
    pub older_peer: Option<ObjectKey>,
    /// The first of this tunnel's routes (in [`RouteKey`] order) that an older tunnel holds,
    /// and the oldest such tunnel: this one is then not deployable.
    pub route_conflict: Option<(RouteKey, ObjectKey)>,
    pub http_port: Option<u16>,
}

/// The index. Built from every tunnel the operator knows; changed by [`upsert`](Self::upsert)
/// and [`remove`](Self::remove), which return the tunnels to reconcile.
#[derive(Clone, Debug, Default)]
pub struct TunnelIndex {
    port_base: u16,
    port_count: u16,
    facts: HashMap<ObjectKey, Facts>,
    /// Live GRE tunnels by triple, oldest first.
    gre: HashMap<GreTriple, BTreeSet<Age>>,
    /// Live IPsec tunnels by peer, oldest first.
    peers: HashMap<IpsecPeer, BTreeSet<Age>>,
    /// Live tunnels by route, oldest first.
    routes: HashMap<RouteKey, BTreeSet<Age>>,
    /// Live tunnels oldest first, with their recorded port: the input of the port assignment.
    by_age: std::collections::BTreeMap<Age, Option<u16>>,
    /// The port assignment of every live tunnel.
    ports: HashMap<ObjectKey, u16>,
    /// Ports handed out to tunnels that have not recorded one yet: held like recorded ones, so
    /// that a tunnel that arrives later, even an older one, never moves them.
    provisional: HashMap<ObjectKey, u16>,
    /// (namespace, Secret name) → tunnels whose `ipsec.pskSecretRef` names it.
    secrets: HashMap<(String, String), BTreeSet<ObjectKey>>,
    /// Incremented by every change that altered a fact.
    generation: u64,
}

impl TunnelIndex {
    pub fn new(settings: &Settings) -> Self {
        TunnelIndex {
            port_base: settings.http_port_base,
            port_count: settings.http_port_count,
            ..Default::default()
        }
    }

    /// An index of these tunnels (tests, benchmarks, one-off validation).
    pub fn of<'a>(tunnels: impl IntoIterator<Item = &'a MagicTunnel>, settings: &Settings) -> Self {
        let mut index = TunnelIndex::new(settings);
        index.replace_all(tunnels.into_iter().map(Facts::of));
        index
    }

    pub fn len(&self) -> usize {
        self.facts.len()
    }
    pub fn is_empty(&self) -> bool {
        self.facts.is_empty()
    }
    pub fn generation(&self) -> u64 {
        self.generation
    }
    pub fn facts(&self, key: &ObjectKey) -> Option<&Facts> {
        self.facts.get(key)
    }

    /// The oldest live tunnel other than `me`, older than `me`, with this GRE triple.
    pub fn older_gre_twin(&self, me: &Age, triple: &GreTriple) -> Option<&ObjectKey> {
        older_in(&self.gre, me, triple)
    }

    /// The oldest live IPsec tunnel other than `me`, older than `me`, with this peer.
    pub fn older_ipsec_peer(&self, me: &Age, peer: &IpsecPeer) -> Option<&ObjectKey> {
        older_in(&self.peers, me, peer)
    }

    /// The first of `routes` that a live tunnel older than `me` holds, with the oldest holder.
    pub fn route_conflict(&self, me: &Age, routes: &[RouteKey]) -> Option<(RouteKey, &ObjectKey)> {
        routes
            .iter()
            .find_map(|r| Some((*r, older_in(&self.routes, me, r)?)))
    }

    /// The HTTP port of `mt`. A tunnel the index holds (live, same creation time) reads the
    /// assignment of the current generation, O(1); another is placed into a copy first, O(n).
    pub fn http_port(&self, mt: &MagicTunnel) -> u16 {
        let facts = Facts::of(mt);
        match (
            self.facts.get(&facts.age.key),
            self.ports.get(&facts.age.key),
        ) {
            (Some(known), Some(port)) if known.age == facts.age && known.live => *port,
            _ => {
                let mut by_age = self.by_age.clone();
                by_age.retain(|a, _| a.key != facts.age.key);
                by_age.insert(facts.age.clone(), facts.http_port);
                let mut provisional = self.provisional.clone();
                provisional.remove(&facts.age.key);
                assign_ports(&by_age, &provisional, self.port_base, self.port_count)
                    .remove(&facts.age.key)
                    .unwrap_or(self.port_base)
            }
        }
    }

    /// Tunnels whose `ipsec.pskSecretRef` names the Secret `namespace/name`.
    pub fn referencing_secret(&self, namespace: &str, name: &str) -> Vec<ObjectKey> {
        self.secrets
            .get(&(namespace.to_string(), name.to_string()))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// What the other tunnels decide for `key`; `None` if the index does not hold it.
    pub fn verdict(&self, key: &ObjectKey) -> Option<Verdict> {
        let f = self.facts.get(key)?;
        let older_twin = f
            .gre
            .as_ref()
            .and_then(|t| self.older_gre_twin(&f.age, t))
            .cloned();
        let older_peer = f
            .ipsec_peer
            .as_ref()
            .and_then(|p| self.older_ipsec_peer(&f.age, p))
            .cloned();
        let route_conflict = self
            .route_conflict(&f.age, &f.routes)
            .map(|(r, k)| (r, k.clone()));
        Some(Verdict {
            older_twin,
            older_peer,
            route_conflict,
            http_port: self.ports.get(key).copied(),
        })
    }

    /// Add or update a tunnel. Returns the other tunnels whose verdict changed.
    pub fn upsert(&mut self, facts: Facts) -> Vec<ObjectKey> {
        let key = facts.age.key.clone();
        let old = self.facts.get(&key).cloned();
        if old.as_ref() == Some(&facts) {
            return Vec::new();
        }
        self.change(&key, old, Some(facts))
    }

    /// Remove a tunnel (deleted, or no longer decodable). Returns the tunnels whose verdict
    /// changed: the younger GRE twin, IPsec peer or route holder that becomes deployable (or
    /// now names another older tunnel), tunnels whose port moves.
    pub fn remove(&mut self, key: &ObjectKey) -> Vec<ObjectKey> {
        match self.facts.get(key).cloned() {
            Some(old) => self.change(key, Some(old), None),
            None => Vec::new(),
        }
    }

    /// Replace the whole content (a relist). Returns the tunnels present before and after
    /// whose verdict changed; new tunnels are reconciled for their own event anyway.
    pub fn replace_all(&mut self, tunnels: impl IntoIterator<Item = Facts>) -> Vec<ObjectKey> {
        let before: HashMap<ObjectKey, Verdict> = self
            .facts
            .keys()
            .filter_map(|k| Some((k.clone(), self.verdict(k)?)))
            .collect();
        let (port_base, port_count, generation) =
            (self.port_base, self.port_count, self.generation);
        let provisional = std::mem::take(&mut self.provisional);
        *self = TunnelIndex {
            port_base,
            port_count,
            generation: generation + 1,
            provisional,
            ..Default::default()
        };
        for f in tunnels {
            if let Some(old) = self.facts.remove(&f.age.key) {
                self.remove_groups(&old);
            }
            self.insert_groups(&f);
            self.facts.insert(f.age.key.clone(), f);
        }
        self.ports = self.reassign();
        let mut changed: Vec<ObjectKey> = before
            .into_iter()
            .filter(|(k, v)| self.verdict(k).is_some_and(|now| now != *v))
            .map(|(k, _)| k)
            .collect();
        changed.sort();
        changed
    }

    fn change(
        &mut self,
        key: &ObjectKey,
        old: Option<Facts>,
        new: Option<Facts>,
    ) -> Vec<ObjectKey> {
        self.generation += 1;
        // Only members of the tunnel's groups (before and after) can see a different conflict
        // verdict.
        let mut candidates: HashSet<ObjectKey> = HashSet::new();
        for f in old.iter().chain(new.iter()).filter(|f| f.live) {
            if let Some(t) = &f.gre {
                candidates.extend(self.gre.get(t).into_iter().flatten().map(|a| a.key.clone()));
            }
            if let Some(p) = &f.ipsec_peer {
                candidates.extend(
                    self.peers
                        .get(p)
                        .into_iter()
                        .flatten()
                        .map(|a| a.key.clone()),
                );
            }
            for r in &f.routes {
                candidates.extend(
                    self.routes
                        .get(r)
                        .into_iter()
                        .flatten()
                        .map(|a| a.key.clone()),
                );
            }
        }
        candidates.remove(key);
        let before: Vec<(ObjectKey, Option<Verdict>)> = candidates
            .into_iter()
            .map(|k| {
                let v = self.verdict(&k);
                (k, v)
            })
            .collect();

        fn ports_matter(f: &Option<Facts>) -> Option<(&Age, Option<u16>)> {
            f.as_ref().filter(|f| f.live).map(|f| (&f.age, f.http_port))
        }
        let reassign = ports_matter(&old) != ports_matter(&new);
        if let Some(o) = &old {
            self.remove_groups(o);
        }
        match new {
            Some(n) => {
                self.insert_groups(&n);
                self.facts.insert(key.clone(), n);
            }
            None => {
                self.facts.remove(key);
            }
        }

        let mut changed: BTreeSet<ObjectKey> = before
            .into_iter()
            .filter(|(k, v)| self.verdict(k) != *v)
            .map(|(k, _)| k)
            .collect();
        if reassign {
            let ports = self.reassign();
            changed.extend(
                ports
                    .iter()
                    .filter(|(k, p)| *k != key && self.ports.get(*k).is_some_and(|old| old != *p))
                    .map(|(k, _)| k.clone()),
            );
            self.ports = ports;
        }
        changed.into_iter().collect()
    }

    /// The port assignment of the current tunnels; what it hands to tunnels without a recorded
    /// port becomes provisional. O(n + range).
    fn reassign(&mut self) -> HashMap<ObjectKey, u16> {
        let ports = assign_ports(
            &self.by_age,
            &self.provisional,
            self.port_base,
            self.port_count,
        );
        self.provisional = self
            .by_age
            .iter()
            .filter(|(_, recorded)| recorded.is_none())
            .filter_map(|(a, _)| Some((a.key.clone(), *ports.get(&a.key)?)))
            .collect();
        ports
    }

    fn insert_groups(&mut self, f: &Facts) {
        let key = &f.age.key;
        if let Some(s) = &f.psk_secret {
            self.secrets
                .entry((key.namespace.clone(), s.clone()))
                .or_default()
                .insert(key.clone());
        }
        if !f.live {
            return;
        }
        if let Some(t) = f.gre {
            self.gre.entry(t).or_default().insert(f.age.clone());
        }
        if let Some(p) = f.ipsec_peer {
            self.peers.entry(p).or_default().insert(f.age.clone());
        }
        for r in &f.routes {
            self.routes.entry(*r).or_default().insert(f.age.clone());
        }
        self.by_age.insert(f.age.clone(), f.http_port);
    }

    fn remove_groups(&mut self, f: &Facts) {
        let key = &f.age.key;
        if let Some(s) = &f.psk_secret {
            let k = (key.namespace.clone(), s.clone());
            if let Some(set) = self.secrets.get_mut(&k) {
                set.remove(key);
                if set.is_empty() {
                    self.secrets.remove(&k);
                }
            }
        }
        if !f.live {
            return;
        }
        if let Some(t) = &f.gre {
            remove_from(&mut self.gre, t, &f.age);
        }
        if let Some(p) = &f.ipsec_peer {
            remove_from(&mut self.peers, p, &f.age);
        }
        for r in &f.routes {
            remove_from(&mut self.routes, r, &f.age);
        }
        self.by_age.remove(&f.age);
    }
}

/// The oldest member of group `g` other than `me`, if it is older than `me`.
fn older_in<'a, G: std::hash::Hash + Eq>(
    groups: &'a HashMap<G, BTreeSet<Age>>,
    me: &Age,
    g: &G,
) -> Option<&'a ObjectKey> {
    let oldest = groups.get(g)?.iter().find(|a| a.key != me.key)?;
    (oldest < me).then_some(&oldest.key)
}

fn remove_from<G: std::hash::Hash + Eq>(groups: &mut HashMap<G, BTreeSet<Age>>, g: &G, age: &Age) {
    if let Some(set) = groups.get_mut(g) {
        set.remove(age);
        if set.is_empty() {
            groups.remove(g);
        }
    }
}

/// Every tunnel pod runs on the host network, so two tunnels on one node need different HTTP
/// ports. The assignment is global and a function of the index, so that concurrent reconciles
/// of different tunnels (which all read the one index) agree even before either has recorded
/// its port. First, oldest first, a tunnel keeps the port recorded in its status unless an
/// older tunnel recorded the same; then, oldest first, a tunnel without a record keeps the port
/// handed to it before (`provisional`) if still free; then, oldest first, each tunnel left takes
/// the lowest free one. Recorded ports come first because a record is what pods run with (the
/// operator records a port before it creates the pods that carry it), while a provisional port
/// may be one that another replica's index computed and nobody used: an older tunnel's
/// provisional port must not move a younger tunnel's running pods. When the range is exhausted
/// the rest share the base port (pods also declare the port as a hostPort, so the scheduler
/// never co-locates two pods that hold the same one). O(n log n + range).
pub fn assign_ports(
    by_age: &std::collections::BTreeMap<Age, Option<u16>>,
    provisional: &HashMap<ObjectKey, u16>,
    base: u16,
    count: u16,
) -> HashMap<ObjectKey, u16> {
    let slot = |p: u16| {
        p.checked_sub(base)
            .map(usize::from)
            .filter(|i| *i < usize::from(count))
    };
    let mut taken = vec![false; usize::from(count)];
    let mut claim = |p: Option<u16>| {
        let t = taken.get_mut(slot(p?)?).filter(|t| !**t)?;
        *t = true;
        p
    };
    let mut out = HashMap::with_capacity(by_age.len());
    let mut unrecorded = Vec::new();
    let mut waiting = Vec::new();
    for (age, recorded) in by_age {
        match recorded {
            Some(p) => match claim(Some(*p)) {
                Some(p) => {
                    out.insert(age.key.clone(), p);
                }
                None => waiting.push(age),
            },
            None => unrecorded.push(age),
        }
    }
    for age in unrecorded {
        match claim(provisional.get(&age.key).copied()) {
            Some(p) => {
                out.insert(age.key.clone(), p);
            }
            None => waiting.push(age),
        }
    }
    waiting.sort();
    let mut free = taken
        .iter()
        .enumerate()
        .filter(|(_, t)| !**t)
        .filter_map(|(i, _)| base.checked_add(u16::try_from(i).ok()?));
    for age in waiting {
        out.insert(age.key.clone(), free.next().unwrap_or(base));
    }
    out
}
