//! Property tests of the two entry points a pull request feeds directly:
//! the YAML reader and the template engine. Generated input must never make
//! them panic, hang or print a planted secret; what the reader accepts must
//! survive a round trip through the canonical form. And the canonical
//! writer must write what serde_norway's emitter writes, byte for byte.
//!
//! Lean by default (proptest's 256 cases); run longer by hand with
//! `PROPTEST_CASES=20000 cargo test --release --test tests properties`.

use proptest::prelude::*;
use serde_json::Value;

use kdeploy::config::Limits;
use kdeploy::render::{Chart, budget};
use kdeploy::yaml;

/// Text made of the pieces YAML is sensitive to, so the generator reaches
/// the parser's corners (flow and block nesting, quotes, anchors, tags,
/// comments, tabs, documents) far more often than random bytes would.
fn yamlish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("\n".to_string()),
        Just("  ".to_string()),
        Just("\t".to_string()),
        Just("- ".to_string()),
        Just(": ".to_string()),
        Just("? ".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just(", ".to_string()),
        Just("'".to_string()),
        Just("\"".to_string()),
        Just("#".to_string()),
        Just("&a ".to_string()),
        Just("*a".to_string()),
        Just("!!str ".to_string()),
        // A tag right before a comma made libyaml-safer panic.
        Just("!".to_string()),
        Just(",".to_string()),
        Just("---\n".to_string()),
        Just("|\n".to_string()),
        Just(">-\n".to_string()),
        Just("key".to_string()),
        Just("0x1F".to_string()),
        Just("-1.5e3".to_string()),
        Just("~".to_string()),
        Just("true".to_string()),
        "[a-z0-9]{1,6}",
        "\\PC{1,3}",
    ];
    prop::collection::vec(piece, 0..60).prop_map(|v| v.concat())
}

/// Strings at the edges of how YAML reads and libyaml writes a scalar.
fn scalar_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            "a",
            "a b",
            "a:b",
            "a: b",
            "a:",
            "a #b",
            "a#b",
            "true",
            "True",
            "FALSE",
            "null",
            "NULL",
            "~",
            "y",
            "no",
            "on",
            "0",
            "0123",
            "8080",
            "-1",
            "+1",
            "1.5",
            "1e3",
            "0x1F",
            ".inf",
            "inf",
            "nan",
            "1.2.3",
            "1.2.0",
            "128Mi",
            "100m",
            "0.5",
            "07",
            "1.",
            "1x",
            "1E5",
            "3e45",
            "3e4f",
            "0o17",
            "0O17",
            "0b101",
            "0X1f",
            "1_000",
            "2024-01-01",
            "12:30",
            "1.2.0-rc1",
            "deadbeef",
            "5ab9c",
            "/",
            "/healthz",
            "/a b",
            "/a: b",
            "/#a",
            "//",
            "a-",
            "-a",
            "- a",
            "http://x/y?z=1",
            "sha256:abc",
            "a=b+c@d",
            "$(VAR)",
            "(x)",
            " a",
            "a ",
            "a  b",
            "a\tb",
            "é",
            "a'b",
            "a\"b",
            "a\nb",
            "a\n",
            "\na",
            "a\\b",
            "a,b",
            "a[0]",
            "{a}",
            "*a",
            "&a",
            "!a",
            "|",
            ">",
            "%a",
            "@a",
            "`a",
            "a;b",
            "a~b",
            "---",
            "...",
        ])
        .prop_map(str::to_string),
        "[a-z][a-z0-9 .:/_-]{0,120}",
        "[0-9][0-9a-fA-FxXoOeE.+_:-]{0,12}",
        "/[a-z0-9/ ._:#-]{0,20}",
        "[a-zA-Z0-9 :#'\"-]{0,20}",
        "\\PC{0,8}",
    ]
}

