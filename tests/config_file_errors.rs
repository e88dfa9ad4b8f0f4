//! `REDWOOD_CONFIG` naming a missing file or a folder is an error naming the variable and the
//! path, not silently ignored. (One test in this binary reads the process environment; the
//! other builds its session from a configuration given in code.)

use redwood::{ErrorKind, Session};

#[test]
fn a_missing_or_folder_config_file_is_named() {
    let dir = std::env::temp_dir();
    let missing = dir.join("no-such-redwood-config.toml");
    for (path, why) in [(&missing, "does not exist"), (&dir, "is a folder")] {
        // SAFETY: the only test of this binary; nothing reads the environment concurrently.
        unsafe { std::env::set_var("REDWOOD_CONFIG", path) };
        let err = Session::from_config().expect_err("a bad REDWOOD_CONFIG");
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        let text = err.to_string();
        assert!(
            text.contains("REDWOOD_CONFIG") && text.contains(&path.display().to_string()),
            "{text}"
        );
        assert!(text.contains(why), "{text}");
    }

    // A value of the wrong type from the environment names the variable, in words.
    let file = dir.join(format!("redwood-config-{}.toml", std::process::id()));
    std::fs::write(&file, "[default]\nprogress = false\n").unwrap();
    // SAFETY: as above.
    unsafe {
        std::env::set_var("REDWOOD_CONFIG", &file);
        std::env::set_var("REDWOOD_WORKERS", "abc");
    }
    let err = Session::from_config().expect_err("REDWOOD_WORKERS=abc");
    let text = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Config, "{text}");
    assert!(
        text.contains("`workers` must be a whole number")
            && text.contains("\"abc\"")
            && text.contains("REDWOOD_WORKERS"),
        "{text}"
    );
    // SAFETY: as above.
    unsafe { std::env::remove_var("REDWOOD_WORKERS") };
    std::fs::remove_file(&file).unwrap();
}

/// One region's own `storage` replaces the profile's; several regions are refused by name
/// until running across regions exists.
#[test]
fn one_region_narrows_the_profile_and_several_are_refused() {
    let folder = std::env::temp_dir().join(format!("redwood-west-store-{}", std::process::id()));
    let config = redwood::Config {
        storage: "memory://home".into(),
        workers: Some(1),
        regions: vec![redwood::config::RegionSection {
            name: "west".into(),
            storage: Some(format!("file://{}", folder.display())),
            ..Default::default()
        }],
        ..redwood::Config::default()
    };
    let session = Session::builder().config(config.clone()).build().unwrap();
    assert!(
        session.storage().url().contains("west-store"),
        "{session:?}"
    );

    let mut two = config;
    two.regions.push(redwood::config::RegionSection {
        name: "east".into(),
        ..Default::default()
    });
    let err = Session::builder().config(two).build().unwrap_err();
    let text = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Config, "{text}");
    assert!(
        text.contains("west, east") && text.contains("several `[[regions]]`"),
        "{text}"
    );
    std::fs::remove_dir_all(&folder).unwrap();
}
