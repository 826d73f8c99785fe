//! The data of the `<tunnel>-sa` Secret: `state.json` (the full shared state, keys included;
//! its format is private to this module), `summary.json` and `acks.json` (no keys; the operator
//! and tests read them, formats in the issue #11 contract).
//!
//! Parsing is bounded ([`MAX_STATE`]) and total: garbage gives an error, never a panic. `Debug`
//! of [`StateDoc`] and [`ChildDoc`] shows SPIs and counts, never key material.

use std::collections::BTreeMap;
use std::net::SocketAddrV4;

use serde::{Deserialize, Serialize};

use crate::esp::sa::OutboundState;
use magictunnel_types::static_sa::SaParams;

pub const STATE_KEY: &str = "state.json";
pub const SUMMARY_KEY: &str = "summary.json";
pub const ACKS_KEY: &str = "acks.json";
/// The largest `state.json` accepted or written.
pub const MAX_STATE: usize = 256 * 1024;
/// The largest `acks.json` accepted (16 replicas need a few KiB).
pub const MAX_ACKS: usize = 64 * 1024;
const VERSION: u32 = 1;

/// Why a Secret's data could not be used. No variant carries any of the data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocError {
    #[error("{0} is larger than {1} bytes")]
    TooLarge(&'static str, usize),
    #[error("{0} is not valid: {1}")]
    Malformed(&'static str, String),
    #[error("state.json has version {0}, this tunnel-pod reads version {VERSION}")]
    Version(u32),
}

impl DocError {
    /// A bounded metric/status label.
    pub fn as_str(&self) -> &'static str {
        match self {
            DocError::TooLarge(..) => "too_large",
            DocError::Malformed(..) => "malformed",
            DocError::Version(_) => "version",
        }
    }
}

/// One Child SA as the replicas share it: both directions' parameters (keys), the outbound
/// sender state (IV base and the shared sequence epoch; the sequence number itself is not
/// shared: each replica continues in its own slot above the clock's floor).
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChildDoc {
    pub inbound: SaParams,
    pub outbound: OutboundState,
    pub outbound_active: bool,
}

impl ChildDoc {
    pub fn spi_in(&self) -> u32 {
        self.inbound.spi
    }
    pub fn spi_out(&self) -> u32 {
        self.outbound.params.spi
    }
}

impl std::fmt::Debug for ChildDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildDoc")
            .field("spi_in", &format_args!("{:08x}", self.spi_in()))
            .field("spi_out", &format_args!("{:08x}", self.spi_out()))
            .field("outbound_active", &self.outbound_active)
            .finish_non_exhaustive()
    }
}

/// What the replicas share besides ownership: the IKE SAs (the core's snapshots, kept as JSON
/// here so that this module does not depend on their inner form), the Child SAs' ESP state and
/// where ESP goes.
#[derive(Serialize, Deserialize, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Content {
    /// `ike::core::IkeSaSnapshot`s as JSON.
    #[serde(default)]
    pub ike_sas: Vec<serde_json::Value>,
    /// The SPI pairs of `ike_sas` (SPIi, SPIr), in the same order: read without the snapshots.
    #[serde(default)]
    pub ike_spis: Vec<(u64, u64)>,
    /// Unix ms of the earliest rekey due among `ike_sas` and their children (liveness fallback).
    #[serde(default)]
    pub next_rekey_ms: Option<u64>,
    #[serde(default)]
    pub children: Vec<ChildDoc>,
    /// The ESP peer, and whether the data socket on 4500 is connected to it.
    #[serde(default)]
    pub esp_peer: Option<SocketAddrV4>,
    #[serde(default)]
    pub peer_on_data_socket: bool,
}

impl std::fmt::Debug for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ike: Vec<_> = self
            .ike_spis
            .iter()
            .map(|(i, r)| format!("{i:016x}/{r:016x}"))
            .collect();
        f.debug_struct("Content")
            .field("ike_sas", &ike)
            .field("children", &self.children)
            .field("esp_peer", &self.esp_peer)
            .finish_non_exhaustive()
    }
}

/// `state.json`.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StateDoc {
    pub version: u32,
    pub generation: u64,
    pub owner: Option<String>,
    pub published_at_ms: u64,
    #[serde(flatten)]
    pub content: Content,
}

impl StateDoc {
    pub fn new(
        generation: u64,
        owner: Option<String>,
        published_at_ms: u64,
        content: Content,
    ) -> Self {
        StateDoc {
            version: VERSION,
            generation,
            owner,
            published_at_ms,
            content,
        }
    }

