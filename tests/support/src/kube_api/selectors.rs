//! Label and field selectors with the API server's syntax and matching rules
//! (k8s.io/apimachinery/pkg/labels and pkg/fields), and `metav1.LabelSelector` matching.

use serde_json::Value;

/// One requirement of a label selector.
#[derive(Debug, Clone)]
enum Req {
    Exists(String),
    NotExists(String),
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Gt(String, i64),
    Lt(String, i64),
}

/// A parsed `labelSelector`; an empty one matches everything.
#[derive(Debug, Clone, Default)]
pub struct LabelSelector(Vec<Req>);

fn valid_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() || p.len() > 253 || !p.split('.').all(valid_dns_label) {
            return false;
        }
    }
    valid_name(name)
}

fn valid_dns_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

/// A label name or value: `(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?`, at most 63 chars.
pub fn valid_value(v: &str) -> bool {
    if v.is_empty() {
        return true;
    }
    valid_name(v)
}

fn valid_name(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 63
        && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && v.chars().last().is_some_and(|c| c.is_ascii_alphanumeric())
}

/// Validates a label key (`[prefix/]name`).
pub fn valid_label_key(k: &str) -> bool {
    valid_key(k)
}

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c)
            }
            ')' => {
                depth -= 1;
                cur.push(c)
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

impl LabelSelector {
    /// Parses the `labelSelector` query syntax; `Err` carries the API server's message.
    pub fn parse(s: &str) -> Result<LabelSelector, String> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(LabelSelector(reqs));
        }
        for term in split_top(s) {
            let t = term.trim();
            let err = |why: &str| format!("unable to parse requirement: {why}: {t:?}");
            if t.is_empty() {
                return Err(err("found '', expected: identifier"));
            }
            let req = if let Some(k) = t.strip_prefix('!') {
                Req::NotExists(k.trim().to_string())
            } else if let Some((k, rest)) = split_word(t, " notin ") {
                Req::NotIn(k, parse_set(&rest).ok_or_else(|| err("expected a set '(...)'"))?)
            } else if let Some((k, rest)) = split_word(t, " in ") {
                Req::In(k, parse_set(&rest).ok_or_else(|| err("expected a set '(...)'"))?)
            } else if let Some((k, v)) = t.split_once("!=") {
                Req::NotEq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once("==") {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once('=') {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once('>') {
                Req::Gt(
                    k.trim().into(),
                    v.trim()
                        .parse()
                        .map_err(|_| err("for 'Gt', 'Lt' operators, the value must be an integer"))?,
                )
            } else if let Some((k, v)) = t.split_once('<') {
                Req::Lt(
                    k.trim().into(),
                    v.trim()
                        .parse()
                        .map_err(|_| err("for 'Gt', 'Lt' operators, the value must be an integer"))?,
                )
            } else {
                Req::Exists(t.to_string())
            };
            let (key, values): (&str, Vec<&str>) = match &req {
                Req::Exists(k) | Req::NotExists(k) | Req::Gt(k, _) | Req::Lt(k, _) => (k, vec![]),
                Req::Eq(k, v) | Req::NotEq(k, v) => (k, vec![v.as_str()]),
                Req::In(k, vs) | Req::NotIn(k, vs) => (k, vs.iter().map(String::as_str).collect()),
            };
            if !valid_key(key) {
                return Err(err(&format!("invalid label key {key:?}")));
            }
            if let Some(v) = values.iter().find(|v| !valid_value(v)) {
                return Err(err(&format!("invalid label value: {v:?}")));
            }
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether `labels` (an object of strings, or null) satisfies every requirement.
    pub fn matches(&self, labels: &Value) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
            Req::Eq(k, v) => get(k) == Some(v.as_str()),
            Req::NotEq(k, v) => get(k) != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            Req::Gt(k, n) => get(k).and_then(|x| x.parse::<i64>().ok()).is_some_and(|x| x > *n),
            Req::Lt(k, n) => get(k).and_then(|x| x.parse::<i64>().ok()).is_some_and(|x| x < *n),
        })
    }
}

fn split_word(t: &str, word: &str) -> Option<(String, String)> {
    let i = t.find(word)?;
    Some((t[..i].trim().to_string(), t[i + word.len()..].trim().to_string()))
}

fn parse_set(s: &str) -> Option<Vec<String>> {
    let inner = s.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(inner.split(',').map(|v| v.trim().to_string()).collect())
}

/// A parsed `fieldSelector`: `field=value`, `field==value`, `field!=value`, comma-joined.
#[derive(Debug, Clone, Default)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses and checks every field against `supported` (plus metadata.name/namespace),
    /// answering like the API server ("field label not supported: x") otherwise.
    pub fn parse(s: &str, supported: &[&str]) -> Result<FieldSelector, String> {
        let mut out = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector(out));
        }
        for term in s.split(',') {
            let t = term.trim();
            let (f, eq, v) = if let Some((f, v)) = t.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = t.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = t.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!("invalid selector: '{s}'; can't understand '{t}'"));
            };
            let f = f.trim();
            if f != "metadata.name" && f != "metadata.namespace" && !supported.contains(&f) {
                return Err(format!("field label not supported: {f}"));
            }
            out.push((f.to_string(), eq, v.trim().to_string()));
        }
        Ok(FieldSelector(out))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(f, eq, v)| (field_value(obj, f) == *v) == *eq)
    }
}

