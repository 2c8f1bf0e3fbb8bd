//! The isolator registry: a new backend is an `Isolator` with a kind of its
//! own plus one `ManagerBuilder::isolator` call, and one that does not
//! confine untrusted code only ever gets trusted source.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use sandbox_core::isolate::{InProcess, IsolationKind, Isolator, LaunchSpec, Runtime};
use sandbox_core::security::Profile;
use sandbox_core::{Error, Manager, SandboxSpec};
use sandbox_testkit::{fixtures, test_config};

/// A backend of its own kind that counts launches and runs modules in
/// process (so it does not confine anything).
#[derive(Debug, Default)]
struct Counted {
    launches: Arc<AtomicUsize>,
    inner: InProcess,
}

impl Isolator for Counted {
    fn kind(&self) -> IsolationKind {
        IsolationKind::new("counted").unwrap()
    }

    fn launch(&self, spec: &LaunchSpec) -> sandbox_core::isolate::Result<Box<dyn Runtime>> {
        self.launches.fetch_add(1, Ordering::SeqCst);
        self.inner.launch(spec)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registered_backend_runs_the_sandboxes_of_its_kind() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("counter");
    fixtures::copy_crate(&sandbox_testkit::example_dir("counter"), &src).unwrap();
    let counted = Counted::default();
    let launches = Arc::clone(&counted.launches);
    let manager = Manager::builder(test_config(dir.path()))
        .isolator(counted)
        .build()
        .unwrap();
    let kind = IsolationKind::new("counted").unwrap();
    assert!(manager.isolation_kinds().any(|k| *k == kind));

    let spec = SandboxSpec::trusted(&src).isolation(kind.clone());
    let sandbox = manager.create("c", spec).await.unwrap();
    assert_eq!(launches.load(Ordering::SeqCst), 1);
    assert_eq!(sandbox.info().unwrap().isolation, kind);
    let out = sandbox
        .call_json("counter", &serde_json::json!({"add": 2}))
        .await
        .unwrap();
    assert_eq!(out["value"], 2);

    // It does not say it confines untrusted code: anything but `trusted`
    // is refused before a build, and nothing is launched.
    let err = manager
        .create(
            "u",
            SandboxSpec::new(&src)
                .isolation(kind.clone())
                .profile(Profile::Medium),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UntrustedInProcess { .. }), "{err}");
    assert!(err.to_string().contains("`counted`"), "{err}");
    assert_eq!(launches.load(Ordering::SeqCst), 1);
    assert_eq!(manager.list().len(), 1);
}
