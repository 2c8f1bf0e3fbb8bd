//! Which paths under a sandbox root count as source changes.

use std::ffi::OsStr;
use std::path::{Component, Path};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::{Error, Result};

/// Decides whether a path, relative to a sandbox root, is a relevant source file.
///
/// A path is relevant when it matches one of the include globs and it is not
/// ignored. Ignored, whatever the globs say:
///
/// - anything under a folder named `target` (build output);
/// - version-control and tool folders that are never source: `.git`, `.hg`,
///   `.svn`, `.idea`, `.vscode`, `.cache`. Other hidden folders are watched,
///   since cargo builds what they hold when the crate graph leads there (a
///   path dependency in `.vendor/x`, say);
/// - hidden files: a file whose name starts with `.` (vim's
///   `.lib.rs.swp`, emacs's `.#lib.rs` lock links);
/// - editor temp files: names ending in `~`, `*.swp` / `*.swo` / `*.swx`, and
///   vim's write-probe file `4913`.
///
/// Globs use `/` as the separator and `*` does not cross it, so `*.rs` matches
/// only files at the root while `**/*.rs` matches at any depth (including the
/// root). The default backend uses this type; hosts can reuse it to hash or
/// list a sandbox's sources the same way.
///
/// ```
/// use std::path::Path;
/// use sandbox_watch::{PathFilter, WatchSpec};
///
/// let filter = PathFilter::new(&WatchSpec::new("/any").include)?;
/// assert!(filter.is_relevant(Path::new("src/lib.rs")));
/// assert!(filter.is_relevant(Path::new("Cargo.toml")));
/// assert!(!filter.is_relevant(Path::new("target/debug/build/x/out.rs")));
/// assert!(!filter.is_relevant(Path::new("notes.txt")));
/// # Ok::<(), sandbox_watch::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct PathFilter {
    include: GlobSet,
}

impl PathFilter {
    /// Compiles the include globs.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidGlob`] when a pattern does not parse.
    pub fn new<S: AsRef<str>>(include: &[S]) -> Result<Self> {
        let mut builder = GlobSetBuilder::new();
        for glob in include {
            let glob = glob.as_ref();
            let compiled = GlobBuilder::new(glob)
                .literal_separator(true)
                .build()
                .map_err(|source| Error::InvalidGlob {
                    glob: glob.to_owned(),
                    source,
                })?;
            builder.add(compiled);
        }
        let include = builder.build().map_err(|source| Error::InvalidGlob {
            glob: include
                .iter()
                .map(AsRef::as_ref)
                .collect::<Vec<_>>()
                .join(", "),
            source,
        })?;
        Ok(Self { include })
    }

    /// Whether `relative` (a path relative to the sandbox root) is a relevant
    /// source file. Absolute paths and paths with `..` are never relevant.
    pub fn is_relevant(&self, relative: &Path) -> bool {
        let mut components = relative.components().peekable();
        let mut saw_name = false;
        while let Some(component) = components.next() {
            let Component::Normal(name) = component else {
                if matches!(component, Component::CurDir) {
                    continue;
                }
                return false;
            };
            saw_name = true;
            let last = components.peek().is_none();
            if last {
                if is_ignored_file_name(name) {
                    return false;
                }
            } else if is_ignored_dir_name(name) {
                return false;
            }
        }
        saw_name && self.include.is_match(relative)
    }

    /// Whether a folder at `relative` (relative to the sandbox root) is
    /// skipped entirely: `target` or a version-control or tool folder, or
    /// inside one.
    pub fn is_ignored_dir(relative: &Path) -> bool {
        relative.components().any(|component| match component {
            Component::Normal(name) => is_ignored_dir_name(name),
            Component::CurDir => false,
            _ => true,
        })
    }
}

/// Folders that hold no source cargo reads.
const IGNORED_DIRS: &[&[u8]] = &[
    b"target", b".git", b".hg", b".svn", b".idea", b".vscode", b".cache",
];

/// A folder whose whole subtree is never watched.
pub(crate) fn is_ignored_dir_name(name: &OsStr) -> bool {
    IGNORED_DIRS.contains(&name.as_encoded_bytes())
}

fn is_ignored_file_name(name: &OsStr) -> bool {
    let bytes = name.as_encoded_bytes();
    bytes.starts_with(b".")
        || bytes.ends_with(b"~")
        || bytes.ends_with(b".swp")
        || bytes.ends_with(b".swo")
        || bytes.ends_with(b".swx")
        || bytes == b"4913"
}
