//! The IKE task: the I/O shell around the sans-IO core in the `ike` crate.
//! (Placeholder until the core lands: an IKE-keyed tunnel still refuses to start.)

use std::sync::Arc;

use anyhow::{Result, bail};
use socket2::Socket;
use tokio::sync::{Notify, mpsc};

use crate::config::{IpsecConfig, TunnelConfig};
use crate::dataplane::{IkeDatagram, Path};
use crate::http::Status;

pub struct Shell;

impl Shell {
    pub fn new(
        _config: &TunnelConfig,
        _ipsec: &IpsecConfig,
        _path: Arc<Path>,
        _sock500: Socket,
        _status: Arc<Status>,
    ) -> Result<Self> {
        bail!(
            "IKEv2 is not built yet: an IPsec tunnel runs with manually keyed SAs (ipsec.staticSa) only"
        )
    }
}

pub async fn run(_shell: Shell, _rx: mpsc::Receiver<IkeDatagram>, _shutdown: Arc<Notify>) {}