    /// Parses `state.json`: at most [`MAX_STATE`] bytes, of this version.
    pub fn parse(bytes: &[u8]) -> Result<Self, DocError> {
        if bytes.len() > MAX_STATE {
            return Err(DocError::TooLarge(STATE_KEY, MAX_STATE));
        }
        let doc: StateDoc = serde_json::from_slice(bytes)
            .map_err(|e| DocError::Malformed(STATE_KEY, where_(&e)))?;
        if doc.version != VERSION {
            return Err(DocError::Version(doc.version));
        }
        // The engine adds 1 to a generation it read (claims, publishes): keep that far from
        // overflowing (2^53: also what JSON readers hold exactly).
        if doc.generation > 1 << 53 {
            return Err(DocError::Malformed(
                STATE_KEY,
                "generation above 2^53".into(),
            ));
        }
        Ok(doc)
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, DocError> {
        let bytes =
            serde_json::to_vec(self).map_err(|e| DocError::Malformed(STATE_KEY, where_(&e)))?;
        if bytes.len() > MAX_STATE {
            return Err(DocError::TooLarge(STATE_KEY, MAX_STATE));
        }
        Ok(bytes)
    }

    /// `summary.json` (no keys).
    pub fn summary(&self) -> Summary {
        Summary {
            generation: self.generation,
            owner: self.owner.clone(),
            published_at: rfc3339_ms(self.published_at_ms),
            ike_sas: (self.content.ike_spis.iter())
                .map(|(i, r)| IkeSpis {
                    spi_i: format!("{i:016x}"),
                    spi_r: format!("{r:016x}"),
                })
                .collect(),
            child_sas: (self.content.children.iter())
                .map(|c| ChildSpis {
                    spi_in: format!("{:08x}", c.spi_in()),
                    spi_out: format!("{:08x}", c.spi_out()),
                })
                .collect(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub generation: u64,
    pub owner: Option<String>,
    pub published_at: String,
    pub ike_sas: Vec<IkeSpis>,
    pub child_sas: Vec<ChildSpis>,
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[serde(rename_all = "camelCase")]
pub struct IkeSpis {
    pub spi_i: String,
    pub spi_r: String,
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[serde(rename_all = "camelCase")]
pub struct ChildSpis {
    pub spi_in: String,
    pub spi_out: String,
}

/// One replica's entry of `acks.json`.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct Ack {
    pub generation: u64,
    pub at: String,
}

pub type Acks = BTreeMap<String, Ack>;

/// Parses `acks.json` (absent or empty: no acks). A malformed one is an error; the caller
/// starts a fresh map rather than keep garbage.
pub fn parse_acks(bytes: Option<&[u8]>) -> Result<Acks, DocError> {
    let Some(bytes) = bytes.filter(|b| !b.is_empty()) else {
        return Ok(Acks::new());
    };
    if bytes.len() > MAX_ACKS {
        return Err(DocError::TooLarge(ACKS_KEY, MAX_ACKS));
    }
    serde_json::from_slice(bytes).map_err(|e| DocError::Malformed(ACKS_KEY, where_(&e)))
}

/// Where and what kind of error a JSON parse met, without serde_json's message: that may
/// quote the input ("invalid value: string ..."), and the input holds keys.
pub fn where_(e: &serde_json::Error) -> String {
    let kind = match e.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "unexpected content",
        serde_json::error::Category::Eof => "truncated",
    };
    format!("{kind} at line {} column {}", e.line(), e.column())
}

/// Unix ms as RFC 3339 with milliseconds (`2026-12-01T17:00:00.123Z`).
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let ms = i64::try_from(unix_ms).unwrap_or(i64::MAX);
    match k8s_openapi::jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => format!("{t:.3}"),
        Err(_) => String::new(),
    }
}

/// The inverse of [`rfc3339_ms`] (any RFC 3339 timestamp).
pub fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    let t: k8s_openapi::jiff::Timestamp = s.parse().ok()?;
    u64::try_from(t.as_millisecond()).ok()
}

pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use magictunnel_types::algorithms::EspEncryption;

    fn params(spi: u32) -> SaParams {
        serde_json::from_value(serde_json::json!({
            "spi": spi,
            "encryption": "AES-GCM-16-128",
            "encryptionKey": "AAECAwQFBgcICQoLDA0ODxAREhM=",
        }))
        .unwrap()
    }

