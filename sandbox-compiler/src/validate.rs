//! Checking that a library is a plugin before anyone loads it.

use std::path::Path;

use object::{Object, ObjectKind, ObjectSymbol};

use crate::{Error, Result, ROOT_MODULE_SYMBOL};

/// Checks that the file at `path` is an ELF shared object whose dynamic
/// symbol table exports [`ROOT_MODULE_SYMBOL`], without loading it.
///
/// Returns [`Error::NotAPlugin`] saying what is missing, or [`Error::Io`]
/// when the file cannot be read.
pub fn validate_plugin(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    validate_bytes(&bytes).map_err(|reason| Error::NotAPlugin {
        path: path.to_owned(),
        reason,
    })
}

/// The checks of [`validate_plugin`] on a file's contents; `Err` is the
/// reason it is not a plugin.
pub(crate) fn validate_bytes(bytes: &[u8]) -> Result<(), String> {
    let file = object::File::parse(bytes)
        .map_err(|e| format!("it is not an object file this host can read ({e})"))?;
    if file.format() != object::BinaryFormat::Elf {
        return Err(format!("it is a {:?} file, not ELF", file.format()));
    }
    if file.kind() != ObjectKind::Dynamic {
        return Err(format!(
            "it is an ELF {:?} file, not a shared object (ET_DYN)",
            file.kind()
        ));
    }
    let exported = file.dynamic_symbols().any(|s| {
        !s.is_undefined() && s.is_global() && s.name_bytes() == Ok(ROOT_MODULE_SYMBOL.as_bytes())
    });
    if !exported {
        return Err(format!(
            "its dynamic symbol table does not export `{ROOT_MODULE_SYMBOL}`"
        ));
    }
    Ok(())
}
