//! Unit tests of a plugin without a host: [`Harness`] drives a plugin the
//! way the host does, and [`MockHost`] stands in for the modules it calls
//! (nushell's `nu-plugin-test-support` is the model).
//!
//! Nothing is compiled or loaded: the harness calls the plugin's own code in
//! the test's process, under the same panic guard the exported library
//! uses, so a panic is an [`ErrorKind::Panic`] error here as it is in a
//! host. It keeps the host's rules too: a module may call only the modules
//! it declared in `DEPENDENCIES`, and only from `handle` (calls from `init`
//! or `restore_state` are refused, as a host refuses them during a swap).
//!
//! ```
//! use sandbox_plugin::testing::{Harness, MockHost};
//! use sandbox_plugin::{export_plugin, Host, JsonPlugin, Result};
//! use serde_json::{json, Value};
//!
//! /// Asks `tokenize` for the words of a text and counts them.
//! #[derive(Default)]
//! pub struct Count;
//!
//! impl JsonPlugin for Count {
//!     const NAME: &'static str = "count";
//!     const DEPENDENCIES: &'static [&'static str] = &["tokenize"];
//!     type Request = Value;
//!     type Response = Value;
//!     type State = ();
//!
//!     fn handle(&mut self, host: &Host<'_>, request: Value) -> Result<Value> {
//!         let tokens: Vec<String> = host.call_json("tokenize", &request)?;
//!         host.info(format_args!("{} tokens", tokens.len()));
//!         Ok(json!({ "count": tokens.len() }))
//!     }
//! }
//!
//! export_plugin!(Count);
//!
//! # fn main() -> sandbox_plugin::Result<()> {
//! let host = MockHost::new().json_module("tokenize", |request: Value| {
//!     let text = request["text"].as_str().unwrap_or_default();
//!     Ok(text.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
//! });
//! let mut count = Harness::<Count>::with_host(host)?;
//! let out: Value = count.call_json(&json!({ "text": "two words" }))?;
//! assert_eq!(out, json!({ "count": 2 }));
//! assert_eq!(count.host().logs()[0].message, "2 tokens");
//! assert_eq!(count.host().calls()[0].module, "tokenize");
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use abi_stable::{
    sabi_trait::TD_Opaque,
    sabi_types::RRef,
    std_types::{RResult, RSlice, RStr, RVec},
};
use serde::{de::DeserializeOwned, Serialize};

use crate::ffi::{FfiError, HostApi, HostApi_TO};
use crate::glue::catch;
use crate::{json, state, Error, ErrorKind, Host, LogLevel, Plugin, Result};

type Answer = Box<dyn Fn(&[u8]) -> Result<Vec<u8>> + Send + Sync>;

/// The host a [`Harness`] gives its plugin: the other modules of its
/// sandbox answer from closures, and it records the plugin's log lines and
/// calls.
#[derive(Default)]
pub struct MockHost {
    modules: BTreeMap<String, Answer>,
    logs: Mutex<Vec<LogLine>>,
    calls: Mutex<Vec<Call>>,
}

/// One line the plugin logged through [`Host::log`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Its level.
    pub level: LogLevel,
    /// Its text.
    pub message: String,
}

/// One call the plugin made to another module (answered or refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The module it called.
    pub module: String,
    /// The request bytes.
    pub request: Vec<u8>,
}

impl MockHost {
    /// A host whose sandbox has no other module.
    pub fn new() -> Self {
        Self::default()
    }

    /// Module `name` answers each request with `answer(request bytes)`.
    pub fn module(
        mut self,
        name: &str,
        answer: impl Fn(&[u8]) -> Result<Vec<u8>> + Send + Sync + 'static,
    ) -> Self {
        self.modules.insert(name.to_owned(), Box::new(answer));
        self
    }

