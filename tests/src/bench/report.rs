//! Results: a flat map of dotted keys to numbers, written as JSON; the markdown summary and the
//! charts are rendered from it.

use std::collections::BTreeMap;

/// All measured values, by dotted key (`per_packet.floor_ns`, `e2e.xdp.cps`, ...).
#[derive(Debug, Default, Clone)]
pub struct Results {
    /// Values.
    pub values: BTreeMap<String, f64>,
    /// Free-form notes per section (what limits a number, what was left out).
    pub notes: BTreeMap<String, String>,
}

impl Results {
    /// Records a value.
    pub fn set(&mut self, key: impl Into<String>, value: f64) {
        self.values.insert(key.into(), value);
    }

    /// A value, if measured.
    pub fn get(&self, key: &str) -> Option<f64> {
        self.values.get(key).copied()
    }

    /// Records a note.
    pub fn note(&mut self, section: impl Into<String>, text: impl Into<String>) {
        self.notes.insert(section.into(), text.into());
    }

    /// Reads results written by [`Results::to_json`] (to re-run some sections and keep the rest).
    pub fn from_json(value: &serde_json::Value) -> Self {
        fn walk(prefix: &str, v: &serde_json::Value, out: &mut Results) {
            if let Some(map) = v.as_object() {
                for (k, child) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, child, out);
                }
            } else if let Some(n) = v.as_f64() {
                out.set(prefix, n);
            }
        }
        let mut out = Self::default();
        for (k, v) in value.as_object().into_iter().flatten() {
            if k == "notes" {
                for (section, note) in v.as_object().into_iter().flatten() {
                    out.note(section.clone(), note.as_str().unwrap_or_default());
                }
            } else {
                walk(k, v, &mut out);
            }
        }
        out
    }

    /// Nested JSON (`{"per_packet": {"floor_ns": ...}}`).
    pub fn to_json(&self) -> serde_json::Value {
        let mut root = serde_json::Map::new();
        for (key, value) in &self.values {
            let mut node = &mut root;
            let parts: Vec<&str> = key.split('.').collect();
            for part in &parts[..parts.len() - 1] {
                node = node
                    .entry(part.to_string())
                    .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()))
                    .as_object_mut()
                    .expect("keys are not both a value and a section");
            }
            let v = serde_json::Number::from_f64(*value)
                .map_or(serde_json::Value::Null, serde_json::Value::Number);
            node.insert(parts[parts.len() - 1].to_string(), v);
        }
        root.insert(
            "notes".into(),
            serde_json::to_value(&self.notes).unwrap_or_default(),
        );
        serde_json::Value::Object(root)
    }
}
