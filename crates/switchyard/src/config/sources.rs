//! Where the configuration comes from: the built-in defaults, the TOML
//! file, `SWITCHYARD_*` environment variables and the flags of `serve`.
//! Each layer replaces the keys it sets in the layers below it (a flag,
//! then a variable, then the file, then the default), and [`Layered`]
//! keeps the origin of every value, for `switchyard config show` and for
//! the messages that refuse a value.
//!
//! Every key `k` of a section `[s]` can be set by the variable
//! `SWITCHYARD_S_K`, and a top-level key by `SWITCHYARD_K` (upper case).
//! Keys hold underscores, so a name is not split at each `_`: the section
//! names are known, and every variable is looked up among the names built
//! from the keys of the structs in [`super::file`]. A few variables older
//! than this rule keep working as aliases ([`ENV_ALIASES`]).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserialize, Deserializer, Visitor};
use toml::{Table, Value};

use super::file::{
    AuthSection, ClusterSection, CorsSection, FileConfig, HttpSection, LimitsSection,
    PluginsSection, PublishSection, RetentionSection, SseSection, StorageSection, TlsSection,
};
use super::{ConfigError, Overrides};

/// The prefix of every variable of the binary.
pub const ENV_PREFIX: &str = "SWITCHYARD_";

/// The top-level keys that are not sections.
const TOP_LEVEL: [&str; 4] = ["listen", "data_dir", "log_format", "log"];

/// Keys only the file can set: arrays of tables.
pub const FILE_ONLY: [&str; 2] = ["plugin", "retention.topics"];

/// Keys whose values `config show` does not print.
pub const SECRET_KEYS: [&str; 1] = ["cluster.key"];

/// Variables older than the naming rule, kept as aliases: (variable, key).
/// Setting one and the key's own variable to different values is refused.
pub const ENV_ALIASES: [(&str, &str); 8] = [
    ("SWITCHYARD_FSYNC", "storage.fsync"),
    ("SWITCHYARD_GOSSIP_LISTEN", "cluster.gossip_listen"),
    ("SWITCHYARD_JOIN", "cluster.seeds"),
    (
        "SWITCHYARD_REPLICATION_FACTOR",
        "cluster.replication_factor",
    ),
    ("SWITCHYARD_ALLOWED_HOSTS", "http.allowed_hosts"),
    ("SWITCHYARD_ALLOW_ANONYMOUS", "auth.allow_anonymous"),
    ("SWITCHYARD_TLS_CERT", "tls.cert_file"),
    ("SWITCHYARD_TLS_KEY", "tls.key_file"),
];

/// Variables of the binary that are not configuration keys: the config
/// file's path, and the client commands' node URL, token and CA file
/// (`SWITCHYARD_CA_FILE` is the client's, not `tls.ca_file`, whose
/// variable is `SWITCHYARD_TLS_CA_FILE`). The log filter,
/// `SWITCHYARD_LOG`, is the top-level key `log`.
pub const OTHER_VARS: [&str; 4] = [
    "SWITCHYARD_CONFIG",
    "SWITCHYARD_URL",
    "SWITCHYARD_TOKEN",
    "SWITCHYARD_CA_FILE",
];

/// The flags of `serve` that set keys: (flag, key).
pub const FLAGS: [(&str, &str); 12] = [
    ("--listen", "listen"),
    ("--data-dir", "data_dir"),
    ("--log-format", "log_format"),
    ("--fsync", "storage.fsync"),
    ("--gossip-listen", "cluster.gossip_listen"),
    ("--join", "cluster.seeds"),
    ("--cluster-name", "cluster.name"),
    ("--replication-factor", "cluster.replication_factor"),
    ("--allowed-host", "http.allowed_hosts"),
    ("--allow-anonymous", "auth.allow_anonymous"),
    ("--tls-cert", "tls.cert_file"),
    ("--tls-key", "tls.key_file"),
];