    /// Module `name` answers JSON requests with `answer`: a request that does
    /// not decode as `Req` gets a [`ErrorKind::BadRequest`] error, as from a
    /// real [`JsonPlugin`](crate::JsonPlugin).
    pub fn json_module<Req, Resp>(
        self,
        name: &str,
        answer: impl Fn(Req) -> Result<Resp> + Send + Sync + 'static,
    ) -> Self
    where
        Req: DeserializeOwned,
        Resp: Serialize,
    {
        self.module(name, move |bytes| {
            json::encode(&answer(json::decode(bytes)?)?)
        })
    }

    /// The lines the plugin logged, oldest first.
    pub fn logs(&self) -> Vec<LogLine> {
        self.logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The calls the plugin made to other modules, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl fmt::Debug for MockHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockHost")
            .field("modules", &self.modules.keys().collect::<Vec<_>>())
            .field("logs", &self.logs())
            .field("calls", &self.calls())
            .finish()
    }
}

/// What a module saved: its bytes and the schema they were written under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The schema of the version that wrote `bytes`.
    pub schema: u32,
    /// The saved bytes.
    pub bytes: Vec<u8>,
}

impl Snapshot {
    /// `bytes` written under `schema`.
    pub fn new(schema: u32, bytes: Vec<u8>) -> Self {
        Self { schema, bytes }
    }

    /// `value` as JSON, written under `schema`: state a version of that
    /// schema would have saved, for a test of a migration.
    pub fn json<T: Serialize + ?Sized>(schema: u32, value: &T) -> Result<Self> {
        Ok(Self::new(schema, state::save(value)?))
    }
}

/// Where a call into the plugin comes from, which decides whether it may
/// call other modules.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `init` / `restore_state`: a host refuses calls out during a swap.
    Setup,
    Handle,
}

/// The host context of one call into the plugin.
struct Ctx<'a> {
    host: &'a MockHost,
    caller: &'static str,
    dependencies: &'static [&'static str],
    phase: Phase,
}

impl Ctx<'_> {
    fn answer(&self, module: &str, request: &[u8]) -> Result<Vec<u8>> {
        self.host
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Call {
                module: module.to_owned(),
                request: request.to_vec(),
            });
        let caller = self.caller;
        let refuse = |message: String| Err(Error::new(ErrorKind::Dependency, message));
        if self.phase == Phase::Setup {
            return refuse(format!(
                "module `{caller}` called `{module}` from init or restore_state; calls to other modules are only allowed in handle"
            ));
        }
        if !self.dependencies.contains(&module) || module == caller {
            return refuse(format!(
                "module `{caller}` called `{module}` without declaring it; add \"{module}\" to its DEPENDENCIES"
            ));
        }
        let Some(answer) = self.host.modules.get(module) else {
            return refuse(format!(
                "module `{module}` has no answer in this test; give it one with MockHost::module or MockHost::json_module"
            ));
        };
        // What the dependency answered, as a host passes it on: its errors
        // reach the caller as dependency errors.
        catch(|| answer(request)).map_err(|e| {
            Error::new(
                ErrorKind::Dependency,
                format!("module `{module}` failed ({:?}): {}", e.kind(), e.message()),
            )
        })
    }
}

impl HostApi for Ctx<'_> {
    fn call(&self, module: RStr<'_>, request: RSlice<'_, u8>) -> RResult<RVec<u8>, FfiError> {
        match self.answer(module.as_str(), request.as_slice()) {
            Ok(bytes) => RResult::ROk(bytes.into()),
            Err(e) => RResult::RErr(e.into()),
        }
    }

    fn log(&self, level: LogLevel, message: RStr<'_>) {
        self.host
            .logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(LogLine {
                level,
                message: message.as_str().to_owned(),
            });
    }
}

/// Runs plugin `P` in a unit test the way a host runs it: create, `init`,
/// `handle` per call, and a swap as `save_state` → a fresh instance →
/// `init` → `restore_state` (with the old schema), also into another type
/// ([`Harness::swap_to`], a new version of the module) or from state an
/// older version saved ([`Harness::restore`]).
///
/// Every entry point runs under the panic guard of the exported library,
/// so a panic is an [`ErrorKind::Panic`] error. See the [module docs](self)
/// for a module that calls another; the crate docs test a counter with it.
pub struct Harness<P: Plugin> {
    plugin: P,
    host: Arc<MockHost>,
}

