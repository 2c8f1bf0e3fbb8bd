//! The `Isolator` and `Runtime` traits and the types they speak.

use std::borrow::Cow;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Limit, Result};

/// Where a sandbox's modules run: the name an [`Isolator`] registers under.
///
/// The kind is open: the two built-in backends are
/// [`IN_PROCESS`](Self::IN_PROCESS) and [`PROCESS`](Self::PROCESS), and a new
/// backend (Wasm, a remote host) is an `Isolator` whose `kind` returns its own
/// name, registered with the manager; nothing else changes. A name is 1–32
/// lowercase ASCII letters, digits and `-`.
///
/// ```
/// use sandbox_isolate::IsolationKind;
///
/// assert_eq!("process".parse(), Ok(IsolationKind::PROCESS));
/// assert_eq!("inprocess".parse(), Ok(IsolationKind::IN_PROCESS));
/// let wasm = IsolationKind::new("wasm").unwrap();
/// assert_eq!(wasm.to_string(), "wasm");
/// assert!(IsolationKind::new("Not A Kind").is_err());
/// assert_eq!(serde_json::to_string(&IsolationKind::IN_PROCESS).unwrap(), r#""in-process""#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IsolationKind(Cow<'static, str>);

impl IsolationKind {
    /// In the host process: fastest, only for trusted code.
    pub const IN_PROCESS: Self = Self(Cow::Borrowed("in-process"));
    /// In a jailed worker process: for code you do not trust (the default).
    pub const PROCESS: Self = Self(Cow::Borrowed("process"));

    /// A kind named `name`; `Err` says what is wrong with the name.
    pub fn new(name: impl Into<Cow<'static, str>>) -> std::result::Result<Self, String> {
        let name = name.into();
        let valid = (1..=32).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return Err(format!(
                "`{name}` is not an isolation kind: use 1 to 32 lowercase letters, digits and `-` (built in: `in-process`, `process`)"
            ));
        }
        Ok(match name.as_ref() {
            "in-process" | "inprocess" => Self::IN_PROCESS,
            _ => Self(name),
        })
    }

    /// The kind's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The modules share the host's address space (the in-process backend):
    /// no crash of theirs can be survived and no limit is enforced, so the
    /// manager neither supervises nor checkpoints such sandboxes.
    pub fn shares_host(&self) -> bool {
        *self == Self::IN_PROCESS
    }
}

impl Default for IsolationKind {
    fn default() -> Self {
        Self::PROCESS
    }
}

impl fmt::Display for IsolationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for IsolationKind {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Self::new(s.to_owned())
    }
}

impl TryFrom<String> for IsolationKind {
    type Error = String;

    fn try_from(s: String) -> std::result::Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<IsolationKind> for String {
    fn from(kind: IsolationKind) -> Self {
        kind.0.into_owned()
    }
}

/// A module's metadata as the host sees it (converted from the plugin's
/// ABI-stable `ModuleInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleMeta {
    /// Module name, unique in its sandbox.
    pub name: String,
    /// The plugin crate's own version.
    pub version: String,
    /// State schema number.
    pub schema: u32,
    /// Modules this one may call.
    pub dependencies: Vec<String>,
    /// Deterministic: equal requests get equal responses.
    pub pure: bool,
}

/// State saved by a module, owned by the host, tagged with its schema.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SavedState {
    /// The schema the bytes were written under.
    pub schema: u32,
    /// The bytes `save_state` returned.
    #[serde(with = "byte_string")]
    pub bytes: Vec<u8>,
}

/// State bytes (de)serialized as one byte string rather than a sequence of
/// numbers: the worker's channel (bincode) copies them in one go instead of
/// byte by byte, which is most of the cost of a save of a large state. The
/// encoding is the same as a `Vec<u8>`'s, in bincode and in JSON.
mod byte_string {
    use std::fmt;

    use serde::{de, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(Bytes)
    }

    struct Bytes;

    impl<'de> de::Visitor<'de> for Bytes {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("state bytes")
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
            while let Some(byte) = seq.next_element()? {
                out.push(byte);
            }
            Ok(out)
        }
    }
}

/// The class of an error a plugin returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginErrorKind {
    /// The request was malformed.
    BadRequest,
    /// The plugin failed.
    Failed,
    /// State could not be saved or restored.
    State,
    /// A call to another module failed.
    Dependency,
    /// The plugin panicked (caught).
    Panic,
}

impl fmt::Display for PluginErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BadRequest => "bad request",
            Self::Failed => "failed",
            Self::State => "state",
            Self::Dependency => "dependency",
            Self::Panic => "panic",
        })
    }
}

