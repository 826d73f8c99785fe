//! Between the IKE core and the Secret: the core's snapshots into the shared [`Content`] and
//! back. Pure; the shell (`ikev2::sync`) adds the ESP side and the I/O.

use std::net::SocketAddrV4;
use std::time::{Instant, SystemTime};

use ike::core::IkeSaSnapshot;

use super::doc::{ChildDoc, Content, where_};

/// A wall clock tied to the monotonic one at `anchor`: `anchor.1 + (now - anchor.0)`. The core
/// writes its timers as wall-clock milliseconds relative to `now`; with this clock an
/// unchanged core exports identical snapshots at any `now`, so "the state changed" is exact.
pub fn wall(anchor: (Instant, SystemTime), now: Instant) -> SystemTime {
    anchor.1 + now.saturating_duration_since(anchor.0)
}

/// The shared content of these IKE SAs and Child SAs.
pub fn content(
    snaps: &[IkeSaSnapshot],
    children: Vec<ChildDoc>,
    esp_peer: Option<SocketAddrV4>,
    peer_on_data_socket: bool,
) -> Content {
    let next_rekey_ms = snaps
        .iter()
        .flat_map(|e| {
            std::iter::once(e.rekey_at_ms).chain(e.children.iter().map(|c| c.rekey_at_ms))
        })
        .min();
    Content {
        ike_spis: snaps.iter().map(IkeSaSnapshot::spis).collect(),
        ike_sas: snaps
            .iter()
            .filter_map(|e| serde_json::to_value(e).ok())
            .collect(),
        next_rekey_ms,
        children,
        esp_peer,
        peer_on_data_socket,
    }
}

/// The IKE SAs of `content`, for `Endpoint::import`.
pub fn snapshots(content: &Content) -> Result<Vec<IkeSaSnapshot>, String> {
    content
        .ike_sas
        .iter()
        .map(|v| {
            serde_json::from_value::<IkeSaSnapshot>(v.clone())
                .map_err(|e| format!("an IKE SA snapshot is not valid: {}", where_(&e)))
        })
        .collect()
}

/// The IKE SA an IKE message belongs to, from its header (SPIi, SPIr).
pub fn header_spis(bytes: &[u8]) -> Option<(u64, u64)> {
    let i = u64::from_be_bytes(bytes.get(0..8)?.try_into().ok()?);
    let r = u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?);
    Some((i, r))
}