/// The field names of a struct, as its derived `Deserialize` hands them to
/// the deserializer: the keys of a section, read from the struct itself.
fn field_names<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Names<'a>(&'a Cell<&'static [&'static str]>);
    impl<'de> Deserializer<'de> for Names<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0.set(fields);
            Err(de::Error::custom("field names read"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    let names = Cell::new(&[][..]);
    let _ = T::deserialize(Names(&names));
    names.get()
}

/// Every section: its name and its keys, in the order of the file's structs.
fn sections() -> [(&'static str, &'static [&'static str]); 11] {
    [
        ("storage", field_names::<StorageSection>()),
        ("limits", field_names::<LimitsSection>()),
        ("sse", field_names::<SseSection>()),
        ("publish", field_names::<PublishSection>()),
        ("retention", field_names::<RetentionSection>()),
        ("cors", field_names::<CorsSection>()),
        ("http", field_names::<HttpSection>()),
        ("plugins", field_names::<PluginsSection>()),
        ("cluster", field_names::<ClusterSection>()),
        ("auth", field_names::<AuthSection>()),
        ("tls", field_names::<TlsSection>()),
    ]
}

/// Every key, as `section.key` or a top-level `key`: the top-level keys,
/// the sections' keys in the order of their structs, then `plugin`. The
/// arrays of tables ([`FILE_ONLY`]) are included.
pub fn keys() -> Vec<String> {
    let top = TOP_LEVEL.iter().map(|k| (*k).to_owned());
    let nested = sections()
        .into_iter()
        .flat_map(|(s, keys)| keys.iter().map(move |k| format!("{s}.{k}")));
    top.chain(nested).chain(["plugin".to_owned()]).collect()
}

/// The variable that sets `key` by the naming rule.
pub fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "_").to_ascii_uppercase())
}

/// Every variable that sets a key: variable → (key, whether it is an alias).
fn env_names() -> BTreeMap<String, (String, bool)> {
    let canonical = keys()
        .into_iter()
        .filter(|k| !FILE_ONLY.contains(&k.as_str()))
        .map(|k| (env_name(&k), (k, false)));
    let aliases = ENV_ALIASES
        .iter()
        .map(|(var, key)| ((*var).to_owned(), ((*key).to_owned(), true)));
    canonical.chain(aliases).collect()
}

/// Where a value of the configuration came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default.
    Default,
    /// The config file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// A flag of `serve`, or a value set by the code that embeds the node.
    Flag(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Env(var) => f.write_str(var),
            Origin::Flag(flag) => f.write_str(flag),
        }
    }
}

/// The configuration merged from its sources, with the origin of each
/// value; not validated beyond the types of the values.
#[derive(Clone, Debug)]
pub struct Layered {
    /// The merged configuration.
    pub config: FileConfig,
    /// The origin of every value not left at its default, by key.
    origins: BTreeMap<String, Origin>,
}

