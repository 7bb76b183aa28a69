//! Editing a config file in place (`promote --keys`): one scalar set,
//! everything else (comments, order, quoting) kept as the person wrote it.
//! The edit is checked by parsing the result: if the document did not come
//! out as the old one with that key set, nothing is written.

use serde_json::Value;

/// Plain words YAML 1.1 reads as booleans or null.
const YAML11_WORDS: &[&str] = &[
    "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~",
];

/// A scalar as YAML writes it on one line (`1.2.3`, `'1.0'`, `true`).
fn scalar_text(value: &Value) -> Option<String> {
    if !matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
        return None;
    }
    let text = serde_norway::to_string(value).ok()?;
    let text = text.trim_end_matches('\n').to_string();
    if text.contains('\n') {
        return None;
    }
    // Strings YAML 1.1 readers (PyYAML, yamllint, older Go tools) take for
    // booleans or numbers are quoted, though YAML 1.2 would not need it.
    if let Value::String(s) = value
        && !text.starts_with(['\'', '"'])
        && (YAML11_WORDS.contains(&s.to_ascii_lowercase().as_str())
            || s.replace('_', "").parse::<f64>().is_ok()
            || s.contains(':'))
    {
        return Some(format!("'{}'", s.replace('\'', "''")));
    }
    Some(text)
}

/// Where a scalar written at byte `start` of `line` ends: after its closing
/// quote, or before a ` #` comment / the line's end for a plain scalar.
fn scalar_end(line: &str, start: usize) -> usize {
    let rest = &line[start..];
    let mut chars = rest.char_indices();
    match chars.next() {
        Some((_, '"')) => {
            let mut escaped = false;
            for (i, c) in chars {
                match c {
                    '\\' if !escaped => escaped = true,
                    '"' if !escaped => return start + i + 1,
                    _ => escaped = false,
                }
            }
            line.len()
        }
        Some((_, '\'')) => {
            let bytes = rest.as_bytes();
            let mut i = 1;
            while i < bytes.len() {
                if bytes[i] == b'\'' {
                    if bytes.get(i + 1) == Some(&b'\'') {
                        i += 2;
                        continue;
                    }
                    return start + i + 1;
                }
                i += 1;
            }
            line.len()
        }
        _ => {
            // Inside a flow collection a plain scalar also ends at `,]}`
            // (a rough test; the parse afterwards has the last word).
            let flow = line[..start].contains(['{', '[']);
            let stop = rest
                .char_indices()
                .find(|&(i, c)| {
                    (flow && ",]}".contains(c)) || (c == '#' && rest[..i].ends_with(' '))
                })
                .map_or(line.len(), |(i, _)| start + i);
            start + line[start..stop].trim_end().len()
        }
    }
}

fn set_in(doc: &mut Value, key: &[String], value: Value) {
    let mut at = doc;
    for (i, k) in key.iter().enumerate() {
        if !at.is_object() {
            *at = Value::Object(serde_json::Map::new());
        }
        let Value::Object(map) = at else { return };
        if i + 1 == key.len() {
            map.insert(k.clone(), value);
            return;
        }
        at = map
            .entry(k.clone())
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
    }
}

fn parse(text: &str) -> Option<Value> {
    if text.trim().is_empty() {
        return Some(Value::Object(serde_json::Map::new()));
    }
    match serde_norway::from_str::<Value>(text).ok()? {
        Value::Null => Some(Value::Object(serde_json::Map::new())),
        v => Some(v),
    }
}

