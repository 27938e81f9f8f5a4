//! Announces the Wyoming port over mDNS as `NAME._wyoming._tcp.local.`, the
//! service Home Assistant's Wyoming integration discovers (wyoming-piper
//! announces the same with `--zeroconf`), so that piperd shows up under
//! Settings → Devices & services without typing a host.
//!
//! The announcement goes out only where the listener is: on every interface
//! when `PIPER_HOST` is `0.0.0.0` or `::`, else on the interface of that
//! address alone (loopback for `127.0.0.1`).

use std::net::IpAddr;
use std::time::Duration;

use mdns_sd::{IfKind, ServiceDaemon, ServiceInfo};

/// The service type Home Assistant browses for.
pub const SERVICE_TYPE: &str = "_wyoming._tcp.local.";

/// How long stopping waits for the goodbye packets to go out.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
#[error("zeroconf announcement failed: {0}")]
pub struct ZeroconfError(#[from] mdns_sd::Error);

/// A running announcement; [`Announcement::stop`] says goodbye.
pub struct Announcement {
    daemon: ServiceDaemon,
    fullname: String,
}

impl Announcement {
    /// Starts announcing `name` for the Wyoming listener on `host:port`.
    pub fn start(name: &str, host: IpAddr, port: u16) -> Result<Announcement, ZeroconfError> {
        let daemon = ServiceDaemon::new()?;
        if !host.is_unspecified() {
            daemon.disable_interface(IfKind::All)?;
            daemon.enable_interface(interface_of(host))?;
        }
        let host_name = format!("{}.local.", host_label(name));
        let info = if host.is_unspecified() {
            ServiceInfo::new(
                SERVICE_TYPE,
                name,
                &host_name,
                "",
                port,
                None::<std::collections::HashMap<String, String>>,
            )?
            .enable_addr_auto()
        } else {
            ServiceInfo::new(
                SERVICE_TYPE,
                name,
                &host_name,
                host,
                port,
                None::<std::collections::HashMap<String, String>>,
            )?
        };
        let fullname = info.get_fullname().to_string();
        daemon.register(info)?;
        Ok(Announcement { daemon, fullname })
    }

    /// The announced instance, `NAME._wyoming._tcp.local.`.
    pub fn fullname(&self) -> &str {
        &self.fullname
    }

    /// Withdraws the announcement (so Home Assistant forgets it at once)
    /// and stops the daemon's thread. Blocks for at most a few seconds: call
    /// it off the runtime's threads.
    pub fn stop(self) {
        if let Ok(done) = self.daemon.unregister(&self.fullname) {
            let _ = done.recv_timeout(STOP_TIMEOUT);
        }
        if let Ok(done) = self.daemon.shutdown() {
            let _ = done.recv_timeout(STOP_TIMEOUT);
        }
    }
}

fn interface_of(host: IpAddr) -> IfKind {
    match host {
        IpAddr::V4(v4) if v4.is_loopback() => IfKind::LoopbackV4,
        IpAddr::V6(v6) if v6.is_loopback() => IfKind::LoopbackV6,
        addr => IfKind::Addr(addr),
    }
}

/// A DNS host label made of the instance name: letters, digits and dashes.
fn host_label(name: &str) -> String {
    let label: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let label = label.trim_matches('-');
    if label.is_empty() {
        "piperd".to_string()
    } else {
        label.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_labels_are_dns_safe() {
        assert_eq!(host_label("Living room TTS"), "living-room-tts");
        assert_eq!(host_label("!!"), "piperd");
    }

    #[test]
    fn the_announcement_follows_the_listener() {
        assert!(matches!(
            interface_of("127.0.0.1".parse().unwrap()),
            IfKind::LoopbackV4
        ));
        let lan: IpAddr = "192.0.2.7".parse().unwrap();
        assert!(matches!(interface_of(lan), IfKind::Addr(addr) if addr == lan));
    }
}