impl Layered {
    /// Layers the defaults, the file (if any), the `SWITCHYARD_*` variables
    /// of `env` and the flags.
    pub fn gather(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (OsString, OsString)>,
        flags: Overrides,
    ) -> Result<Layered, ConfigError> {
        let text = file
            .map(|path| {
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })
            })
            .transpose()?;
        Layered::from_parts(file.zip(text.as_deref()), env, flags)
    }

    /// [`Layered::gather`] with the file's path and text given.
    pub fn from_parts(
        file: Option<(&Path, &str)>,
        env: impl IntoIterator<Item = (OsString, OsString)>,
        flags: Overrides,
    ) -> Result<Layered, ConfigError> {
        let mut table = to_table(&FileConfig::default())?;
        let mut origins = BTreeMap::new();
        if let Some((path, text)) = file {
            let parse = |source| ConfigError::Parse {
                path: path.to_owned(),
                source: Box::new(source),
            };
            // The typed reading first: its errors carry the line and column.
            toml::from_str::<FileConfig>(text).map_err(parse)?;
            let mut layer: Table = toml::from_str(text).map_err(parse)?;
            if let Some(dir) = path.parent() {
                resolve_paths(&mut layer, dir);
            }
            let origin = Origin::File(path.to_owned());
            overlay(&mut table, layer, "", &origin, &mut origins);
        }
        for (var, key, value) in env_entries(env)? {
            set(&mut table, &key, value);
            origins.insert(key, Origin::Env(var));
        }
        for (flag, key, value) in flags.entries()? {
            set(&mut table, key, value);
            origins.insert(key.to_owned(), Origin::Flag(flag));
        }
        let config = from_table(table)?;
        Ok(Layered { config, origins })
    }

    /// Where the value of `key` came from (an element of an array of
    /// tables: where the array came from).
    pub fn origin(&self, key: &str) -> &Origin {
        let array = FILE_ONLY.iter().find(|a| key.starts_with(&format!("{a}.")));
        self.origins
            .get(array.copied().unwrap_or(key))
            .unwrap_or(&Origin::Default)
    }

    /// The effective configuration as TOML, each value followed by a
    /// comment naming its origin; secrets are named, not printed.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        let table = to_table(&self.config)?;
        let mut out = String::from(
            "# The effective configuration: each value is followed by where it\n\
             # comes from (default, the config file, a variable or a flag).\n",
        );
        let mut section = String::new();
        // The arrays of tables of the current section, written after its keys.
        let mut arrays = String::new();
        for key in keys() {
            let (sec, name) = key.split_once('.').unwrap_or(("", &key));
            if sec != section {
                out.push_str(&std::mem::take(&mut arrays));
                section = sec.to_owned();
                if !sec.is_empty() {
                    out.push_str(&format!("\n[{sec}]\n"));
                }
            }
            let origin = self.origin(&key);
            match lookup(&table, &key) {
                Some(Value::Array(items)) if FILE_ONLY.contains(&key.as_str()) => {
                    for item in items.iter().filter_map(Value::as_table) {
                        arrays.push_str(&format!("\n[[{key}]] # {origin}\n"));
                        arrays.push_str(&toml::to_string(item).unwrap_or_default());
                    }
                }
                Some(_) if SECRET_KEYS.contains(&key.as_str()) => {
                    out.push_str(&format!("# {name}: set, not shown # {origin}\n"));
                }
                Some(value) => out.push_str(&format!("{name} = {value} # {origin}\n")),
                None => out.push_str(&format!("# {name}: not set # {origin}\n")),
            }
        }
        out.push_str(&arrays);
        Ok(out)
    }

    /// The effective configuration as JSON: every key, by section, as
    /// `{"value": ..., "source": ...}` (`null` when not set or secret, with
    /// `"secret": true` for a secret that is set).
    pub fn to_json(&self) -> Result<serde_json::Value, ConfigError> {
        let table = to_table(&self.config)?;
        let mut out = serde_json::Map::new();
        for key in keys() {
            let value = lookup(&table, &key);
            let secret = SECRET_KEYS.contains(&key.as_str());
            let mut entry = serde_json::json!({
                "value": value.filter(|_| !secret).and_then(|v| serde_json::to_value(v).ok()),
                "source": self.origin(&key).to_string(),
            });
            if secret && value.is_some() {
                entry["secret"] = true.into();
            }
            match key.split_once('.') {
                Some((sec, name)) => {
                    let section = out
                        .entry(sec)
                        .or_insert_with(|| serde_json::Value::Object(Default::default()));
                    section[name] = entry;
                }
                None => {
                    out.insert(key, entry);
                }
            }
        }
        Ok(serde_json::Value::Object(out))
    }
}

impl Overrides {
    /// Applies the overrides to `config`.
    pub(crate) fn apply(self, config: FileConfig) -> Result<FileConfig, ConfigError> {
        let mut table = to_table(&config)?;
        for (_, key, value) in self.entries()? {
            set(&mut table, key, value);
        }
        from_table(table)
    }

    /// The keys the overrides set: (flag, key, value).
    pub(crate) fn entries(self) -> Result<Vec<(&'static str, &'static str, Value)>, ConfigError> {
        let text = |v: &dyn fmt::Display| Value::String(v.to_string());
        let list = |v: Vec<String>| {
            (!v.is_empty()).then(|| Value::Array(v.into_iter().map(Value::String).collect()))
        };
        let path = |key: &'static str, p: Option<PathBuf>| {
            p.map(|p| {
                p.into_os_string()
                    .into_string()
                    .map(Value::String)
                    .map_err(|_| ConfigError::Invalid {
                        key,
                        detail: "the path is not UTF-8".into(),
                    })
            })
            .transpose()
        };
        let all = [
            ("--listen", "listen", self.listen.map(|a| text(&a))),
            ("--data-dir", "data_dir", path("data_dir", self.data_dir)?),
            (
                "--log-format",
                "log_format",
                self.log_format.map(|f| text(&f.as_str())),
            ),
            ("--fsync", "storage.fsync", self.fsync.map(|m| text(&m))),
            (
                "--gossip-listen",
                "cluster.gossip_listen",
                self.gossip_listen.map(|a| text(&a)),
            ),
            ("--join", "cluster.seeds", list(self.join)),
            (
                "--cluster-name",
                "cluster.name",
                self.cluster_name.map(Value::String),
            ),
            (
                "--replication-factor",
                "cluster.replication_factor",
                self.replication_factor
                    .map(|n| Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))),
            ),
            (
                "--allowed-host",
                "http.allowed_hosts",
                list(self.allowed_hosts),
            ),
            (
                "--allow-anonymous",
                "auth.allow_anonymous",
                self.allow_anonymous.then_some(Value::Boolean(true)),
            ),
            (
                "--tls-cert",
                "tls.cert_file",
                path("tls.cert_file", self.tls_cert)?,
            ),
            (
                "--tls-key",
                "tls.key_file",
                path("tls.key_file", self.tls_key)?,
            ),
            (
                "(set by the embedding code)",
                "cluster.key",
                self.cluster_key.map(Value::String),
            ),
        ];
        Ok(all
            .into_iter()
            .filter_map(|(flag, key, value)| Some((flag, key, value?)))
            .collect())
    }
}

