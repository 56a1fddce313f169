//! The configuration as a JSON tree checked against the proto descriptor: field names are
//! normalised to their proto names so that layers (defaults, file, environment) merge field by
//! field, and every unknown field is an error that names its path.

use prost_reflect::{Kind, MessageDescriptor};
use serde_json::{Map, Value};

use crate::error::ConfigError;

/// Environment variables with the `TICKMESH_` prefix that are not configuration fields.
pub const RESERVED_ENV: &[&str] = &[
    "TICKMESH_CONFIG",
    "TICKMESH_LOG",
    "TICKMESH_LOG_FORMAT",
    "TICKMESH_STORE_URL",
    "TICKMESH_STORE_READ_URL",
    "TICKMESH_BUS_URL",
    "TICKMESH_REPLAY_DIR",
    "TICKMESH_METRICS_ADDR",
    "TICKMESH_COMPUTATION_ADDR",
    "TICKMESH_CACHING_ADDR",
    "TICKMESH_API_KEY",
];

/// Prefix of configuration overrides in the environment.
pub const ENV_PREFIX: &str = "TICKMESH_";

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Messages with a JSON mapping of their own (durations, field masks, ...) are leaves.
fn is_leaf_message(desc: &MessageDescriptor) -> bool {
    desc.full_name().starts_with("google.protobuf.")
}

/// Renames every key to its proto field name (accepting lowerCamelCase JSON names), drops
/// explicit nulls, and fails on keys that are not fields.
pub fn normalize(value: Value, desc: &MessageDescriptor, path: &str) -> Result<Value, ConfigError> {
    let Value::Object(object) = value else {
        return Err(ConfigError::invalid(
            if path.is_empty() { "(root)" } else { path },
            format!("expected a map of fields of {}", desc.name()),
        ));
    };
    let mut out = Map::new();
    for (key, value) in object {
        let field = desc
            .get_field_by_name(&key)
            .or_else(|| desc.get_field_by_json_name(&key))
            .ok_or_else(|| {
                ConfigError::invalid(
                    join(path, &key),
                    format!("no such field in {}", desc.name()),
                )
            })?;
        let field_path = join(path, field.name());
        if value.is_null() {
            continue;
        }
        let value = match field.kind() {
            Kind::Message(entry) if field.is_map() => {
                let value_field = entry.map_entry_value_field();
                match (value_field.kind(), value) {
                    (Kind::Message(inner), Value::Object(map)) if !is_leaf_message(&inner) => {
                        let mut normalized = Map::new();
                        for (map_key, map_value) in map {
                            let entry_path = join(&field_path, &map_key);
                            normalized.insert(map_key, normalize(map_value, &inner, &entry_path)?);
                        }
                        Value::Object(normalized)
                    }
                    (_, value) => value,
                }
            }
            Kind::Message(inner) if field.is_list() && !is_leaf_message(&inner) => match value {
                Value::Array(items) => Value::Array(
                    items
                        .into_iter()
                        .enumerate()
                        .map(|(i, item)| normalize(item, &inner, &format!("{field_path}[{i}]")))
                        .collect::<Result<_, _>>()?,
                ),
                other => other,
            },
            Kind::Message(inner) if !is_leaf_message(&inner) => {
                normalize(value, &inner, &field_path)?
            }
            _ => value,
        };
        out.insert(field.name().to_owned(), value);
    }
    Ok(Value::Object(out))
}

/// Lays `over` onto `base`: maps merge key by key, everything else is replaced.
pub fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (key, value) in over {
                match base.get_mut(&key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (slot, value) => *slot = value,
    }
}

/// Turns `TICKMESH_*` variables into a tree of overrides. The part after the prefix is the
/// field path in upper case with `__` between levels; a map level takes the map key.
pub fn env_overrides<I>(vars: I, root: &MessageDescriptor) -> Result<Value, ConfigError>
where
    I: IntoIterator<Item = (String, String)>,
{
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX) && !RESERVED_ENV.contains(&name.as_str()))
        .collect();
    // Deterministic: the same environment always gives the same result.
    vars.sort();
    let mut tree = Value::Object(Map::new());
    for (name, raw) in vars {
        let segments: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        let leaf = env_leaf(&name, &segments, &raw, root)?;
        let mut nested = leaf;
        for segment in segments.iter().rev() {
            let mut map = Map::new();
            map.insert(segment.clone(), nested);
            nested = Value::Object(map);
        }
        merge(&mut tree, nested);
    }
    Ok(tree)
}

/// Checks the path of one variable against the descriptor and types its value.
fn env_leaf(
    name: &str,
    segments: &[String],
    raw: &str,
    root: &MessageDescriptor,
) -> Result<Value, ConfigError> {
    let unknown = || {
        ConfigError::invalid(
            name,
            "no such config field (TICKMESH_ variables name a field path, levels joined by `__`, \
             e.g. TICKMESH_CIRCUIT_BREAKER__FAILURE_THRESHOLD)",
        )
    };
    let mut desc = root.clone();
    let mut i = 0;
    loop {
        let segment = segments.get(i).ok_or_else(unknown)?;
        let field = desc.get_field_by_name(segment).ok_or_else(unknown)?;
        let last = i + 1 == segments.len();
        let mut kind = field.kind();
        if field.is_map() {
            // The next segment is the map key; the one after continues inside the value.
            let Kind::Message(entry) = field.kind() else {
                return Err(unknown());
            };
            kind = entry.map_entry_value_field().kind();
            i += 1;
            if i >= segments.len() {
                return Err(unknown());
            }
            if i + 1 == segments.len() {
                return Ok(typed(&kind, raw, false));
            }
        } else if last {
            return Ok(typed(&kind, raw, field.is_list()));
        }
        match kind {
            Kind::Message(inner) if !is_leaf_message(&inner) => desc = inner,
            _ => return Err(unknown()),
        }
        i += 1;
    }
}

/// A raw environment string as the JSON value the field's kind expects.
fn typed(kind: &Kind, raw: &str, list: bool) -> Value {
    let textual = matches!(
        kind,
        Kind::String | Kind::Enum(_) | Kind::Message(_) | Kind::Bytes
    );
    if list {
        // Lists are written as JSON arrays, or comma-separated for convenience.
        if let Ok(value @ Value::Array(_)) = serde_json::from_str::<Value>(raw) {
            return value;
        }
        return Value::Array(
            raw.split(',')
                .map(|item| typed(kind, item.trim(), false))
                .collect(),
        );
    }
    if textual {
        return Value::String(raw.to_owned());
    }
    serde_json::from_str::<Value>(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))
}
