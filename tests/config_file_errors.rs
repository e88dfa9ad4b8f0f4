//! `REDWOOD_CONFIG` naming a missing file or a folder is an error naming the variable and the
//! path, not silently ignored. (One test in this binary: it sets the process environment.)

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
