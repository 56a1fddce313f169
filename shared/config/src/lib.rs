//! `PerformanceOptimizationConfig`: the one configuration schema of tickmesh.
//!
//! A configuration is built in layers, each overriding the one before field by field: the
//! built-in defaults (`defaults.yaml`), an optional YAML / TOML / JSON file in the proto3 JSON
//! mapping of the message, and `TICKMESH_*` environment variables. The result is validated; an
//! invalid value is an error that names the field.

mod error;
mod handle;
mod tree;
mod validate;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use prost_reflect::{
    DescriptorPool, DynamicMessage, MessageDescriptor, ReflectMessage, SerializeOptions,
};
use serde_json::Value;
pub use tickmesh_proto::v1::PerformanceOptimizationConfig;

pub use crate::error::ConfigError;
pub use crate::handle::{ConfigHandle, ConfigSnapshot};
pub use crate::tree::{ENV_PREFIX, RESERVED_ENV};
pub use crate::validate::{MAX_REDIS_TIMEOUT, validate};

/// The built-in defaults, in the same format a user's file has.
pub const DEFAULTS_YAML: &str = include_str!("defaults.yaml");

const MESSAGE_NAME: &str = "tickmesh.v1.PerformanceOptimizationConfig";

/// A validated configuration and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedConfig {
    /// The effective configuration.
    pub config: PerformanceOptimizationConfig,
    /// The layers it was built from, e.g. `defaults + file tickmesh.yaml + env`.
    pub source: String,
}

/// Formats a configuration file may be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// YAML (`.yaml`, `.yml`).
    Yaml,
    /// TOML (`.toml`).
    Toml,
    /// JSON (`.json`).
    Json,
}

impl Format {
    /// The format a file's extension names.
    pub fn from_path(path: &Path) -> Result<Self, ConfigError> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => Ok(Self::Yaml),
            Some("toml") => Ok(Self::Toml),
            Some("json") => Ok(Self::Json),
            _ => Err(ConfigError::UnknownFormat {
                path: path.to_owned(),
            }),
        }
    }

    fn parse(self, text: &str, origin: &str) -> Result<Value, ConfigError> {
        let syntax = |format, message: String| ConfigError::Syntax {
            origin: origin.to_owned(),
            format,
            message,
        };
        match self {
            Self::Yaml => serde_yaml_ng::from_str::<Option<Value>>(text)
                .map(|v| v.unwrap_or(Value::Object(Default::default())))
                .map_err(|e| syntax("YAML", e.to_string())),
            Self::Toml => toml::from_str::<Value>(text).map_err(|e| syntax("TOML", e.to_string())),
            Self::Json => {
                serde_json::from_str::<Value>(text).map_err(|e| syntax("JSON", e.to_string()))
            }
        }
    }
}

fn descriptor() -> &'static MessageDescriptor {
    static DESCRIPTOR: OnceLock<MessageDescriptor> = OnceLock::new();
    DESCRIPTOR.get_or_init(|| {
        DescriptorPool::decode(tickmesh_proto::FILE_DESCRIPTOR_SET)
            .ok()
            .and_then(|pool| pool.get_message_by_name(MESSAGE_NAME))
            .expect("the descriptor set built into tickmesh-proto holds the config message")
    })
}

fn defaults_tree() -> Value {
    static TREE: OnceLock<Value> = OnceLock::new();
    TREE.get_or_init(|| {
        Format::Yaml
            .parse(DEFAULTS_YAML, "defaults")
            .and_then(|v| tree::normalize(v, descriptor(), ""))
            .expect("the built-in defaults parse")
    })
    .clone()
}

/// Builds the configuration from the defaults, an optional file and the given environment
/// variables (pass `std::env::vars()`; other variables are ignored).
pub fn load<I>(file: Option<&Path>, env: I) -> Result<LoadedConfig, ConfigError>
where
    I: IntoIterator<Item = (String, String)>,
{
    let mut tree = defaults_tree();
    let mut source = String::from("defaults");
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: PathBuf::from(path),
            source,
        })?;
        let origin = path.display().to_string();
        let layer = Format::from_path(path)?.parse(&text, &origin)?;
        tree::merge(&mut tree, tree::normalize(layer, descriptor(), "")?);
        source.push_str(&format!(" + file {origin}"));
    }
    let env_layer = tree::env_overrides(env, descriptor())?;
    if env_layer.as_object().is_some_and(|o| !o.is_empty()) {
        tree::merge(&mut tree, env_layer);
        source.push_str(" + env");
    }
    let config = from_tree(tree)?;
    validate(&config)?;
    Ok(LoadedConfig { config, source })
}

/// Parses one configuration text laid over the defaults, e.g. the body of an update.
pub fn parse_over_defaults(
    text: &str,
    format: Format,
) -> Result<PerformanceOptimizationConfig, ConfigError> {
    let mut tree = defaults_tree();
    let layer = format.parse(text, "text")?;
    tree::merge(&mut tree, tree::normalize(layer, descriptor(), "")?);
    let config = from_tree(tree)?;
    validate(&config)?;
    Ok(config)
}

/// The built-in defaults.
pub fn defaults() -> PerformanceOptimizationConfig {
    from_tree(defaults_tree()).expect("the built-in defaults map onto the message")
}

