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

/// One region's own `storage` replaces the profile's; with several, each region gets its
/// own backend and store (its own, or the profile's), and mistakes name the region.
#[test]
fn one_region_narrows_the_profile_and_several_become_regions() {
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
    assert_eq!(session.regions().len(), 1);
    assert_eq!(session.regions()[0].name(), "west");

    let mut two = config;
    two.regions.push(redwood::config::RegionSection {
        name: "east".into(),
        weight: Some(3),
        ..Default::default()
    });
    let session = Session::builder().config(two.clone()).build().unwrap();
    let names: Vec<&str> = session.regions().iter().map(|r| r.name()).collect();
    assert_eq!(names, ["west", "east"]);
    assert_eq!(
        session.storage().url(),
        "memory://home",
        "the home store is the profile's"
    );
    assert!(session.regions()[0].storage().url().contains("west-store"));
    assert_eq!(session.regions()[1].storage().url(), "memory://home");
    assert_eq!(session.regions()[1].weight(), 3);

    let mut same = two.clone();
    same.regions[1].name = "west".into();
    let text = Session::builder()
        .config(same)
        .build()
        .unwrap_err()
        .to_string();
    assert!(text.contains("two regions are named `west`"), "{text}");
    let mut zero = two.clone();
    zero.regions[1].weight = Some(0);
    let text = Session::builder()
        .config(zero)
        .build()
        .unwrap_err()
        .to_string();
    assert!(text.contains("east") && text.contains("weight"), "{text}");
    let mut unknown = two;
    unknown.regions[1]
        .settings
        .insert("wokers".into(), 2.into());
    let text = Session::builder()
        .config(unknown)
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("region `east`") && text.contains("wokers"),
        "{text}"
    );
    std::fs::remove_dir_all(&folder).ok();
}
