//! Checks that `include/xseg.h` declares exactly the ABI of `xseg::layout`: compiles a C
//! probe that includes the header and prints every struct's size and alignment, every
//! field's offset and size, every constant and a few helper results, then compares each
//! line with the Rust values.
//!
//! Both sides are complete: the Rust field lists are checked by exhaustive destructuring
//! (a new Rust field does not compile until it is listed here), and the C field and
//! constant lists are read from the header itself, so the set of names the probe prints
//! must equal the set Rust expects.
#![cfg(not(loom))]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::mem::{align_of, offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::Command;

use xseg::layout::*;
use xseg::{flags, Op};

const HEADER: &str = "xseg.h";

/// `#define`s of the header that are not part of the ABI.
const NOT_ABI_DEFINES: [&str; 2] = ["XSEG_H", "XSEG_HAVE_LINUX_TYPES"];

/// How the probe prints a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Unsigned,
    Signed,
    Str,
}

impl Kind {
    fn printf(self, name: &str, expr: &str) -> String {
        match self {
            Kind::Unsigned => {
                format!("    printf(\"%s %llu\\n\", \"{name}\", (unsigned long long)({expr}));\n")
            }
            Kind::Signed => format!("    printf(\"%s %lld\\n\", \"{name}\", (long long)({expr}));\n"),
            Kind::Str => format!("    printf(\"%s %s\\n\", \"{name}\", {expr});\n"),
        }
    }
}

/// What Rust says one probe line must read.
struct Expected {
    kind: Kind,
    value: String,
}

#[derive(Default)]
struct Expectations(BTreeMap<String, Expected>);

impl Expectations {
    fn add(&mut self, name: impl Into<String>, kind: Kind, value: impl ToString) {
        let name = name.into();
        let previous = self.0.insert(name.clone(), Expected { kind, value: value.to_string() });
        assert!(previous.is_none(), "{name} is listed twice in the test");
    }
    fn unsigned(&mut self, name: impl Into<String>, value: impl Into<u64>) {
        self.add(name, Kind::Unsigned, value.into());
    }
}

fn field_size<T, F>(_: impl Fn(&T) -> &F) -> usize {
    size_of::<F>()
}

/// Records the layout of a Rust struct under its C name. The field list must name every
/// field: the destructuring below does not compile otherwise.
macro_rules! rust_struct {
    ($exp:expr, $c_name:literal, $ty:ident { $($field:ident),* $(,)? }) => {{
        let _exhaustive = |v: &$ty| {
            let $ty { $($field: _),* } = v;
        };
        let exp: &mut Expectations = $exp;
        exp.unsigned(concat!($c_name, ".sizeof"), size_of::<$ty>() as u64);
        exp.unsigned(concat!($c_name, ".alignof"), align_of::<$ty>() as u64);
        $(
            exp.unsigned(concat!($c_name, ".", stringify!($field), ".offset"), offset_of!($ty, $field) as u64);
            exp.unsigned(
                concat!($c_name, ".", stringify!($field), ".size"),
                field_size(|v: &$ty| &v.$field) as u64,
            );
        )*
    }};
}