/// A host-registered state migration: `(bytes, from_schema, to_schema) -> bytes`.
/// Used instead of the plugin's own `restore_state` migration when present.
pub type Migration =
    Arc<dyn Fn(&[u8], u32, u32) -> std::result::Result<Vec<u8>, String> + Send + Sync>;

/// One module of a swap batch.
#[derive(Clone)]
pub struct SwapStep {
    /// The module to (re)instantiate.
    pub module: String,
    /// The loaded version to switch to (see [`Runtime::load`]).
    pub version: u32,
    /// Carry the live state of the current instance (the normal case).
    /// `false` starts the new instance from `initial_state` or empty.
    pub carry_state: bool,
    /// State to restore when there is no current instance (e.g. restart from
    /// a checkpoint).
    pub initial_state: Option<SavedState>,
    /// A host migration to apply when the schema changes.
    pub migration: Option<Migration>,
    /// A request sent to the new instance before commit; an error fails the swap.
    pub health_check: Option<Vec<u8>>,
}

impl SwapStep {
    /// Switches `module` to `version`, carrying its live state.
    pub fn new(module: impl Into<String>, version: u32) -> Self {
        Self {
            module: module.into(),
            version,
            carry_state: true,
            initial_state: None,
            migration: None,
            health_check: None,
        }
    }
}

impl fmt::Debug for SwapStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SwapStep")
            .field("module", &self.module)
            .field("version", &self.version)
            .field("carry_state", &self.carry_state)
            .field(
                "initial_state",
                &self
                    .initial_state
                    .as_ref()
                    .map(|s| (s.schema, s.bytes.len())),
            )
            .field("migration", &self.migration.is_some())
            .field("health_check", &self.health_check.is_some())
            .finish()
    }
}

/// What a committed swap did for one module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwapOutcome {
    /// The module.
    pub module: String,
    /// The version it ran before (`None` for a new module).
    pub from: Option<u32>,
    /// The version it runs now.
    pub to: u32,
    /// The state carried across (as saved by the old instance).
    pub carried: Option<SavedState>,
}

/// What a runtime reports about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeInfo {
    /// The backend.
    pub isolation: IsolationKind,
    /// The process the modules run in.
    pub pid: u32,
    /// Active modules and their versions, sorted by name.
    pub modules: Vec<(String, u32)>,
    /// Library versions currently held loaded.
    pub loaded_versions: usize,
    /// The jail layers applied to the worker (`None` in-process, where
    /// nothing is enforced).
    pub jail: Option<crate::jail::AppliedLayers>,
}

/// Why the process hosting a sandbox's modules went away.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Crash {
    /// A sentence for people: "killed by signal 9 (SIGKILL)", "exited with
    /// code 101", "CPU time limit (RLIMIT_CPU) exceeded", ...
    pub cause: String,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// Its exit code, if it exited.
    pub exit_code: Option<i32>,
    /// The limit that was hit, when the host can tell
    /// ([`Limit::AddressSpace`], [`Limit::Cpu`], [`Limit::CallTimeout`],
    /// [`Limit::Output`]...); `None` for a crash no limit explains, or a
    /// worker the host killed for breaking the protocol.
    pub limit: Option<Limit>,
}

/// Called once, from a runtime's own thread, when the process hosting the
/// modules dies; the runtime is unusable afterwards (calls fail) and the
/// host launches a new one.
pub type CrashHandler = Arc<dyn Fn(Crash) + Send + Sync>;

/// What an isolator needs to launch a runtime for a sandbox.
#[derive(Clone)]
pub struct LaunchSpec {
    /// The sandbox id (for logs and spans).
    pub sandbox: String,
    /// A folder the runtime may use for its copies of artifacts; it is
    /// created if missing and its contents removed when the runtime drops.
    pub work_dir: PathBuf,
    /// Further folders a worker may read (read-only). None are needed for
    /// artifacts: the process backend links each one it loads into the
    /// worker's own artifact folder, so a worker never reads the build
    /// cache (which holds every sandbox's artifacts).
    pub artifact_dirs: Vec<PathBuf>,
    /// Kernel-enforced limits for a worker process (ignored in-process).
    pub limits: crate::spawn::ChildLimits,
    /// Whether the modules may use the network (a worker gets a network
    /// namespace of its own, and socket creation is denied, unless true).
    pub network: bool,
    /// Cap on the bytes the sandbox's files may take in its work folder, all
    /// files together (`RLIMIT_FSIZE` in [`limits`](Self::limits) caps one
    /// file). A worker past it is killed. `None`: the isolator's own cap, if
    /// any. Ignored in-process.
    pub disk_limit: Option<u64>,
    /// Cap on the bytes the modules may write to stdout and stderr, together,
    /// over a worker's life; a worker past it is killed. `None`: the
    /// isolator's own cap, if any. Ignored in-process.
    pub output_limit: Option<u64>,
    /// The jail layers this sandbox needs: a worker that cannot have one of
    /// them is not started (the launch fails with
    /// [`JailError::Missing`](crate::jail::JailError::Missing)) rather than
    /// run weaker. `None`: what the isolator requires. Ignored in-process.
    pub require: Option<crate::jail::Layers>,
    /// Told when the hosting process dies (ignored in-process: a crash there
    /// takes the host down).
    pub on_crash: Option<CrashHandler>,
    /// How long each lifecycle entry point of a module may run: creating
    /// the instance, `init`, `save_state` (in a swap or a checkpoint), a
    /// migration, `restore_state` and the health check, each on its own.
    /// One that overruns fails its operation with
    /// [`Error::Timeout`](crate::Error::Timeout): a swap changes nothing
    /// (the old instances keep serving); in-process the code is abandoned
    /// on a thread of its own, and when that code is an old instance's
    /// `save_state` the module loses its instance
    /// ([`Error::Abandoned`](crate::Error::Abandoned) until it is swapped
    /// again); a worker whose old instance is stuck is killed (a crash with
    /// limit `lifecycle_timeout`). `None`: no limit. Default
    /// [`DEFAULT_LIFECYCLE_TIMEOUT`].
    pub lifecycle_timeout: Option<Duration>,
}

