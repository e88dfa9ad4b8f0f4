//! The store a command reads: the profile's (`Redwood.toml`, `REDWOOD_*`), or `--storage`.

use redwood_core::Storage;
use redwood_core::config::LoadedConfig;

/// Opens the store and namespace the profile names, `storage` and `namespace` overriding them.
pub fn open(storage: Option<&str>, namespace: Option<&str>) -> Result<Storage, String> {
    Ok(open_with_config(storage, namespace)?.0)
}

/// [`open`], and the loaded configuration (for the profile's backend).
pub fn open_with_config(
    storage: Option<&str>,
    namespace: Option<&str>,
) -> Result<(Storage, LoadedConfig), String> {
    // The stores and backends other crates register: naming them links them in.
    redwood_stores::link();
    let _ = redwood_azure::blob::open as redwood_core::storage::scheme::OpenFn;
    let _ = redwood_azure::batch::worker::serve as fn() -> !;
    let _ = redwood_azure::functions::handler::serve as fn() -> !;
    let loaded = LoadedConfig::load().map_err(|e| e.to_string())?;
    let config = &loaded.config;
    let (url, options) = match storage {
        // Another store: the profile's options are for the profile's store.
        Some(url) if url != config.storage => (url.to_string(), Default::default()),
        _ => (config.storage.clone(), config.storage_options.clone()),
    };
    // A reading tool creates no folder: a `file://` store that is not there is an error.
    if let Some(folder) = url.strip_prefix("file://")
        && !folder.is_empty()
        && !std::path::Path::new(folder).is_dir()
    {
        return Err(format!(
            "no storage folder `{folder}` ({url}, from {}): nothing has run with this storage here; run from the program's folder, or name the store with --storage or --profile",
            if storage.is_some() {
                "--storage".to_string()
            } else {
                loaded.origin("storage")
            }
        ));
    }
    let namespace = namespace.unwrap_or(&config.namespace).to_string();
    let namespace = namespace.as_str();
    let opened = Storage::open_with(&url, &options).map_err(|e| e.to_string())?;
    let opened = opened.with_root(namespace);
    Ok((opened, loaded))
}
