//! Checks the hand-written declarations against the installed `librados.h`, mechanically:
//!
//! 1. every `pub fn` of the extern block carries its C prototype in its doc comment;
//! 2. the C compiler accepts all those prototypes after `#include <rados/librados.h>`: a
//!    redeclaration with other types is a hard error ("conflicting types"), so each doc
//!    prototype is exactly the header's;
//! 3. each Rust parameter and return type is the translation of the C type in that
//!    prototype (`int` → `c_int`, `const char *` → `*const c_char`, `size_t *` → `*mut usize`, ...).

use std::collections::BTreeMap;
use std::process::Command;

const SOURCE: &str = include_str!("../src/lib.rs");

/// (name, C prototype, Rust parameter types, Rust return type) of every extern fn.
fn declarations() -> Vec<(String, String, Vec<String>, String)> {
    let block = &SOURCE[SOURCE.find("extern \"C\" {").expect("the extern block")..];
    let mut out = Vec::new();
    let mut docs: Vec<&str> = Vec::new();
    let mut lines = block.lines();
    while let Some(line) = lines.next() {
        let t = line.trim();
        if let Some(doc) = t.strip_prefix("///") {
            docs.push(doc.trim());
            continue;
        }
        if let Some(rest) = t.strip_prefix("pub fn ") {
            let name = rest[..rest.find('(').unwrap()].to_string();
            let mut decl = rest.to_string();
            while !decl.trim_end().ends_with(';') {
                decl.push(' ');
                decl.push_str(lines.next().unwrap().trim());
            }
            let proto = docs
                .iter()
                .find_map(|d| {
                    let d = d.strip_prefix('`')?.split('`').next()?;
                    d.contains(&format!("{name}(")).then(|| d.to_string())
                })
                .unwrap_or_else(|| panic!("{name}: no C prototype in its doc comment"));
            let open = decl.find('(').unwrap();
            let close = decl.rfind(')').unwrap();
            let params = split_params(&decl[open + 1..close])
                .into_iter()
                .map(|p| squash(p.split_once(':').unwrap_or_else(|| panic!("{name}: param {p}")).1))
                .collect();
            let ret = decl[close + 1..].trim().trim_end_matches(';').trim();
            let ret = squash(ret.strip_prefix("->").unwrap_or("()"));
            out.push((name, proto, params, ret));
        }
        docs.clear();
    }
    out
}

fn split_params(s: &str) -> Vec<String> {
    let (mut depth, mut cur, mut out) = (0i32, String::new(), Vec::new());
    for c in s.chars() {
        match c {
            '(' | '<' => depth += 1,
            ')' | '>' => depth -= 1,
            ',' if depth == 0 => {
                if !cur.trim().is_empty() {
                    out.push(cur.trim().to_string());
                }
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ").replace("* ", "*")
}

/// The Rust type a C type (without its parameter name) translates to.
fn rust_type(c: &str) -> String {
    let c = c.replace('*', " * ");
    let tokens: Vec<&str> = c.split_whitespace().collect();
    // Split into the base type and a list of pointer levels; a `const` before the first `*`
    // makes the pointee const, one after a `*` qualifies that pointer itself.
    let first_star = tokens.iter().position(|&t| t == "*").unwrap_or(tokens.len());
    let base_tokens: Vec<&str> = tokens[..first_star].iter().copied().filter(|&t| t != "const").collect();
    let mut pointee_const = tokens[..first_star].contains(&"const");
    let base = match base_tokens.join(" ").as_str() {
        "char" => "c_char",
        "int" => "c_int",
        "void" => "c_void",
        "size_t" => "usize",
        "ssize_t" => "isize",
        "uint64_t" => "u64",
        "int64_t" => "i64",
        "uint32_t" => "u32",
        "uint8_t" => "u8",
        "time_t" => "time_t",
        "struct timeval" => "timeval",
        other if other.starts_with("rados_") => other,
        other => panic!("no translation for C type {other:?}"),
    }
    .to_string();
    let mut ty = base;
    let mut i = first_star;
    while i < tokens.len() {
        assert_eq!(tokens[i], "*");
        ty = format!("*{} {ty}", if pointee_const { "const" } else { "mut" });
        // Qualifiers of this pointer apply to it, i.e. to the next level's pointee.
        pointee_const = false;
        i += 1;
        while i < tokens.len() && tokens[i] == "const" {
            pointee_const = true;
            i += 1;
        }
    }
    squash(&ty)
}

/// Splits a C prototype into its return type and parameter types (names dropped).
fn c_types(proto: &str) -> (String, Vec<String>) {
    let open = proto.find('(').unwrap();
    let head = &proto[..open];
    let name_start = head.rfind(|c: char| !(c.is_alphanumeric() || c == '_')).map_or(0, |i| i + 1);
    let ret = head[..name_start].trim().to_string();
    let args = proto[open + 1..proto.rfind(')').unwrap()].trim();
    if args == "void" || args.is_empty() {
        return (ret, Vec::new());
    }
    let params = args
        .split(',')
        .map(|p| {
            let p = p.trim();
            let cut = p.rfind(|c: char| !(c.is_alphanumeric() || c == '_')).expect("a named parameter");
            p[..=cut].trim().to_string()
        })
        .collect();
    (ret, params)
}

#[test]
fn rust_declarations_translate_their_c_prototypes() {
    let decls = declarations();
    assert!(decls.len() >= 40, "found only {} declarations", decls.len());
    for (name, proto, params, ret) in &decls {
        let (c_ret, c_params) = c_types(proto);
        let want: Vec<String> = c_params.iter().map(|p| rust_type(p)).collect();
        assert_eq!(params, &want, "{name}: parameters of `{proto}`");
        let want_ret = if c_ret == "void" { "()".to_string() } else { rust_type(&c_ret) };
        assert_eq!(ret, &want_ret, "{name}: return type of `{proto}`");
    }
}

#[test]
fn c_prototypes_match_the_installed_header() {
    let decls = declarations();
    let mut by_name = BTreeMap::new();
    for (name, proto, ..) in &decls {
        assert!(by_name.insert(name.clone(), proto.clone()).is_none(), "{name} declared twice");
    }
    let mut c = String::from("#include <rados/librados.h>\n");
    for proto in by_name.values() {
        c.push_str(proto);
        c.push('\n');
    }
    let dir = std::env::temp_dir().join(format!("archip-rados-sys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("prototypes.c");
    std::fs::write(&file, &c).unwrap();
    let out = Command::new("cc")
        .args(["-fsyntax-only", "-Werror", "-Wall"])
        .arg(&file)
        .output()
        .expect("running the C compiler (install gcc; tests/run-all does)");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        out.status.success(),
        "the doc prototypes disagree with /usr/include/rados/librados.h:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