    pub(crate) fn child(spi_in: u32, spi_out: u32) -> ChildDoc {
        ChildDoc {
            inbound: params(spi_in),
            outbound: serde_json::from_value(serde_json::json!({
                "params": params(spi_out), "seq": 0, "ivBase": 7
            }))
            .unwrap(),
            outbound_active: true,
        }
    }

    fn doc() -> StateDoc {
        StateDoc::new(
            7,
            Some("pod-a".into()),
            1_796_144_400_123,
            Content {
                ike_sas: vec![serde_json::json!({"opaque": true})],
                ike_spis: vec![(0x1122_3344_5566_7788, 0x99aa_bbcc_ddee_ff00)],
                next_rekey_ms: Some(5),
                children: vec![child(0xc000_0001, 0xd000_0002)],
                esp_peer: Some("203.0.113.2:4500".parse().unwrap()),
                peer_on_data_socket: true,
            },
        )
    }

    #[test]
    fn round_trip_and_summary() {
        let d = doc();
        assert!(matches!(
            d.content.children[0].inbound.encryption,
            EspEncryption::AesGcm16_128
        ));
        let bytes = d.to_bytes().unwrap();
        assert_eq!(StateDoc::parse(&bytes).unwrap(), d);
        let s = serde_json::to_value(d.summary()).unwrap();
        assert_eq!(
            s,
            serde_json::json!({
                "generation": 7, "owner": "pod-a", "publishedAt": "2026-12-01T17:00:00.123Z",
                "ikeSas": [{"spiI": "1122334455667788", "spiR": "99aabbccddeeff00"}],
                "childSas": [{"spiIn": "c0000001", "spiOut": "d0000002"}],
            })
        );
        assert_eq!(
            parse_rfc3339_ms("2026-12-01T17:00:00.123Z"),
            Some(1_796_144_400_123)
        );
    }

    #[test]
    fn garbage_and_oversized_are_errors() {
        for g in [
            &b""[..],
            b"{",
            b"[]",
            b"null",
            b"{\"version\":1}",
            b"\xff\xfe",
            b"{\"version\":1,\"generation\":-1,\"owner\":null,\"publishedAtMs\":0}",
            // Found by the sa_state_import fuzz target: the engine's generation + 1 overflowed.
            b"{\"version\":1,\"generation\":18446744073709551615,\"owner\":null,\"publishedAtMs\":0}",
        ] {
            assert!(
                matches!(StateDoc::parse(g), Err(DocError::Malformed(..))),
                "{g:?}"
            );
        }
        let mut v = serde_json::to_value(doc()).unwrap();
        v["version"] = 2.into();
        assert_eq!(
            StateDoc::parse(&serde_json::to_vec(&v).unwrap()),
            Err(DocError::Version(2))
        );
        let big = vec![b' '; MAX_STATE + 1];
        assert_eq!(
            StateDoc::parse(&big),
            Err(DocError::TooLarge(STATE_KEY, MAX_STATE))
        );
        let mut d = doc();
        d.content.ike_sas = vec![serde_json::Value::String("x".repeat(MAX_STATE))];
        assert!(matches!(d.to_bytes(), Err(DocError::TooLarge(..))));
        assert!(parse_acks(Some(b"{\"a\":1}")).is_err());
        // A key in the wrong place is not quoted by the error.
        let mut v = serde_json::to_value(doc()).unwrap();
        v["children"][0]["inbound"]["spi"] = "AAECAwQFBgcICQoLDA0ODxAREhM=".into();
        let e = StateDoc::parse(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(!e.to_string().contains("AAECAwQF"), "{e}");
        v["children"][0]["inbound"]["spi"] = 1.into();
        v["children"][0]["inbound"]["encryptionKey"] = "AAECAwQF!!".into();
        let e = StateDoc::parse(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(!e.to_string().contains("AAECAwQF"), "{e}");
        assert!(parse_acks(Some(&vec![b' '; MAX_ACKS + 1])).is_err());
        assert_eq!(parse_acks(None).unwrap(), Acks::new());
    }

    #[test]
    fn debug_shows_no_key() {
        let d = doc();
        let text = format!("{d:?}");
        assert!(text.contains("c0000001"), "{text}");
        assert!(!text.contains("AAECAwQF"), "{text}");
        let json = String::from_utf8(d.to_bytes().unwrap()).unwrap();
        assert!(
            json.contains("AAECAwQF"),
            "the state itself carries the key"
        );
        let summary = serde_json::to_string(&d.summary()).unwrap();
        assert!(!summary.contains("AAECAwQF"));
    }
}