/// JSON values shaped like manifests: objects of objects, lists, scalars.
fn manifest_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        scalar_text().prop_map(Value::String),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![scalar_text(), "[a-z]{1,3}".prop_map(|s| s.repeat(50))],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn the_canonical_writer_writes_what_the_emitter_writes(
        docs in prop::collection::vec(
            prop::collection::btree_map("[a-zA-Z][a-zA-Z0-9./-]{0,20}", manifest_value(), 1..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            1..4,
        )
    ) {
        let mut direct = Vec::new();
        yaml::to_canonical_documents(&docs, &mut direct);
        let emitted: Vec<String> = docs.iter().map(yaml::emitted_canonical).collect();
        prop_assert_eq!(String::from_utf8_lossy(&direct), emitted.join("---\n"));
        let one_by_one: Vec<String> = docs.iter().map(yaml::to_canonical).collect();
        prop_assert_eq!(one_by_one, emitted);
    }

    #[test]
    fn the_yaml_reader_never_panics_and_round_trips(text in yamlish()) {
        let _ = yaml::check_depth(&text);
        let _ = yaml::index(&text);
        if let Ok(value) = yaml::parse(&text) {
            let again = yaml::parse(&yaml::to_canonical(&value));
            prop_assert_eq!(again.as_ref().ok(), Some(&value), "canonical form of {:?}", text);
        }
    }

    #[test]
    fn nesting_beyond_the_limit_is_refused_in_linear_time(depth in 101usize..5000, flow in any::<bool>()) {
        let text = if flow {
            format!("a: {}{}", "[".repeat(depth), "]".repeat(depth))
        } else {
            format!("a: {}1{}", "{b: ".repeat(depth), "}".repeat(depth))
        };
        let started = std::time::Instant::now();
        prop_assert!(yaml::parse(&text).is_err());
        prop_assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
}

/// A value written as block YAML the way templates write it, with the
/// freedoms YAML allows: indentation width, sequences indented or not under
/// their key, scalars plain (as they are, valid or not), single- or
/// double-quoted, comments, blank lines and trailing spaces.
fn block_text(v: &Value, choices: &[u8]) -> String {
    let mut out = String::new();
    let mut pick = choices.iter().cycle().copied();
    write_block(v, 0, &mut pick, &mut out);
    out
}

fn write_scalar(v: &Value, pick: &mut impl Iterator<Item = u8>) -> String {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Array(_) => return "[]".into(),
        Value::Object(_) => return "{}".into(),
        other => other.to_string(),
    };
    let mut out = match pick.next().unwrap_or(0) % 6 {
        0 => format!("'{}'", text.replace('\'', "''")),
        1 => serde_json::to_string(&text).unwrap_or_default(),
        2 => format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\"")),
        _ => text,
    };
    match pick.next().unwrap_or(0) % 8 {
        0 => out.push_str(" # note"),
        1 => out.push_str("  "),
        _ => {}
    }
    out
}

fn write_block(v: &Value, indent: usize, pick: &mut impl Iterator<Item = u8>, out: &mut String) {
    let step = 1 + usize::from(pick.next().unwrap_or(1) % 4);
    match v {
        Value::Object(map) if !map.is_empty() => {
            for (k, item) in map {
                if pick.next().unwrap_or(0).is_multiple_of(9) {
                    out.push_str(&" ".repeat(indent + 1));
                    out.push_str("# comment\n\n");
                }
                out.push_str(&" ".repeat(indent));
                let key = if pick.next().unwrap_or(0).is_multiple_of(7) {
                    format!("'{}'", k.replace('\'', "''"))
                } else {
                    k.clone()
                };
                match item {
                    // A list of scalars, sometimes in flow style (`[ALL]`,
                    // `toJson`'s `["a","b"]`).
                    Value::Array(list)
                        if !list.is_empty()
                            && list.iter().all(|i| !i.is_array() && !i.is_object())
                            && pick.next().unwrap_or(0).is_multiple_of(3) =>
                    {
                        let items: Vec<String> = list
                            .iter()
                            .map(|i| {
                                write_scalar(i, pick)
                                    .trim_end_matches(" # note")
                                    .trim_end()
                                    .to_string()
                            })
                            .collect();
                        let sep = if pick.next().unwrap_or(0).is_multiple_of(2) {
                            ","
                        } else {
                            ", "
                        };
                        out.push_str(&format!("{key}: [{}]\n", items.join(sep)));
                    }
                    Value::Array(list) if !list.is_empty() => {
                        out.push_str(&format!("{key}:\n"));
                        let same = pick.next().unwrap_or(0).is_multiple_of(3);
                        write_block(item, if same { indent } else { indent + step }, pick, out);
                    }
                    Value::Object(m) if !m.is_empty() => {
                        out.push_str(&format!("{key}:\n"));
                        write_block(item, indent + step, pick, out);
                    }
                    _ => out.push_str(&format!("{key}: {}\n", write_scalar(item, pick))),
                }
            }
        }
        Value::Array(list) if !list.is_empty() => {
            for item in list {
                out.push_str(&" ".repeat(indent));
                match item {
                    Value::Object(m) if !m.is_empty() => {
                        // `- key: value`: the rest of the mapping at the key's column.
                        out.push_str("- ");
                        let mut inner = String::new();
                        write_block(item, indent + 2, pick, &mut inner);
                        out.push_str(inner.trim_start_matches(' '));
                    }
                    Value::Array(l) if !l.is_empty() => {
                        out.push_str("-\n");
                        write_block(item, indent + step, pick, out);
                    }
                    _ => out.push_str(&format!("- {}\n", write_scalar(item, pick))),
                }
            }
        }
        _ => out.push_str(&format!(
            "{}{}\n",
            " ".repeat(indent),
            write_scalar(v, pick)
        )),
    }
}

