//! The syntax-tree scan of one Rust source file.

use std::collections::BTreeSet;
use std::path::{Component, Path};

use proc_macro2::{Delimiter, Span, TokenStream, TokenTree};
use syn::visit::{self, Visit};

use crate::{Capability, Error, Finding, Result};

/// Scans one Rust source file: `file` is the path reported in findings
/// (relative to the source root), `source` its text.
///
/// Finds `unsafe` (blocks, fns, impls, traits, `#[unsafe(..)]` attributes,
/// inline assembly), `extern` blocks, linkage attributes, paths and `use`s of
/// `std`/`core`/`alloc` `::process`, `::net`, `::fs`, `::env` (also through
/// `::std`, `use std::{fs, net}`, globs, and aliases of the crate roots), the
/// `include!`/`env!` macro families and `#[path]` attributes leaving the
/// source tree. Macro bodies and macro arguments are scanned token by token
/// (see "Macros" below).
///
/// # Macros
///
/// The scan reads source, not its expansion. What it does see of macros:
/// every token of a `macro_rules!` body and of every macro invocation is
/// searched for the same paths, `unsafe`, `extern` blocks and attributes;
/// a path whose first segment is a metavariable (`$root::process`) counts as
/// a path of a crate root; and a macro whose body builds a crate-root path
/// from an argument (`std::$module`) has every invocation searched for the
/// sensitive module names (`process`, `net`, `fs`, `env`) — within this file
/// here, across the tree with [`SourcePolicy`](crate::SourcePolicy). Names
/// assembled in other ways (by procedural macros, `concat_idents!`, nested
/// macro layers) are not seen: the scan is advice, the jail is the guarantee.
pub fn scan_rust(file: &Path, source: &str) -> Result<Vec<Finding>> {
    let scanned = scan_rust_file(file, source)?;
    let mut findings: Vec<Finding> = scanned.resolve_builders(&scanned.builders).collect();
    findings.extend(scanned.findings);
    findings.sort();
    findings.dedup();
    Ok(findings)
}

/// A `mod name;` declaration (without a body) found in a file.
#[derive(Debug, Clone)]
pub(crate) struct ModDecl {
    /// The enclosing inline modules (`mod a { mod b { mod name; } }` gives
    /// `["a", "b"]`), each as its `#[path]` value when it has one.
    pub inline: Vec<String>,
    /// The module's name.
    pub name: String,
    /// Its `#[path = ".."]` values (also those under `cfg_attr`).
    pub paths: Vec<String>,
}

/// An invocation of a macro, with the findings it would have if the macro
/// builds crate-root paths from its arguments.
#[derive(Debug, Clone)]
pub(crate) struct Invocation {
    /// The macro's name (the last segment of its path).
    pub name: String,
    /// A finding per sensitive module name among its argument tokens.
    pub findings: Vec<Finding>,
}

/// What the scan of one file found, and what it points at.
#[derive(Debug, Clone, Default)]
pub(crate) struct RustFile {
    pub findings: Vec<Finding>,
    /// Out-of-line module declarations: files to scan next.
    pub mods: Vec<ModDecl>,
    /// Literal arguments of `include!`: files to scan next.
    pub includes: Vec<String>,
    /// `macro_rules!` names whose body builds a crate-root path from an argument.
    pub builders: Vec<String>,
    /// Every macro invocation with sensitive module names in its arguments.
    pub invocations: Vec<Invocation>,
}

impl RustFile {
    /// The findings of the invocations of `builders`.
    pub fn resolve_builders<'a>(
        &'a self,
        builders: &'a [String],
    ) -> impl Iterator<Item = Finding> + 'a {
        self.invocations
            .iter()
            .filter(|i| builders.contains(&i.name))
            .flat_map(|i| i.findings.iter().cloned())
    }
}

fn parse_error(file: &Path, span: Span, message: String) -> Error {
    let start = span.start();
    Error::Parse {
        file: file.to_owned(),
        line: u32::try_from(start.line).unwrap_or(u32::MAX),
        column: u32::try_from(start.column + 1).unwrap_or(u32::MAX),
        message,
    }
}

