//! [`JsonPlugin`]: a plugin whose requests, responses and state are typed
//! JSON, so its author never decodes or encodes bytes (Extism's `Json<T>`
//! is the model).

use serde::{de::DeserializeOwned, Serialize};

use crate::{json, state, Error, Host, Plugin, Result};

/// A module whose requests, responses and saved state are `serde` types,
/// carried as JSON.
///
/// Every `JsonPlugin` is a [`Plugin`], so [`export_plugin!`](crate::export_plugin)
/// exports it and [`testing::Harness`](crate::testing::Harness) drives it.
///
/// Required: [`NAME`](JsonPlugin::NAME), the three types and
/// [`handle`](JsonPlugin::handle). A module with state also implements
/// [`save_state`](JsonPlugin::save_state) and
/// [`restore_state`](JsonPlugin::restore_state), and
/// [`migrate`](JsonPlugin::migrate) once it has changed its state's layout.
///
/// # Lifecycle
///
/// - `Default::default` then [`init`](JsonPlugin::init): when the host creates
///   an instance (sandbox start, restart, each hot swap).
/// - [`handle`](JsonPlugin::handle): once per request, with the request
///   decoded; calls to one instance never overlap. A request that does not
///   decode as [`Request`](JsonPlugin::Request) is answered with an
///   [`ErrorKind::BadRequest`](crate::ErrorKind::BadRequest) error saying
///   why, and `handle` is not called.
/// - [`save_state`](JsonPlugin::save_state): on the old instance, just before
///   a swap or a restart, and when the host checkpoints. Its value is written
///   as JSON under [`SCHEMA`](JsonPlugin::SCHEMA); a state that is JSON
///   `null` (such as `()`) is written as nothing at all.
/// - On the new instance, after `init`: [`migrate`](JsonPlugin::migrate) when
///   the saved state has another schema, then
///   [`restore_state`](JsonPlugin::restore_state) with a `State`. Nothing
///   saved (a first start, or a version without state before this one): no
///   call. An error from either makes the host roll the whole swap back.
///
/// # A module with state, at its second schema
///
/// ```
/// use sandbox_plugin::{export_plugin, Error, Host, JsonPlugin, OldState, Result};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Default)]
/// pub struct Notes {
///     notes: Vec<String>,
/// }
///
/// #[derive(Deserialize)]
/// #[serde(rename_all = "snake_case")]
/// pub enum Request {
///     Add(String),
///     List,
/// }
///
/// /// Schema 2: every note (schema 1 kept only a count).
/// #[derive(Serialize, Deserialize, Default)]
/// pub struct Saved {
///     notes: Vec<String>,
/// }
///
/// impl JsonPlugin for Notes {
///     const NAME: &'static str = "notes";
///     const SCHEMA: u32 = 2;
///     type Request = Request;
///     type Response = Vec<String>;
///     type State = Saved;
///
///     fn handle(&mut self, _host: &Host<'_>, request: Request) -> Result<Vec<String>> {
///         match request {
///             Request::Add(note) if note.is_empty() => {
///                 return Err(Error::bad_request("a note needs text"))
///             }
///             Request::Add(note) => self.notes.push(note),
///             Request::List => {}
///         }
///         Ok(self.notes.clone())
///     }
///
///     fn save_state(&self) -> Result<Saved> {
///         Ok(Saved { notes: self.notes.clone() })
///     }
///
///     fn restore_state(&mut self, _host: &Host<'_>, saved: Saved) -> Result<()> {
///         self.notes = saved.notes;
///         Ok(())
///     }
///
///     fn migrate(host: &Host<'_>, old: OldState<'_>) -> Result<Saved> {
///         match old.schema() {
///             1 => {
///                 let count: usize = old.decode()?;
///                 host.warn(format_args!("schema 1 kept no text: {count} notes dropped"));
///                 Ok(Saved::default())
///             }
///             _ => Err(old.unknown::<Self>()),
///         }
///     }
/// }
///
/// export_plugin!(Notes);
///
/// # fn main() -> sandbox_plugin::Result<()> {
/// use sandbox_plugin::testing::{Harness, Snapshot};
/// use serde_json::json;
///
/// // Restored from what a schema 1 version saved: migrated, then restored.
/// let mut notes = Harness::<Notes>::restore(Snapshot::json(1, &3)?)?;
/// let list: Vec<String> = notes.call_json(&json!({ "add": "milk" }))?;
/// assert_eq!(list, ["milk"]);
/// notes.swap()?;
/// assert_eq!(notes.call(br#""list""#)?, br#"["milk"]"#);
/// let err = notes.call(br#"{"add":""}"#).unwrap_err();
/// assert_eq!(err.message(), "a note needs text");
/// # Ok(()) }
/// ```
pub trait JsonPlugin: Default + Send + 'static {
    /// The module's name within its sandbox.
    const NAME: &'static str;
    /// The layout version of [`State`](JsonPlugin::State); bump it when it
    /// changes, and teach [`migrate`](JsonPlugin::migrate) the old one.
    const SCHEMA: u32 = 1;
    /// Names of the modules this one calls through [`Host::call_json`].
    const DEPENDENCIES: &'static [&'static str] = &[];
    /// True when equal requests always get equal responses (hosts may cache them).
    const PURE: bool = false;

    /// What a request decodes to.
    type Request: DeserializeOwned;
    /// What [`handle`](JsonPlugin::handle) answers, sent as JSON.
    type Response: Serialize;
    /// What the module carries across a swap; `()` for a module without state.
    type State: Serialize + DeserializeOwned + Default;

    /// Prepares the instance; called once before anything else.
    fn init(&mut self, host: &Host<'_>) -> Result<()> {
        let _ = host;
        Ok(())
    }

    /// Answers one request.
    fn handle(&mut self, host: &Host<'_>, request: Self::Request) -> Result<Self::Response>;

    /// The state a new version should start from; it only reads the instance.
    ///
    /// The default suits a module without state (`type State = ()`, or any
    /// other type of size zero). For a `State` that holds something it fails
    /// with an [`ErrorKind::State`](crate::ErrorKind::State) error, so a
    /// module that forgot to implement this fails its first swap (and its
    /// first [`Harness::swap`](crate::testing::Harness::swap)) instead of
    /// starting the new version from empty state.
    fn save_state(&self) -> Result<Self::State> {
        if std::mem::size_of::<Self::State>() == 0 {
            return Ok(Self::State::default());
        }
        Err(Error::state(format!(
            "module `{}` has a State but does not implement save_state; implement it (and restore_state)",
            Self::NAME
        )))
    }

    /// Takes over `state`, saved under [`SCHEMA`](JsonPlugin::SCHEMA) or
    /// brought to it by [`migrate`](JsonPlugin::migrate).
    ///
    /// The default suits a module without state, and, like
    /// [`save_state`](JsonPlugin::save_state)'s, fails for a `State` that
    /// holds something.
    fn restore_state(&mut self, host: &Host<'_>, state: Self::State) -> Result<()> {
        let _ = (host, state);
        if std::mem::size_of::<Self::State>() == 0 {
            return Ok(());
        }
        Err(Error::state(format!(
            "module `{}` has a State but does not implement restore_state; implement it (and save_state)",
            Self::NAME
        )))
    }

    /// Brings state saved under another schema to this one's `State`.
    ///
    /// Called on a new instance, after `init`, when the old version's schema
    /// was not [`SCHEMA`](JsonPlugin::SCHEMA): older when a new version is
    /// swapped in, newer when the host goes back to this version (a host
    /// refuses that unless a migration of its own is registered). The
    /// default refuses every other schema ([`OldState::unknown`]), so the
    /// host rolls the swap back instead of dropping the state.
    fn migrate(host: &Host<'_>, old: OldState<'_>) -> Result<Self::State> {
        let _ = host;
        Err(old.unknown::<Self>())
    }
}