proptest! {
    /// Whichever path reads a text (line by line, parser events, serde),
    /// what it accepts is serde_norway's value for that text.
    #[test]
    fn the_yaml_reader_reads_what_serde_norway_reads(
        value in prop::collection::btree_map("[a-zA-Z][a-zA-Z0-9./-]{0,12}", manifest_value(), 1..6),
        choices in prop::collection::vec(any::<u8>(), 1..64),
        noise in yamlish(),
    ) {
        let value = Value::Object(value.into_iter().collect());
        for text in [block_text(&value, &choices), noise] {
            // Blank text is null by our rule, before any parser sees it.
            if yaml::is_blank(&text) {
                continue;
            }
            if let Ok(ours) = yaml::parse(&text) {
                let theirs: Result<Value, _> = serde_norway::from_str(&text);
                prop_assert_eq!(Some(&ours), theirs.as_ref().ok(), "{:?}", text);
            }
        }
    }
}

/// Documents split as the line walk `split_documents` used to be: every
/// line checked in turn. The reference for its vectorized search.
fn split_by_walking_lines(text: &str) -> Vec<yaml::Document<'_>> {
    let mut docs = Vec::new();
    let (mut start, mut start_line, mut offset) = (0usize, 1usize, 0usize);
    for (line_no, line) in (1usize..).zip(text.split_inclusive('\n')) {
        let content = line.trim_end_matches(['\n', '\r']);
        if content == "---"
            || content.starts_with("--- ")
            || content.starts_with("---\t")
            || content == "..."
        {
            docs.push(yaml::Document {
                text: &text[start..offset],
                first_line: start_line,
                index: docs.len(),
            });
            let rest = content.get(3..).unwrap_or("").trim();
            if content.starts_with("--- ") && !rest.is_empty() && !rest.starts_with('#') {
                (start, start_line) = (offset + 4, line_no);
            } else {
                (start, start_line) = (offset + line.len(), line_no + 1);
            }
        }
        offset += line.len();
    }
    docs.push(yaml::Document {
        text: &text[start..],
        first_line: start_line,
        index: docs.len(),
    });
    docs
}

/// Streams with separators and things that look like them.
fn stream() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("---".to_string()),
        Just("--- ".to_string()),
        Just("---\t".to_string()),
        Just("...".to_string()),
        Just("-".to_string()),
        Just(".".to_string()),
        Just("#".to_string()),
        Just(" ".to_string()),
        Just("\n".to_string()),
        Just("\r\n".to_string()),
        Just("\r".to_string()),
        Just("a: 1".to_string()),
        Just("é".to_string()),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #[test]
    fn documents_split_where_a_walk_over_every_line_splits_them(text in stream()) {
        prop_assert_eq!(yaml::split_documents(&text), split_by_walking_lines(&text));
    }
}

/// Template text that compiles: whole constructs, includes among them.
fn balanced_template() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("{{include \"p\"}}".to_string()),
        Just("{{nindent 2 (include \"p\")}}".to_string()),
        Just("{{#if values.flag}}{{include \"p\"}}{{/if}}".to_string()),
        Just("{{#each values.items}}{{include \"p\"}}{{/each}}".to_string()),
        Just("{{#each values.items}}- {{this}}\n{{/each}}".to_string()),
        Just("{{> p}}".to_string()),
        Just("{{values.long}}".to_string()),
        Just("{{replace \"a\" values.long values.long}}".to_string()),
        Just("{{values.missing}}".to_string()),
        Just("\n".to_string()),
        "[a-z: ]{1,8}",
    ];
    prop::collection::vec(piece, 0..12).prop_map(|v| v.concat())
}