fn new_scanner<'a>(file: &'a Path, roots: BTreeSet<String>) -> Scanner<'a> {
    Scanner {
        file,
        roots,
        findings: Vec::new(),
        inline: Vec::new(),
        out: RustFile::default(),
    }
}

/// Scans one file as a module (see [`scan_rust`]) and collects what it
/// points at: `mod` declarations, `include!`s and macros.
pub(crate) fn scan_rust_file(file: &Path, source: &str) -> Result<RustFile> {
    let ast = syn::parse_file(source).map_err(|e| parse_error(file, e.span(), e.to_string()))?;
    let mut aliases = Aliases {
        roots: ["std", "core", "alloc"].map(String::from).into(),
    };
    aliases.visit_file(&ast);
    let mut scanner = new_scanner(file, aliases.roots);
    scanner.visit_file(&ast);
    let mut out = scanner.out;
    out.findings = scanner.findings;
    Ok(out)
}

/// Scans a file that is not a whole module (the target of an `include!`,
/// often an expression) as tokens.
pub(crate) fn scan_rust_fragment(file: &Path, source: &str) -> Result<RustFile> {
    if let Ok(scanned) = scan_rust_file(file, source) {
        return Ok(scanned);
    }
    let tokens: TokenStream = source
        .parse()
        .map_err(|e: proc_macro2::LexError| parse_error(file, e.span(), e.to_string()))?;
    let mut scanner = new_scanner(file, ["std", "core", "alloc"].map(String::from).into());
    scanner.scan_tokens(tokens);
    let mut out = scanner.out;
    out.findings = scanner.findings;
    Ok(out)
}

/// Collects names bound to a crate root (`use std as s;`, `extern crate core as c;`).
struct Aliases {
    roots: BTreeSet<String>,
}

impl Aliases {
    fn walk(&mut self, tree: &syn::UseTree, prefix: &mut Vec<String>) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.walk(&p.tree, prefix);
                prefix.pop();
            }
            syn::UseTree::Rename(r) => {
                let is_root = match prefix.as_slice() {
                    [] => self.roots.contains(&r.ident.to_string()),
                    [root] => r.ident == "self" && self.roots.contains(root),
                    _ => false,
                };
                if is_root {
                    self.roots.insert(r.rename.to_string());
                }
            }
            syn::UseTree::Group(g) => g.items.iter().for_each(|t| self.walk(t, prefix)),
            syn::UseTree::Name(_) | syn::UseTree::Glob(_) => {}
        }
    }
}

impl<'ast> Visit<'ast> for Aliases {
    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.walk(&item.tree, &mut Vec::new());
    }

    fn visit_item_extern_crate(&mut self, item: &'ast syn::ItemExternCrate) {
        if let Some((_, rename)) = &item.rename {
            if self.roots.contains(&item.ident.to_string()) {
                self.roots.insert(rename.to_string());
            }
        }
    }
}

struct Scanner<'a> {
    file: &'a Path,
    roots: BTreeSet<String>,
    findings: Vec<Finding>,
    /// The inline modules around the item being visited.
    inline: Vec<String>,
    out: RustFile,
}

/// The string values of `#[path = ".."]` and `#[cfg_attr(.., path = "..")]`.
fn path_attributes(attrs: &[syn::Attribute]) -> Vec<String> {
    let mut paths = Vec::new();
    for attr in attrs {
        if attr.path().is_ident("path") {
            if let syn::Meta::NameValue(syn::MetaNameValue {
                value:
                    syn::Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Str(lit),
                        ..
                    }),
                ..
            }) = &attr.meta
            {
                paths.push(lit.value());
            }
        } else if attr.path().is_ident("cfg_attr") {
            if let syn::Meta::List(list) = &attr.meta {
                let trees: Vec<TokenTree> = list.tokens.clone().into_iter().collect();
                for window in trees.windows(3) {
                    if let [TokenTree::Ident(name), TokenTree::Punct(eq), TokenTree::Literal(lit)] =
                        window
                    {
                        if name == "path" && eq.as_char() == '=' {
                            if let Ok(syn::Lit::Str(lit)) =
                                syn::parse_str::<syn::Lit>(&lit.to_string())
                            {
                                paths.push(lit.value());
                            }
                        }
                    }
                }
            }
        }
    }
    paths
}

