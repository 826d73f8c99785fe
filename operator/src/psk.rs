//! PSK policy: generate, adopt, rotate. Pure: the Secrets come in, decisions go out ([`plan`]
//! says what to do, [`reconcile`](crate::reconcile) only carries it out).
//!
//! A generated PSK lives in an owned Secret `<tunnel>-psk` and is written exactly once; the
//! Secret remembers, in an annotation, the value of the tunnel's `magictunnel.dev/rotate-psk`
//! annotation it was generated for, so a new value regenerates it once and never again.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use magictunnel_types::config::{MAX_PSK_BYTES, MIN_PSK_LEN, Psk};
use magictunnel_types::psk::{PskError, psk_from_bytes};
use ring::rand::SecureRandom;
use zeroize::Zeroizing;

use crate::reason::Reason;
use crate::validate::{Invalid, PskSource};

/// Key of the PSK in a generated Secret, and the default key of an adopted one.
pub const PSK_KEY: &str = "psk";
/// On a generated Secret: when it was generated (RFC 3339).
pub const GENERATED_AT_ANNOTATION: &str = "magictunnel.dev/psk-generated-at";
/// On a generated Secret: the tunnel's rotate-psk annotation value it was generated for.
pub const ROTATION_ANNOTATION: &str = "magictunnel.dev/psk-rotation";
/// Random bytes in a generated PSK.
pub const GENERATED_PSK_BYTES: usize = 32;

pub fn generated_secret_name(tunnel: &str) -> String {
    format!("{tunnel}-psk")
}

/// A new PSK: 32 bytes from the system CSPRNG, written as 43 URL-safe base64 characters so that
/// it can be typed into any router's configuration unchanged.
pub fn generate(rng: &dyn SecureRandom) -> Result<Psk, ring::error::Unspecified> {
    let mut raw = Zeroizing::new([0u8; GENERATED_PSK_BYTES]);
    rng.fill(raw.as_mut())?;
    let text = Zeroizing::new(URL_SAFE_NO_PAD.encode(raw.as_ref()));
    Ok(Psk::new(text.as_bytes().to_vec()))
}

/// Why a Secret's PSK cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PskProblem {
    #[error("Secret {secret} has no key {key:?}")]
    KeyMissing { secret: String, key: String },
    #[error(
        "the PSK in Secret {secret} key {key:?} is too weak: {len} bytes, at least {MIN_PSK_LEN} are required"
    )]
    TooShort {
        secret: String,
        key: String,
        len: usize,
    },
    #[error(
        "the PSK in Secret {secret} key {key:?} is too long: {len} bytes, at most {MAX_PSK_BYTES} are allowed"
    )]
    TooLong {
        secret: String,
        key: String,
        len: usize,
    },
}

/// Read and check the PSK at `key` of a Secret, by the rule the pod applies to the mounted file
/// ([`psk_from_bytes`]), so a key the operator accepts is one the pod accepts.
pub fn read(secret: &Secret, key: &str) -> Result<Psk, PskProblem> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.as_slice())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|s| s.as_bytes())
        })
        .ok_or_else(|| PskProblem::KeyMissing {
            secret: name.clone(),
            key: key.to_string(),
        })?;
    psk_from_bytes(bytes).map_err(|e| match e {
        PskError::TooShort { len } => PskProblem::TooShort {
            secret: name,
            key: key.to_string(),
            len,
        },
        PskError::TooLong { len } => PskProblem::TooLong {
            secret: name,
            key: key.to_string(),
            len,
        },
    })
}

/// What to do with the generated PSK Secret.
#[derive(Debug, PartialEq, Eq)]
pub enum GeneratedPskAction {
    /// No Secret yet: generate and create it.
    Create,
    /// The Secret is current: use its PSK.
    Keep(Psk),
    /// The rotate-psk annotation has a new value, or the Secret was damaged: regenerate.
    Rotate,
    /// A Secret of that name exists but is not ours: refuse to touch it.
    NameTaken,
}