/// The configuration as a TOML table (unset keys absent).
fn to_table(config: &FileConfig) -> Result<Table, ConfigError> {
    Table::try_from(config).map_err(|e| ConfigError::Invalid {
        key: "(configuration)",
        detail: e.to_string(),
    })
}

/// The configuration from a merged table whose every layer was checked.
fn from_table(table: Table) -> Result<FileConfig, ConfigError> {
    table
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Invalid {
            key: "(merged configuration)",
            detail: e.message().to_owned(),
        })
}

/// The value of `key` (`section.key` or `key`) in `table`.
fn lookup<'t>(table: &'t Table, key: &str) -> Option<&'t Value> {
    match key.split_once('.') {
        Some((section, name)) => table.get(section)?.as_table()?.get(name),
        None => table.get(key),
    }
}

/// Sets `key` (`section.key` or `key`) in `table`.
fn set(table: &mut Table, key: &str, value: Value) {
    match key.split_once('.') {
        Some((section, name)) => {
            let section = table
                .entry(section)
                .or_insert_with(|| Value::Table(Table::new()));
            if let Value::Table(section) = section {
                section.insert(name.to_owned(), value);
            }
        }
        None => {
            table.insert(key.to_owned(), value);
        }
    }
}

/// Puts every value of `layer` into `base`, recording `origin` for it.
fn overlay(
    base: &mut Table,
    layer: Table,
    prefix: &str,
    origin: &Origin,
    origins: &mut BTreeMap<String, Origin>,
) {
    for (name, value) in layer {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match (base.get_mut(&name), value) {
            (Some(Value::Table(below)), Value::Table(above)) => {
                overlay(below, above, &key, origin, origins);
            }
            (_, value) => {
                base.insert(name, value);
                origins.insert(key, origin.clone());
            }
        }
    }
}

/// Makes the file's relative paths (key files, certificates, components)
/// relative to the file's directory. Paths from variables and flags stay
/// relative to the working directory.
fn resolve_paths(file: &mut Table, dir: &Path) {
    let resolve = |value: &mut Value| {
        if let Value::String(s) = value
            && Path::new(s.as_str()).is_relative()
        {
            *s = dir.join(&*s).to_string_lossy().into_owned();
        }
    };
    for key in [
        "auth.hs256_secret_file",
        "auth.public_key_files",
        "tls.cert_file",
        "tls.key_file",
        "tls.ca_file",
    ] {
        let (section, name) = key.split_once('.').unwrap_or(("", key));
        let value = file
            .get_mut(section)
            .and_then(Value::as_table_mut)
            .and_then(|s| s.get_mut(name));
        match value {
            Some(Value::Array(paths)) => paths.iter_mut().for_each(resolve),
            Some(value) => resolve(value),
            None => {}
        }
    }
    if let Some(Value::Array(bindings)) = file.get_mut("plugin") {
        for binding in bindings {
            if let Some(path) = binding.as_table_mut().and_then(|b| b.get_mut("file")) {
                resolve(path);
            }
        }
    }
}

