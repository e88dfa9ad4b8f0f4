//! A region's settings: its value in the configuration, else the region's own variable, else
//! the shared variable.

/// A region's setting: its value in the configuration, else the region's own variable
/// (`REDWOOD_BATCH_URL_WESTEUROPE` for region `westeurope`), else the shared one.
pub(crate) fn from_env_or(region: &str, value: &Option<String>, env: &str) -> Option<String> {
    from_lookup(region, value, env, |name| std::env::var(name).ok())
}

fn from_lookup(
    region: &str,
    value: &Option<String>,
    env: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Option<String> {
    let lookup = |name: &str| lookup(name).filter(|v| !v.is_empty());
    value
        .clone()
        .or_else(|| {
            redwood_core::config::env_suffix(region).and_then(|s| lookup(&format!("{env}_{s}")))
        })
        .or_else(|| lookup(env))
}

#[cfg(test)]
mod tests {
    use super::from_lookup;

    #[test]
    fn a_region_reads_its_own_variable_first() {
        let env = |name: &str| match name {
            "REDWOOD_BATCH_URL_WEST_EUROPE" => Some("http://west".to_string()),
            "REDWOOD_BATCH_URL" => Some("http://shared".to_string()),
            "REDWOOD_BATCH_KEY_EAST" => Some(String::new()),
            _ => None,
        };
        let url = |region: &str, value: Option<&str>| {
            from_lookup(region, &value.map(String::from), "REDWOOD_BATCH_URL", env)
        };
        assert_eq!(url("west-europe", None).as_deref(), Some("http://west"));
        assert_eq!(url("east", None).as_deref(), Some("http://shared"));
        assert_eq!(url("", None).as_deref(), Some("http://shared"));
        assert_eq!(
            url("west-europe", Some("http://set")).as_deref(),
            Some("http://set")
        );
        // An empty variable counts as unset.
        assert_eq!(from_lookup("east", &None, "REDWOOD_BATCH_KEY", env), None);
    }
}