fn from_tree(tree: Value) -> Result<PerformanceOptimizationConfig, ConfigError> {
    let mut track = serde_path_to_error::Track::new();
    let deserializer = serde_path_to_error::Deserializer::new(tree, &mut track);
    let dynamic = DynamicMessage::deserialize(descriptor().clone(), deserializer).map_err(|e| {
        let path = track.path().to_string();
        let field = if path == "?" || path.is_empty() {
            "(root)".to_owned()
        } else {
            path
        };
        ConfigError::invalid(field, e.to_string())
    })?;
    dynamic
        .transcode_to::<PerformanceOptimizationConfig>()
        .map_err(|e| ConfigError::invalid("(root)", e.to_string()))
}

/// The configuration as a JSON tree with proto field names and every field present.
pub fn to_json(config: &PerformanceOptimizationConfig) -> Value {
    let mut dynamic = DynamicMessage::new(descriptor().clone());
    dynamic
        .transcode_from(config)
        .expect("a generated message transcodes into its own descriptor");
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(false)
        .stringify_64_bit_integers(false);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .expect("a message serializes to a JSON tree")
}

/// The configuration as YAML that `load` reads back to the same value.
pub fn to_yaml(config: &PerformanceOptimizationConfig) -> String {
    serde_yaml_ng::to_string(&to_json(config)).expect("a JSON tree serializes to YAML")
}

/// `current` with the fields named by `paths` (field mask paths such as `cache.default_policy.ttl`
/// or `rate_limits`) taken from `update`; an empty mask takes every field of `update`. The result
/// is validated. A key shown as [`REDACTED`] in `update` keeps the running key.
pub fn apply_update(
    current: &PerformanceOptimizationConfig,
    update: &PerformanceOptimizationConfig,
    paths: &[String],
) -> Result<PerformanceOptimizationConfig, ConfigError> {
    let mut next = if paths.is_empty() {
        update.clone()
    } else {
        let mut target = DynamicMessage::new(descriptor().clone());
        target
            .transcode_from(current)
            .map_err(|e| ConfigError::invalid("(root)", e.to_string()))?;
        let mut source = DynamicMessage::new(descriptor().clone());
        source
            .transcode_from(update)
            .map_err(|e| ConfigError::invalid("(root)", e.to_string()))?;
        for path in paths {
            copy_path(&mut target, &source, path)?;
        }
        target
            .transcode_to::<PerformanceOptimizationConfig>()
            .map_err(|e| ConfigError::invalid("(root)", e.to_string()))?
    };
    // Keys never leave the process, so an update read back from GetConfig carries placeholders.
    if let (Some(next_auth), Some(current_auth)) = (next.auth.as_mut(), current.auth.as_ref()) {
        for key in &mut next_auth.keys {
            if key.key == REDACTED
                && let Some(running) = current_auth.keys.iter().find(|k| k.name == key.name)
            {
                key.key = running.key.clone();
            }
        }
    }
    validate(&next)?;
    Ok(next)
}

/// Sets the field at `path` (dot-separated names) of `target` to the one of `source`.
fn copy_path(
    target: &mut DynamicMessage,
    source: &DynamicMessage,
    path: &str,
) -> Result<(), ConfigError> {
    let (head, rest) = match path.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (path, None),
    };
    let field = target
        .descriptor()
        .get_field_by_name(head)
        .or_else(|| target.descriptor().get_field_by_json_name(head))
        .ok_or_else(|| ConfigError::invalid(path, "no such field in update_mask"))?;
    match rest {
        None => {
            let value = source.get_field(&field).into_owned();
            target.set_field(&field, value);
        }
        Some(rest) => {
            let inner_source = match source.get_field(&field).as_message() {
                Some(m) => m.clone(),
                None => return Err(ConfigError::invalid(path, "not a message field")),
            };
            let mut inner_target = match target.get_field(&field).as_message() {
                Some(m) => m.clone(),
                None => return Err(ConfigError::invalid(path, "not a message field")),
            };
            copy_path(&mut inner_target, &inner_source, rest)?;
            target.set_field(&field, prost_reflect::Value::Message(inner_target));
        }
    }
    Ok(())
}

/// What a key shows instead of itself wherever configuration leaves the process.
pub const REDACTED: &str = "<redacted>";

/// The configuration with every API key replaced by [`REDACTED`]: what `GetConfig`, `WatchConfig`
/// and `config print` show. Key names and scopes stay visible.
pub fn redacted(config: &PerformanceOptimizationConfig) -> PerformanceOptimizationConfig {
    let mut config = config.clone();
    if let Some(auth) = config.auth.as_mut() {
        for key in &mut auth.keys {
            key.key = REDACTED.to_owned();
        }
    }
    config
}

/// A proto duration as a std one (negative durations, which validation rejects, become zero).
pub fn std_duration(duration: Option<&prost_types::Duration>) -> Duration {
    duration
        .and_then(|d| {
            let secs = u64::try_from(d.seconds).ok()?;
            let nanos = u32::try_from(d.nanos).ok()?;
            Some(Duration::new(secs, nanos))
        })
        .unwrap_or_default()
}