/// Template text made of handlebars constructs, including the costly ones.
fn template() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("{{#each values.items}}".to_string()),
        Just("{{/each}}".to_string()),
        Just("{{#each ../values.items}}".to_string()),
        Just("{{#if values.flag}}".to_string()),
        Just("{{else}}".to_string()),
        Just("{{/if}}".to_string()),
        Just("{{this}}".to_string()),
        Just("{{@index}}".to_string()),
        Just("{{values.secret}}".to_string()),
        Just("{{include \"p\"}}".to_string()),
        Just("{{> p}}".to_string()),
        Just("{{nindent 4 (toYaml values)}}".to_string()),
        Just("{{replace \"a\" values.long values.long}}".to_string()),
        Just("{{default \"x\" values.missing}}".to_string()),
        Just("{{quote values.secret}}".to_string()),
        Just("{{".to_string()),
        Just("}}".to_string()),
        Just("\n".to_string()),
        Just("a: ".to_string()),
        "[a-z ]{1,8}",
    ];
    prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

const CANARY: &str = "CANARY-prop-5e1d";

/// Chart `c` with template `main`, partial `p` and `values.yaml`, and the
/// context a release renders it with; `None` when it does not compile.
fn chart_of(main: String, partial: String, values: String) -> Option<(Chart, handlebars::Context)> {
    let files = vec![
        (
            "c/Chart.yaml".to_string(),
            "name: c\nversion: 1\n".to_string(),
        ),
        ("c/values.yaml".to_string(), values),
        ("c/templates/_p.yaml".to_string(), partial),
        ("c/templates/main.yaml".to_string(), main),
    ];
    let chart = Chart::from_files("c", "c", None, files).ok()?;
    let ctx = handlebars::Context::from(Value::Object(
        [("values".to_string(), Value::Object(chart.defaults.clone()))]
            .into_iter()
            .collect(),
    ));
    Some((chart, ctx))
}

proptest! {
    // Fewer cases than the reader: each renders a chart. PROPTEST_CASES
    // raises it as for the others.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128)
    ))]

    #[test]
    fn the_template_engine_never_panics_and_stays_in_budget(main in template(), partial in template()) {
        let values = format!(
            "items: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\nflag: true\nsecret: {CANARY}\nlong: {}\n",
            "a".repeat(2000)
        );
        let Some((chart, ctx)) = chart_of(main, partial, values) else {
            return Ok(()); // a syntax error, reported as such
        };
        let limits = Limits { template_steps: 20_000, release_bytes: 1 << 20, ..Limits::default() };
        let started = std::time::Instant::now();
        let (result, _) = budget::with_budget(&limits, || chart.render_template("c/templates/main.yaml", &ctx));
        prop_assert!(started.elapsed() < std::time::Duration::from_secs(2));
        match result {
            Ok(text) => prop_assert!(text.len() as u64 <= limits.release_bytes),
            Err(d) => prop_assert!(!d.to_string().contains(CANARY), "error quotes a value: {}", d),
        }
    }

    #[test]
    fn shared_includes_render_and_run_out_of_budget_as_unshared_ones_do(
        main in balanced_template(),
        partial in balanced_template(),
        steps in 0u64..400,
        bytes in 0u64..40_000,
    ) {
        let values = "items: [1, 2, 3]\nflag: true\nsecret: s\nlong: aaaa\n".to_string();
        let Some((chart, ctx)) = chart_of(main, partial, values) else {
            return Ok(());
        };
        let limits = Limits { template_steps: steps, release_bytes: bytes, ..Limits::default() };
        // A release renders several templates: here the same one three times.
        let release = || {
            (0..3)
                .map(|_| chart.render_template("c/templates/main.yaml", &ctx).map_err(|d| d.to_string()))
                .collect::<Vec<_>>()
        };
        let unshared = budget::with_budget(&limits, release);
        let shared = budget::with_budget(&limits, || {
            let _shared = chart.sharing_includes(&ctx);
            release()
        });
        prop_assert_eq!(shared, unshared);
    }
}
