//! The OpenMetrics text exposition, shared by the operator's and the endpoint's registries.

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;

pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, registry);
    out
}