/// Decide from the existing Secret (if any), the tunnel's UID and its rotate-psk annotation.
pub fn decide(
    existing: Option<&Secret>,
    tunnel_uid: &str,
    rotation: Option<&str>,
) -> GeneratedPskAction {
    let Some(secret) = existing else {
        return GeneratedPskAction::Create;
    };
    let owned = secret
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == tunnel_uid && o.controller == Some(true));
    if !owned {
        return GeneratedPskAction::NameTaken;
    }
    let recorded = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ROTATION_ANNOTATION))
        .map(String::as_str);
    match read(secret, PSK_KEY) {
        Ok(psk) if recorded == rotation => GeneratedPskAction::Keep(psk),
        _ => GeneratedPskAction::Rotate,
    }
}

impl PskProblem {
    pub fn reason(&self) -> Reason {
        match self {
            PskProblem::KeyMissing { .. } => Reason::PskKeyMissing,
            PskProblem::TooShort { .. } => Reason::PskTooWeak,
            PskProblem::TooLong { .. } => Reason::PskTooLong,
        }
    }
}

/// What to do about an IPsec tunnel's PSK, decided from the Secret as read.
#[derive(Debug, PartialEq, Eq)]
pub enum PskPlan {
    /// Use this key; `generated_at` for status (a generated Secret's annotation).
    Use {
        psk: Psk,
        generated_at: Option<String>,
    },
    /// Generate a key and create the Secret.
    Create,
    /// Generate a key and replace the Secret, exactly at this resourceVersion.
    Rotate { resource_version: Option<String> },
    /// The tunnel cannot be deployed with this Secret: report it.
    Problem(Invalid),
}

/// The plan for the PSK of `source`, from the Secret of that name in `namespace` (if it exists).
pub fn plan(
    source: &PskSource,
    namespace: &str,
    existing: Option<&Secret>,
    tunnel_uid: &str,
) -> PskPlan {
    let name = source.secret_name();
    match source {
        PskSource::Adopted { key, .. } => {
            let Some(secret) = existing else {
                return PskPlan::Problem(Invalid {
                    reason: Reason::PskSecretNotFound,
                    message: format!(
                        "Secret {namespace}/{name} named in ipsec.pskSecretRef does not exist; the tunnel is configured as soon as it appears"
                    ),
                });
            };
            match read(secret, key) {
                Ok(psk) => PskPlan::Use {
                    psk,
                    generated_at: None,
                },
                Err(problem) => PskPlan::Problem(Invalid {
                    reason: problem.reason(),
                    message: problem.to_string(),
                }),
            }
        }
        PskSource::Generated { rotation, .. } => {
            match decide(existing, tunnel_uid, rotation.as_deref()) {
                GeneratedPskAction::Keep(psk) => PskPlan::Use {
                    psk,
                    generated_at: existing.and_then(generated_at),
                },
                GeneratedPskAction::Create => PskPlan::Create,
                GeneratedPskAction::Rotate => PskPlan::Rotate {
                    resource_version: existing.and_then(|s| s.metadata.resource_version.clone()),
                },
                GeneratedPskAction::NameTaken => PskPlan::Problem(Invalid {
                    reason: Reason::PskSecretNameTaken,
                    message: format!(
                        "Secret {namespace}/{name} exists but does not belong to this tunnel; delete it, or adopt it with ipsec.pskSecretRef"
                    ),
                }),
            }
        }
    }
}

/// The Event for a PSK the operator wrote (after [`PskPlan::Create`] or [`PskPlan::Rotate`]).
pub fn written_event(created: bool, secret: &str) -> (Reason, String) {
    if created {
        (
            Reason::PskGenerated,
            format!("generated a new PSK in Secret {secret}"),
        )
    } else {
        (
            Reason::PskRotated,
            format!("rotated the PSK in Secret {secret}"),
        )
    }
}

