//! A small YAML writer for JSON values, enough for `kubectl apply -f`: block mappings and
//! sequences, strings as plain scalars only when YAML cannot read them as anything else and
//! double-quoted (JSON escapes, which YAML shares) otherwise. Documents are separated by `---`.

use serde_json::Value;

/// The values as one YAML stream, one document each.
pub fn stream(documents: &[Value]) -> String {
    let mut out = String::new();
    for doc in documents {
        out.push_str("---\n");
        write_value(&mut out, doc, 0);
    }
    out
}

/// One value as a YAML document (without the `---`).
pub fn document(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value, 0);
    out
}

fn write_value(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, v) in map {
                pad(out, indent);
                out.push_str(&scalar(key));
                out.push(':');
                write_child(out, v, indent);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                pad(out, indent);
                out.push('-');
                match item {
                    Value::Object(map) if !map.is_empty() => {
                        // The first key on the dash's line, the rest below it.
                        let mut first = true;
                        for (key, v) in map {
                            if first {
                                out.push(' ');
                                first = false;
                            } else {
                                pad(out, indent + 2);
                            }
                            out.push_str(&scalar(key));
                            out.push(':');
                            write_child(out, v, indent + 2);
                        }
                    }
                    other => write_child(out, other, indent),
                }
            }
        }
        other => {
            pad(out, indent);
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
}

/// After `key:` or `-`: a nested block on the next lines, or an inline value.
fn write_child(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_value(out, value, indent + 2);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            write_value(out, value, indent + 2);
        }
        other => {
            out.push(' ');
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
}

fn inline(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => scalar(s),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
    }
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// A string as a scalar: plain when it is unambiguous, else double-quoted.
fn scalar(text: &str) -> String {
    if plain_is_safe(text) {
        text.to_string()
    } else {
        serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
    }
}

/// Plain only for names made of letters, digits and `-._/`, starting with a letter, that no
/// YAML version reads as a boolean, null or number.
fn plain_is_safe(text: &str) -> bool {
    let Some(first) = text.chars().next() else {
        return false;
    };
    if !first.is_ascii_alphabetic() {
        return false;
    }
    if !text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '/'))
    {
        return false;
    }
    const RESERVED: &[&str] = &[
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", "nan", "inf",
    ];
    !RESERVED.contains(&text.to_ascii_lowercase().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_block_yaml() {
        let value = json!({
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": "pv-1", "labels": {"app.kubernetes.io/name": "db", "on": "yes"}},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "capacity": {"storage": "1Gi"},
                "claimRef": {"namespace": "db", "name": "data"},
                "mountOptions": [],
                "nodeAffinity": {"required": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["node-1", "007"]}]}
                ]}},
                "csi": {"driver": "x", "volumeAttributes": {}},
                "size": 3,
                "flag": true,
                "empty": "",
                "note": "a: b # c",
            },
        });
        let text = document(&value);
        let expected = "\
apiVersion: v1
kind: PersistentVolume
metadata:
  labels:
    app.kubernetes.io/name: db
    \"on\": \"yes\"
  name: pv-1
spec:
  accessModes:
    - ReadWriteOnce
  capacity:
    storage: \"1Gi\"
  claimRef:
    name: data
    namespace: db
  csi:
    driver: x
    volumeAttributes: {}
  empty: \"\"
  flag: true
  mountOptions: []
  nodeAffinity:
    required:
      nodeSelectorTerms:
        - matchExpressions:
            - key: kubernetes.io/hostname
              operator: In
              values:
                - node-1
                - \"007\"
  note: \"a: b # c\"
  size: 3
";
        assert_eq!(text, expected);
    }

    #[test]
    fn quotes_what_yaml_would_read_otherwise() {
        for text in [
            "", "yes", "No", "null", "1", "1Gi", "0x10", "-a", " a", "a b", "é",
        ] {
            assert!(scalar(text).starts_with('"'), "{text:?}");
        }
        for text in ["pv-1", "kubernetes.io/hostname", "ReadWriteOnce"] {
            assert_eq!(scalar(text), text);
        }
        assert_eq!(
            stream(&[json!({"a": 1}), json!({"b": [1, 2]})]),
            "---\na: 1\n---\nb:\n  - 1\n  - 2\n"
        );
    }
}
