//! The decisions of SA synchronisation, sans IO: which replica owns the tunnel's IKE SAs, what
//! to publish and when, what to install from the Secret, when to claim. The shell
//! (`ikev2`) reads and writes the Secret (`sync::kube`) and runs the IKE core; this module only
//! says what to do, given the state it is shown and the time (`now_ms`, wall clock, unix ms).
//!
//! Roles: `Starting` (the Secret not read yet: not ready), `Follower` (installs what the owner
//! publishes; its imported IKE SAs are passive), `Owner` (talks IKE; publishes before its
//! messages leave). Ownership is the `owner` field of `state.json`, changed only by a
//! compare-and-swap write (the Secret's resourceVersion), so at most one write per generation
//! succeeds: exactly one replica owns the tunnel at a time.

use std::collections::HashSet;

use super::doc::{Content, StateDoc};

/// Changes that release no message are published after this long (the contract: within 1 s).
pub const LAZY_PUBLISH_MS: u64 = 250;
/// A follower claims when an SA's rekey time passed this long ago and nobody rekeyed it.
pub const LIVENESS_GRACE_MS: u64 = 30_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Starting,
    Follower,
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Starting => "starting",
            Role::Follower => "follower",
            Role::Owner => "owner",
        }
    }
}

/// What to do with the Secret's latest state.
#[derive(Debug, PartialEq)]
pub enum Remote {
    /// Nothing new (our own write coming back, an older generation, or a repeat).
    Ignore,
    /// Install this generation (ESP diff, IKE import as passive), then ack it.
    Install,
}

/// What to do with the messages a step of the core released.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Send them now: nothing shared changed (a retransmission, a cached response, a
    /// follower's IKE_SA_INIT response), or the change is published lazily.
    Send,
    /// Write this state (CAS) first; send only once it is written.
    PublishFirst(StateDoc),
}

/// What a timer asks.
#[derive(Debug, PartialEq)]
pub enum Due {
    /// A lazy publish (the owner's state changed without a message).
    Publish(StateDoc),
    /// The liveness fallback: claim ownership (the owner did not rekey in time).
    Claim,
}

/// After a write conflicted, given the Secret's latest state.
#[derive(Debug, PartialEq)]
pub enum Conflict {
    /// Still ours (someone else's ack moved the resourceVersion): write this instead.
    Retry(StateDoc),
    /// Another replica owns the tunnel now: drop the held messages, install the latest state.
    Lost,
}

#[derive(Debug)]
pub struct Engine {
    me: String,
    role: Role,
    /// The latest generation seen (read, or written by us) and its owner.
    generation: u64,
    owner: Option<String>,
    /// The content of that generation (as installed or as published).
    content: Content,
    published_at_ms: u64,
    /// The IKE SAs (SPI pairs) any generation we saw carried: an exported SA not among them
    /// was negotiated here.
    known: HashSet<(u64, u64)>,
    /// The owner's state changed without a message, since then.
    dirty_since_ms: Option<u64>,
    /// Wall time when the latest generation was seen here.
    seen_at_ms: u64,
    /// After a failed write or claim of a timer: not again before this.
    not_before_ms: u64,
}

impl Engine {
    pub fn new(me: String) -> Self {
        Engine {
            me,
            role: Role::Starting,
            generation: 0,
            owner: None,
            content: Content::default(),
            published_at_ms: 0,
            known: HashSet::new(),
            dirty_since_ms: None,
            seen_at_ms: 0,
            not_before_ms: 0,
        }
    }

    /// A timer's write or claim failed (the API is unreachable): try again in a second, not
    /// in a loop.
    pub fn postpone(&mut self, now_ms: u64) {
        self.not_before_ms = now_ms + 1_000;
    }

