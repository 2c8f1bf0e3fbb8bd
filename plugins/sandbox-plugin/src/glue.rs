//! Code the [`export_plugin!`](crate::export_plugin) macro expands to.
//! Not part of the public API: it may change in any release.

use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::{
    prefix_type::PrefixTypeTrait,
    sabi_trait::TD_Opaque,
    std_types::{RBox, RResult, RSlice, RString, RVec},
};

use crate::ffi::{
    ErrorKind, FfiError, HostRef, InstanceApi, InstanceApi_TO, InstanceBox, ModuleInfo,
    PluginModule, PluginModuleRef,
};
use crate::{Host, Plugin};

/// The metadata of `P`, with the plugin crate's own version.
pub fn info<P: Plugin>(version: &str) -> ModuleInfo {
    ModuleInfo {
        name: RString::from(P::NAME),
        version: RString::from(version),
        schema: P::SCHEMA,
        dependencies: P::DEPENDENCIES.iter().map(|d| RString::from(*d)).collect(),
        pure: P::PURE,
    }
}

/// Builds the root module from the two entry points the macro generated.
pub fn root_module(
    info: extern "C" fn() -> ModuleInfo,
    new_instance: extern "C" fn() -> RResult<InstanceBox, FfiError>,
) -> PluginModuleRef {
    PluginModule { info, new_instance }.leak_into_prefix()
}

/// Creates a fresh instance of `P`, catching a panic in `Default::default`.
pub fn new_instance<P: Plugin>() -> RResult<InstanceBox, FfiError> {
    guard(|| Ok(InstanceApi_TO::from_value(Adapter(P::default()), TD_Opaque)))
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

/// Runs `f`, turning a panic into an [`ErrorKind::Panic`] error: what every
/// entry point of a plugin runs under, in a host and in
/// [`testing::Harness`](crate::testing::Harness).
pub(crate) fn catch<T>(f: impl FnOnce() -> crate::Result<T>) -> crate::Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => Err(crate::Error::new(
            ErrorKind::Panic,
            format!("plugin panicked: {}", panic_message(&*payload)),
        )),
    }
}

/// [`catch`], as the boundary's result type.
fn guard<T>(f: impl FnOnce() -> crate::Result<T>) -> RResult<T, FfiError> {
    match catch(f) {
        Ok(v) => RResult::ROk(v),
        Err(e) => RResult::RErr(e.into()),
    }
}

/// Adapts a [`Plugin`] to the boundary trait.
pub struct Adapter<P>(P);

impl<P: Plugin> InstanceApi for Adapter<P> {
    fn init(&mut self, host: HostRef<'_>) -> RResult<(), FfiError> {
        guard(|| self.0.init(&Host::from_raw(host)))
    }

    fn handle(
        &mut self,
        host: HostRef<'_>,
        request: RSlice<'_, u8>,
    ) -> RResult<RVec<u8>, FfiError> {
        guard(|| {
            self.0
                .handle(&Host::from_raw(host), request.as_slice())
                .map(RVec::from)
        })
    }

    // The boundary keeps `&mut self` (changing a receiver changes the
    // vtable's layout, so every plugin built before would fail the layout
    // check); the plugin's own `save_state` takes `&self`.
    fn save_state(&mut self) -> RResult<RVec<u8>, FfiError> {
        guard(|| self.0.save_state().map(RVec::from))
    }

    fn restore_state(
        &mut self,
        host: HostRef<'_>,
        state: RSlice<'_, u8>,
        from_schema: u32,
    ) -> RResult<(), FfiError> {
        guard(|| {
            self.0
                .restore_state(&Host::from_raw(host), state.as_slice(), from_schema)
        })
    }
}

// Keep `RBox` in the signature docs of `InstanceBox` reachable for rustdoc links.
#[allow(dead_code)]
type _Owned = RBox<()>;

/// Exports `$plugin` (a type implementing [`Plugin`](crate::Plugin) or
/// [`JsonPlugin`](crate::JsonPlugin)) as this library's plugin module. Use it
/// once, in a `cdylib` crate.
///
/// It exports one symbol, abi_stable's root-module loader
/// (`sandbox_plugin`'s root module: the module's name, crate version,
/// schema, dependencies and a constructor), and wraps every entry point so a
/// panic becomes an [`ErrorKind::Panic`](crate::ErrorKind::Panic) error.
///
/// ```
/// use sandbox_plugin::{export_plugin, Host, JsonPlugin, Result};
///
/// #[derive(Default)]
/// pub struct Upper;
///
/// impl JsonPlugin for Upper {
///     const NAME: &'static str = "upper";
///     type Request = String;
///     type Response = String;
///     type State = ();
///
///     fn handle(&mut self, _host: &Host<'_>, text: String) -> Result<String> {
///         Ok(text.to_uppercase())
///     }
/// }
///
/// export_plugin!(Upper);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = {
            extern "C" fn __sandbox_plugin_info() -> $crate::ffi::ModuleInfo {
                $crate::glue::info::<$plugin>(::core::env!("CARGO_PKG_VERSION"))
            }

            extern "C" fn __sandbox_plugin_new() -> $crate::__abi_stable::std_types::RResult<
                $crate::ffi::InstanceBox,
                $crate::ffi::FfiError,
            > {
                $crate::glue::new_instance::<$plugin>()
            }

            fn __sandbox_plugin_root() -> $crate::ffi::PluginModuleRef {
                $crate::glue::root_module(__sandbox_plugin_info, __sandbox_plugin_new)
            }

            extern "C" fn __sandbox_plugin_loader(
            ) -> $crate::__abi_stable::library::RootModuleResult {
                $crate::__abi_stable::library::__call_root_module_loader(__sandbox_plugin_root)
            }

            #[export_name = "_1as_0lib_1header_0root_bmodule_bloader"]
            pub static __SANDBOX_PLUGIN_HEADER: $crate::__abi_stable::library::LibHeader = {
                // SAFETY: the loader returns the `PluginModuleRef` named as the
                // header's module type, and its layout is checked on load.
                unsafe {
                    $crate::__abi_stable::library::LibHeader::from_constructor::<
                        $crate::ffi::PluginModuleRef,
                    >(
                        __sandbox_plugin_loader,
                        $crate::__abi_stable::library::CheckTypeLayout::Yes,
                    )
                }
            };
        };
    };
}
