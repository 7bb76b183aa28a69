//! The handlebars helpers a chart author needs to write YAML.
//!
//! Each helper is a plain function from its arguments to a JSON value; the
//! adapter [`Helper`] turns a missing argument into the strict-mode error
//! unless the helper is one that handles absence (`default`, `required`).
//! `charts/service/README.md` documents every helper; keep them in sync.

use base64::Engine as _;
use handlebars::{
    Context, Handlebars, HelperDef, RenderContext, RenderError, RenderErrorReason, ScopedJson,
};
use serde_json::Value;
use sha2::Digest as _;

/// One argument: its value, or `None` when the path named nothing.
struct Arg<'a> {
    value: Option<&'a Value>,
}

impl Arg<'_> {
    fn value(&self) -> &Value {
        self.value.unwrap_or(&Value::Null)
    }
}

type HelperFn = fn(&[Arg<'_>]) -> Result<Value, String>;

struct Helper {
    name: &'static str,
    call: HelperFn,
    /// Helpers that decide themselves what a missing value means.
    accepts_missing: bool,
}

impl HelperDef for Helper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &handlebars::Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let mut args = Vec::with_capacity(h.params().len());
        for p in h.params() {
            if p.is_value_missing() && !self.accepts_missing {
                return Err(RenderErrorReason::MissingVariable(p.relative_path().cloned()).into());
            }
            args.push(Arg {
                value: (!p.is_value_missing()).then(|| p.value()),
            });
        }
        let value = (self.call)(&args).map_err(|m| {
            RenderError::from(RenderErrorReason::Other(format!("{}: {m}", self.name)))
        })?;
        let bytes = value.as_str().map_or(0, str::len) as u64;
        super::budget::spend(1, bytes)?;
        Ok(ScopedJson::Derived(value))
    }
}

/// `include NAME`: the output of partial NAME rendered with the release's
/// whole context, for use with `nindent`.
///
/// handlebars-rust copies the entire context for every `{{> partial}}`
/// call; with a chart's values that copy was a fifth of a full render.
/// `include` renders from the same context by reference instead.
pub struct Include {
    /// Partial name -> file, for error messages.
    pub partials: std::collections::BTreeMap<String, String>,
    /// Partial name -> the block nesting rendering it adds
    /// ([`super::nesting`]), bounded per render by `MAX_RENDER`.
    pub nesting: std::collections::BTreeMap<String, usize>,
}

/// How deep includes may nest before we call it a cycle.
const MAX_INCLUDE_DEPTH: usize = 32;

thread_local! {
    static INCLUDE_DEPTH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// Block nesting of the includes being rendered on this thread.
    static RENDER_NESTING: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    static SHARED: std::cell::RefCell<Option<Shared>> = const { std::cell::RefCell::new(None) };
}

/// Partial outputs of one release render ([`sharing_includes`]).
struct Shared {
    /// The release's context and registry, by address: outputs are only
    /// taken for includes rendered with exactly these.
    root: (usize, usize),
    /// Partial name -> its output and the budget it drew (steps, bytes).
    texts: std::collections::HashMap<String, (String, (u64, u64))>,
}

/// While the returned guard lives (the rendering of every template of one
/// release with `root`), a top-level `include` renders each partial once
/// and reuses its text.
///
/// A chart includes its labels in every document (13 times per release in
/// the built-in chart), and rendering partials was about 8% of `kdeploy
/// render`. The output depends only on the partial, the registry and the
/// context (helpers are pure). The guard borrows `root`, so no other
/// context can take its address meanwhile. A reused text draws what
/// rendering it drew, so a release runs out of budget where it would have.
pub fn sharing_includes<'a>(root: &'a Context, registry: &Handlebars<'_>) -> SharedIncludes<'a> {
    let shared = Shared {
        root: address(root, registry),
        texts: std::collections::HashMap::new(),
    };
    SharedIncludes {
        outer: SHARED.with(|s| s.borrow_mut().replace(shared)),
        _root: std::marker::PhantomData,
    }
}

/// Ends sharing when dropped ([`sharing_includes`]).
#[must_use = "includes are shared only while this lives"]
pub struct SharedIncludes<'a> {
    outer: Option<Shared>,
    _root: std::marker::PhantomData<&'a Context>,
}

impl Drop for SharedIncludes<'_> {
    fn drop(&mut self) {
        let outer = self.outer.take();
        SHARED.with(|s| *s.borrow_mut() = outer);
    }
}