/// `text` with the dotted `key` set to the scalar `value`.
///
/// # Errors
/// A value that is not a one-line scalar, a key that is a map or list, a
/// text that does not parse, or an edit that would change anything else.
pub fn set_scalar(text: &str, key: &[String], value: &Value, file: &str) -> anyhow::Result<String> {
    let dotted = key.join(".");
    let scalar = scalar_text(value).ok_or_else(|| {
        anyhow::anyhow!("`{dotted}` is not a single-line scalar (a string, number or boolean); only those are promoted by --keys")
    })?;
    let index = crate::yaml::index(text).map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    // A key has an entry of its own (no value) and, when its value is a
    // scalar, one for the value.
    let scalar_at = index.iter().find(|l| l.path == key && l.value.is_some());
    if scalar_at.is_none()
        && let Some(at) = index.iter().find(|l| l.path == key)
    {
        anyhow::bail!(
            "{file}:{}: `{dotted}` is a map or list here; --keys promotes scalars only",
            at.line
        );
    }
    if let Some(at) = scalar_at {
        let line = lines
            .get_mut(at.line - 1)
            .ok_or_else(|| anyhow::anyhow!("{file}: line {} is missing", at.line))?;
        let start = line
            .char_indices()
            .nth(at.column - 1)
            .map_or(line.len(), |(i, _)| i);
        let end = scalar_end(line, start);
        line.replace_range(start..end, &scalar);
    } else {
        // The deepest part of the key that exists, as a block mapping.
        let parent = (1..key.len())
            .rev()
            .find_map(|n| index.iter().find(|l| l.path == key[..n]).map(|l| (n, l)));
        let (depth, insert_at, indent) = match parent {
            Some((n, at)) => {
                if index
                    .iter()
                    .any(|l| l.path == key[..n] && l.value.is_some())
                {
                    anyhow::bail!(
                        "{file}:{}: `{}` is a scalar here, so `{dotted}` cannot be set below it",
                        at.line,
                        key[..n].join(".")
                    );
                }
                let own = at.column - 1;
                let child = lines
                    .iter()
                    .skip(at.line)
                    .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
                    .map(|l| l.len() - l.trim_start().len())
                    .filter(|i| *i > own)
                    .unwrap_or(own + 2);
                (n, at.line, child)
            }
            None => (0, lines.len(), 0),
        };
        let mut new = Vec::new();
        for (i, k) in key[depth..].iter().enumerate() {
            let pad = " ".repeat(indent + 2 * i);
            if depth + i + 1 == key.len() {
                new.push(format!("{pad}{k}: {scalar}"));
            } else {
                new.push(format!("{pad}{k}:"));
            }
        }
        // An empty document (`{}` or nothing) is replaced, not appended to.
        if depth == 0 && parse(text).is_some_and(|v| v.as_object().is_some_and(|m| m.is_empty())) {
            lines.retain(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
            let at = lines.len();
            lines.splice(at..at, new);
        } else {
            lines.splice(insert_at..insert_at, new);
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    let mut expected = parse(text).ok_or_else(|| anyhow::anyhow!("{file} does not parse"))?;
    set_in(&mut expected, key, value.clone());
    if parse(&out).as_ref() != Some(&expected) {
        anyhow::bail!(
            "{file}: cannot set `{dotted}` here without changing something else (a flow mapping, an anchor, an unusual layout); set it by hand"
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(text: &str, key: &str, value: Value) -> anyhow::Result<String> {
        let key: Vec<String> = key.split('.').map(str::to_string).collect();
        set_scalar(text, &key, &value, "config.yaml")
    }

    #[test]
    fn a_scalar_is_replaced_where_it_stands_and_comments_stay() {
        let text = "# production\nimage:\n  repository: ghcr.io/acme/api  # the registry\n  tag: \"1.0\"   # pinned\nreplicas: 3\n";
        let out = set(text, "image.tag", Value::String("1.2".into())).unwrap();
        assert_eq!(
            out,
            "# production\nimage:\n  repository: ghcr.io/acme/api  # the registry\n  tag: '1.2'   # pinned\nreplicas: 3\n"
        );
        let out = set(text, "replicas", serde_json::json!(5)).unwrap();
        assert!(out.ends_with("replicas: 5\n"), "{out}");
        let out = set("a: 'it''s' # c\n", "a", Value::String("x y".into())).unwrap();
        assert_eq!(out, "a: x y # c\n");
    }

    #[test]
    fn missing_keys_are_added_under_their_parent_or_at_the_end() {
        let out = set(
            "image:\n    repository: x\nreplicas: 2\n",
            "image.tag",
            Value::String("v2".into()),
        )
        .unwrap();
        assert_eq!(out, "image:\n    tag: v2\n    repository: x\nreplicas: 2\n");
        let out = set("replicas: 2\n", "image.tag", Value::String("v2".into())).unwrap();
        assert_eq!(out, "replicas: 2\nimage:\n  tag: v2\n");
        let out = set("", "image.tag", Value::String("v2".into())).unwrap();
        assert_eq!(out, "image:\n  tag: v2\n");
        let out = set("{}\n", "replicas", serde_json::json!(1)).unwrap();
        assert_eq!(out, "replicas: 1\n");
    }

    #[test]
    fn what_cannot_be_edited_safely_is_refused() {
        assert!(
            set(
                "image: {tag: v1}\n",
                "image.tag",
                Value::String("v2".into())
            )
            .is_ok_and(|o| o == "image: {tag: v2}\n")
        );
        let e = set(
            "image: {repository: x}\n",
            "image.tag",
            Value::String("v2".into()),
        )
        .unwrap_err();
        assert!(e.to_string().contains("set it by hand"), "{e}");
        let e = set("image:\n  tag: v1\n", "image", Value::String("v2".into())).unwrap_err();
        assert!(e.to_string().contains("is a map or list here"), "{e}");
        let e = set("image: x\n", "image.tag", Value::String("v2".into())).unwrap_err();
        assert!(e.to_string().contains("is a scalar here"), "{e}");
        let e = set("a: 1\n", "a", serde_json::json!({"b": 1})).unwrap_err();
        assert!(e.to_string().contains("single-line scalar"), "{e}");
    }
}
