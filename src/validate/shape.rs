//! Verdicts of the typed check, remembered by an object's shape.
//!
//! A chart renders the same kinds with the same fields for every release;
//! the values differ (names, images, replica counts), and the typed check
//! reads almost none of them. Deserializing into a k8s-openapi type
//! allocates every field, and it was most of validation's time, so an
//! object whose shape was already found clean skips it.
//!
//! The shape keeps what the deserializers read (k8s-openapi 0.29, serde's
//! primitives, jiff's timestamps):
//! - every key, and each value's JSON type (null included: a null field is
//!   not unknown);
//! - for an integer, which integer types can hold it (serde's integer
//!   visitors check only the range; a float fits no integer type and any
//!   float type);
//! - for a string, whether each deserializer that reads a string's text
//!   takes it: `Time` and `MicroTime` (a jiff timestamp) and `ByteString`
//!   (standard base64), asked of those deserializers themselves; and the
//!   whole text of `apiVersion` and `kind`, which each type compares with
//!   its own. Every other string type (`String`, `Quantity`,
//!   `IntOrString`) takes any text.
//!
//! So two objects of one shape get the same verdict from the typed check,
//! and only clean verdicts are kept: a problem is always found and worded
//! by the check itself. `tests` checks this against the real deserializers.

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::{LazyLock, RwLock};

use serde_json::Value;

/// Shapes kept at most, and their bytes: a repository of many distinct
/// objects stops adding, and checks the rest in full.
const MAX_SHAPES: usize = 16_384;
const MAX_BYTES: usize = 32 << 20;

#[derive(Default)]
struct Memo {
    /// A shape is a kilobyte or so: SipHash over it was a third of the
    /// lookup. foldhash is seeded per process, and the set is bounded.
    clean: HashSet<Box<[u8]>, foldhash::fast::RandomState>,
    bytes: usize,
}

static MEMO: LazyLock<RwLock<Memo>> = LazyLock::new(RwLock::default);