/// Everything the Rust side defines, by probe line name.
fn rust_expectations() -> Expectations {
    let mut exp = Expectations::default();
    let e = &mut exp;

    rust_struct!(
        e,
        "xseg_geometry",
        Geometry {
            magic,
            abi_version,
            header_bytes,
            segment_bytes,
            nr_ports,
            dynamic_port_start,
            nr_requests,
            nr_buffers,
            queue_capacity,
            port_desc_bytes,
            request_desc_bytes,
            ring_header_bytes,
            buffer_bytes,
            ports_offset,
            requests_offset,
            buffers_offset,
            rings_offset,
            ring_stride_bytes,
            data_offset,
            data_bytes,
        }
    );
    rust_struct!(
        e,
        "xseg_segment_header",
        SegmentHeader { geometry, state, request_cursor, buffer_cursor, dynamic_cursor, created_unix_ms }
    );
    rust_struct!(
        e,
        "xseg_port",
        PortDesc {
            owner_pid,
            bind_generation,
            owner_start_time,
            wake_seq,
            sleepers,
            _pad0,
            requests_owned,
            recoverer_pid,
            requests_submitted,
            requests_served,
            requests_failed,
            requests_rejected,
            _pad1,
        }
    );
    rust_struct!(e, "xseg_ring_header", RingHeader { head, _pad0, tail, _pad1 });
    rust_struct!(
        e,
        "xseg_request",
        RequestDesc {
            state,
            op,
            flags,
            error,
            target_len,
            dst_port,
            offset,
            size,
            serviced,
            data_offset,
            data_len,
            owner_generation,
            src_port,
            buffer_index,
            _reserved,
            serial,
            user_data,
            target,
            _pad,
        }
    );
    rust_struct!(e, "xseg_buffer", BufferDesc { owner_request });

    e.add("XSEG_MAGIC", Kind::Str, std::str::from_utf8(&MAGIC).expect("the magic is ASCII"));
    e.unsigned("XSEG_MAGIC_LEN", MAGIC.len() as u64);
    e.unsigned("XSEG_ABI_VERSION", ABI_VERSION);
    e.unsigned("XSEG_TARGET_LEN_MAX", TARGET_LEN_MAX as u64);
    e.unsigned("XSEG_NO_BUFFER", NO_BUFFER);
    e.unsigned("XSEG_NO_PORT", NO_PORT);
    e.unsigned("XSEG_HEADER_BYTES", HEADER_BYTES);
    e.unsigned("XSEG_CACHE_LINE", CACHE_LINE);
    e.unsigned("XSEG_SEGMENT_INITIALIZING", SEGMENT_INITIALIZING);
    e.unsigned("XSEG_SEGMENT_READY", SEGMENT_READY);
    e.unsigned("XSEG_PORT_FREE", PORT_FREE);
    e.unsigned("XSEG_PORT_RECOVERING", PORT_RECOVERING);
    e.unsigned("XSEG_SLEEPERS_WOKEN", SLEEPERS_WOKEN);
    e.unsigned("XSEG_REQ_FREE", REQ_FREE);
    e.unsigned("XSEG_REQ_HELD", REQ_HELD);
    e.unsigned("XSEG_REQ_SUBMITTED", REQ_SUBMITTED);
    e.unsigned("XSEG_REQ_ACCEPTED", REQ_ACCEPTED);
    e.unsigned("XSEG_REQ_REPLIED", REQ_REPLIED);
    e.unsigned("XSEG_REQ_ORPHAN", REQ_ORPHAN);
    e.unsigned("XSEG_REQ_STATE_MASK", REQ_STATE_MASK);
    e.unsigned("XSEG_REQ_OWNER_SHIFT", req_word(1, 0).trailing_zeros());
    e.unsigned("XSEG_RING_SKIP", xseg::ring::SKIP);
    e.unsigned("XSEG_NR_PORTS_MAX", NR_PORTS_MAX);
    e.unsigned("XSEG_NR_REQUESTS_MAX", NR_REQUESTS_MAX);
    e.unsigned("XSEG_NR_BUFFERS_MAX", NR_BUFFERS_MAX);
    e.unsigned("XSEG_BUFFER_BYTES_MAX", BUFFER_BYTES_MAX);
    e.unsigned("XSEG_QUEUE_CAPACITY_MAX", QUEUE_CAPACITY_MAX);
    e.unsigned("XSEG_SEGMENT_BYTES_MAX", SEGMENT_BYTES_MAX);
    for op in Op::ALL {
        e.unsigned(format!("XSEG_OP_{}", op.name()), op as u32);
    }
    e.unsigned("XSEG_OP_COUNT", Op::ALL.len() as u64);
    e.unsigned("XSEG_FLAG_FUA", flags::FUA);
    e.unsigned("XSEG_FLAG_NOSYNC", flags::NOSYNC);
    e.unsigned("XSEG_FLAG_FORCE", flags::FORCE);
    e.unsigned("XSEG_FLAG_ALL", flags::ALL);
    exp
}

/// Calls of the header's inline helpers, with the results Rust gives (the ring packing
/// is private to `xseg::ring`; its formula is the ABI: `(seq << 32) | value`).
fn helper_checks(exp: &mut Expectations) -> Vec<(String, String)> {
    let mut calls = Vec::new();
    let mut check = |exp: &mut Expectations, call: String, kind: Kind, value: String| {
        exp.add(call.replace(' ', ""), kind, value);
        calls.push((call.replace(' ', ""), call));
    };
    for (port, state) in [(0, REQ_HELD), (513, REQ_SUBMITTED), (NR_PORTS_MAX - 1, REQ_REPLIED)] {
        check(
            exp,
            format!("xseg_req_word({port}U, {state}U)"),
            Kind::Unsigned,
            req_word(port, state).to_string(),
        );
    }
    for word in [0, req_word(513, REQ_ACCEPTED), req_word(NR_PORTS_MAX - 1, REQ_SUBMITTED) | REQ_ORPHAN] {
        check(exp, format!("xseg_req_owner({word}U)"), Kind::Unsigned, req_owner(word).to_string());
        check(exp, format!("xseg_req_state({word}U)"), Kind::Unsigned, req_state(word).to_string());
        check(
            exp,
            format!("xseg_req_orphaned({word}U)"),
            Kind::Unsigned,
            u32::from(req_orphaned(word)).to_string(),
        );
    }
    for (seq, value) in [(0u32, 0u32), (7, 42), (u32::MAX, xseg::ring::SKIP)] {
        let slot = (u64::from(seq) << 32) | u64::from(value);
        check(exp, format!("xseg_ring_slot({seq}U, {value}U)"), Kind::Unsigned, slot.to_string());
        check(exp, format!("xseg_ring_slot_seq({slot}ULL)"), Kind::Unsigned, seq.to_string());
        check(exp, format!("xseg_ring_slot_value({slot}ULL)"), Kind::Unsigned, value.to_string());
    }
    for (seq, expected) in [(5u32, 5u64), (4, 5), (6, 5), (2, u64::from(u32::MAX) - 1), (u32::MAX, 1)] {
        let distance = seq.wrapping_sub(expected as u32) as i32;
        check(exp, format!("xseg_ring_distance({seq}U, {expected}ULL)"), Kind::Signed, distance.to_string());
    }
    calls
}

