//! An associated function inside an inherent `impl` is a remote function: `Type::name`.

struct Geometry;

impl Geometry {
    /// The area of a square.
    #[redwood::remote]
    pub fn area(side: u64) -> u64 {
        side * side
    }
}

fn main() {
    // Still a plain function locally, and a handle with an id for remote calls.
    assert_eq!(Geometry::area(4), 16);
    assert!(Geometry::area.id().ends_with("::area"));
}