/// Whether a `macro_rules!` body builds a crate-root path from a
/// metavariable: `std :: $x`, `core :: $x`, ...
fn builds_root_paths(tokens: TokenStream, roots: &BTreeSet<String>) -> bool {
    let trees: Vec<TokenTree> = tokens.into_iter().collect();
    trees.iter().enumerate().any(|(i, tree)| match tree {
        TokenTree::Group(group) => builds_root_paths(group.stream(), roots),
        TokenTree::Ident(ident) if roots.contains(&ident.to_string()) => matches!(
            (trees.get(i + 1), trees.get(i + 2), trees.get(i + 3)),
            (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)), Some(TokenTree::Punct(d)))
                if a.as_char() == ':' && b.as_char() == ':' && d.as_char() == '$'
        ),
        _ => false,
    })
}

/// Module names under a crate root (or under `os::<platform>`) that grant a capability.
fn sensitive_module(name: &str) -> Option<Capability> {
    match name {
        "process" => Some(Capability::Process),
        "net" => Some(Capability::Network),
        "fs" => Some(Capability::FileSystem),
        "env" => Some(Capability::Environment),
        _ => None,
    }
}

fn sensitive_macro(name: &str) -> Option<Capability> {
    match name {
        "asm" | "global_asm" | "naked_asm" => Some(Capability::Unsafe),
        "include" | "include_str" | "include_bytes" => Some(Capability::FileSystem),
        "env" | "option_env" => Some(Capability::Environment),
        _ => None,
    }
}

fn linkage_attribute(name: &str) -> bool {
    matches!(name, "no_mangle" | "export_name" | "link_section" | "link")
}

