//! What the SA-state Secret (`<tunnel>-sa`) says about the replicas of an anycast IPsec tunnel,
//! for status: who owns the IKE SA, which generation each replica installed, and whether every
//! ready replica carries the current one (the `Synchronized` condition).
//!
//! Only `summary.json` and `acks.json` are read; `state.json` (which holds keys) is never
//! parsed, logged or kept. Both documents come from the tunnel pods and are treated as hostile:
//! a document over [`MAX_DOCUMENT_BYTES`], malformed JSON, or SPIs that are not hex become a
//! `StateUnreadable` message, never a panic; the counts taken into status are bounded.
//!
//! Formats (issue #11 contract):
//! - `summary.json`: `{"generation":7,"owner":"<pod>"|null,"publishedAt":"<RFC3339>",
//!   "ikeSas":[{"spiI":"<16 hex>","spiR":"<16 hex>"}],"childSas":[{"spiIn":"<8 hex>","spiOut":"<8 hex>"}]}`
//! - `acks.json`: `{"<pod>":{"generation":7,"at":"<RFC3339>"}}`

use std::collections::BTreeMap;

use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;

use crate::conditions::Status;
use crate::crd::EndpointStatus;
use crate::reason::Reason;

pub const SUMMARY_KEY: &str = "summary.json";
pub const ACKS_KEY: &str = "acks.json";
/// Largest `summary.json` or `acks.json` read; a larger one is refused unread.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;
/// Most Child SAs shown per endpoint.
pub const MAX_CHILD_SAS: usize = 16;
/// Longest identity (a pod name) taken from the documents.
const MAX_IDENTITY_LEN: usize = 253;
/// How long after a generation's `publishedAt` a ready replica that has not acked it yet is
/// still called on its way rather than lagging: replicas install a publication within about a
/// second, and every IKE exchange (a DPD, a rekey) publishes one, so without this window the
/// condition (and an Event) would flap to `Lagging` and back on each of them.
pub const PROPAGATION_GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChildSaSpis {
    spi_in: String,
    spi_out: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SummaryDoc {
    generation: u64,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    published_at: Option<String>,
    #[serde(default)]
    child_sas: Vec<ChildSaSpis>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct AckDoc {
    generation: u64,
}

/// The published state, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub generation: u64,
    /// The replica (pod name) that talks IKE; `None` while nobody does.
    pub owner: Option<String>,
    /// `<spiIn>/<spiOut>`, lower-case hex.
    pub child_spis: Vec<String>,
    /// `publishedAt`, if it is an RFC 3339 time.
    pub published_at: Option<Timestamp>,
}

/// What the Secret holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaState {
    /// No `summary.json`: nothing published yet (or the Secret is not there yet).
    Empty,
    /// A document is present but cannot be read; the message says which and why.
    Unreadable(String),
    Published {
        summary: Summary,
        /// Installed generation per replica (pod name).
        acks: BTreeMap<String, u64>,
    },
}

fn document<'a>(
    data: &'a BTreeMap<String, ByteString>,
    key: &str,
) -> Result<Option<&'a [u8]>, String> {
    match data.get(key) {
        None => Ok(None),
        Some(b) if b.0.len() > MAX_DOCUMENT_BYTES => Err(format!(
            "{key}: {} bytes, at most {MAX_DOCUMENT_BYTES} are read",
            b.0.len()
        )),
        Some(b) => Ok(Some(&b.0)),
    }
}