fn address(ctx: &Context, registry: &Handlebars<'_>) -> (usize, usize) {
    (
        std::ptr::from_ref(ctx) as usize,
        std::ptr::from_ref(registry).cast::<u8>() as usize,
    )
}

/// The shared output of partial `name`, when one was recorded for this
/// context and the budget covers what it drew (drawn here).
fn shared_output(name: &str, root: (usize, usize)) -> Option<String> {
    SHARED.with(|s| {
        let s = s.borrow();
        let s = s.as_ref().filter(|s| s.root == root)?;
        let (text, drawn) = s.texts.get(name)?;
        super::budget::charge(drawn.0, drawn.1).then(|| text.clone())
    })
}

fn share_output(name: &str, root: (usize, usize), text: &str, drawn: (u64, u64)) {
    SHARED.with(|s| {
        if let Some(s) = s.borrow_mut().as_mut().filter(|s| s.root == root) {
            s.texts.insert(name.to_string(), (text.to_string(), drawn));
        }
    });
}

impl HelperDef for Include {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &handlebars::Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let fail = |m: String| RenderError::from(RenderErrorReason::Other(format!("include: {m}")));
        let name = match h.params().as_slice() {
            [p] => p.value().as_str().ok_or_else(|| {
                fail(format!(
                    "NAME must be a partial's name in quotes, found {}",
                    p.value()
                ))
            })?,
            _ => return Err(fail("expected 1 argument: include NAME".into())),
        };
        if !self.partials.contains_key(name) {
            let known: Vec<&str> = self.partials.keys().map(String::as_str).collect();
            return Err(fail(format!(
                "no partial `{name}` (partials are templates/_<name>.yaml; this chart has: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
        let depth = INCLUDE_DEPTH.with(|d| d.get());
        if depth >= MAX_INCLUDE_DEPTH {
            return Err(fail(format!(
                "`{name}` nested more than {MAX_INCLUDE_DEPTH} levels deep; does a partial include itself?"
            )));
        }
        let nested = RENDER_NESTING.with(|n| n.get());
        let weight = 1 + self.nesting.get(name).copied().unwrap_or(0);
        if nested + weight > super::nesting::MAX_RENDER {
            return Err(fail(format!(
                "`{name}` would nest blocks more than {} deep through includes",
                super::nesting::MAX_RENDER
            )));
        }
        super::budget::spend(1, 0)?;
        // Only includes written in a template, not in a partial, are
        // shared: each then renders at the same depth as it would have.
        let root = (depth == 0).then(|| address(ctx, r));
        if let Some(text) = root.and_then(|root| shared_output(name, root)) {
            return Ok(ScopedJson::Derived(Value::String(text)));
        }
        let before = super::budget::drawn();
        INCLUDE_DEPTH.with(|d| d.set(depth + 1));
        RENDER_NESTING.with(|n| n.set(nested + weight));
        // Errors inside the partial keep its name and line.
        let text = r.render_with_context(name, ctx);
        INCLUDE_DEPTH.with(|d| d.set(depth));
        RENDER_NESTING.with(|n| n.set(nested));
        let text = text?;
        super::budget::spend(0, text.len() as u64)?;
        if let Some(root) = root {
            let after = super::budget::drawn();
            share_output(name, root, &text, (after.0 - before.0, after.1 - before.1));
        }
        Ok(ScopedJson::Derived(Value::String(text)))
    }
}

/// Registers every kdeploy helper on `hb`.
pub fn register(hb: &mut Handlebars<'_>) {
    let helpers: &[(&'static str, HelperFn, bool)] = &[
        ("toYaml", to_yaml, false),
        ("toJson", to_json, false),
        ("indent", indent, false),
        ("nindent", nindent, false),
        ("default", default, true),
        ("required", required, true),
        ("quote", quote, false),
        ("squote", squote, false),
        ("b64enc", b64enc, false),
        ("b64dec", b64dec, false),
        ("sha256sum", sha256sum, false),
        ("lower", |a| map_str(a, |s| s.to_lowercase()), false),
        ("upper", |a| map_str(a, |s| s.to_uppercase()), false),
        ("trim", |a| map_str(a, |s| s.trim().to_string()), false),
        ("trunc", trunc, false),
        ("replace", replace, false),
        ("join", join, false),
        ("concat", concat, false),
        ("contains", contains, false),
        ("hasKey", has_key, false),
        ("empty", |a| Ok(Value::Bool(is_empty(arg(a, 0)?))), true),
        // Logic helpers replace the built-in ones so that, as in JavaScript
        // handlebars, a missing value is simply false rather than an error.
        (
            "and",
            |a| Ok(Value::Bool(a.iter().all(|x| truthy(x.value())))),
            true,
        ),
        (
            "or",
            |a| Ok(Value::Bool(a.iter().any(|x| truthy(x.value())))),
            true,
        ),
        ("not", |a| Ok(Value::Bool(!truthy(arg(a, 0)?))), true),
        (
            "eq",
            |a| count(a, 2, "eq A B").map(|_| Value::Bool(a[0].value() == a[1].value())),
            true,
        ),
        (
            "ne",
            |a| count(a, 2, "ne A B").map(|_| Value::Bool(a[0].value() != a[1].value())),
            true,
        ),
    ];
    for (name, call, accepts_missing) in helpers {
        hb.register_helper(
            name,
            Box::new(Helper {
                name,
                call: *call,
                accepts_missing: *accepts_missing,
            }),
        );
    }
}

fn arg<'a>(args: &'a [Arg<'_>], i: usize) -> Result<&'a Value, String> {
    args.get(i)
        .map(Arg::value)
        .ok_or_else(|| format!("argument {} is required", i + 1))
}

fn count(args: &[Arg<'_>], n: usize, usage: &str) -> Result<(), String> {
    if args.len() == n {
        Ok(())
    } else {
        Err(format!("expected {n} argument(s): {usage}"))
    }
}

/// The text form of a scalar (strings unquoted), JSON for the rest.
fn as_text(v: &Value) -> std::borrow::Cow<'_, str> {
    match v {
        Value::String(s) => s.into(),
        Value::Null => "".into(),
        other => other.to_string().into(),
    }
}

fn as_usize(v: &Value, what: &str) -> Result<usize, String> {
    v.as_u64()
        .map(|n| n as usize)
        .ok_or_else(|| format!("{what} must be a non-negative number, found {v}"))
}

/// Helm's idea of empty: null, false, 0, "", [] and {}.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// Truthiness as `{{#if}}` sees it: empty values are false.
fn truthy(v: &Value) -> bool {
    !is_empty(v)
}

fn to_yaml(a: &[Arg<'_>]) -> Result<Value, String> {
    count(a, 1, "toYaml VALUE")?;
    let text = crate::yaml::to_canonical(arg(a, 0)?);
    Ok(Value::String(text.trim_end_matches('\n').to_string()))
}

fn to_json(a: &[Arg<'_>]) -> Result<Value, String> {
    count(a, 1, "toJson VALUE")?;
    Ok(Value::String(arg(a, 0)?.to_string()))
}

/// Every non-empty line of `text` indented by `n` spaces, after `prefix`;
/// lines joined by `\n`, without a final newline. One allocation: it runs
/// several times per release.
fn indent_text(prefix: &str, n: usize, text: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + text.len() + n * 8);
    out.push_str(prefix);
    for (i, line) in text.lines().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if !line.is_empty() {
            out.extend(std::iter::repeat_n(' ', n));
            out.push_str(line);
        }
    }
    out
}

/// The widest indentation `indent`/`nindent` make: YAML never needs more,
/// and a larger N times many lines would be a way to allocate without bound.
const MAX_INDENT: usize = 1024;

fn indent_width(a: &[Arg<'_>]) -> Result<usize, String> {
    let n = as_usize(arg(a, 0)?, "N")?;
    if n > MAX_INDENT {
        return Err(format!("N is {n}; at most {MAX_INDENT}"));
    }
    Ok(n)
}

fn indent(a: &[Arg<'_>]) -> Result<Value, String> {
    count(a, 2, "indent N TEXT")?;
    let n = indent_width(a)?;
    Ok(Value::String(indent_text("", n, &as_text(arg(a, 1)?))))
}

fn nindent(a: &[Arg<'_>]) -> Result<Value, String> {
    count(a, 2, "nindent N TEXT")?;
    let n = indent_width(a)?;
    Ok(Value::String(indent_text("\n", n, &as_text(arg(a, 1)?))))
}

fn default(a: &[Arg<'_>]) -> Result<Value, String> {
    count(a, 2, "default VALUE FALLBACK")?;
    let v = arg(a, 0)?;
    Ok(if is_empty(v) {
        arg(a, 1)?.clone()
    } else {
        v.clone()
    })
}

fn required(a: &[Arg<'_>]) -> Result<Value, String> {
    count(a, 2, "required VALUE \"message\"")?;
    let v = arg(a, 0)?;
    if v.is_null() || v == &Value::String(String::new()) {
        Err(as_text(arg(a, 1)?).into_owned())
    } else {
        Ok(v.clone())
    }
}

fn quote(a: &[Arg<'_>]) -> Result<Value, String> {
    count(a, 1, "quote VALUE")?;
    // A JSON string literal is a valid double-quoted YAML scalar.
    Ok(Value::String(
        Value::String(as_text(arg(a, 0)?).into_owned()).to_string(),
    ))
}

fn squote(a: &[Arg<'_>]) -> Result<Value, String> {
    count(a, 1, "squote VALUE")?;
    Ok(Value::String(format!(
        "'{}'",
        as_text(arg(a, 0)?).replace('\'', "''")
    )))
}

fn b64enc(a: &[Arg<'_>]) -> Result<Value, String> {
    count(a, 1, "b64enc TEXT")?;
    Ok(Value::String(
        base64::engine::general_purpose::STANDARD.encode(as_text(arg(a, 0)?).as_bytes()),
    ))
}

fn b64dec(a: &[Arg<'_>]) -> Result<Value, String> {
    count(a, 1, "b64dec TEXT")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(as_text(arg(a, 0)?).as_bytes())
        .map_err(|e| format!("not base64: {e}"))?;
    String::from_utf8(bytes)
        .map(Value::String)
        .map_err(|_| "decoded bytes are not UTF-8 text".into())
}

fn sha256sum(a: &[Arg<'_>]) -> Result<Value, String> {
    count(a, 1, "sha256sum VALUE")?;
    // Maps and lists hash their canonical JSON, so key order never matters.
    let digest = sha2::Sha256::digest(as_text(arg(a, 0)?).as_bytes());
    // Into one string: a `format!` per byte allocated 32 strings per call.
    let mut hex = String::with_capacity(64);
    for b in digest {
        use std::fmt::Write as _;
        let _ = write!(hex, "{b:02x}"); // writing to a String cannot fail
    }
    Ok(Value::String(hex))
}

fn map_str(a: &[Arg<'_>], f: fn(&str) -> String) -> Result<Value, String> {
    count(a, 1, "HELPER TEXT")?;
    Ok(Value::String(f(&as_text(arg(a, 0)?))))
}

fn trunc(a: &[Arg<'_>]) -> Result<Value, String> {
    count(a, 2, "trunc N TEXT")?;
    let n = as_usize(arg(a, 0)?, "N")?;
    Ok(Value::String(as_text(arg(a, 1)?).chars().take(n).collect()))
}

fn replace(a: &[Arg<'_>]) -> Result<Value, String> {
    count(a, 3, "replace OLD NEW TEXT")?;
    let (old, new, text) = (
        as_text(arg(a, 0)?),
        as_text(arg(a, 1)?),
        as_text(arg(a, 2)?),
    );
    // Bound the result before building it: a short OLD and a long NEW
    // multiply the text.
    if !old.is_empty() && new.len() > old.len() {
        let grows = text.matches(old.as_ref()).count() as u64 * (new.len() - old.len()) as u64;
        super::budget::spend(0, grows).map_err(|e| e.to_string())?;
    }
    Ok(Value::String(text.replace(old.as_ref(), &new)))
}

fn join(a: &[Arg<'_>]) -> Result<Value, String> {
    count(a, 2, "join SEPARATOR LIST")?;
    let sep = as_text(arg(a, 0)?);
    match arg(a, 1)? {
        Value::Array(items) => Ok(Value::String(
            items.iter().map(as_text).collect::<Vec<_>>().join(&sep),
        )),
        other => Err(format!("LIST must be a list, found {other}")),
    }
}

fn concat(a: &[Arg<'_>]) -> Result<Value, String> {
    Ok(Value::String(
        a.iter().map(|x| as_text(x.value())).collect(),
    ))
}

fn contains(a: &[Arg<'_>]) -> Result<Value, String> {
    count(a, 2, "contains NEEDLE HAYSTACK")?;
    let needle = arg(a, 0)?;
    Ok(Value::Bool(match arg(a, 1)? {
        Value::Array(items) => items.contains(needle),
        Value::String(s) => s.contains(as_text(needle).as_ref()),
        Value::Object(m) => m.contains_key(as_text(needle).as_ref()),
        _ => false,
    }))
}

fn has_key(a: &[Arg<'_>]) -> Result<Value, String> {
    count(a, 2, "hasKey MAP KEY")?;
    Ok(Value::Bool(arg(a, 0)?.as_object().is_some_and(|m| {
        m.contains_key(as_text(arg(a, 1).unwrap_or(&Value::Null)).as_ref())
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(tpl: &str, data: Value) -> Result<String, String> {
        let mut hb = Handlebars::new();
        hb.set_strict_mode(true);
        hb.register_escape_fn(handlebars::no_escape);
        register(&mut hb);
        hb.render_template(tpl, &data).map_err(|e| e.to_string())
    }

    #[test]
    fn indent_skips_empty_lines_and_drops_the_final_newline() {
        let data = json!({"t": "a\n\n  b\n", "n": 7});
        assert_eq!(
            render("{{indent 2 t}}|", data.clone()).unwrap(),
            "  a\n\n    b|"
        );
        assert_eq!(
            render("x:{{nindent 2 t}}|", data.clone()).unwrap(),
            "x:\n  a\n\n    b|"
        );
        assert_eq!(render("{{indent 1 n}}", data).unwrap(), " 7");
    }

    #[test]
    fn to_yaml_with_nindent() {
        let out = render(
            "r:{{nindent 2 (toYaml v)}}",
            json!({"v": {"b": 1, "a": ["x"]}}),
        )
        .unwrap();
        assert_eq!(out, "r:\n  a:\n  - x\n  b: 1");
    }

    #[test]
    fn default_covers_missing_and_empty_values() {
        assert_eq!(
            render("{{default v.missing 8080}}", json!({"v": {}})).unwrap(),
            "8080"
        );
        assert_eq!(
            render("{{default v \"x\"}}", json!({"v": ""})).unwrap(),
            "x"
        );
        assert_eq!(render("{{default v 1}}", json!({"v": 3})).unwrap(), "3");
    }

    #[test]
    fn missing_value_is_an_error_in_other_helpers_and_plain_output() {
        assert!(render("{{upper v.nope}}", json!({"v": {}})).is_err());
        assert!(render("{{v.nope}}", json!({"v": {}})).is_err());
    }

    #[test]
    fn required_fails_with_the_message() {
        let err = render(
            "{{required v.image \"image is required\"}}",
            json!({"v": {}}),
        )
        .unwrap_err();
        assert!(err.contains("image is required"), "{err}");
    }

    #[test]
    fn quoting_and_no_html_escaping() {
        assert_eq!(
            render("{{quote v}}", json!({"v": "a\"b<c>"})).unwrap(),
            r#""a\"b<c>""#
        );
        assert_eq!(
            render("{{squote v}}", json!({"v": "it's"})).unwrap(),
            "'it''s'"
        );
        assert_eq!(
            render("{{quote v}}", json!({"v": 8080})).unwrap(),
            "\"8080\""
        );
        assert_eq!(render("{{v}}", json!({"v": "a&b"})).unwrap(), "a&b");
    }

    #[test]
    fn logic_helpers_treat_missing_as_false() {
        let d = json!({"v": {"a": true}});
        assert_eq!(
            render("{{#if (or v.nope v.a)}}y{{/if}}", d.clone()).unwrap(),
            "y"
        );
        assert_eq!(
            render("{{#if (and v.nope v.a)}}y{{else}}n{{/if}}", d.clone()).unwrap(),
            "n"
        );
        assert_eq!(
            render("{{#if (not v.nope)}}y{{/if}}", d.clone()).unwrap(),
            "y"
        );
        assert_eq!(render("{{#if (eq v.a true)}}y{{/if}}", d).unwrap(), "y");
    }

    #[test]
    fn string_helpers() {
        let d = json!({"s": "Hello World", "l": ["a", "b"]});
        assert_eq!(render("{{lower s}}", d.clone()).unwrap(), "hello world");
        assert_eq!(render("{{trunc 5 s}}", d.clone()).unwrap(), "Hello");
        assert_eq!(
            render("{{replace \" \" \"-\" s}}", d.clone()).unwrap(),
            "Hello-World"
        );
        assert_eq!(render("{{join \",\" l}}", d.clone()).unwrap(), "a,b");
        assert_eq!(render("{{b64enc \"hi\"}}", d.clone()).unwrap(), "aGk=");
        assert_eq!(render("{{b64dec \"aGk=\"}}", d.clone()).unwrap(), "hi");
        assert_eq!(
            render("{{concat s \"!\"}}", d.clone()).unwrap(),
            "Hello World!"
        );
        assert_eq!(
            render("{{#if (contains \"a\" l)}}y{{/if}}", d).unwrap(),
            "y"
        );
    }

    #[test]
    fn sha256_of_maps_ignores_key_order() {
        let a = render("{{sha256sum v}}", json!({"v": {"a": 1, "b": 2}})).unwrap();
        let b = render("{{sha256sum v}}", json!({"v": {"b": 2, "a": 1}})).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
    }
}
