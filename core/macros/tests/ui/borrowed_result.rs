#[redwood::remote]
fn name() -> &'static str {
    "redwood"
}

fn main() {}
