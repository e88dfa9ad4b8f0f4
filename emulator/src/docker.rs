//! The fixtures' Docker path, through the `testcontainers` crate: whether to try Docker, and a
//! running container that is removed when dropped. Each fixture (Azurite, moto, the GCS
//! emulator) falls back to a child process, or says why it cannot, when no daemon answers.

use std::time::Duration;

use testcontainers::core::ContainerPort;
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, ContainerRequest, Image};

/// How long an image may take to pull and start.
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// Whether to try a container: not when `REDWOOD_DOCKER=0` (or the fixture's own switch, such
/// as `REDWOOD_AZURITE_DOCKER=0`) says so, and only where a daemon can be reached (`DOCKER_HOST`
/// is set, or the default socket exists). A socket without a daemon behind it fails fast at
/// start, and the fixture falls back.
pub fn wanted(own_switch: &str) -> bool {
    let off = |name: &str| std::env::var(name).as_deref() == Ok("0");
    if off("REDWOOD_DOCKER") || off(own_switch) {
        return false;
    }
    std::env::var_os("DOCKER_HOST").is_some_and(|h| !h.is_empty())
        || std::path::Path::new("/var/run/docker.sock").exists()
}

/// A container this process started; removed when dropped (testcontainers does it).
pub struct Container {
    id: String,
    // Kept for its drop.
    _held: Box<dyn std::any::Any + Send + Sync>,
}

impl std::fmt::Debug for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Container").field("id", &self.id).finish()
    }
}

/// Starts `request` and returns it with the `http://host:port` of each of `ports`.
pub async fn start<I: Image + 'static>(
    request: ContainerRequest<I>,
    ports: &[ContainerPort],
) -> Result<(Container, Vec<String>), String> {
    use testcontainers::ImageExt;
    let name = request.descriptor();
    let started: ContainerAsync<I> = request
        .with_startup_timeout(START_TIMEOUT)
        .start()
        .await
        .map_err(|e| format!("cannot start the container {name}: {e}"))?;
    let host = started
        .get_host()
        .await
        .map_err(|e| format!("container {name} has no host: {e}"))?
        .to_string();
    // Loopback by number: `localhost` may resolve to ::1 first, where Docker may not publish.
    let host = if host == "localhost" {
        "127.0.0.1".to_string()
    } else {
        host
    };
    let mut urls = Vec::new();
    for port in ports {
        let published = started
            .get_host_port_ipv4(*port)
            .await
            .map_err(|e| format!("container {name} does not publish {port:?}: {e}"))?;
        urls.push(format!("http://{host}:{published}"));
    }
    let container = Container {
        id: started.id().to_string(),
        _held: Box::new(started),
    };
    tracing::info!(id = %container.id, image = %name, "container started");
    Ok((container, urls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_turn_docker_off() {
        // Whatever this machine has, the switches win (read-only: no variable is changed).
        if std::env::var("REDWOOD_DOCKER").as_deref() == Ok("0") {
            assert!(!wanted("REDWOOD_NONE_DOCKER"));
        }
        let has_daemon_socket = std::env::var_os("DOCKER_HOST").is_some()
            || std::path::Path::new("/var/run/docker.sock").exists();
        if !has_daemon_socket {
            assert!(!wanted("REDWOOD_NONE_DOCKER"));
        }
    }
}