/// The string value the API server's field set holds for `path` (missing → "", bool → "true"/"false").
pub fn field_value(obj: &Value, path: &str) -> String {
    let mut cur = obj;
    for part in path.split('.') {
        match cur.get(part) {
            Some(v) => cur = v,
            None => {
                return match path {
                    "spec.unschedulable" | "spec.hostNetwork" => "false".into(),
                    _ => String::new(),
                };
            }
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `metav1.LabelSelector` semantics (LabelSelectorAsSelector): null selects nothing,
/// `{}` selects everything, otherwise matchLabels AND matchExpressions.
pub fn label_selector_object_matches(selector: &Value, labels: &Value) -> bool {
    if selector.is_null() {
        return false;
    }
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    if let Some(ml) = selector.get("matchLabels").and_then(Value::as_object) {
        if !ml.iter().all(|(k, v)| get(k) == v.as_str()) {
            return false;
        }
    }
    if let Some(exprs) = selector.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let key = e.get("key").and_then(Value::as_str).unwrap_or("");
            let values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let ok = match e.get("operator").and_then(Value::as_str).unwrap_or("") {
                "In" => get(key).is_some_and(|x| values.contains(&x)),
                "NotIn" => get(key).is_none_or(|x| !values.contains(&x)),
                "Exists" => get(key).is_some(),
                "DoesNotExist" => get(key).is_none(),
                _ => false, // an invalid selector matches nothing
            };
            if !ok {
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selector_syntax() {
        let l = json!({"a": "1", "b": "x"});
        for (s, want) in [
            ("a=1", true),
            ("a==1", true),
            ("a!=1", false),
            ("c!=1", true),
            ("a", true),
            ("!a", false),
            ("!c", true),
            ("b in (x, y)", true),
            ("b notin (x,y)", false),
            ("c notin (x)", true),
            ("a=1,b in (y),c", false),
            ("a=1, b in (x,z), !c", true),
            ("a>0", true),
            ("a<1", false),
        ] {
            assert_eq!(LabelSelector::parse(s).unwrap().matches(&l), want, "{s}");
        }
        assert!(LabelSelector::parse("a b=c").is_err());
    }

    #[test]
    fn field_selector_syntax() {
        let p = json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let sup = ["spec.nodeName", "status.phase"];
        assert!(FieldSelector::parse("spec.nodeName=n1,status.phase!=Succeeded", &sup).unwrap().matches(&p));
        assert!(!FieldSelector::parse("spec.nodeName==n2", &sup).unwrap().matches(&p));
        assert!(FieldSelector::parse("spec.foo=x", &sup).is_err());
    }
}