/// The default [`LaunchSpec::lifecycle_timeout`]: 10 s, the default of
/// `ResourceLimits::lifecycle_timeout`.
pub const DEFAULT_LIFECYCLE_TIMEOUT: Duration = sandbox_monitor::defaults::LIFECYCLE_TIMEOUT;

impl LaunchSpec {
    /// A spec with no artifact folders, default limits, no network, the
    /// isolator's disk and output caps and jail layers, no crash handler,
    /// the default lifecycle timeout.
    pub fn new(sandbox: impl Into<String>, work_dir: impl Into<PathBuf>) -> Self {
        Self {
            sandbox: sandbox.into(),
            work_dir: work_dir.into(),
            artifact_dirs: Vec::new(),
            limits: crate::spawn::ChildLimits::default(),
            network: false,
            disk_limit: None,
            output_limit: None,
            require: None,
            on_crash: None,
            lifecycle_timeout: Some(DEFAULT_LIFECYCLE_TIMEOUT),
        }
    }
}

impl fmt::Debug for LaunchSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LaunchSpec")
            .field("sandbox", &self.sandbox)
            .field("work_dir", &self.work_dir)
            .field("artifact_dirs", &self.artifact_dirs)
            .field("limits", &self.limits)
            .field("network", &self.network)
            .field("disk_limit", &self.disk_limit)
            .field("output_limit", &self.output_limit)
            .field("require", &self.require)
            .field("on_crash", &self.on_crash.is_some())
            .field("lifecycle_timeout", &self.lifecycle_timeout)
            .finish()
    }
}

/// Starts runtimes for sandboxes.
///
/// Required: [`Isolator::kind`] and [`Isolator::launch`]. The `Manager`
/// calls `launch` once when a sandbox is created (and again on restart of a
/// process backend); everything else goes through the returned [`Runtime`].
///
/// ```
/// use sandbox_isolate::{InProcess, IsolationKind, Isolator, LaunchSpec, Result, Runtime};
///
/// /// An isolator that logs each launch and delegates to the in-process backend.
/// #[derive(Debug, Default)]
/// struct Logged(InProcess);
///
/// impl Isolator for Logged {
///     fn kind(&self) -> IsolationKind {
///         self.0.kind()
///     }
///
///     fn launch(&self, spec: &LaunchSpec) -> Result<Box<dyn Runtime>> {
///         eprintln!("launching {}", spec.sandbox);
///         self.0.launch(spec)
///     }
/// }
///
/// let dir = tempfile::tempdir().unwrap();
/// let runtime = Logged::default().launch(&LaunchSpec::new("demo", dir.path().join("rt"))).unwrap();
/// assert_eq!(runtime.info().pid, std::process::id());
/// ```
pub trait Isolator: Send + Sync + fmt::Debug {
    /// The backend's kind.
    fn kind(&self) -> IsolationKind;

    /// Launches an empty runtime for one sandbox.
    fn launch(&self, spec: &LaunchSpec) -> Result<Box<dyn Runtime>>;

    /// Whether this backend confines code its host does not trust (a jail
    /// the kernel enforces). The manager runs sources of any profile but
    /// `trusted` only on a backend that says `true`; the default is `false`,
    /// so a new backend must opt in deliberately.
    fn confines_untrusted(&self) -> bool {
        false
    }
}