fn is_spi(s: &str) -> bool {
    (1..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_identity(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_IDENTITY_LEN
}

fn parse_summary(bytes: &[u8]) -> Result<Summary, String> {
    let doc: SummaryDoc =
        serde_json::from_slice(bytes).map_err(|e| format!("{SUMMARY_KEY}: {e}"))?;
    if let Some(owner) = &doc.owner
        && !is_identity(owner)
    {
        return Err(format!(
            "{SUMMARY_KEY}: owner must be 1 to {MAX_IDENTITY_LEN} characters"
        ));
    }
    let mut child_spis = Vec::new();
    for (i, c) in doc.child_sas.iter().enumerate() {
        if !is_spi(&c.spi_in) || !is_spi(&c.spi_out) {
            return Err(format!(
                "{SUMMARY_KEY}: childSas[{i}]: spiIn and spiOut must be SPIs in hex (8 digits)"
            ));
        }
        if child_spis.len() < MAX_CHILD_SAS {
            child_spis.push(format!(
                "{}/{}",
                c.spi_in.to_ascii_lowercase(),
                c.spi_out.to_ascii_lowercase()
            ));
        }
    }
    Ok(Summary {
        generation: doc.generation,
        owner: doc.owner,
        child_spis,
        published_at: doc.published_at.and_then(|t| t.parse().ok()),
    })
}

fn parse_acks(bytes: &[u8]) -> Result<BTreeMap<String, u64>, String> {
    let doc: BTreeMap<String, AckDoc> =
        serde_json::from_slice(bytes).map_err(|e| format!("{ACKS_KEY}: {e}"))?;
    if let Some(bad) = doc.keys().find(|k| !is_identity(k)) {
        return Err(format!(
            "{ACKS_KEY}: a replica name of {} characters (1 to {MAX_IDENTITY_LEN})",
            bad.len()
        ));
    }
    Ok(doc.into_iter().map(|(k, a)| (k, a.generation)).collect())
}

/// Only the documents this module reads: every other key (`state.json`, which holds keys) is
/// wiped from memory and dropped as soon as the Secret has been fetched.
pub fn keep_documents(data: BTreeMap<String, ByteString>) -> BTreeMap<String, ByteString> {
    use zeroize::Zeroize as _;
    data.into_iter()
        .filter_map(|(k, mut v)| {
            if k == SUMMARY_KEY || k == ACKS_KEY {
                Some((k, v))
            } else {
                v.0.zeroize();
                None
            }
        })
        .collect()
}

/// Wipe a Secret's data that is not to be read at all (a Secret that is not ours).
pub fn wipe(data: BTreeMap<String, ByteString>) {
    use zeroize::Zeroize as _;
    for (_, mut v) in data {
        v.0.zeroize();
    }
}

/// Read the SA-state Secret's data (`None`: no Secret, or no data yet).
pub fn read(data: Option<&BTreeMap<String, ByteString>>) -> SaState {
    let Some(data) = data else {
        return SaState::Empty;
    };
    let parsed = (|| {
        let summary = match document(data, SUMMARY_KEY)? {
            None => return Ok(None),
            Some(b) => parse_summary(b)?,
        };
        let acks = match document(data, ACKS_KEY)? {
            None => BTreeMap::new(),
            Some(b) => parse_acks(b)?,
        };
        Ok(Some((summary, acks)))
    })();
    match parsed {
        Ok(None) => SaState::Empty,
        Ok(Some((summary, acks))) => SaState::Published { summary, acks },
        Err(message) => SaState::Unreadable(message),
    }
}

/// Fill the sync fields of each endpoint (by pod name, the replicas' identity).
pub fn annotate(endpoints: &mut [EndpointStatus], state: &SaState) {
    for e in endpoints {
        match state {
            SaState::Published { summary, acks } => {
                let installed = acks.get(&e.pod).copied();
                e.ike_owner = Some(summary.owner.as_deref() == Some(e.pod.as_str()));
                e.installed_generation = installed;
                e.child_spis = if installed == Some(summary.generation) {
                    summary.child_spis.clone()
                } else {
                    Vec::new()
                };
            }
            SaState::Empty | SaState::Unreadable(_) => {
                e.ike_owner = Some(false);
                e.installed_generation = None;
                e.child_spis = Vec::new();
            }
        }
    }
}

/// The `Synchronized` condition, and when to look again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub condition: (Status, Reason, String),
    /// Replicas were given [`PROPAGATION_GRACE`]: reconcile again once it is over, to call
    /// them lagging if they still are.
    pub recheck_in: Option<Duration>,
}

/// How much of the grace of a generation published at `published` is left at `now`. A time
/// more than the grace ahead of `now` (a skewed or hostile clock) earns none.
fn grace_left(published: Option<Timestamp>, now: Timestamp) -> Option<Duration> {
    let published = published?;
    let grace = i64::try_from(PROPAGATION_GRACE.as_millis()).unwrap_or(i64::MAX);
    let age = now
        .as_millisecond()
        .checked_sub(published.as_millisecond())?;
    if age < -grace {
        return None;
    }
    let left = grace.checked_sub(age.max(0))?;
    (left > 0).then(|| Duration::from_millis(u64::try_from(left).unwrap_or(0)))
}

/// The `Synchronized` condition: True when every ready replica installed the current
/// generation of the shared state, False (`Lagging`) otherwise. A condition that was `InSync`
/// (or `NoState`: the first publication), given as `previous_reason`, stays True for
/// [`PROPAGATION_GRACE`] after a new generation's `publishedAt` (judged by `now`) while the
/// others install it; a replica already reported lagging gets no grace.
pub fn synchronized(
    secret: &str,
    state: &SaState,
    endpoints: &[EndpointStatus],
    previous_reason: Option<&str>,
    now: Timestamp,
) -> Verdict {
    let done = |condition| Verdict {
        condition,
        recheck_in: None,
    };
    let (summary, acks) = match state {
        SaState::Empty => {
            return done((
                Status::Unknown,
                Reason::NoState,
                format!("no replica has published SA state in Secret {secret} yet"),
            ));
        }
        SaState::Unreadable(why) => {
            return done((
                Status::Unknown,
                Reason::StateUnreadable,
                format!("Secret {secret}: {why}"),
            ));
        }
        SaState::Published { summary, acks } => (summary, acks),
    };
    let g = summary.generation;
    let owner = summary.owner.as_deref().unwrap_or("none");
    let ready: Vec<&EndpointStatus> = endpoints.iter().filter(|e| e.ready).collect();
    if ready.is_empty() {
        return done((
            Status::Unknown,
            Reason::NoReadyReplicas,
            format!("no endpoint pod is ready; SA state generation {g}, IKE owner {owner}"),
        ));
    }
    let lagging: Vec<String> = ready
        .iter()
        .filter(|e| acks.get(&e.pod) != Some(&g))
        .map(|e| match acks.get(&e.pod) {
            Some(at) => format!("{} at generation {at}", e.pod),
            None => format!("{} has installed none", e.pod),
        })
        .collect();
    let installed = ready.len() - lagging.len();
    if lagging.is_empty() {
        return done((
            Status::True,
            Reason::InSync,
            format!(
                "{installed} ready replica(s) installed SA state generation {g}; IKE owner {owner}"
            ),
        ));
    }
    let was_in_sync = matches!(
        previous_reason,
        Some(r) if r == Reason::InSync.as_str() || r == Reason::NoState.as_str()
    );
    match grace_left(summary.published_at, now).filter(|_| was_in_sync) {
        // Just published, and every ready replica carried the previous state: the others are
        // installing this one. Looked at again when the grace is over.
        Some(left) => Verdict {
            condition: (
                Status::True,
                Reason::InSync,
                format!(
                    "{installed} ready replica(s) installed SA state generation {g}, published just now; \
                     installing: {}; IKE owner {owner}",
                    lagging.join(", ")
                ),
            ),
            recheck_in: Some(left),
        },
        None => done((
            Status::False,
            Reason::Lagging,
            format!(
                "{} of {} ready replica(s) behind SA state generation {g}: {}",
                lagging.len(),
                ready.len(),
                lagging.join(", ")
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(summary: Option<&str>, acks: Option<&str>) -> BTreeMap<String, ByteString> {
        let mut d = BTreeMap::new();
        // A state.json the reader must not need (it is never parsed).
        d.insert("state.json".into(), ByteString(b"{not json, keys".to_vec()));
        if let Some(s) = summary {
            d.insert(SUMMARY_KEY.into(), ByteString(s.as_bytes().to_vec()));
        }
        if let Some(a) = acks {
            d.insert(ACKS_KEY.into(), ByteString(a.as_bytes().to_vec()));
        }
        d
    }

    const SUMMARY: &str = r#"{"generation":7,"owner":"t-0","publishedAt":"2026-12-01T17:00:00.123Z",
        "ikeSas":[{"spiI":"0011223344556677","spiR":"8899aabbccddeeff"}],
        "childSas":[{"spiIn":"C1A2B3C4","spiOut":"d5e6f7a8"}]}"#;

    fn now() -> Timestamp {
        "2026-12-01T17:00:10Z".parse().expect("time")
    }

    fn endpoint(pod: &str, ready: bool) -> EndpointStatus {
        EndpointStatus {
            pod: pod.into(),
            ready,
            ..Default::default()
        }
    }

    #[test]
    fn published_state_is_read_and_annotates_the_endpoints() {
        let d = data(
            Some(SUMMARY),
            Some(r#"{"t-0":{"generation":7,"at":"x"},"t-1":{"generation":6,"at":"y"}}"#),
        );
        let state = read(Some(&d));
        let SaState::Published { summary, acks } = &state else {
            panic!("{state:?}");
        };
        assert_eq!(summary.generation, 7);
        assert_eq!(summary.owner.as_deref(), Some("t-0"));
        assert_eq!(summary.child_spis, ["c1a2b3c4/d5e6f7a8"]);
        assert_eq!(acks.get("t-1"), Some(&6));
        let mut eps = vec![
            endpoint("t-0", true),
            endpoint("t-1", true),
            endpoint("t-2", false),
        ];
        annotate(&mut eps, &state);
        assert_eq!(eps[0].ike_owner, Some(true));
        assert_eq!(eps[0].installed_generation, Some(7));
        assert_eq!(eps[0].child_spis, ["c1a2b3c4/d5e6f7a8"]);
        assert_eq!(eps[1].ike_owner, Some(false));
        assert_eq!(eps[1].installed_generation, Some(6));
        assert!(
            eps[1].child_spis.is_empty(),
            "a lagging replica carries none of these"
        );
        assert_eq!(eps[2].installed_generation, None);
        let (s, r, m) = synchronized("t-sa", &state, &eps, None, now()).condition;
        assert_eq!((s, r), (Status::False, Reason::Lagging));
        assert!(m.contains("t-1 at generation 6"), "{m}");
        assert!(m.contains("1 of 2 ready"), "{m}");
        assert!(
            !m.contains("t-2"),
            "a replica that is not ready does not count: {m}"
        );
    }

    #[test]
    fn in_sync_when_every_ready_replica_acked_the_generation() {
        let d = data(
            Some(SUMMARY),
            Some(r#"{"t-0":{"generation":7},"t-1":{"generation":7},"t-2":{"generation":3}}"#),
        );
        let state = read(Some(&d));
        let eps = [
            endpoint("t-0", true),
            endpoint("t-1", true),
            endpoint("t-2", false),
        ];
        let (s, r, m) = synchronized("t-sa", &state, &eps, None, now()).condition;
        assert_eq!((s, r), (Status::True, Reason::InSync), "{m}");
        assert!(m.contains("generation 7") && m.contains("t-0"), "{m}");
        // A ready replica without an ack lags.
        let eps = [endpoint("t-0", true), endpoint("t-9", true)];
        let (s, r, m) = synchronized("t-sa", &state, &eps, None, now()).condition;
        assert_eq!((s, r), (Status::False, Reason::Lagging));
        assert!(m.contains("t-9 has installed none"), "{m}");
        // No ready replica: nothing to compare.
        let eps = [endpoint("t-0", false)];
        let (s, r, _) = synchronized("t-sa", &state, &eps, None, now()).condition;
        assert_eq!((s, r), (Status::Unknown, Reason::NoReadyReplicas));
    }

    #[test]
    fn a_fresh_generation_is_given_a_grace_only_after_being_in_sync() {
        let summary = |at: &str| {
            format!(r#"{{"generation":8,"owner":"t-0","publishedAt":"{at}","childSas":[]}}"#)
        };
        let acks = r#"{"t-0":{"generation":8},"t-1":{"generation":7}}"#;
        let eps = [endpoint("t-0", true), endpoint("t-1", true)];
        let at = |s: &str| -> Timestamp { s.parse().expect("time") };
        let fresh = read(Some(&data(
            Some(&summary("2026-12-01T17:00:09Z")),
            Some(acks),
        )));
        // Published 1 s ago, and in sync before: still True, looked at again in 2 s.
        let v = synchronized("t-sa", &fresh, &eps, Some("InSync"), now());
        assert_eq!(
            (v.condition.0, v.condition.1),
            (Status::True, Reason::InSync)
        );
        assert!(
            v.condition.2.contains("installing: t-1 at generation 7"),
            "{}",
            v.condition.2
        );
        assert_eq!(v.recheck_in, Some(Duration::from_secs(2)));
        // The grace is over: lagging.
        let v = synchronized(
            "t-sa",
            &fresh,
            &eps,
            Some("InSync"),
            at("2026-12-01T17:00:12Z"),
        );
        assert_eq!(
            (v.condition.0, v.condition.1),
            (Status::False, Reason::Lagging)
        );
        assert_eq!(v.recheck_in, None);
        // A replica already lagging gets no grace from a new generation.
        let v = synchronized("t-sa", &fresh, &eps, Some("Lagging"), now());
        assert_eq!(v.condition.1, Reason::Lagging);
        let v = synchronized("t-sa", &fresh, &eps, None, now());
        assert_eq!(v.condition.1, Reason::Lagging);
        // The first publication: a grace too.
        let v = synchronized("t-sa", &fresh, &eps, Some("NoState"), now());
        assert_eq!(v.condition.1, Reason::InSync);
        // A publication time far ahead (skew, or a hostile writer) earns none; one within the
        // grace ahead counts from now.
        let ahead = read(Some(&data(
            Some(&summary("2026-12-01T18:00:00Z")),
            Some(acks),
        )));
        let v = synchronized("t-sa", &ahead, &eps, Some("InSync"), now());
        assert_eq!(v.condition.1, Reason::Lagging);
        let near = read(Some(&data(
            Some(&summary("2026-12-01T17:00:12Z")),
            Some(acks),
        )));
        let v = synchronized("t-sa", &near, &eps, Some("InSync"), now());
        assert_eq!(v.recheck_in, Some(Duration::from_secs(3)));
        // No or unreadable publishedAt: no grace.
        let bare = read(Some(&data(Some(r#"{"generation":8}"#), Some(acks))));
        let v = synchronized("t-sa", &bare, &eps, Some("InSync"), now());
        assert_eq!(v.condition.1, Reason::Lagging);
    }

    #[test]
    fn only_summary_and_acks_are_kept() {
        let kept = keep_documents(data(Some(SUMMARY), Some("{}")));
        assert_eq!(
            kept.keys().map(String::as_str).collect::<Vec<_>>(),
            [ACKS_KEY, SUMMARY_KEY]
        );
        assert!(matches!(read(Some(&kept)), SaState::Published { .. }));
    }

    #[test]
    fn nothing_published_is_no_state() {
        let eps = [endpoint("t-0", true)];
        for state in [
            read(None),
            read(Some(&BTreeMap::new())),
            read(Some(&data(None, Some("{}")))),
        ] {
            assert_eq!(state, SaState::Empty);
            let (s, r, m) = synchronized("t-sa", &state, &eps, None, now()).condition;
            assert_eq!((s, r), (Status::Unknown, Reason::NoState));
            assert!(m.contains("t-sa"), "{m}");
            let mut eps = eps.clone();
            annotate(&mut eps, &state);
            assert_eq!(eps[0].ike_owner, Some(false));
            assert_eq!(eps[0].installed_generation, None);
        }
        // Published without acks yet: every ready replica lags.
        let state = read(Some(&data(Some(SUMMARY), None)));
        let (s, r, _) = synchronized("t-sa", &state, &eps, None, now()).condition;
        assert_eq!((s, r), (Status::False, Reason::Lagging));
    }

    #[test]
    fn hostile_documents_are_reported_not_trusted() {
        let eps = [endpoint("t-0", true)];
        let huge = format!(
            r#"{{"generation":1,"owner":"{}"}}"#,
            "a".repeat(MAX_DOCUMENT_BYTES)
        );
        let long_owner = format!(r#"{{"generation":1,"owner":"{}"}}"#, "a".repeat(300));
        let cases: [(Option<&str>, Option<&str>, &str); 7] = [
            (Some("{"), None, "summary.json"),
            (Some(r#"{"generation":-1}"#), None, "summary.json"),
            (Some(r#"{"owner":"t-0"}"#), None, "generation"),
            (Some(&huge), None, "bytes"),
            (Some(&long_owner), None, "owner"),
            (
                Some(r#"{"generation":1,"childSas":[{"spiIn":"xyz","spiOut":"00000001"}]}"#),
                None,
                "childSas[0]",
            ),
            (Some(SUMMARY), Some(r#"{"t-0":7}"#), "acks.json"),
        ];
        for (summary, acks, needle) in cases {
            let state = read(Some(&data(summary, acks)));
            let SaState::Unreadable(why) = &state else {
                panic!("{summary:?} {acks:?} read as {state:?}");
            };
            assert!(why.contains(needle), "{why} lacks {needle}");
            assert!(why.len() < 400, "bounded message: {why}");
            let (s, r, m) = synchronized("t-sa", &state, &eps, None, now()).condition;
            assert_eq!((s, r), (Status::Unknown, Reason::StateUnreadable));
            assert!(m.starts_with("Secret t-sa: "), "{m}");
        }
        // Many Child SAs: status shows a bounded number.
        let many: Vec<String> = (0..100)
            .map(|i| format!(r#"{{"spiIn":"{i:08x}","spiOut":"{:08x}"}}"#, i + 1000))
            .collect();
        let summary = format!(r#"{{"generation":2,"childSas":[{}]}}"#, many.join(","));
        let SaState::Published { summary, .. } = read(Some(&data(Some(&summary), None))) else {
            panic!("readable");
        };
        assert_eq!(summary.child_spis.len(), MAX_CHILD_SAS);
        assert_eq!(summary.owner, None);
    }
}
