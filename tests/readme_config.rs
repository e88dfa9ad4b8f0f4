//! Every TOML block of the README is a configuration this build loads, profile by profile,
//! without an error or a warning: the README cannot drift from the configuration it documents.

use redwood::config::{LoadedConfig, file_warnings};

fn toml_blocks(readme: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match (&mut current, line.trim_start()) {
            (None, "```toml") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn every_readme_toml_block_loads() {
    let readme = include_str!("../README.md");
    let blocks = toml_blocks(readme);
    assert!(blocks.len() >= 4, "found {} TOML blocks", blocks.len());
    let dir = std::env::temp_dir().join(format!("redwood-readme-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (n, block) in blocks.iter().enumerate() {
        let file = dir.join(format!("block-{n}.toml"));
        std::fs::write(&file, block).unwrap();
        let table: toml::Table = block.parse().expect("README TOML parses");
        for profile in table.keys() {
            let loaded = LoadedConfig::load_from(Some(file.clone()), profile, false);
            assert!(
                loaded.is_ok(),
                "README TOML block {n}, profile `{profile}`: {}\n{block}",
                loaded.unwrap_err()
            );
            // Each backend reads its own keys of a region.
            #[cfg(feature = "azure")]
            if let Ok(loaded) = &loaded {
                for index in 0..loaded.config.regions.len().max(1) {
                    let narrowed = loaded.for_region(index).unwrap_or_else(|| loaded.clone());
                    if narrowed.config.backend != "azure-batch" {
                        continue;
                    }
                    let region = redwood::azure::region(&narrowed);
                    assert!(
                        region.is_ok(),
                        "README TOML block {n}, profile `{profile}`, region {index}: {}\n{block}",
                        region.unwrap_err()
                    );
                }
            }
            let warnings = file_warnings(&file, profile).unwrap();
            assert!(
                warnings.is_empty(),
                "README TOML block {n}: {warnings:?}\n{block}"
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
