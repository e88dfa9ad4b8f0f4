#[redwood::remote]
unsafe fn raw(x: u64) -> u64 {
    x
}

fn main() {}
