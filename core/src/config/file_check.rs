//! What figment does not say about a config file: a key outside any profile, a section that is a
//! misspelt `[default]` or a key written as a section, and mistakes in the profiles that are not
//! selected (figment checks only the selected one). Also turns figment's errors into ours.

use std::path::Path;

use crate::error::{Error, ErrorKind, Result};

/// The keys a profile may hold (the fields of [`super::Config`]).
pub(crate) const PROFILE_KEYS: &[&str] = &[
    "backend",
    "storage",
    "namespace",
    "workers",
    "progress",
    "storage_options",
    "regions",
    "placement",
    "failover_after",
];

/// Checks the shape of the config file `text` (read from `file`) for `selected`, the profile in
/// use. A key outside any profile is an error; the rest are warnings, returned for the caller to
/// log. A file that is not valid TOML passes: figment reports that with its line and column.
pub(crate) fn check(file: &Path, text: &str, selected: &str) -> Result<Vec<String>> {
    let Ok(table) = text.parse::<toml::Table>() else {
        return Ok(Vec::new());
    };
    let shown = file.display();
    let mut warnings = Vec::new();
    for (name, value) in &table {
        let Some(section) = value.as_table() else {
            let fix = if name == "regions" {
                "write `[[default.regions]]`".to_string()
            } else {
                "put it under `[default]` (or another profile's section)".to_string()
            };
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "`{name}` in {shown} is outside any profile: {fix}; each top-level \
                     section of the file is a profile"
                ),
            )
            .with_context("key", name));
        };
        if PROFILE_KEYS.contains(&name.as_str()) {
            let fix = if name == "regions" {
                "`[[default.regions]]`".to_string()
            } else {
                format!("`[default.{name}]` or `{name} = {{ … }}` under `[default]`")
            };
            warnings.push(format!(
                "section `[{name}]` in {shown} is read as a profile named `{name}`, not as the \
                 `{name}` key; to set the key write {fix}"
            ));
            continue;
        }
        if name != "default" && name != "global" && looks_like_default(name) {
            warnings.push(format!(
                "section `[{name}]` in {shown} is a profile named `{name}`, used only with \
                 REDWOOD_PROFILE={name}; did you mean `[default]`?"
            ));
        }
        // The selected profile and `[default]` are checked when they are loaded.
        if name == selected || name == "default" {
            continue;
        }
        for key in section.keys() {
            if !PROFILE_KEYS.contains(&key.as_str()) {
                warnings.push(format!(
                    "profile `[{name}]` in {shown}: unknown key `{key}`{}; it is an error when \
                     that profile is used",
                    did_you_mean(key)
                ));
            }
        }
    }
    Ok(warnings)
}

fn looks_like_default(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower == "default" || strsim::levenshtein(&lower, "default") <= 2
}

/// ` (did you mean `workers`?)` when `key` is close to a profile key, else nothing.
fn did_you_mean(key: &str) -> String {
    did_you_mean_among(key, PROFILE_KEYS)
}

/// ` (did you mean `pool`?)` when `key` is close to one of `known`, else nothing.
fn did_you_mean_among(key: &str, known: &[&str]) -> String {
    known
        .iter()
        .map(|k| (strsim::levenshtein(key, k), k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
}

/// Our error for figment's: what is wrong in words, the key, and where the value came from
/// (the file, or the exact environment variable).
pub(crate) fn config_error(err: figment::Error) -> Error {
    let mut whys = Vec::new();
    let mut first: Option<(String, String)> = None;
    for e in err {
        let mut path = e.path.clone();
        if let (Some(profile), Some(head)) = (&e.profile, path.first())
            && head.eq_ignore_ascii_case(profile.as_str().as_str())
            && path.len() > 1
        {
            path.remove(0);
        }
        let key = path.join(".").to_ascii_lowercase();
        let from = match &e.metadata {
            Some(meta) if meta.name.contains("environment") => {
                format!(
                    "the environment variable REDWOOD_{}",
                    key.to_ascii_uppercase()
                )
            }
            Some(meta) => match &meta.source {
                Some(source) => format!("{} {source}", meta.name),
                None => meta.name.to_string(),
            },
            None => "the configuration".into(),
        };
        let why = match &e.kind {
            figment::error::Kind::InvalidType(actual, expected) => {
                format!("`{key}` must be {}, not {actual}", friendly(expected))
            }
            figment::error::Kind::UnknownField(field, expected) => format!(
                "unknown key `{field}`{}; known here: {}",
                did_you_mean_among(field, expected),
                expected.join(", ")
            ),
            other => other.to_string(),
        };
        whys.push(why);
        if first.is_none() {
            first = Some((key, from));
        }
    }
    let mut error = Error::new(ErrorKind::Config, whys.join("; "));
    if let Some((key, from)) = first {
        if !key.is_empty() {
            error = error.with_context("key", key);
        }
        error = error.with_context("from", from);
    }
    error
}

/// A type name as a person would say it.
fn friendly(expected: &str) -> String {
    match expected {
        "usize" | "u64" | "u32" | "u16" | "u8" => "a whole number (e.g. 4)".into(),
        "a boolean" | "bool" => "true or false".into(),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warnings(text: &str) -> Vec<String> {
        check(Path::new("Redwood.toml"), text, "default").unwrap()
    }

    #[test]
    fn a_misspelt_default_section_is_named() {
        let w = warnings("[defaults]\nworkers = 3\n");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("[defaults]") && w[0].contains("did you mean `[default]`"));
        assert!(warnings("[default]\nworkers = 3\n[fast]\nworkers = 8\n").is_empty());
    }

    #[test]
    fn keys_outside_profiles_are_errors() {
        let e = check(
            Path::new("Redwood.toml"),
            "backend = \"local\"\n",
            "default",
        )
        .unwrap_err();
        assert!(e.to_string().contains("outside any profile"), "{e}");
        let e = check(
            Path::new("R.toml"),
            "[[regions]]\nname = \"x\"\n",
            "default",
        )
        .unwrap_err();
        assert!(e.to_string().contains("[[default.regions]]"), "{e}");
    }

    #[test]
    fn keys_written_as_sections_and_typos_in_other_profiles_warn() {
        let w = warnings("[storage_options]\naccount = \"a\"\n");
        assert!(w[0].contains("[default.storage_options]"), "{w:?}");
        let w = warnings("[azure]\nworkerz = 3\n");
        assert!(w[0].contains("did you mean `workers`"), "{w:?}");
        // Not for the selected profile: loading it reports the error.
        assert!(
            check(Path::new("R.toml"), "[azure]\nworkerz = 3\n", "azure")
                .unwrap()
                .is_empty()
        );
    }
}