/// Two replicas of one responder and a peer, in memory, on a manual clock: the shared state
/// travels as `state.json` bytes through a compare-and-swap store, as through the Secret.
#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::time::Duration;

    use ike::core::{Config, Endpoint, Output, Path, StaticPsk, ipv4_id};
    use ike::crypto::Secret;
    use ring::rand::SystemRandom;

    use super::*;
    use crate::sync::doc::StateDoc;
    use crate::sync::engine::{Conflict, Engine, Remote, Role, Step};

    const PEER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const ANYCAST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

    fn endpoint(local: Ipv4Addr, peer: Ipv4Addr) -> Endpoint {
        Endpoint::new(
            Config::new(ipv4_id(local), vec![ipv4_id(peer)]),
            Box::new(StaticPsk(Secret::new(b"sesame".to_vec()))),
        )
    }

    #[derive(Default)]
    struct Store {
        rv: u64,
        bytes: Vec<u8>,
        writes: u32,
    }

    impl Store {
        fn doc(&self) -> Option<StateDoc> {
            (!self.bytes.is_empty()).then(|| StateDoc::parse(&self.bytes).unwrap())
        }
        fn replace(&mut self, rv: u64, doc: &StateDoc) -> bool {
            if rv != self.rv {
                return false;
            }
            self.bytes = doc.to_bytes().unwrap();
            self.rv += 1;
            self.writes += 1;
            true
        }
    }

    struct Replica {
        ep: Endpoint,
        e: Engine,
        rv: u64,
        anchor: (Instant, SystemTime),
        held: Vec<(Path, Vec<u8>)>,
    }

    impl Replica {
        fn new(name: &str, t0: Instant) -> Self {
            Replica {
                ep: endpoint(ANYCAST, PEER),
                e: Engine::new(name.into()),
                rv: 0,
                anchor: (t0, SystemTime::now()),
                held: Vec::new(),
            }
        }
        fn exported(&self, now: Instant) -> Content {
            content(
                &self.ep.export(now, wall(self.anchor, now)),
                Vec::new(),
                None,
                false,
            )
        }
        fn ms(&self, now: Instant) -> u64 {
            crate::sync::doc::unix_ms(wall(self.anchor, now))
        }
        fn sync(&mut self, s: &Store, now: Instant) {
            self.rv = s.rv;
            let ms = self.ms(now);
            match s.doc() {
                None => self.e.on_empty(ms),
                Some(d) => {
                    if self.e.on_remote(&d, ms) == Remote::Install {
                        let snaps = snapshots(&d.content).unwrap();
                        self.ep.import(snaps, now, wall(self.anchor, now)).unwrap();
                        self.e.installed(&d, ms);
                    }
                }
            }
        }
        fn write(&mut self, s: &mut Store, mut doc: StateDoc, now: Instant) -> bool {
            let ms = self.ms(now);
            for _ in 0..3 {
                if s.replace(self.rv, &doc) {
                    self.rv = s.rv;
                    self.e.written(&doc, ms);
                    return true;
                }
                self.rv = s.rv;
                match self.e.conflict(&doc, s.doc().as_ref(), ms) {
                    Conflict::Retry(d) => doc = d,
                    Conflict::Lost => {
                        self.sync(s, now);
                        return false;
                    }
                }
            }
            false
        }
        /// The shell's step: outputs applied (sends held), then write-ahead.
        fn step(&mut self, s: &mut Store, out: Vec<Output>, now: Instant) -> Vec<(Path, Vec<u8>)> {
            for o in out {
                if let Output::Send { path, bytes } = o {
                    self.held.push((path, bytes));
                }
            }
            let c = self.exported(now);
            let ms = self.ms(now);
            let release = match self.e.after_step(&c, !self.held.is_empty(), ms) {
                Step::Send => true,
                Step::PublishFirst(doc) => {
                    let ok = self.write(s, doc, now);
                    if ok {
                        self.ep.set_passive(false, now);
                    }
                    ok
                }
            };
            let held = std::mem::take(&mut self.held);
            if release { held } else { Vec::new() }
        }
        fn claim(&mut self, s: &mut Store, now: Instant) -> bool {
            self.sync(s, now);
            let Some(latest) = s.doc() else { return false };
            let doc = self.e.claim(&latest, self.ms(now));
            let ok = self.write(s, doc, now);
            if ok {
                self.ep.set_passive(false, now);
            }
            ok
        }
        fn handle(
            &mut self,
            now: Instant,
            path: Path,
            bytes: &[u8],
            rng: &SystemRandom,
        ) -> Vec<Output> {
            let mut out = Vec::new();
            self.ep.handle(now, path, bytes, rng, &mut out);
            out
        }
    }

    fn sends(out: &[Output]) -> Vec<(Path, Vec<u8>)> {
        out.iter()
            .filter_map(|o| match o {
                Output::Send { path, bytes } => Some((*path, bytes.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_follower_takes_over_dpd_after_a_claim_with_the_shared_state() {
        let rng = SystemRandom::new();
        let t0 = Instant::now();
        let mut now = t0;
        let mut store = Store::default();
        let mut peer = endpoint(PEER, ANYCAST);
        let (mut a, mut b) = (Replica::new("a", t0), Replica::new("b", t0));
        a.sync(&store, now);
        b.sync(&store, now);
        let to_anycast = Path {
            local: SocketAddr::from((PEER, 500)),
            remote: SocketAddr::from((ANYCAST, 500)),
        };
        // The handshake with replica a: IKE_SA_INIT goes out at once (nothing shared), the
        // IKE_AUTH response only after the state is published.
        let mut out = Vec::new();
        peer.initiate(now, to_anycast, &rng, &mut out);
        let mut to_a = sends(&out);
        let mut rounds = 0;
        while let Some((p, bytes)) = to_a.pop() {
            rounds += 1;
            assert!(rounds < 20);
            let released = {
                let o = a.handle(now, p.reversed(), &bytes, &rng);
                a.step(&mut store, o, now)
            };
            for (p, bytes) in released {
                let mut o = Vec::new();
                peer.handle(now, p.reversed(), &bytes, &rng, &mut o);
                to_a.extend(sends(&o));
            }
        }
        assert_eq!(a.e.role(), Role::Owner);
        assert_eq!(store.writes, 1, "one write: the IKE_AUTH response's state");
        let sa = peer.status();
        assert_eq!(sa.len(), 1);
        let spis = (sa[0].spi_i, sa[0].spi_r);
        // An unchanged core exports the same state later: no spurious writes.
        now += Duration::from_millis(1234);
        assert_eq!(a.exported(now), a.e.content().clone());
        // b installs generation 1: its SA is passive (no DPD of its own).
        b.sync(&store, now);
        assert_eq!(b.e.role(), Role::Follower);
        assert!(b.e.needs_claim(spis));
        let mut out = Vec::new();
        now += Duration::from_secs(31);
        b.ep.poll(now, &rng, &mut out);
        assert!(sends(&out).is_empty(), "a passive SA sends nothing");
        // The route moves to b; a is gone. The peer's DPD reaches b, which claims first.
        let mut out = Vec::new();
        peer.poll(now, &rng, &mut out);
        let dpd = sends(&out);
        assert_eq!(dpd.len(), 1, "the peer's DPD");
        let (p, bytes) = &dpd[0];
        assert_eq!(header_spis(bytes), Some(spis));
        assert!(b.claim(&mut store, now));
        assert_eq!(b.e.role(), Role::Owner);
        assert_eq!(store.doc().unwrap().owner.as_deref(), Some("b"));
        let o = b.handle(now, p.reversed(), bytes, &rng);
        let released = b.step(&mut store, o, now);
        assert_eq!(released.len(), 1, "b answers the DPD");
        let mut o = Vec::new();
        peer.handle(now, released[0].0.reversed(), &released[0].1, &rng, &mut o);
        assert!(
            o.iter().any(|o| matches!(
                o,
                Output::Event(ike::core::Event::ExchangeDone { ok: true, .. })
            )),
            "the peer accepts b's answer: {o:?}"
        );
        assert_eq!(peer.status().len(), 1, "the same IKE SA");
        // a comes back believing it owns the tunnel: its next write is refused and its
        // message dropped; it follows b.
        let mut out = Vec::new();
        now += Duration::from_secs(1);
        a.ep.poll(now, &rng, &mut out);
        assert!(!sends(&out).is_empty(), "a's own DPD");
        assert_ne!(a.exported(now), a.e.content().clone());
        let released = a.step(&mut store, out, now);
        assert!(released.is_empty(), "a stale owner's messages are dropped");
        assert_eq!(a.e.role(), Role::Follower);
        assert_eq!(store.doc().unwrap().owner.as_deref(), Some("b"));
        assert!(b.e.is_owner());
    }
}