impl Scanner<'_> {
    fn report(&mut self, capability: Capability, span: Span, detail: impl Into<String>) {
        let start = span.start();
        self.findings.push(Finding {
            capability,
            file: self.file.to_owned(),
            line: u32::try_from(start.line).unwrap_or(u32::MAX),
            column: u32::try_from(start.column + 1).unwrap_or(u32::MAX),
            detail: detail.into(),
        });
    }

    /// If `segments` (a path as written) reaches a sensitive module, the
    /// capability and how many segments name it.
    fn classify(&self, segments: &[String]) -> Option<(Capability, usize)> {
        let root = segments.first()?;
        if !self.roots.contains(root) {
            return None;
        }
        match segments.get(1).map(String::as_str) {
            Some("os") => {
                let platform = segments.get(2)?;
                let platform_ok =
                    matches!(platform.as_str(), "unix" | "linux" | "wasi" | "windows");
                let cap = sensitive_module(segments.get(3)?)?;
                platform_ok.then_some((cap, 4))
            }
            Some(module) => sensitive_module(module).map(|cap| (cap, 2)),
            None => None,
        }
    }

    fn check_segments(&mut self, segments: &[String], span: Span) {
        if let Some((cap, len)) = self.classify(segments) {
            let detail = format!("`{}`", segments[..len].join("::"));
            self.report(cap, span, detail);
        }
    }

    fn walk_use(&mut self, tree: &syn::UseTree, prefix: &mut Vec<String>, start: Option<Span>) {
        match tree {
            syn::UseTree::Path(p) => {
                let start = start.or(Some(p.ident.span()));
                prefix.push(p.ident.to_string());
                match (self.classify(prefix), start) {
                    (Some((cap, len)), Some(span)) if len == prefix.len() => {
                        let detail = format!("`{}`", prefix.join("::"));
                        self.report(cap, span, detail);
                    }
                    _ => self.walk_use(&p.tree, prefix, start),
                }
                prefix.pop();
            }
            syn::UseTree::Name(syn::UseName { ident })
            | syn::UseTree::Rename(syn::UseRename { ident, .. }) => {
                if ident != "self" {
                    prefix.push(ident.to_string());
                    self.check_segments(prefix, start.unwrap_or(ident.span()));
                    prefix.pop();
                }
            }
            syn::UseTree::Glob(glob) => {
                let span = start.unwrap_or(glob.star_token.span);
                for module in ["process", "net", "fs", "env"] {
                    prefix.push(module.to_owned());
                    if let Some((cap, len)) = self.classify(prefix) {
                        if len == prefix.len() {
                            let shown = prefix[..prefix.len() - 1].join("::");
                            self.report(cap, span, format!("`{shown}::*`"));
                        }
                    }
                    prefix.pop();
                }
            }
            syn::UseTree::Group(group) => {
                for item in &group.items {
                    self.walk_use(item, prefix, None);
                }
            }
        }
    }

    /// Scans a macro body (unparsed tokens) for the same constructs.
    fn scan_tokens(&mut self, tokens: TokenStream) {
        let trees: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < trees.len() {
            match &trees[i] {
                TokenTree::Group(group) => {
                    let punct = |k: usize| match i.checked_sub(k).map(|k| &trees[k]) {
                        Some(TokenTree::Punct(p)) => Some(p.as_char()),
                        _ => None,
                    };
                    // `#[...]` or `#![...]`
                    let is_attribute = group.delimiter() == Delimiter::Bracket
                        && (punct(1) == Some('#')
                            || (punct(1) == Some('!') && punct(2) == Some('#')));
                    if is_attribute {
                        self.scan_attribute_tokens(group.stream(), group.span());
                    }
                    self.scan_tokens(group.stream());
                }
                TokenTree::Ident(ident) => {
                    let name = ident.to_string();
                    let next = trees.get(i + 1);
                    let is_macro_call =
                        matches!(next, Some(TokenTree::Punct(p)) if p.as_char() == '!');
                    if name == "unsafe" {
                        self.report(Capability::Unsafe, ident.span(), "`unsafe` in a macro body");
                    } else if name == "extern"
                        && {
                            // `extern { .. }`, `extern "C" { .. }`, `extern $abi { .. }`
                            let brace = |k: usize| matches!(trees.get(k), Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace);
                            brace(i + 1)
                                || (matches!(next, Some(TokenTree::Literal(_))) && brace(i + 2))
                                || (matches!(next, Some(TokenTree::Punct(p)) if p.as_char() == '$')
                                    && brace(i + 3))
                        }
                    {
                        self.report(
                            Capability::ExternBlock,
                            ident.span(),
                            "`extern` block in a macro body",
                        );
                    } else if is_macro_call {
                        if let Some(cap) = sensitive_macro(&name) {
                            self.report(cap, ident.span(), format!("`{name}!`"));
                        }
                    } else if self.roots.contains(&name) {
                        // Collect `a :: b :: c`.
                        let mut segments = vec![name];
                        let mut j = i + 1;
                        while let (
                            Some(TokenTree::Punct(a)),
                            Some(TokenTree::Punct(b)),
                            Some(TokenTree::Ident(seg)),
                        ) = (trees.get(j), trees.get(j + 1), trees.get(j + 2))
                        {
                            if a.as_char() != ':' || b.as_char() != ':' {
                                break;
                            }
                            segments.push(seg.to_string());
                            j += 3;
                        }
                        // A leading `::` belongs to the path; the span starts at the root.
                        self.check_segments(&segments, ident.span());
                        i = j;
                        continue;
                    }
                }
                TokenTree::Punct(dollar) if dollar.as_char() == '$' => {
                    // `$root :: process :: ..`: a path whose root is a
                    // macro argument may well be `std`.
                    if let (
                        Some(TokenTree::Ident(var)),
                        Some(TokenTree::Punct(a)),
                        Some(TokenTree::Punct(b)),
                        Some(TokenTree::Ident(module)),
                    ) = (
                        trees.get(i + 1),
                        trees.get(i + 2),
                        trees.get(i + 3),
                        trees.get(i + 4),
                    ) {
                        if a.as_char() == ':' && b.as_char() == ':' {
                            if let Some(cap) = sensitive_module(&module.to_string()) {
                                self.report(
                                    cap,
                                    dollar.span(),
                                    format!("`${var}::{module}` in a macro body"),
                                );
                            }
                        }
                    }
                }
                TokenTree::Punct(_) | TokenTree::Literal(_) => {}
            }
            i += 1;
        }
    }

    /// Sensitive module names among the tokens of a macro's arguments, as
    /// findings that count if the macro builds paths from them.
    fn argument_findings(&self, macro_name: &str, tokens: TokenStream, out: &mut Vec<Finding>) {
        for tree in tokens {
            match tree {
                TokenTree::Group(group) => self.argument_findings(macro_name, group.stream(), out),
                TokenTree::Ident(ident) => {
                    let name = ident.to_string();
                    if let Some(capability) = sensitive_module(&name) {
                        let start = ident.span().start();
                        out.push(Finding {
                            capability,
                            file: self.file.to_owned(),
                            line: u32::try_from(start.line).unwrap_or(u32::MAX),
                            column: u32::try_from(start.column + 1).unwrap_or(u32::MAX),
                            detail: format!(
                                "`{name}` passed to `{macro_name}!`, which builds `std::` paths from its arguments"
                            ),
                        });
                    }
                }
                TokenTree::Punct(_) | TokenTree::Literal(_) => {}
            }
        }
    }

    /// Scans the tokens inside `#[...]` found in a macro body.
    fn scan_attribute_tokens(&mut self, tokens: TokenStream, span: Span) {
        let mut iter = tokens.into_iter();
        match iter.next() {
            Some(TokenTree::Ident(ident)) if linkage_attribute(&ident.to_string()) => {
                self.report(Capability::Linkage, span, format!("`#[{ident}]`"));
            }
            Some(TokenTree::Ident(ident)) if ident == "unsafe" => {
                self.report(Capability::Unsafe, span, "`#[unsafe(..)]` attribute");
                if let Some(TokenTree::Group(inner)) = iter.next() {
                    self.scan_attribute_tokens(inner.stream(), span);
                }
            }
            _ => {}
        }
    }

    fn check_path_attribute(&mut self, attr: &syn::Attribute) {
        let syn::Meta::NameValue(nv) = &attr.meta else {
            return;
        };
        let syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(lit),
            ..
        }) = &nv.value
        else {
            return;
        };
        let target = lit.value();
        if escapes(self.file, Path::new(&target)) {
            self.report(
                Capability::FileSystem,
                attr.pound_token.span,
                format!("`#[path = {:?}]` outside the source tree", target),
            );
        }
    }
}