/// The header without comments (string literals kept intact).
fn strip_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("/*") {
            let end = rest[2..].find("*/").expect("unterminated comment in xseg.h") + 4;
            out.push(' ');
            rest = &rest[end..];
        } else if rest.starts_with("//") {
            rest = &rest[rest.find('\n').unwrap_or(rest.len())..];
        } else if c == '"' {
            let end = rest[1..].find('"').expect("unterminated string in xseg.h") + 2;
            out.push_str(&rest[..end]);
            rest = &rest[end..];
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn leading_ident(s: &str) -> &str {
    &s[..s.find(|c| !is_ident_char(c)).unwrap_or(s.len())]
}

/// The structs the header defines (`struct name { ... }`), with their field names in order.
fn header_structs(src: &str) -> Vec<(String, Vec<String>)> {
    let mut structs = Vec::new();
    let mut rest = src;
    while let Some(at) = rest.find("struct ") {
        let after = &rest[at + "struct ".len()..];
        let name = leading_ident(after);
        let tail = after[name.len()..].trim_start();
        rest = after;
        if name.is_empty() || !tail.starts_with('{') {
            continue;
        }
        let body_end = tail.find('}').expect("unterminated struct in xseg.h");
        let body = &tail[1..body_end];
        assert!(!body.contains('{'), "struct {name} in xseg.h nests a struct or union: not supported here");
        let fields = body
            .split(';')
            .map(str::trim)
            .filter(|decl| !decl.is_empty())
            .map(|decl| {
                assert!(
                    !decl.contains([',', '(', ':']),
                    "struct {name} in xseg.h: declare one plain field per line, not `{decl}`"
                );
                let declarator = decl[..decl.find('[').unwrap_or(decl.len())].trim_end();
                let start = declarator.rfind(|c| !is_ident_char(c)).map_or(0, |i| i + 1);
                declarator[start..].to_string()
            })
            .collect();
        structs.push((name.to_string(), fields));
        rest = &tail[body_end..];
    }
    structs
}

/// The object-like `XSEG_*` macros the header defines.
fn header_constants(src: &str) -> Vec<String> {
    let mut names: Vec<String> = src
        .lines()
        .filter_map(|line| {
            let line = line.trim_start().strip_prefix('#')?.trim_start().strip_prefix("define")?;
            let name = leading_ident(line.trim_start());
            let function_like = line.trim_start()[name.len()..].starts_with('(');
            (name.starts_with("XSEG_") && !function_like && !NOT_ABI_DEFINES.contains(&name))
                .then(|| name.to_string())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// A C program that prints one `name value` line per struct, field, constant and helper
/// call the header declares. `before` and `after` go before and after its `#include`.
fn probe_source(
    header: &str,
    exp: &Expectations,
    calls: &[(String, String)],
    before: &str,
    after: &str,
) -> String {
    let src = strip_comments(header);
    let mut body = String::new();
    for (name, fields) in header_structs(&src) {
        body += &Kind::Unsigned.printf(&format!("{name}.sizeof"), &format!("sizeof(struct {name})"));
        body += &Kind::Unsigned.printf(&format!("{name}.alignof"), &format!("_Alignof(struct {name})"));
        for field in fields {
            let line = format!("{name}.{field}");
            body += &Kind::Unsigned
                .printf(&format!("{line}.offset"), &format!("offsetof(struct {name}, {field})"));
            body += &Kind::Unsigned
                .printf(&format!("{line}.size"), &format!("sizeof(((struct {name} *)0)->{field})"));
        }
    }
    for name in header_constants(&src) {
        // A constant Rust does not know is printed anyway, and reported as extra.
        let kind = exp.0.get(&name).map_or(Kind::Unsigned, |e| e.kind);
        body += &kind.printf(&name, &name);
    }
    for (name, call) in calls {
        body += &exp.0[name].kind.printf(name, call);
    }
    let mut program = String::new();
    writeln!(program, "/* Generated by xseg/tests/c_abi.rs. */").unwrap();
    program += before;
    program += "#include <stddef.h>\n#include <stdio.h>\n#include \"xseg.h\"\n";
    program += after;
    program += "int main(void)\n{\n";
    program += &body;
    program += "    return 0;\n}\n";
    program
}

/// A scratch directory for this test run, removed when the test passes.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!("xseg-c-abi-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Compiles and runs the probe; returns its output lines by name.
fn run_probe(dir: &Path, variant: &str, source: &str, extra_flags: &[&str]) -> BTreeMap<String, String> {
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("include");
    let c_file = dir.join(format!("probe-{variant}.c"));
    let exe = dir.join(format!("probe-{variant}"));
    std::fs::write(&c_file, source).unwrap_or_else(|e| panic!("cannot write {}: {e}", c_file.display()));
    let output = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror"])
        .args(extra_flags)
        .arg("-I")
        .arg(&include)
        .arg(&c_file)
        .arg("-o")
        .arg(&exe)
        .output()
        .unwrap_or_else(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                panic!(
                    "the C compiler `cc` was not found, and this test checks include/xseg.h with it: \
                     install gcc (e.g. `apt-get install gcc`)"
                )
            }
            panic!("cannot run `cc`: {e}")
        });
    assert!(
        output.status.success(),
        "xseg.h does not compile ({variant} probe, {}; a field missing in xseg.h shows up here):\n{}",
        c_file.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let run = Command::new(&exe).output().unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    assert!(run.status.success(), "{} failed: {}", exe.display(), run.status);
    let stdout = String::from_utf8(run.stdout).expect("probe output is ASCII");
    let mut lines = BTreeMap::new();
    for line in stdout.lines() {
        let (name, value) = line.split_once(' ').unwrap_or_else(|| panic!("bad probe line {line:?}"));
        let previous = lines.insert(name.to_string(), value.to_string());
        assert!(previous.is_none(), "xseg.h declares {name} twice");
    }
    lines
}

/// Every difference between what C printed and what Rust expects, one per line.
fn mismatches(c: &BTreeMap<String, String>, exp: &Expectations) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, expected) in &exp.0 {
        match c.get(name) {
            None => problems.push(format!("{name}: in Rust ({}) but not in xseg.h", expected.value)),
            Some(value) if *value != expected.value => {
                problems.push(format!("{name}: xseg.h says {value}, Rust says {}", expected.value))
            }
            Some(_) => {}
        }
    }
    for (name, value) in c {
        if !exp.0.contains_key(name) {
            problems.push(format!("{name}: in xseg.h ({value}) but not in the Rust ABI"));
        }
    }
    problems
}

#[test]
fn header_matches_rust_layout() {
    let header_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include").join(HEADER);
    let header = std::fs::read_to_string(&header_path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", header_path.display()));
    let mut exp = rust_expectations();
    let calls = helper_checks(&mut exp);

    let scratch = Scratch::new();
    // User space on Linux: the kernel's __u* types, next to a uapi header and <errno.h>.
    let linux = probe_source(
        &header,
        &exp,
        &calls,
        "#include <errno.h>\n#include <linux/futex.h>\n",
        "#ifndef XSEG_HAVE_LINUX_TYPES\n#error xseg.h did not use <linux/types.h>\n#endif\n",
    );
    // Elsewhere (compiled with __linux__ undefined): the <stdint.h> fallback.
    let stdint = probe_source(
        &header,
        &exp,
        &calls,
        "#include <errno.h>\n",
        "#ifdef XSEG_HAVE_LINUX_TYPES\n#error xseg.h did not use <stdint.h>\n#endif\n",
    );

    let mut problems = Vec::new();
    for (variant, source, flags) in
        [("linux-types", &linux, &[][..]), ("stdint", &stdint, &["-U__linux__"][..])]
    {
        let c = run_probe(&scratch.0, variant, source, flags);
        problems.extend(mismatches(&c, &exp).into_iter().map(|p| format!("[{variant}] {p}")));
    }
    assert!(
        problems.is_empty(),
        "include/xseg.h disagrees with xseg::layout ({} problems):\n{}",
        problems.len(),
        problems.join("\n")
    );
}
