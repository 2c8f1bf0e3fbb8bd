//! End-to-end tests of the service over real HTTP on loopback, started
//! in-process (`Service::start` on 127.0.0.1:0) with real cargo builds of
//! the example plugins (shared target dir and build cache, see
//! `sandbox_testkit::shared_cache_root`). Sandboxes here are trusted and
//! in-process; the `sandbox serve` binary (process sandboxes, kill -9,
//! SIGTERM) is tested in `sandbox-cli`.

mod api;
mod browser;
mod dashboard;
mod events;
mod restore;

use std::path::{Path, PathBuf};
use std::time::Duration;

use sandbox_serve::client::Client;
use sandbox_serve::{RateLimit, ServeConfig, Service};
use serde_json::{json, Value};

/// The token every test service accepts.
pub const TOKEN: &str = "test-token-0123456789";

/// Long enough for a cold build of the plugin's dependencies.
pub const BUILD: Duration = Duration::from_secs(600);

/// A service configuration for tests: loopback, a free port, the shared
/// build cache, a work folder under `scratch`.
pub fn config(data: &Path, scratch: &Path) -> ServeConfig {
    let mut config = ServeConfig::new("127.0.0.1:0".parse().unwrap(), data);
    config.manager = sandbox_testkit::test_config(scratch);
    config.tokens = vec![TOKEN.into()];
    config.rate_limit = RateLimit::default();
    // The tests run the repository's own examples, declared trusted.
    config.allow_trusted = true;
    config
}

/// A running service and a client of it.
pub struct Running {
    /// The service.
    pub service: Service,
    /// A client with [`TOKEN`].
    pub client: Client,
}

/// Starts a service and waits (within [`BUILD`]) until it is ready.
pub async fn start(config: ServeConfig) -> Running {
    let mut service = Service::start(config).await.expect("the service starts");
    tokio::time::timeout(BUILD, service.ready())
        .await
        .expect("the service becomes ready");
    let client = Client::new(service.local_addr(), Some(TOKEN.into()));
    Running { service, client }
}

/// A copy of example `name` in `dir`.
pub fn example(name: &str, dir: &Path) -> PathBuf {
    let to = dir.join(name);
    sandbox_testkit::fixtures::copy_crate(&sandbox_testkit::example_dir(name), &to)
        .expect("copy the example");
    to
}

/// The create request of a trusted (in-process) sandbox.
pub fn trusted(id: &str, source: &Path) -> Value {
    json!({"id": id, "source": source, "profile": "trusted"})
}

/// Calls the counter module of sandbox `id` with `{"add": n}`; returns the
/// answer after checking it is a 200.
pub async fn add(client: &Client, id: &str, n: i64) -> Value {
    let a = client
        .post_json(
            &format!("/v1/sandboxes/{id}/modules/counter/call"),
            &json!({"add": n}),
        )
        .await
        .expect("the call is answered");
    assert_eq!(a.status, 200, "{}", a.text());
    a.json()
}