impl<P: Plugin> Harness<P> {
    /// A fresh, initialized instance whose sandbox has no other module.
    pub fn new() -> Result<Self> {
        Self::with_host(MockHost::new())
    }

    /// A fresh, initialized instance with `host` as its host.
    pub fn with_host(host: MockHost) -> Result<Self> {
        Self::start(Arc::new(host), None)
    }

    /// A fresh instance, initialized and restored from `saved`, as a host
    /// starts a new version from what an older one (of `saved.schema`) left.
    pub fn restore(saved: Snapshot) -> Result<Self> {
        Self::restore_with_host(MockHost::new(), saved)
    }

    /// [`Harness::restore`] with `host` as the host.
    pub fn restore_with_host(host: MockHost, saved: Snapshot) -> Result<Self> {
        Self::start(Arc::new(host), Some(&saved))
    }

    fn start(host: Arc<MockHost>, saved: Option<&Snapshot>) -> Result<Self> {
        let mut plugin = catch(|| Ok(P::default()))?;
        let ctx = Self::ctx(&host, Phase::Setup);
        with_host(&ctx, |h| catch(|| plugin.init(h)))?;
        if let Some(saved) = saved {
            with_host(&ctx, |h| {
                catch(|| plugin.restore_state(h, &saved.bytes, saved.schema))
            })?;
        }
        Ok(Self { plugin, host })
    }

    fn ctx(host: &MockHost, phase: Phase) -> Ctx<'_> {
        Ctx {
            host,
            caller: P::NAME,
            dependencies: P::DEPENDENCIES,
            phase,
        }
    }

    /// Calls `handle` with `request`.
    pub fn call(&mut self, request: &[u8]) -> Result<Vec<u8>> {
        let ctx = Self::ctx(&self.host, Phase::Handle);
        let plugin = &mut self.plugin;
        with_host(&ctx, |h| catch(|| plugin.handle(h, request)))
    }

    /// Calls `handle` with `request` as JSON and decodes the JSON answer.
    pub fn call_json<Req, Resp>(&mut self, request: &Req) -> Result<Resp>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let out = self.call(&json::encode(request)?)?;
        serde_json::from_slice(&out).map_err(|e| {
            Error::failed(format!(
                "module `{}` answered {:?}, which is not the JSON the test expects: {e}",
                P::NAME,
                String::from_utf8_lossy(&out)
            ))
        })
    }

    /// Calls `save_state`: what a host would carry to the next version.
    pub fn save(&self) -> Result<Snapshot> {
        let bytes = catch(|| self.plugin.save_state())?;
        Ok(Snapshot::new(P::SCHEMA, bytes))
    }

    /// Hot-swaps the module for a fresh instance of the same version, its
    /// state carried: `save_state`, a new instance, `init`, `restore_state`.
    /// On an error the old instance stays, as in a host.
    pub fn swap(&mut self) -> Result<()> {
        *self = self.swap_to::<P>()?;
        Ok(())
    }

    /// Hot-swaps to `Q`, a new version of the module (another type standing
    /// for the new source): `Q` is started from what this instance saves,
    /// under this version's schema, so `Q`'s migration runs when the schemas
    /// differ. This harness is left as it was (the host keeps an old version
    /// to roll back to), and both share one [`MockHost`].
    pub fn swap_to<Q: Plugin>(&self) -> Result<Harness<Q>> {
        let saved = self.save()?;
        Harness::<Q>::start(Arc::clone(&self.host), Some(&saved))
    }

    /// The plugin instance, to look at its fields.
    pub fn plugin(&self) -> &P {
        &self.plugin
    }

    /// The plugin instance, to set up a case.
    pub fn plugin_mut(&mut self) -> &mut P {
        &mut self.plugin
    }

    /// The host: what the plugin logged and called.
    pub fn host(&self) -> &MockHost {
        &self.host
    }
}