/// The keys set by the `SWITCHYARD_*` variables of `env`: (variable, key,
/// value). An empty value counts as unset.
fn env_entries(
    env: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<Vec<(String, String, Value)>, ConfigError> {
    let known = env_names();
    // key → (variable, text, whether the variable is an alias)
    let mut found: BTreeMap<String, (String, String, bool)> = BTreeMap::new();
    for (name, value) in env {
        // A name that is not UTF-8 is no variable of ours.
        let Ok(name) = name.into_string() else {
            continue;
        };
        if !name.starts_with(ENV_PREFIX) || OTHER_VARS.contains(&name.as_str()) {
            continue;
        }
        let Some((key, alias)) = known.get(&name) else {
            check_unknown(&name, &known)?;
            continue;
        };
        let text = value
            .into_string()
            .map_err(|_| ConfigError::EnvNotUnicode(name.clone()))?;
        if text.is_empty() {
            continue;
        }
        match found.get(key) {
            Some((other, other_text, other_alias)) => {
                if *other_text != text {
                    let (canonical, alias) = if *alias {
                        (other.clone(), name)
                    } else {
                        (name, other.clone())
                    };
                    return Err(ConfigError::EnvTwice { canonical, alias });
                }
                if *other_alias {
                    found.insert(key.clone(), (name, text, *alias));
                }
            }
            None => {
                found.insert(key.clone(), (name, text, *alias));
            }
        }
    }
    found
        .into_iter()
        .map(|(key, (var, text, _))| {
            let value = env_value(&var, &key, &text)?;
            Ok((var, key, value))
        })
        .collect()
}

/// Refuses a `SWITCHYARD_*` variable that names no key but looks like it
/// should: it names an array of tables, starts with a section's name, or is
/// one letter away from a key's variable. Others (a script's own
/// `SWITCHYARD_BIN`, say) are left alone.
fn check_unknown(var: &str, known: &BTreeMap<String, (String, bool)>) -> Result<(), ConfigError> {
    let nearest = known
        .keys()
        .map(|k| (edit_distance(var, k), k))
        .min_by_key(|(d, _)| *d);
    let hint = match nearest {
        Some((d, k)) if d <= 3 => format!(" (did you mean {k}?)"),
        _ => String::new(),
    };
    for key in FILE_ONLY {
        let name = env_name(key);
        if var == name || var.starts_with(&format!("{name}_")) {
            return Err(ConfigError::EnvFileOnly {
                var: var.to_owned(),
                key: key.to_owned(),
                hint,
            });
        }
    }
    let rest = &var[ENV_PREFIX.len()..];
    let in_section = sections()
        .iter()
        .any(|(s, _)| rest.starts_with(&format!("{}_", s.to_ascii_uppercase())));
    let one_letter_away = nearest.is_some_and(|(d, _)| d <= 1);
    if !in_section && !one_letter_away {
        return Ok(());
    }
    Err(ConfigError::UnknownEnv {
        var: var.to_owned(),
        hint,
    })
}

/// The Levenshtein distance between two names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// The value of the variable `var` for `key`: the first reading its key's
/// type takes, of the value as TOML spells it (a number, a boolean, a
/// quoted string, an array), a boolean word (`yes`, `on`, `1` and their
/// opposites), a plain string, and a comma-separated list of strings.
fn env_value(var: &str, key: &str, text: &str) -> Result<Value, ConfigError> {
    let word = match text.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(Value::Boolean(true)),
        "false" | "no" | "off" | "0" => Some(Value::Boolean(false)),
        _ => None,
    };
    let list = text
        .split(',')
        .map(|item| Value::String(item.trim().to_owned()))
        .collect();
    let readings = [
        text.parse::<Value>().ok(),
        word,
        Some(Value::String(text.to_owned())),
        Some(Value::Array(list)),
    ];
    let mut refusal = None;
    for value in readings.into_iter().flatten() {
        let mut table = Table::new();
        set(&mut table, key, value.clone());
        match table.try_into::<FileConfig>() {
            Ok(_) => return Ok(value),
            Err(e) => {
                refusal.get_or_insert_with(|| e.message().to_owned());
            }
        }
    }
    Err(ConfigError::Env {
        var: var.to_owned(),
        key: key.to_owned(),
        detail: expectation(&refusal.unwrap_or_default()),
    })
}

/// serde's words for a type, in the words of the documentation.
fn expectation(message: &str) -> String {
    let message = message.trim_end_matches('\n');
    [
        ("a nonzero u64", "an integer greater than 0"),
        ("a nonzero u32", "an integer greater than 0"),
        ("a nonzero usize", "an integer greater than 0"),
        ("expected u64", "expected an integer of 0 or more"),
        ("expected u32", "expected an integer of 0 or more"),
        ("expected usize", "expected an integer of 0 or more"),
    ]
    .iter()
    .fold(message.to_owned(), |m, (from, to)| m.replace(from, to))
}

#[cfg(test)]
mod tests;