/// Whether `target`, relative to the directory of `file` (itself relative to
/// the source root), leaves the source root.
fn escapes(file: &Path, target: &Path) -> bool {
    let mut depth = file
        .parent()
        .map_or(0, |dir| dir.components().count() as isize);
    for component in target.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            Component::RootDir | Component::Prefix(_) => return true,
        }
    }
    false
}

impl<'ast> Visit<'ast> for Scanner<'_> {
    fn visit_expr_unsafe(&mut self, node: &'ast syn::ExprUnsafe) {
        self.report(Capability::Unsafe, node.unsafe_token.span, "`unsafe` block");
        visit::visit_expr_unsafe(self, node);
    }

    fn visit_signature(&mut self, node: &'ast syn::Signature) {
        if let Some(token) = &node.unsafety {
            self.report(
                Capability::Unsafe,
                token.span,
                format!("`unsafe fn {}`", node.ident),
            );
        }
        visit::visit_signature(self, node);
    }

    fn visit_item_impl(&mut self, node: &'ast syn::ItemImpl) {
        if let Some(token) = &node.unsafety {
            self.report(Capability::Unsafe, token.span, "`unsafe impl`");
        }
        visit::visit_item_impl(self, node);
    }

    fn visit_item_trait(&mut self, node: &'ast syn::ItemTrait) {
        if let Some(token) = &node.unsafety {
            self.report(
                Capability::Unsafe,
                token.span,
                format!("`unsafe trait {}`", node.ident),
            );
        }
        visit::visit_item_trait(self, node);
    }

    fn visit_item_foreign_mod(&mut self, node: &'ast syn::ItemForeignMod) {
        let abi = node
            .abi
            .name
            .as_ref()
            .map_or_else(|| "C".to_owned(), syn::LitStr::value);
        let span = node.unsafety.map_or(node.abi.extern_token.span, |u| u.span);
        self.report(
            Capability::ExternBlock,
            span,
            format!("`extern {abi:?}` block"),
        );
        visit::visit_item_foreign_mod(self, node);
    }

    fn visit_attribute(&mut self, attr: &'ast syn::Attribute) {
        let path = attr.path();
        if let Some(ident) = path.get_ident() {
            let name = ident.to_string();
            if linkage_attribute(&name) {
                self.report(
                    Capability::Linkage,
                    attr.pound_token.span,
                    format!("`#[{name}]`"),
                );
            } else if name == "unsafe" {
                self.report(
                    Capability::Unsafe,
                    attr.pound_token.span,
                    "`#[unsafe(..)]` attribute",
                );
                if let syn::Meta::List(list) = &attr.meta {
                    self.scan_attribute_tokens(list.tokens.clone(), attr.pound_token.span);
                }
            } else if name == "path" {
                self.check_path_attribute(attr);
            }
        }
        visit::visit_attribute(self, attr);
    }

    fn visit_item_use(&mut self, node: &'ast syn::ItemUse) {
        for attr in &node.attrs {
            self.visit_attribute(attr);
        }
        let start = node.leading_colon.map(|c| c.spans[0]);
        self.walk_use(&node.tree, &mut Vec::new(), start);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        let span = path.leading_colon.map_or_else(
            || {
                path.segments
                    .first()
                    .map_or_else(Span::call_site, |s| s.ident.span())
            },
            |c| c.spans[0],
        );
        self.check_segments(&segments, span);
        visit::visit_path(self, path);
    }

    fn visit_item_mod(&mut self, node: &'ast syn::ItemMod) {
        let paths = path_attributes(&node.attrs);
        match &node.content {
            None => self.out.mods.push(ModDecl {
                inline: self.inline.clone(),
                name: node.ident.to_string(),
                paths,
            }),
            Some(_) => {
                let segment = paths
                    .into_iter()
                    .next()
                    .unwrap_or_else(|| node.ident.to_string());
                self.inline.push(segment);
                visit::visit_item_mod(self, node);
                self.inline.pop();
                return;
            }
        }
        visit::visit_item_mod(self, node);
    }

    fn visit_item_macro(&mut self, node: &'ast syn::ItemMacro) {
        if let (Some(name), true) = (&node.ident, node.mac.path.is_ident("macro_rules")) {
            if builds_root_paths(node.mac.tokens.clone(), &self.roots) {
                self.out.builders.push(name.to_string());
            }
        }
        visit::visit_item_macro(self, node);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        if let Some(last) = mac.path.segments.last() {
            let name = last.ident.to_string();
            if let Some(cap) = sensitive_macro(&name) {
                self.report(cap, last.ident.span(), format!("`{}!`", last.ident));
            }
            if name == "include" {
                if let Ok(lit) = syn::parse2::<syn::LitStr>(mac.tokens.clone()) {
                    self.out.includes.push(lit.value());
                }
            }
            if name != "macro_rules" {
                let mut findings = Vec::new();
                self.argument_findings(&name, mac.tokens.clone(), &mut findings);
                if !findings.is_empty() {
                    self.out.invocations.push(Invocation { name, findings });
                }
            }
        }
        self.scan_tokens(mac.tokens.clone());
        visit::visit_macro(self, mac);
    }
}