// Without `P: Debug`, so `unwrap_err()` works on any harness.
impl<P: Plugin> fmt::Debug for Harness<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness")
            .field("plugin", &std::any::type_name::<P>())
            .field("host", &self.host)
            .finish()
    }
}

/// Runs `f` with `ctx` as the plugin's [`Host`].
fn with_host<T>(ctx: &Ctx<'_>, f: impl FnOnce(&Host<'_>) -> Result<T>) -> Result<T> {
    let raw = HostApi_TO::from_ptr(RRef::new(ctx), TD_Opaque);
    f(&Host::from_raw(raw))
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::{Harness, MockHost, Snapshot};
    use crate::{Error, ErrorKind, Host, JsonPlugin, LogLevel, OldState, Plugin, Result};

    /// Calls `b` from every entry point it can, and panics on request.
    #[derive(Default)]
    struct Caller {
        seen: u32,
    }

    impl JsonPlugin for Caller {
        const NAME: &'static str = "caller";
        const DEPENDENCIES: &'static [&'static str] = &["b"];
        type Request = Value;
        type Response = Value;
        type State = u32;

        fn init(&mut self, host: &Host<'_>) -> Result<()> {
            // Refused: a host is mid-swap here.
            let refused = host.call("b", b"{}").unwrap_err();
            host.info(refused.message());
            Ok(())
        }

        fn handle(&mut self, host: &Host<'_>, request: Value) -> Result<Value> {
            self.seen += 1;
            match request["op"].as_str() {
                Some("panic") => panic!("on purpose"),
                Some("call") => host.call_json(request["module"].as_str().unwrap_or(""), &request),
                _ => Ok(json!({ "seen": self.seen })),
            }
        }

        fn save_state(&self) -> Result<u32> {
            Ok(self.seen)
        }

        fn restore_state(&mut self, _host: &Host<'_>, seen: u32) -> Result<()> {
            self.seen = seen;
            Ok(())
        }
    }

    fn harness() -> Harness<Caller> {
        let host = MockHost::new()
            .json_module("b", |v: Value| Ok(json!({ "b got": v["n"] })))
            .module("c", |_| Ok(b"{}".to_vec()));
        Harness::with_host(host).unwrap()
    }

    #[test]
    fn a_declared_dependency_answers_from_its_closure_and_the_call_is_recorded() {
        let mut h = harness();
        let out: Value = h
            .call_json(&json!({"op": "call", "module": "b", "n": 7}))
            .unwrap();
        assert_eq!(out, json!({"b got": 7}));
        let calls = h.host().calls();
        assert_eq!(calls.len(), 2, "{calls:?}"); // the refused one from init, then this
        assert_eq!(calls[1].module, "b");
    }

    #[test]
    fn the_host_rules_hold_undeclared_modules_and_calls_from_init_are_refused() {
        let mut h = harness();
        let logs = h.host().logs();
        assert_eq!(logs[0].level, LogLevel::Info);
        assert!(logs[0].message.contains("from init"), "{logs:?}");
        let err = h.call(br#"{"op":"call","module":"c"}"#).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Dependency);
        assert!(err.message().contains("DEPENDENCIES"), "{err}");
    }

    #[test]
    fn a_panic_is_an_error_of_kind_panic_and_the_instance_goes_on() {
        let mut h = harness();
        let err = h.call(br#"{"op":"panic"}"#).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Panic);
        assert!(err.message().contains("on purpose"), "{err}");
        assert_eq!(h.call(b"{}").unwrap(), br#"{"seen":2}"#);
    }

    #[test]
    fn a_bad_request_is_the_typed_error_answer() {
        let mut h = harness();
        let err = h.call(b"{not json").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadRequest);
        assert!(err.message().contains("not the JSON"), "{err}");
        assert_eq!(h.plugin().seen, 0, "handle was not called");
    }

    #[test]
    fn a_swap_carries_the_state_and_the_old_version_is_left_as_it_was() {
        let mut h = harness();
        h.call(b"{}").unwrap();
        h.call(b"{}").unwrap();
        assert_eq!(h.save().unwrap(), Snapshot::new(1, b"2".to_vec()));
        let mut next = h.swap_to::<Caller>().unwrap();
        assert_eq!(next.call(b"{}").unwrap(), br#"{"seen":3}"#);
        assert_eq!(h.plugin().seen, 2);
        h.swap().unwrap();
        assert_eq!(h.plugin().seen, 2);
    }

    /// Version 2 of `Caller`: state `{"seen", "since"}`, migrating from 1.
    #[derive(Default)]
    struct CallerV2 {
        seen: u32,
        since: u32,
    }

    #[derive(serde::Serialize, serde::Deserialize, Default)]
    struct StateV2 {
        seen: u32,
        since: u32,
    }

    impl JsonPlugin for CallerV2 {
        const NAME: &'static str = "caller";
        const SCHEMA: u32 = 2;
        type Request = Value;
        type Response = Value;
        type State = StateV2;

        fn handle(&mut self, _host: &Host<'_>, _request: Value) -> Result<Value> {
            self.seen += 1;
            Ok(json!({ "seen": self.seen, "since": self.since }))
        }

        fn save_state(&self) -> Result<StateV2> {
            Ok(StateV2 {
                seen: self.seen,
                since: self.since,
            })
        }

        fn restore_state(&mut self, _host: &Host<'_>, s: StateV2) -> Result<()> {
            (self.seen, self.since) = (s.seen, s.since);
            Ok(())
        }

        fn migrate(_host: &Host<'_>, old: OldState<'_>) -> Result<StateV2> {
            match old.schema() {
                1 => {
                    let seen: u32 = old.decode()?;
                    Ok(StateV2 { seen, since: seen })
                }
                _ => Err(old.unknown::<Self>()),
            }
        }
    }

    #[test]
    fn a_new_version_migrates_what_the_old_one_saved() {
        let mut v1 = harness();
        v1.call(b"{}").unwrap();
        let mut v2 = v1.swap_to::<CallerV2>().unwrap();
        assert_eq!(v2.call(b"{}").unwrap(), br#"{"seen":2,"since":1}"#);
        // From stored schema 1 state, and a refusal of a schema it does not know.
        let mut v2 = Harness::<CallerV2>::restore(Snapshot::json(1, &5).unwrap()).unwrap();
        assert_eq!(v2.call(b"{}").unwrap(), br#"{"seen":6,"since":5}"#);
        let err = Harness::<CallerV2>::restore(Snapshot::json(3, &5).unwrap()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::State);
        assert!(err.message().contains("schema 3"), "{err}");
        // Going back: version 1 does not know schema 2.
        let err = v2.swap_to::<Caller>().unwrap_err();
        assert!(err.message().contains("schema 2"), "{err}");
    }

    /// A `State` that holds something, without `save_state`.
    #[derive(Default)]
    struct Forgetful;

    impl JsonPlugin for Forgetful {
        const NAME: &'static str = "forgetful";
        type Request = ();
        type Response = ();
        type State = u64;

        fn handle(&mut self, _host: &Host<'_>, (): ()) -> Result<()> {
            Ok(())
        }
    }

    /// No state at all.
    #[derive(Default)]
    struct Stateless;

    impl JsonPlugin for Stateless {
        const NAME: &'static str = "stateless";
        type Request = ();
        type Response = ();
        type State = ();

        fn handle(&mut self, _host: &Host<'_>, (): ()) -> Result<()> {
            Err(Error::failed("nothing to do"))
        }
    }

    #[test]
    fn state_defaults_carry_nothing_and_refuse_a_state_that_holds_something() {
        let h = Harness::<Stateless>::new().unwrap();
        assert_eq!(h.save().unwrap().bytes, b"", "`()` is saved as nothing");
        let mut h = Harness::<Stateless>::restore(h.save().unwrap()).unwrap();
        assert_eq!(h.call(b"null").unwrap_err().message(), "nothing to do");
        assert_eq!(Plugin::save_state(h.plugin()).unwrap(), b"");
        let err = Harness::<Forgetful>::new().unwrap().save().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::State);
        assert!(err.message().contains("implement it"), "{err}");
    }
}
