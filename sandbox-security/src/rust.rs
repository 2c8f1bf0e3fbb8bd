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
/// source tree. Macro bodies are scanned token by token.
pub fn scan_rust(file: &Path, source: &str) -> Result<Vec<Finding>> {
    let ast = syn::parse_file(source).map_err(|e| {
        let start = e.span().start();
        Error::Parse {
            file: file.to_owned(),
            line: u32::try_from(start.line).unwrap_or(u32::MAX),
            column: u32::try_from(start.column + 1).unwrap_or(u32::MAX),
            message: e.to_string(),
        }
    })?;
    let mut aliases = Aliases {
        roots: ["std", "core", "alloc"].map(String::from).into(),
    };
    aliases.visit_file(&ast);
    let mut scanner = Scanner {
        file,
        roots: aliases.roots,
        findings: Vec::new(),
    };
    scanner.visit_file(&ast);
    let mut findings = scanner.findings;
    findings.sort();
    findings.dedup();
    Ok(findings)
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
                        && matches!(next, Some(TokenTree::Literal(_)))
                        && matches!(trees.get(i + 2), Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace)
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
                TokenTree::Punct(_) | TokenTree::Literal(_) => {}
            }
            i += 1;
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

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        if let Some(last) = mac.path.segments.last() {
            if let Some(cap) = sensitive_macro(&last.ident.to_string()) {
                self.report(cap, last.ident.span(), format!("`{}!`", last.ident));
            }
        }
        self.scan_tokens(mac.tokens.clone());
        visit::visit_macro(self, mac);
    }
}