/// State saved by a version of another schema, handed to
/// [`JsonPlugin::migrate`].
#[derive(Debug, Clone, Copy)]
pub struct OldState<'a> {
    schema: u32,
    bytes: &'a [u8],
}

impl<'a> OldState<'a> {
    /// The schema the old version saved the state under.
    pub fn schema(&self) -> u32 {
        self.schema
    }

    /// The saved bytes (JSON, when a `JsonPlugin` wrote them).
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Decodes the saved JSON as `T`, the layout of that schema.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        state::decode(self.bytes).map_err(|e| {
            Error::state(format!(
                "state of schema {} is not what this migration expects: {}",
                self.schema,
                e.message()
            ))
        })
    }

    /// The error for a schema module `P` cannot migrate from.
    pub fn unknown<P: JsonPlugin>(&self) -> Error {
        Error::state(format!(
            "module `{}` reads state schema {} and was given {} bytes of schema {}, which it does not know; implement migrate for it, or have the host register a migration from {} to {}",
            P::NAME,
            P::SCHEMA,
            self.bytes.len(),
            self.schema,
            self.schema,
            P::SCHEMA
        ))
    }
}

impl<T: JsonPlugin> Plugin for T {
    const NAME: &'static str = <T as JsonPlugin>::NAME;
    const SCHEMA: u32 = <T as JsonPlugin>::SCHEMA;
    const DEPENDENCIES: &'static [&'static str] = <T as JsonPlugin>::DEPENDENCIES;
    const PURE: bool = <T as JsonPlugin>::PURE;

    fn init(&mut self, host: &Host<'_>) -> Result<()> {
        JsonPlugin::init(self, host)
    }

    fn handle(&mut self, host: &Host<'_>, request: &[u8]) -> Result<Vec<u8>> {
        let request: T::Request = json::decode(request)?;
        let response = JsonPlugin::handle(self, host, request)?;
        json::encode(&response)
    }

    fn save_state(&self) -> Result<Vec<u8>> {
        let bytes = state::save(&JsonPlugin::save_state(self)?)?;
        // `null` carries nothing: write nothing, which any version reads.
        Ok(if bytes == b"null" { Vec::new() } else { bytes })
    }

    fn restore_state(&mut self, host: &Host<'_>, bytes: &[u8], from_schema: u32) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let state = if from_schema == <T as JsonPlugin>::SCHEMA {
            state::decode(bytes)?
        } else {
            T::migrate(
                host,
                OldState {
                    schema: from_schema,
                    bytes,
                },
            )?
        };
        JsonPlugin::restore_state(self, host, state)
    }
}
