//! Two remote functions of one module may not share a name (their ids would be the same): a
//! call of either is refused before anything runs, with an error that says what to rename.

use redwood::{ErrorKind, Session};

struct Circle;
struct Square;

impl Circle {
    #[redwood::remote]
    fn area(size: f64) -> f64 {
        3.0 * size * size
    }
}

impl Square {
    #[redwood::remote]
    fn area(size: f64) -> f64 {
        size * size
    }
}

#[tokio::test]
async fn a_shared_id_is_refused_before_anything_runs() {
    // Still plain functions locally.
    assert_eq!(Square::area(2.0), 4.0);
    assert_eq!(Circle::area.id(), Square::area.id());
    let rw = Session::builder()
        .storage_url("memory://remote-ids")
        .progress(false)
        .build()
        .expect("session");
    let err = rw
        .call(Square::area, 2.0)
        .await
        .expect_err("an ambiguous id");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(
        err.to_string().contains("2 remote functions are named")
            && err.to_string().contains("rename one"),
        "{err}"
    );
    assert!(
        rw.storage()
            .list(&rw.storage().layout().jobs())
            .await
            .unwrap()
            .is_empty()
    );
}
