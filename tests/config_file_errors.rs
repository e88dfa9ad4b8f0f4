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
}