impl<T: Isolator + ?Sized> Isolator for Box<T> {
    fn kind(&self) -> IsolationKind {
        (**self).kind()
    }

    fn launch(&self, spec: &LaunchSpec) -> Result<Box<dyn Runtime>> {
        (**self).launch(spec)
    }

    fn confines_untrusted(&self) -> bool {
        (**self).confines_untrusted()
    }
}

impl<T: Isolator + ?Sized> Isolator for Arc<T> {
    fn kind(&self) -> IsolationKind {
        (**self).kind()
    }

    fn launch(&self, spec: &LaunchSpec) -> Result<Box<dyn Runtime>> {
        (**self).launch(spec)
    }

    fn confines_untrusted(&self) -> bool {
        (**self).confines_untrusted()
    }
}

/// What a call started with [`Runtime::start_call`] hands its result to.
pub type CallDone = Box<dyn FnOnce(Result<Vec<u8>>) + Send>;

/// Where one sandbox's modules live: loaded library versions and one active
/// instance per module.
///
/// Lifecycle, as the `Manager` drives it: [`Runtime::load`] each new
/// artifact (ABI check, metadata), then [`Runtime::swap`] a batch of modules
/// onto loaded versions (creation, hot swap, rollback and restart are all
/// swaps), [`Runtime::call`] any number of times from any thread, and
/// [`Runtime::forget`] versions that fall out of the retained history.
pub trait Runtime: Send + Sync + fmt::Debug {
    /// Loads the artifact at `artifact` as `version` of whatever module it
    /// contains, checking its ABI, and returns its metadata. Loading the same
    /// module and version twice is an error.
    fn load(&self, artifact: &std::path::Path, version: u32) -> Result<ModuleMeta>;

    /// Switches every module in `steps` (given in reload order: dependencies
    /// first) to its target version, all or nothing. On error nothing
    /// changed: the old instances keep serving with their live state.
    fn swap(&self, steps: &[SwapStep]) -> Result<Vec<SwapOutcome>>;

    /// Calls `module` with `request`; `timeout` bounds the wait for the answer.
    fn call(&self, module: &str, request: &[u8], timeout: Option<Duration>) -> Result<Vec<u8>>;

    /// Starts a call of `module` without blocking the caller, if this
    /// backend can: the call runs on a thread of the backend's and `done`
    /// gets its result there (an error found before it starts, e.g. an
    /// unknown module, is handed to `done` at once). The caller bounds the
    /// wait by how long it waits for `done`; a call it stops waiting for is
    /// abandoned the way [`call`](Runtime::call) abandons one past its
    /// timeout. `Err(done)` means the backend cannot (the default): use
    /// `call` on a thread that may block. An async host saves the hop to a
    /// blocking thread and back this way.
    fn start_call(
        &self,
        module: &str,
        request: &[u8],
        done: CallDone,
    ) -> std::result::Result<(), CallDone> {
        let _ = (module, request);
        Err(done)
    }

    /// Saves the state of every active module (a checkpoint).
    fn checkpoint(&self) -> Result<Vec<(String, SavedState)>>;

    /// Drops a module's instance; later calls to it fail.
    fn remove(&self, module: &str) -> Result<()>;

    /// Stops holding `version` of `module` (it must not be active). The code
    /// may stay mapped in this process: libraries are never unloaded.
    fn forget(&self, module: &str, version: u32) -> Result<()>;

    /// The runtime's pid, backend and active modules.
    fn info(&self) -> RuntimeInfo;

    /// Why this runtime should be replaced, if it should: it carries plugin
    /// code that overran a lifecycle deadline and was abandoned — a thread
    /// of a worker that may run (or spin) for good, though every module
    /// still serves. A host replaces such a runtime when it can (the
    /// `Manager` recycles the worker from its live state). `None` by
    /// default, and in-process, where nothing can replace the host.
    fn needs_replacing(&self) -> Option<String> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::SavedState;

    /// What `SavedState` was before its bytes were a byte string.
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Plain {
        schema: u32,
        bytes: Vec<u8>,
    }

    #[test]
    fn state_bytes_encode_as_a_vec_of_bytes_did() {
        let state = SavedState {
            schema: 2,
            bytes: vec![0, 1, 255, 7],
        };
        let plain = Plain {
            schema: 2,
            bytes: state.bytes.clone(),
        };
        let ours = bincode::serialize(&state).unwrap();
        assert_eq!(ours, bincode::serialize(&plain).unwrap());
        assert_eq!(bincode::deserialize::<SavedState>(&ours).unwrap(), state);
        let json = serde_json::to_string(&state).unwrap();
        assert_eq!(json, serde_json::to_string(&plain).unwrap());
        assert_eq!(serde_json::from_str::<SavedState>(&json).unwrap(), state);
    }
}