    pub fn role(&self) -> Role {
        self.role
    }
    pub fn me(&self) -> &str {
        &self.me
    }
    pub fn generation(&self) -> u64 {
        self.generation
    }
    pub fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }
    pub fn content(&self) -> &Content {
        &self.content
    }
    pub fn is_owner(&self) -> bool {
        self.role == Role::Owner
    }
    /// Was this IKE SA in any generation seen here?
    pub fn knows(&self, spis: (u64, u64)) -> bool {
        self.known.contains(&spis)
    }
    /// Ready: the Secret was read and what it held installed.
    pub fn ready(&self) -> bool {
        self.role != Role::Starting
    }

    /// The Secret holds no state yet (the operator created it empty).
    pub fn on_empty(&mut self, now_ms: u64) {
        if self.role == Role::Starting {
            self.role = Role::Follower;
            self.seen_at_ms = now_ms;
        }
    }

    /// The Secret's latest state (from a read or the watch). `Install` means: make the local
    /// ESP and IKE state this document's (the caller then calls [`Engine::installed`]).
    pub fn on_remote(&mut self, doc: &StateDoc, now_ms: u64) -> Remote {
        let fresh = self.role == Role::Starting || doc.generation > self.generation;
        if !fresh {
            return Remote::Ignore;
        }
        if self.role == Role::Owner && doc.owner.as_deref() == Some(self.me.as_str()) {
            // Ours (a write whose answer we missed): nothing to install.
            self.adopt(doc, now_ms);
            return Remote::Ignore;
        }
        Remote::Install
    }

    /// `doc` is installed here: this replica follows it.
    pub fn installed(&mut self, doc: &StateDoc, now_ms: u64) {
        self.adopt(doc, now_ms);
        self.role = Role::Follower;
        self.dirty_since_ms = None;
    }

    fn adopt(&mut self, doc: &StateDoc, now_ms: u64) {
        self.generation = doc.generation;
        self.owner = doc.owner.clone();
        self.content = doc.content.clone();
        self.published_at_ms = doc.published_at_ms;
        self.known.extend(doc.content.ike_spis.iter().copied());
        self.seen_at_ms = now_ms;
    }

    /// Does an IKE message for this SA (from its header) need a claim first? Only a
    /// follower's, for an SA it has from the Secret.
    pub fn needs_claim(&self, spis: (u64, u64)) -> bool {
        self.role != Role::Owner && self.content.ike_spis.contains(&spis)
    }

    /// The write that claims ownership on top of `latest` (the Secret's state just read):
    /// the same content, owner = me, next generation.
    pub fn claim(&self, latest: &StateDoc, now_ms: u64) -> StateDoc {
        StateDoc::new(
            latest.generation.max(self.generation).saturating_add(1),
            Some(self.me.clone()),
            now_ms,
            latest.content.clone(),
        )
    }

    /// A write of ours (publish, claim) succeeded: we own the tunnel at its generation.
    pub fn written(&mut self, doc: &StateDoc, now_ms: u64) {
        self.adopt(doc, now_ms);
        self.role = if doc.owner.as_deref() == Some(self.me.as_str()) {
            Role::Owner
        } else {
            Role::Follower
        };
        self.dirty_since_ms = None;
    }

    /// A write conflicted; `latest` is the Secret's state now. Lost only if the state moved
    /// to (or past) the generation we wrote and someone else owns it: a conflict that only
    /// acks caused (the generation is still our base), our own earlier write, a release, or
    /// a Secret without usable state are retried on top of the latest.
    pub fn conflict(&self, ours: &StateDoc, latest: Option<&StateDoc>, now_ms: u64) -> Conflict {
        if let Some(l) = latest
            && l.generation >= ours.generation
            && l.owner.as_deref().is_some_and(|o| o != self.me)
        {
            return Conflict::Lost;
        }
        let base = latest.map_or(0, |l| l.generation).max(self.generation);
        Conflict::Retry(StateDoc::new(
            base.saturating_add(1),
            ours.owner.clone(),
            now_ms,
            ours.content.clone(),
        ))
    }

    /// After a step of the core: `exported` is the local shared state now, `sends` whether the
    /// step released messages.
    pub fn after_step(&mut self, exported: &Content, sends: bool, now_ms: u64) -> Step {
        match self.role {
            Role::Owner => {
                if *exported == self.content {
                    self.dirty_since_ms = None;
                    return Step::Send;
                }
                if sends {
                    return Step::PublishFirst(self.next(exported, now_ms));
                }
                self.dirty_since_ms.get_or_insert(now_ms);
                Step::Send
            }
            Role::Follower | Role::Starting => {
                // An IKE SA negotiated here (IKE_AUTH completed): it makes us the owner.
                let new = exported.ike_spis.iter().any(|s| !self.known.contains(s));
                if new && self.role == Role::Follower {
                    Step::PublishFirst(self.next(exported, now_ms))
                } else {
                    Step::Send
                }
            }
        }
    }

    fn next(&self, content: &Content, now_ms: u64) -> StateDoc {
        StateDoc::new(
            self.generation.saturating_add(1),
            Some(self.me.clone()),
            now_ms,
            content.clone(),
        )
    }

    /// When [`Engine::due`] may have something to do.
    pub fn next_due_ms(&self) -> Option<u64> {
        let due = match self.role {
            Role::Owner => self.dirty_since_ms.map(|t| t + LAZY_PUBLISH_MS),
            Role::Follower => self.liveness_deadline(),
            Role::Starting => None,
        };
        due.map(|t| t.max(self.not_before_ms))
    }

    fn liveness_deadline(&self) -> Option<u64> {
        let rekey = self.content.next_rekey_ms?;
        let mine = self.owner.as_deref() == Some(self.me.as_str());
        // Nobody owns it (released at shutdown; or our own ownership from before a restart):
        // claim as soon as the rekey is due.
        let grace = if self.owner.is_none() || mine {
            0
        } else {
            LIVENESS_GRACE_MS
        };
        Some(rekey.saturating_add(grace))
    }

    /// Timers: a lazy publish (owner), the liveness claim (follower). `exported` is the local
    /// shared state now.
    pub fn due(&mut self, exported: &Content, now_ms: u64) -> Option<Due> {
        if now_ms < self.not_before_ms {
            return None;
        }
        match self.role {
            Role::Owner => {
                let since = self.dirty_since_ms?;
                if *exported == self.content {
                    self.dirty_since_ms = None;
                    return None;
                }
                (now_ms >= since + LAZY_PUBLISH_MS)
                    .then(|| Due::Publish(self.next(exported, now_ms)))
            }
            Role::Follower => (self.liveness_deadline()? <= now_ms).then_some(Due::Claim),
            Role::Starting => None,
        }
    }

    /// Shutdown: the write that releases ownership (owner = null), if we own the tunnel.
    pub fn release(&self, exported: &Content, now_ms: u64) -> Option<StateDoc> {
        (self.role == Role::Owner).then(|| {
            StateDoc::new(
                self.generation.saturating_add(1),
                None,
                now_ms,
                exported.clone(),
            )
        })
    }

    /// Propagation latency of the installed generation (publish → installed here), in ms.
    pub fn latency_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.published_at_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Secret: a resourceVersion and the state, written only by compare-and-swap.
    #[derive(Default)]
    struct Store {
        rv: u64,
        doc: Option<StateDoc>,
        writes: u32,
    }

    impl Store {
        fn get(&self) -> (u64, Option<StateDoc>) {
            (self.rv, self.doc.clone())
        }
        fn replace(&mut self, rv: u64, doc: StateDoc) -> Result<u64, ()> {
            if rv != self.rv {
                return Err(());
            }
            self.rv += 1;
            self.doc = Some(doc);
            self.writes += 1;
            Ok(self.rv)
        }
        /// An ack: moves the resourceVersion, not the state.
        fn ack(&mut self) {
            self.rv += 1;
            self.writes += 1;
        }
    }

    /// One replica: its engine, the resourceVersion it read last, its local state (what the
    /// core and ESP would export), and the messages it sent.
    struct Replica {
        e: Engine,
        rv: u64,
        local: Content,
        sent: Vec<&'static str>,
        held: Vec<&'static str>,
    }

    impl Replica {
        fn new(name: &str) -> Self {
            Replica {
                e: Engine::new(name.into()),
                rv: 0,
                local: Content::default(),
                sent: Vec::new(),
                held: Vec::new(),
            }
        }

        /// Reads the Secret (the first get, or the watch's event) and installs what is new.
        fn sync(&mut self, s: &Store, now: u64) {
            let (rv, doc) = s.get();
            self.rv = rv;
            match doc {
                None => self.e.on_empty(now),
                Some(d) => {
                    if self.e.on_remote(&d, now) == Remote::Install {
                        self.local = d.content.clone();
                        self.e.installed(&d, now);
                    }
                }
            }
        }

        /// Writes with CAS as the shell does: retry while the tunnel is still ours.
        fn write(&mut self, s: &mut Store, mut doc: StateDoc, now: u64) -> bool {
            for _ in 0..5 {
                match s.replace(self.rv, doc.clone()) {
                    Ok(rv) => {
                        self.rv = rv;
                        self.e.written(&doc, now);
                        return true;
                    }
                    Err(()) => {
                        let (rv, latest) = s.get();
                        self.rv = rv;
                        match self.e.conflict(&doc, latest.as_ref(), now) {
                            Conflict::Retry(d) => doc = d,
                            Conflict::Lost => {
                                self.sync(s, now);
                                return false;
                            }
                        }
                    }
                }
            }
            false
        }

        /// A step of the core that changed the local state to `local` and released `msg`.
        fn step(&mut self, s: &mut Store, local: Content, msg: Option<&'static str>, now: u64) {
            self.local = local;
            self.held.extend(msg);
            match self.e.after_step(&self.local, msg.is_some(), now) {
                Step::Send => self.sent.append(&mut self.held),
                Step::PublishFirst(doc) => {
                    if self.write(s, doc, now) {
                        self.sent.append(&mut self.held);
                    } else {
                        self.held.clear();
                    }
                }
            }
        }

        fn claim(&mut self, s: &mut Store, now: u64) -> bool {
            let (rv, latest) = s.get();
            self.rv = rv;
            let Some(latest) = latest else { return false };
            let doc = self.e.claim(&latest, now);
            let ok = self.write(s, doc, now);
            if ok {
                self.local = self.e.content().clone();
            }
            ok
        }
    }

    fn sa(ike: (u64, u64), child_in: u32, rekey_ms: u64) -> Content {
        Content {
            ike_sas: vec![serde_json::json!({"spis": [ike.0, ike.1], "child": child_in})],
            ike_spis: vec![ike],
            next_rekey_ms: Some(rekey_ms),
            children: vec![super::super::doc::tests::child(child_in, child_in + 1)],
            esp_peer: None,
            peer_on_data_socket: false,
        }
    }

    #[test]
    fn owner_publishes_before_sending_and_the_follower_installs() {
        let mut s = Store::default();
        let (mut a, mut b) = (Replica::new("a"), Replica::new("b"));
        assert!(!a.e.ready());
        a.sync(&s, 0);
        b.sync(&s, 0);
        assert!(a.e.ready() && b.e.ready());
        assert_eq!(a.e.role(), Role::Follower);
        // IKE_SA_INIT answered locally: nothing shared yet, the response goes at once.
        a.step(&mut s, Content::default(), Some("init-resp"), 1);
        assert_eq!(a.sent, ["init-resp"]);
        assert_eq!(s.writes, 0);
        // IKE_AUTH completes at a: it publishes as owner before the response leaves.
        let c1 = sa((1, 2), 100, 60_000);
        a.step(&mut s, c1.clone(), Some("auth-resp"), 2);
        assert_eq!(a.sent, ["init-resp", "auth-resp"]);
        assert_eq!(s.writes, 1);
        assert_eq!(a.e.role(), Role::Owner);
        let doc = s.doc.clone().unwrap();
        assert_eq!((doc.generation, doc.owner.as_deref()), (1, Some("a")));
        // b installs it; a's own write coming back through the watch is nothing new.
        b.sync(&s, 10);
        assert_eq!(b.local, c1);
        assert_eq!(b.e.role(), Role::Follower);
        assert_eq!(b.e.latency_ms(10), 8);
        let before = a.e.generation();
        a.sync(&s, 11);
        assert_eq!((a.e.generation(), a.e.role()), (before, Role::Owner));
        // A retransmission (unchanged state) needs no write.
        a.step(&mut s, c1.clone(), Some("auth-resp"), 20);
        assert_eq!(s.writes, 1);
        // A DPD answered changes the windows: write first, even though b acked meanwhile.
        s.ack();
        let mut c2 = c1.clone();
        c2.ike_sas = vec![serde_json::json!({"window": 1})];
        a.step(&mut s, c2.clone(), Some("dpd-resp"), 30);
        assert_eq!(a.sent.last(), Some(&"dpd-resp"));
        assert_eq!(s.doc.as_ref().unwrap().generation, 2);
        b.sync(&s, 31);
        assert_eq!(b.local, c2);
    }

    #[test]
    fn claim_on_receipt_and_a_race_leave_exactly_one_owner() {
        let mut s = Store::default();
        let (mut a, mut b, mut c) = (Replica::new("a"), Replica::new("b"), Replica::new("c"));
        for r in [&mut a, &mut b, &mut c] {
            r.sync(&s, 0);
        }
        a.step(&mut s, sa((1, 2), 100, 60_000), Some("auth-resp"), 1);
        b.sync(&s, 2);
        c.sync(&s, 2);
        assert!(b.e.needs_claim((1, 2)));
        assert!(
            !b.e.needs_claim((1, 0)),
            "IKE_SA_INIT of a new SA: handled locally"
        );
        assert!(!a.e.needs_claim((1, 2)), "the owner needs no claim");
        // b and c both receive a message and read generation 1; both try to claim on it.
        let (rv, latest) = s.get();
        let latest = latest.unwrap();
        b.rv = rv;
        c.rv = rv;
        let db = b.e.claim(&latest, 3);
        let dc = c.e.claim(&latest, 3);
        assert_eq!((db.generation, dc.generation), (2, 2));
        assert!(s.replace(b.rv, db.clone()).is_ok());
        b.e.written(&db, 3);
        assert!(s.replace(c.rv, dc).is_err(), "same base: one CAS wins");
        // c re-reads and claims on top of b's claim (claim on receipt takes over).
        assert!(c.claim(&mut s, 4));
        assert_eq!(c.e.role(), Role::Owner);
        assert_eq!(s.doc.as_ref().unwrap().owner.as_deref(), Some("c"));
        assert_eq!(s.doc.as_ref().unwrap().generation, 3);
        // b still thinks it owns the tunnel: its next publish fails, its messages are dropped.
        let mut changed = sa((1, 2), 100, 60_000);
        changed.ike_sas = vec![serde_json::json!({"window": 9})];
        b.step(&mut s, changed, Some("stale-resp"), 5);
        assert!(!b.sent.contains(&"stale-resp"), "{:?}", b.sent);
        assert_eq!(b.e.role(), Role::Follower);
        assert_eq!(b.e.generation(), 3, "b installed the latest state");
        // a too learns from the watch that it is no longer the owner.
        a.sync(&s, 6);
        assert_eq!(a.e.role(), Role::Follower);
        let owners = [&a, &b, &c]
            .iter()
            .filter(|r| r.e.role() == Role::Owner)
            .count();
        assert_eq!(owners, 1);
    }

    #[test]
    fn a_conflict_caused_by_an_ack_is_retried() {
        let mut s = Store::default();
        let (mut a, mut b) = (Replica::new("a"), Replica::new("b"));
        a.sync(&s, 0);
        b.sync(&s, 0);
        a.step(&mut s, sa((1, 2), 100, 60_000), Some("auth-resp"), 1);
        b.sync(&s, 2);
        // b reads generation 1 to claim; a's (or anyone's) ack moves the resourceVersion.
        let (_, latest) = s.get();
        let claim = b.e.claim(&latest.unwrap(), 3);
        s.ack();
        assert!(b.write(&mut s, claim, 3), "retried on top of the ack");
        assert_eq!(b.e.role(), Role::Owner);
        // And the owner's write after a follower's ack.
        s.ack();
        let mut c = sa((1, 2), 100, 60_000);
        c.ike_sas = vec![serde_json::json!({"window": 2})];
        b.step(&mut s, c, Some("resp"), 4);
        assert_eq!(b.sent, ["resp"]);
        assert_eq!(s.doc.as_ref().unwrap().generation, 3);
    }

    #[test]
    fn stale_owner_drops_held_messages() {
        let mut s = Store::default();
        let (mut a, mut b) = (Replica::new("a"), Replica::new("b"));
        a.sync(&s, 0);
        b.sync(&s, 0);
        a.step(&mut s, sa((1, 2), 100, 60_000), Some("auth-resp"), 1);
        b.sync(&s, 2);
        assert!(b.claim(&mut s, 3));
        // a has not seen b's claim; it answers a request from its old state.
        let mut c = sa((1, 2), 100, 60_000);
        c.ike_sas = vec![serde_json::json!({"a-only": 1})];
        a.step(&mut s, c, Some("a-resp"), 4);
        assert_eq!(a.sent, ["auth-resp"]);
        assert_eq!(a.e.role(), Role::Follower);
        assert_eq!(s.doc.as_ref().unwrap().owner.as_deref(), Some("b"));
        // a's local state is b's now.
        assert_eq!(a.local, s.doc.as_ref().unwrap().content);
    }

    #[test]
    fn lazy_publish_within_a_second() {
        let mut s = Store::default();
        let mut a = Replica::new("a");
        a.sync(&s, 0);
        a.step(&mut s, sa((1, 2), 100, 60_000), Some("auth-resp"), 1_000);
        let writes = s.writes;
        // A response processed: the state changed, no message leaves.
        let mut c = sa((1, 2), 100, 60_000);
        c.ike_sas = vec![serde_json::json!({"pending": null})];
        a.step(&mut s, c.clone(), None, 1_100);
        assert_eq!(s.writes, writes, "not at once");
        assert_eq!(a.e.next_due_ms(), Some(1_100 + LAZY_PUBLISH_MS));
        assert_eq!(a.e.due(&c, 1_200), None);
        let Some(Due::Publish(doc)) = a.e.due(&c, 1_100 + LAZY_PUBLISH_MS) else {
            panic!("a lazy publish is due")
        };
        const { assert!(LAZY_PUBLISH_MS < 1_000) };
        assert!(a.write(&mut s, doc, 1_400));
        assert_eq!(s.doc.as_ref().unwrap().content, c);
        assert_eq!(a.e.due(&c, 5_000), None, "nothing more");
        // A change undone before the timer fires needs no write.
        let c2 = sa((1, 2), 101, 60_000);
        a.step(&mut s, c2, None, 6_000);
        assert_eq!(a.e.due(&c, 7_000), None);
    }

    #[test]
    fn shutdown_releases_ownership_and_a_follower_then_claims() {
        let mut s = Store::default();
        let (mut a, mut b) = (Replica::new("a"), Replica::new("b"));
        a.sync(&s, 0);
        b.sync(&s, 0);
        assert_eq!(
            b.e.release(&b.local, 1),
            None,
            "a follower has nothing to release"
        );
        a.step(&mut s, sa((1, 2), 100, 10_000), Some("auth-resp"), 1);
        b.sync(&s, 2);
        let doc = a.e.release(&a.local, 3).unwrap();
        assert_eq!(doc.owner, None);
        assert!(a.write(&mut s, doc, 3));
        assert_eq!(a.e.role(), Role::Follower);
        b.sync(&s, 4);
        assert_eq!(b.e.owner(), None);
        assert_eq!(b.local, sa((1, 2), 100, 10_000), "content kept");
        // Nobody owns it: b claims as soon as the rekey is due.
        assert_eq!(b.e.due(&b.local, 9_999), None);
        assert_eq!(b.e.due(&b.local, 10_000), Some(Due::Claim));
    }

    #[test]
    fn liveness_fallback_claims_thirty_seconds_after_a_missed_rekey() {
        let mut s = Store::default();
        let (mut a, mut b) = (Replica::new("a"), Replica::new("b"));
        a.sync(&s, 0);
        b.sync(&s, 0);
        a.step(&mut s, sa((1, 2), 100, 10_000), Some("auth-resp"), 1);
        b.sync(&s, 2);
        assert_eq!(b.e.next_due_ms(), Some(10_000 + LIVENESS_GRACE_MS));
        assert_eq!(b.e.due(&b.local, 10_000 + LIVENESS_GRACE_MS - 1), None);
        // The owner rekeys in time: a new generation, a later rekey, no claim.
        a.step(&mut s, sa((3, 4), 200, 70_000), Some("rekey-resp"), 20_000);
        b.sync(&s, 20_001);
        assert_eq!(b.e.due(&b.local, 10_000 + LIVENESS_GRACE_MS), None);
        // The owner died: 30 s after the next rekey time b claims, and succeeds.
        assert_eq!(b.e.due(&b.local, 100_000), Some(Due::Claim));
        // A claim that fails (API down) is retried a second later, not in a loop.
        b.e.postpone(100_000);
        assert_eq!(b.e.due(&b.local, 100_500), None);
        assert_eq!(b.e.next_due_ms(), Some(101_000));
        assert!(b.claim(&mut s, 101_000));
        assert_eq!(b.e.role(), Role::Owner);
        assert_eq!(b.e.next_due_ms(), None);
    }

    #[test]
    fn late_replica_installs_the_current_generation_first() {
        let mut s = Store::default();
        let mut a = Replica::new("a");
        a.sync(&s, 0);
        a.step(&mut s, sa((1, 2), 100, 60_000), Some("auth-resp"), 1);
        s.ack();
        let mut late = Replica::new("late");
        assert!(!late.e.ready());
        late.sync(&s, 5);
        assert!(late.e.ready());
        assert_eq!(late.local, s.doc.clone().unwrap().content);
        // Expiry of an imported SA at a follower is no reason to publish.
        late.step(&mut s, Content::default(), None, 6);
        assert_eq!(s.doc.as_ref().unwrap().owner.as_deref(), Some("a"));
        assert_eq!(late.e.role(), Role::Follower);
    }
}
