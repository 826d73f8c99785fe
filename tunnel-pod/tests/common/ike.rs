//! What the IKEv2 tests share: the tunnel's identities and PSK, the responder's `ipsec:` block,
//! the branch connection the tests start from, waiting for the IKE sockets, and `/status`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::strongswan::SwanConn;
use super::{Lab, Side, wait_for};

/// The branch's connection name (IKE SA and child).
pub const CONN: &str = "branch";
pub const PSK: &str = "interop-psk-0123456789abcdef0123";
pub const TUNNEL_ID: &str = "0123456789abcdef0123456789abcdef";
pub const ACCOUNT: &str = "acct1";
pub const DOMAIN: &str = "ipsec.example";
/// tunnel-pod's TUN address in side B (interfaceAddress 10.99.0.1/31).
pub const RESPONDER_INNER: &str = "10.99.0.1";
/// The branch's first inner network and its address on A's loopback.
pub const BRANCH_TS: &str = "10.10.0.0/24";
pub const BRANCH_INNER: &str = "10.10.0.1";

/// The tunnel's FQDN ID in swanctl syntax.
pub fn fqdn_id() -> String {
    format!("@{TUNNEL_ID}.{ACCOUNT}.{DOMAIN}")
}

/// The branch in A (203.0.113.1, or `local`) towards tunnel-pod in B with the FQDN ID, the PSK,
/// AES-GCM-256/PRF-SHA384/ECP-384 and one selector pair (BRANCH_TS ↔ RESPONDER_INNER/32).
pub fn branch_conn(local: &str) -> SwanConn {
    let mut c = SwanConn::new(CONN, local, "203.0.113.2", &fqdn_id(), PSK);
    c.ike_proposals = "aes256gcm16-prfsha384-ecp384".to_string();
    c.esp_proposals = "aes256gcm16".to_string();
    c.local_ts = vec![BRANCH_TS.to_string()];
    c.remote_ts = vec![format!("{RESPONDER_INNER}/32")];
    c
}

/// tunnel-pod's `ipsec:` block: the PSK file, all four IDs of the tunnel, replay protection,
/// and `allowNullCipher`.
pub fn ipsec_block(psk_file: &Path, allow_null: bool) -> String {
    format!(
        "  pskFile: {}\n  acceptedIds:\n\
         \x20   - {{type: RFC822Addr, value: \"ipsec@{TUNNEL_ID}.{ACCOUNT}.{DOMAIN}\"}}\n\
         \x20   - {{type: FQDN, value: \"{TUNNEL_ID}.{ACCOUNT}.{DOMAIN}\"}}\n\
         \x20   - {{type: KeyID, value: \"{ACCOUNT}_{TUNNEL_ID}\"}}\n\
         \x20   - {{type: IPv4Addr, value: \"203.0.113.1\"}}\n\
         \x20 replayProtection: true\n  allowNullCipher: {}",
        psk_file.display(),
        allow_null
    )
}

pub fn psk_file(lab: &Lab) -> PathBuf {
    lab.dir.join("psk")
}

/// Replaces the PSK file the way a Kubernetes Secret volume does: a new file renamed over.
pub fn write_psk(lab: &Lab, psk: &str) {
    let tmp = lab.dir.join("psk.new");
    fs::write(&tmp, psk).unwrap_or_else(|e| panic!("{}: {e}", tmp.display()));
    fs::rename(&tmp, psk_file(lab)).unwrap_or_else(|e| panic!("psk rename: {e}"));
}

/// Waits until tunnel-pod has its IKE sockets (UDP 500 and 4500) bound.
pub fn wait_ike_sockets(lab: &mut Lab) {
    let up = wait_for(Duration::from_secs(20), Duration::from_millis(100), || {
        if lab.exited(Side::B).is_some() {
            return Some(false);
        }
        let filter = "( sport = :500 or sport = :4500 )";
        let out = lab.exec(Side::B, "ss", &["-Hlun", filter]);
        (String::from_utf8_lossy(&out.stdout).lines().count() >= 2).then_some(true)
    });
    if up != Some(true) {
        panic!(
            "tunnel-pod did not bind UDP 500 and 4500 within 20 s (exited: {:?}){}",
            lab.exited(Side::B),
            lab.logs()
        );
    }
}

/// What a responder reports about one IKE SA.
#[derive(Debug)]
pub struct PeerSa {
    pub established: bool,
    /// (spi-in, spi-out) of each child.
    pub children: Vec<(u32, u32)>,
}

/// A child SPI printed as hex, with or without `0x`.
pub fn spi(text: &str) -> Option<u32> {
    let t = text.trim();
    u32::from_str_radix(t.strip_prefix("0x").unwrap_or(t), 16).ok()
}

fn json_spi(v: &serde_json::Value) -> Option<u32> {
    match v {
        serde_json::Value::String(s) => spi(s),
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        _ => None,
    }
}

/// The SAs in tunnel-pod's `/status`: an `ikeSas` array whose elements have `state`
/// ("ESTABLISHED" once up, any case) and `childSas` with `spiIn` / `spiOut`.
pub fn pod_sas(lab: &Lab) -> Vec<PeerSa> {
    let body = match lab.http(Side::B, "/status") {
        Some((200, body)) => body,
        other => panic!("GET /status: {other:?}{}", lab.logs()),
    };
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/status is not JSON ({e}): {body}"));
    let Some(sas) = v.get("ikeSas").and_then(|s| s.as_array()) else {
        panic!("/status has no `ikeSas` array: {body}");
    };
    sas.iter()
        .map(|sa| PeerSa {
            established: sa
                .get("state")
                .and_then(|s| s.as_str())
                .is_some_and(|s| s.eq_ignore_ascii_case("established")),
            children: sa
                .get("childSas")
                .and_then(|c| c.as_array())
                .map(|cs| {
                    cs.iter()
                        .filter_map(|c| {
                            Some((json_spi(c.get("spiIn")?)?, json_spi(c.get("spiOut")?)?))
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect()
}