/// The annotations a freshly generated Secret carries.
pub fn generated_annotations(
    now_rfc3339: &str,
    rotation: Option<&str>,
) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    a.insert(GENERATED_AT_ANNOTATION.to_string(), now_rfc3339.to_string());
    if let Some(r) = rotation {
        a.insert(ROTATION_ANNOTATION.to_string(), r.to_string());
    }
    a
}

/// Secret data holding a PSK.
pub fn secret_data(psk: &Psk) -> BTreeMap<String, ByteString> {
    BTreeMap::from([(PSK_KEY.to_string(), ByteString(psk.as_bytes().to_vec()))])
}

/// When the PSK in a generated Secret was generated.
pub fn generated_at(secret: &Secret) -> Option<String> {
    secret
        .metadata
        .annotations
        .as_ref()?
        .get(GENERATED_AT_ANNOTATION)
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
    use ring::rand::SystemRandom;

    const UID: &str = "5f0c2d7e-8a4b-4c1d-9e2f-0123456789ab";

    fn secret(owner: Option<&str>, rotation: Option<&str>, psk: &[u8]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some("t-psk".into()),
                owner_references: owner.map(|uid| {
                    vec![OwnerReference {
                        uid: uid.into(),
                        controller: Some(true),
                        ..Default::default()
                    }]
                }),
                annotations: Some(generated_annotations("2026-11-27T00:00:00Z", rotation)),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                PSK_KEY.to_string(),
                ByteString(psk.to_vec()),
            )])),
            ..Default::default()
        }
    }

    #[test]
    fn generated_psks_are_long_printable_and_distinct() {
        let rng = SystemRandom::new();
        let a = generate(&rng).expect("rng");
        let b = generate(&rng).expect("rng");
        assert_eq!(a.len(), 43);
        assert!(
            a.as_bytes()
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
        );
        assert_ne!(a, b);
    }

    #[test]
    fn adopt_checks_strength_and_key() {
        let strong = secret(None, None, b"0123456789abcdef\n");
        assert_eq!(
            read(&strong, PSK_KEY).expect("ok").as_bytes(),
            b"0123456789abcdef"
        );
        assert!(matches!(
            read(&secret(None, None, b"short"), PSK_KEY),
            Err(PskProblem::TooShort { len: 5, .. })
        ));
        assert!(matches!(
            read(&strong, "other"),
            Err(PskProblem::KeyMissing { .. })
        ));
        // The shared rule: 15 bytes and a newline are 15 bytes; a value beyond the pod's file
        // limit is refused here too.
        assert!(matches!(
            read(&secret(None, None, b"0123456789abcde\n"), PSK_KEY),
            Err(PskProblem::TooShort { len: 15, .. })
        ));
        assert!(matches!(
            read(&secret(None, None, &[b'k'; MAX_PSK_BYTES + 1]), PSK_KEY),
            Err(PskProblem::TooLong { .. })
        ));
        // stringData (not yet encoded by the API server) follows the same rule.
        let mut string_only = secret(None, None, b"");
        string_only.data = None;
        string_only.string_data = Some(BTreeMap::from([(
            PSK_KEY.to_string(),
            "0123456789abcdef\r\n".to_string(),
        )]));
        assert_eq!(
            read(&string_only, PSK_KEY).expect("ok").as_bytes(),
            b"0123456789abcdef"
        );
        // The message names the Secret but never holds the key.
        let msg = read(&secret(None, None, b"hunter2"), PSK_KEY)
            .expect_err("weak")
            .to_string();
        assert!(msg.contains("t-psk") && !msg.contains("hunter2"), "{msg}");
    }

    fn adopted() -> PskSource {
        PskSource::Adopted {
            secret: "t-psk".into(),
            key: PSK_KEY.into(),
        }
    }

    #[test]
    fn plan_maps_each_problem_to_its_reason() {
        let reason = |p: PskPlan| match p {
            PskPlan::Problem(i) => Some(i.reason),
            _ => None,
        };
        let missing = plan(&adopted(), "ns", None, UID);
        assert_eq!(reason(missing), Some(Reason::PskSecretNotFound));
        let PskPlan::Problem(i) = plan(&adopted(), "ns", None, UID) else {
            panic!("a missing Secret is a problem")
        };
        assert!(i.message.contains("ns/t-psk"), "{}", i.message);
        let weak = secret(None, None, b"short");
        assert_eq!(
            reason(plan(&adopted(), "ns", Some(&weak), UID)),
            Some(Reason::PskTooWeak)
        );
        let long = secret(None, None, &vec![b'x'; MAX_PSK_BYTES + 1]);
        assert_eq!(
            reason(plan(&adopted(), "ns", Some(&long), UID)),
            Some(Reason::PskTooLong)
        );
        let other_key = PskSource::Adopted {
            secret: "t-psk".into(),
            key: "nope".into(),
        };
        let good = secret(None, None, b"0123456789abcdef");
        assert_eq!(
            reason(plan(&other_key, "ns", Some(&good), UID)),
            Some(Reason::PskKeyMissing)
        );
        assert_eq!(
            plan(&adopted(), "ns", Some(&good), UID),
            PskPlan::Use {
                psk: Psk::new(b"0123456789abcdef".to_vec()),
                generated_at: None
            }
        );
    }

    #[test]
    fn plan_creates_rotates_keeps_or_refuses_the_generated_secret() {
        let generated = |rotation: Option<&str>| PskSource::Generated {
            secret: "t-psk".into(),
            rotation: rotation.map(str::to_string),
        };
        assert_eq!(plan(&generated(None), "ns", None, UID), PskPlan::Create);
        let mut ours = secret(Some(UID), None, &[b'x'; 43]);
        ours.metadata.resource_version = Some("41".into());
        assert_eq!(
            plan(&generated(None), "ns", Some(&ours), UID),
            PskPlan::Use {
                psk: Psk::new(vec![b'x'; 43]),
                generated_at: Some("2026-11-27T00:00:00Z".into())
            }
        );
        assert_eq!(
            plan(&generated(Some("2")), "ns", Some(&ours), UID),
            PskPlan::Rotate {
                resource_version: Some("41".into())
            }
        );
        let foreign = secret(Some("other"), None, &[b'x'; 43]);
        assert!(matches!(
            plan(&generated(None), "ns", Some(&foreign), UID),
            PskPlan::Problem(Invalid {
                reason: Reason::PskSecretNameTaken,
                ..
            })
        ));
        assert_eq!(written_event(true, "t-psk").0, Reason::PskGenerated);
        assert_eq!(written_event(false, "t-psk").0, Reason::PskRotated);
    }

    #[test]
    fn generation_happens_once_and_rotation_once_per_value() {
        let good = [b'x'; 43];
        assert_eq!(decide(None, UID, None), GeneratedPskAction::Create);
        assert_eq!(
            decide(Some(&secret(Some(UID), None, &good)), UID, None),
            GeneratedPskAction::Keep(Psk::new(good.to_vec()))
        );
        assert_eq!(
            decide(Some(&secret(Some(UID), None, &good)), UID, Some("1")),
            GeneratedPskAction::Rotate
        );
        assert_eq!(
            decide(Some(&secret(Some(UID), Some("1"), &good)), UID, Some("1")),
            GeneratedPskAction::Keep(Psk::new(good.to_vec()))
        );
        assert_eq!(
            decide(
                Some(&secret(Some(UID), Some("1"), b"damaged")),
                UID,
                Some("1")
            ),
            GeneratedPskAction::Rotate
        );
        assert_eq!(
            decide(Some(&secret(Some("other-uid"), None, &good)), UID, None),
            GeneratedPskAction::NameTaken
        );
        assert_eq!(
            decide(Some(&secret(None, None, &good)), UID, None),
            GeneratedPskAction::NameTaken
        );
    }
}