thread_local! {
    /// The shape being written, reused: one buffer per thread.
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// `check(object)`, or nothing when an object of the same shape and the
/// same `apiVersion` and `kind` (which choose the check) was clean.
pub(super) fn checked(
    api_version: &str,
    kind: &str,
    object: &Value,
    check: impl FnOnce(&Value) -> Vec<String>,
) -> Vec<String> {
    BUFFER.with_borrow_mut(|shape| {
        shape.clear();
        text(api_version, shape);
        text(kind, shape);
        write(object, false, shape);
        let known = MEMO
            .read()
            .is_ok_and(|memo| memo.clean.contains(shape.as_slice()));
        if known {
            return Vec::new();
        }
        let found = check(object);
        if found.is_empty()
            && let Ok(mut memo) = MEMO.write()
            && memo.clean.len() < MAX_SHAPES
            && memo.bytes + shape.len() <= MAX_BYTES
            && memo.clean.insert(shape.as_slice().into())
        {
            memo.bytes += shape.len();
        }
        found
    })
}

/// Forgets every shape, as a new process starts.
pub(super) fn forget() {
    if let Ok(mut memo) = MEMO.write() {
        *memo = Memo::default();
    }
}

/// Appends the shape of `value` to `out`; `exact` keeps a string's text.
/// Each value begins with its own marker and a key with `k`, so the bytes
/// read back one way only: two shapes are equal only when the objects'
/// structures are.
fn write(value: &Value, exact: bool, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.push(b'n'),
        Value::Bool(_) => out.push(b'b'),
        Value::Number(n) => {
            out.push(b'#');
            out.push(number_class(n));
        }
        Value::String(s) if exact => {
            out.push(b'S');
            text(s, out);
        }
        Value::String(s) => out.push(b'p' | string_class(value, s)),
        Value::Array(items) => {
            out.push(b'[');
            for item in items {
                write(item, false, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (key, item) in map {
                out.push(b'k');
                text(key, out);
                write(item, key == "apiVersion" || key == "kind", out);
            }
            out.push(b'}');
        }
    }
}

/// A length-prefixed string, so that no two sequences of strings and
/// markers write the same bytes.
fn text(s: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Which of the string types that read the text take `value` (the string
/// `s`): bit 0 a timestamp, bit 1 base64 (`p` to `s` in the shape). Only
/// text that could be either is parsed: a timestamp begins with a year (a
/// digit or a sign, which may be U+2212), and base64 has only its alphabet
/// in a length that is a multiple of 4.
fn string_class(value: &Value, s: &str) -> u8 {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde::Deserialize;
    let b = s.as_bytes();
    let maybe_time = b
        .first()
        .is_some_and(|c| c.is_ascii_digit() || matches!(c, b'+' | b'-') || !c.is_ascii());
    let maybe_base64 = b.len().is_multiple_of(4)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'='));
    let time = maybe_time && Time::deserialize(value).is_ok();
    let base64 = maybe_base64 && k8s_openapi::ByteString::deserialize(value).is_ok();
    u8::from(time) | (u8::from(base64) << 1)
}

/// Which of serde's integer types hold `n` (their visitors check only the
/// range): the number of type bounds it passes; floats apart.
fn number_class(n: &serde_json::Number) -> u8 {
    if let Some(u) = n.as_u64() {
        let bounds: [u64; 7] = [
            i8::MAX as u64,
            u8::MAX as u64,
            i16::MAX as u64,
            u16::MAX as u64,
            i32::MAX as u64,
            u32::MAX as u64,
            i64::MAX as u64,
        ];
        bounds.iter().filter(|&&b| u > b).count() as u8
    } else if let Some(i) = n.as_i64() {
        let bounds: [i64; 3] = [i8::MIN as i64, i16::MIN as i64, i32::MIN as i64];
        0x10 + bounds.iter().filter(|&&b| i < b).count() as u8
    } else {
        0x20
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// The shape of `value`, as the memo keys it.
    fn shape(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        write(value, false, &mut out);
        out
    }

    /// Texts the typed check reads differently: timestamps valid and not,
    /// base64 canonical and not, plain words of base64's alphabet, names,
    /// signs.
    const TEXTS: &[&str] = &[
        "2024-01-01T00:00:00Z",
        "2024-13-01T00:00:00Z",
        "+002024-01-01T00:00:00Z",
        "-1",
        "aGVsbG8=",
        "aGVsbG9=",
        "aGk=",
        "http",
        "Always",
        "",
        "app-0007",
        "web.example.com",
        "TCP",
        "500m",
        "registry.example/app:1.2.3",
        "apps/v1",
        "Deployment",
        "\u{2212}002024-01-01T00:00:00Z",
    ];

    /// Every leaf: the texts, integers at each type bound, floats,
    /// booleans and null.
    fn leaves() -> Vec<Value> {
        let numbers = [
            0i64,
            1,
            127,
            128,
            255,
            256,
            32767,
            32768,
            65535,
            65536,
            2147483647,
            2147483648,
            4294967296,
            -1,
            -129,
            -32769,
            -2147483649,
        ];
        TEXTS
            .iter()
            .map(|s| json!(s))
            .chain(numbers.iter().map(|n| json!(n)))
            .chain([
                json!(u64::MAX),
                json!(1.5),
                json!(-0.5),
                json!(true),
                json!(false),
                Value::Null,
            ])
            .collect()
    }

    /// An object of a checked kind with `l` at each place whose
    /// deserializer reads values: timestamps, base64, integers of each
    /// width, int-or-string, quantities, an unknown field.
    fn object(which: usize, l: &[Value]) -> (&'static str, &'static str, Value) {
        let (api_version, kind, mut object) = match which {
            0 => ("v1", "Secret", json!({"data": {"k": l[0]}, "type": l[1]})),
            1 => (
                "v1",
                "ConfigMap",
                json!({"binaryData": {"k": l[0]}, "data": {"a": l[1]}}),
            ),
            2 => (
                "apps/v1",
                "Deployment",
                json!({"spec": {"replicas": l[0], "progressDeadlineSeconds": l[1],
                    "selector": {}, "template": {"spec": {"containers": [{"name": l[2],
                    "ports": [{"containerPort": l[3]}],
                    "resources": {"limits": {"cpu": l[4]}}}]}}}}),
            ),
            3 => (
                "batch/v1",
                "CronJob",
                json!({"spec": {"schedule": l[0], "startingDeadlineSeconds": l[1],
                    "jobTemplate": {"spec": {"activeDeadlineSeconds": l[2], "template": {}}}},
                    "status": {"lastScheduleTime": l[3]}}),
            ),
            _ => (
                "policy/v1",
                "PodDisruptionBudget",
                json!({"spec": {"minAvailable": l[0], "maxUnavailable": l[1]}, "colour": l[2]}),
            ),
        };
        object["apiVersion"] = json!(api_version);
        object["kind"] = json!(kind);
        object["metadata"] = json!({"name": "x", "creationTimestamp": l[7]});
        (api_version, kind, object)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

        /// Two objects of one shape get the same verdict from the typed
        /// check. Both are a clean object with one place changed, to two
        /// leaves of one shape: timestamps that do not parse, base64 that
        /// does not decode, integers of one width class, any plain text.
        #[test]
        fn one_shape_one_verdict(which in 0..5usize, at in 0..8usize, x in any::<usize>(), y in any::<usize>()) {
            let pool = leaves();
            let first = &pool[x % pool.len()];
            let alike: Vec<&Value> = pool.iter().filter(|v| shape(v) == shape(first)).collect();
            let second = alike[y % alike.len()];
            // Clean as they are: the strings that the types require.
            let mut base = vec![Value::Null; 8];
            match which {
                1 => base[1] = json!("v"),
                2 => {
                    base[2] = json!("app");
                    base[4] = json!("1");
                }
                3 => base[0] = json!("*/5 * * * *"),
                _ => {}
            }
            let (api_version, kind, clean) = object(which, &base);
            let check = |o: &Value| super::super::check_builtin(api_version, kind, o).unwrap_or_default();
            prop_assert_eq!(check(&clean), Vec::<String>::new());
            let mut a = base.clone();
            a[at] = first.clone();
            let mut b = base;
            b[at] = second.clone();
            let (_, _, a) = object(which, &a);
            let (_, _, b) = object(which, &b);
            prop_assert_eq!(shape(&a), shape(&b));
            prop_assert_eq!(check(&a).is_empty(), check(&b).is_empty(), "{} / {}", a, b);
        }
    }

    /// Text around what the deserializers take: timestamps and base64
    /// with a character changed, added or removed, and noise.
    fn near_miss() -> impl Strategy<Value = String> {
        let stamp = proptest::sample::select(
            &[
                "2024-01-01T00:00:00Z",
                "2024-02-29T23:59:59.123456+01:00",
                "+002024-01-01T00:00:00Z",
                "aGVsbG8=",
                "aGk=",
                "YWJj",
            ][..],
        );
        let edit = (any::<usize>(), proptest::char::any(), 0..3u8);
        prop_oneof![
            (stamp, edit).prop_map(|(s, (at, c, how))| {
                let mut chars: Vec<char> = s.chars().collect();
                let at = at % (chars.len() + 1);
                match how {
                    0 => chars.insert(at, c),
                    1 if at < chars.len() => chars[at] = c,
                    _ if at < chars.len() => {
                        chars.remove(at);
                    }
                    _ => {}
                }
                chars.into_iter().collect()
            }),
            "[-+0-9TZ:. a-zA-Z/=\u{2212}]{0,30}",
        ]
    }

    proptest! {
        /// The cheap test that skips parsing never skips text that a
        /// timestamp or base64 takes.
        #[test]
        fn skipping_a_parse_never_changes_a_class(s in near_miss()) {
            use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
            use serde::Deserialize;
            let value = json!(s);
            let parsed = u8::from(Time::deserialize(&value).is_ok())
                | (u8::from(k8s_openapi::ByteString::deserialize(&value).is_ok()) << 1);
            prop_assert_eq!(string_class(&value, &s), parsed);
        }
    }

    #[test]
    fn values_the_deserializers_read_change_the_shape() {
        let secret =
            |data: &str| json!({"apiVersion": "v1", "kind": "Secret", "data": {"k": data}});
        // Canonical base64 and not: the text is kept.
        assert_ne!(shape(&secret("aGVsbG8=")), shape(&secret("aGVsbG9=")));
        // Neither decodes, or both do: one shape.
        assert_eq!(shape(&secret("not-base64")), shape(&secret("also.not")));
        assert_eq!(shape(&secret("aGVsbG8=")), shape(&secret("aGk=")));
        let time = |t: &str| json!({"metadata": {"creationTimestamp": t}});
        assert_ne!(
            shape(&time("2024-01-01T00:00:00Z")),
            shape(&time("2024-13-01T00:00:00Z"))
        );
        let replicas = |n: Value| json!({"spec": {"replicas": n}});
        assert_eq!(shape(&replicas(json!(2))), shape(&replicas(json!(3))));
        assert_ne!(
            shape(&replicas(json!(2))),
            shape(&replicas(json!(2147483648u64)))
        );
        assert_ne!(shape(&replicas(json!(2))), shape(&replicas(json!(2.0))));
        assert_ne!(shape(&replicas(json!(-1))), shape(&replicas(json!(1))));
        // apiVersion and kind are compared by each type.
        let kind = |k: &str| json!({"apiVersion": "apps/v1", "kind": k});
        assert_ne!(shape(&kind("Deployment")), shape(&kind("Deploymend")));
        // A null field is not an unknown one.
        assert_ne!(
            shape(&json!({"colour": null})),
            shape(&json!({"colour": "red"}))
        );
    }

    #[test]
    fn a_clean_shape_is_remembered_and_a_problem_never_is() {
        use std::cell::Cell;
        let object = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "memo-test-e5b1", "labels": {"memo-test-e5b1": "x"}}});
        let calls = Cell::new(0);
        let check = |o: &Value| {
            calls.set(calls.get() + 1);
            super::super::check_builtin("v1", "Namespace", o).unwrap_or_default()
        };
        assert!(checked("v1", "Namespace", &object, check).is_empty());
        let other = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "memo-test-f00d", "labels": {"memo-test-e5b1": "y"}}});
        assert!(checked("v1", "Namespace", &other, check).is_empty());
        assert_eq!(
            calls.get(),
            1,
            "the second object has the first one's shape"
        );
        let wrong = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "memo-test-e5b1", "labels": {"memo-test-e5b1": 1}}});
        for _ in 0..2 {
            assert_eq!(
                checked("v1", "Namespace", &wrong, check),
                ["metadata.labels.memo-test-e5b1: found integer `1`, expected a string"]
            );
        }
        assert_eq!(calls.get(), 3, "a problem is checked every time");
    }
}
